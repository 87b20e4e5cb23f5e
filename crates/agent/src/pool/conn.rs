//! Connections from Python processes: accept, check the hello, then translate lines into
//! `ConnEvent`s for the run loop. Reader tasks never touch run state.

use shardex_core::protocol::{Collection, FromPython, Role, TestDone, ToPython, PROTOCOL_VERSION};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

pub type ConnId = u64;

#[derive(Debug)]
pub enum ConnEvent {
    Opened {
        conn: ConnId,
        role: Role,
        slot: Option<String>,
        pid: u32,
        tx: UnboundedSender<ToPython>,
    },
    Message {
        conn: ConnId,
        msg: Box<FromPython>,
    },
    Closed {
        conn: ConnId,
    },
    /// A peer spoke something we cannot read: the run reports it as an internal error.
    Invalid {
        conn: ConnId,
        reason: String,
    },
}

/// Accepts connections until the listener is dropped; each gets a reader and a writer task.
/// A connection whose hello does not carry `secret` is dropped unheard: only processes this
/// pool started can claim a slot or send results.
pub fn spawn_acceptor<E>(
    listener: UnixListener,
    events: UnboundedSender<E>,
    secret: String,
) -> tokio::task::JoinHandle<()>
where
    E: From<ConnEvent> + Send + 'static,
{
    tokio::spawn(async move {
        let mut next_id: ConnId = 0;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            next_id += 1;
            let conn = next_id;
            let events = events.clone();
            let secret = secret.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let hello = match lines.next_line().await {
                    Ok(Some(line)) => serde_json::from_str::<FromPython>(&line),
                    _ => return,
                };
                let (role, slot, pid) = match hello {
                    Ok(FromPython::Hello { secret: given, .. })
                        if given.as_deref() != Some(secret.as_str()) =>
                    {
                        tracing::debug!(conn, "a connection without the run's secret: dropped");
                        return;
                    }
                    Ok(FromPython::Hello {
                        v, role, slot, pid, ..
                    }) if v == PROTOCOL_VERSION => (role, slot, pid),
                    Ok(FromPython::Hello { v, .. }) => {
                        let reason =
                            format!("plugin speaks protocol {v}, agent {PROTOCOL_VERSION}");
                        let _ = events.send(ConnEvent::Invalid { conn, reason }.into());
                        return;
                    }
                    other => {
                        let reason = format!("expected hello, got {other:?}");
                        let _ = events.send(ConnEvent::Invalid { conn, reason }.into());
                        return;
                    }
                };
                let (tx, mut rx) = unbounded_channel::<ToPython>();
                tokio::spawn(async move {
                    while let Some(msg) = rx.recv().await {
                        let mut line = serde_json::to_vec(&msg).expect("protocol types serialize");
                        line.push(b'\n');
                        if write.write_all(&line).await.is_err() {
                            return;
                        }
                    }
                });
                if events
                    .send(
                        ConnEvent::Opened {
                            conn,
                            role,
                            slot,
                            pid,
                            tx,
                        }
                        .into(),
                    )
                    .is_err()
                {
                    return;
                }
                loop {
                    match lines.next_line().await {
                        Ok(Some(line)) => {
                            let event = match parse_message(&line) {
                                Ok(msg) => ConnEvent::Message {
                                    conn,
                                    msg: Box::new(msg),
                                },
                                Err(err) => ConnEvent::Invalid {
                                    conn,
                                    reason: format!("{err}: {line:.200}"),
                                },
                            };
                            if events.send(event.into()).is_err() {
                                return;
                            }
                        }
                        Ok(None) | Err(_) => {
                            let _ = events.send(ConnEvent::Closed { conn }.into());
                            return;
                        }
                    }
                }
            });
        }
    })
}

/// Parses one line. The per-test message and the (large) collection skip serde's buffering
/// of internally tagged enums (the plugin writes `"t"` first); everything else takes the
/// general path.
fn parse_message(line: &str) -> serde_json::Result<FromPython> {
    if line.starts_with(r#"{"t":"collected","#) {
        return serde_json::from_str::<Collection>(line).map(FromPython::Collected);
    }
    if line.starts_with(r#"{"t":"done","#) {
        return serde_json::from_str::<TestDone>(line).map(|done| FromPython::Done(done.expand()));
    }
    serde_json::from_str::<FromPython>(line).map(|msg| match msg {
        FromPython::Done(done) => FromPython::Done(done.expand()),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_and_general_paths_agree() {
        let line = r#"{"t":"done","id":"t.py::a","duration":0.5,"reports":[],"junit":{"xml":"","passed":1,"failures":0,"errors":0,"skipped":0,"double":0}}"#;
        let fast = parse_message(line).unwrap();
        let general = serde_json::from_str::<FromPython>(line).unwrap();
        assert_eq!(fast, general);
        // The short form of a pass is expanded on either path, into what the long form says.
        let short = r#"{"t":"done","id":"t.py::a","duration":0.6,"pass":[0.1,0.2,0.3]}"#;
        let long = r#"{"t":"done","id":"t.py::a","duration":0.6,"reports":[
            {"when":"setup","outcome":"passed","category":"","letter":"","word":"","duration":0.1},
            {"when":"call","outcome":"passed","category":"passed","letter":".","word":"PASSED","duration":0.2},
            {"when":"teardown","outcome":"passed","category":"","letter":"","word":"","duration":0.3}],
            "junit":{"xml":"","passed":0,"failures":0,"errors":0,"skipped":0,"double":0}}"#;
        let expanded = parse_message(short).unwrap();
        assert_eq!(expanded, parse_message(&long.replace('\n', "")).unwrap());
        assert_eq!(
            expanded,
            serde_json::from_str::<FromPython>(short)
                .map(|m| match m {
                    FromPython::Done(d) => FromPython::Done(d.expand()),
                    other => other,
                })
                .unwrap()
        );
        let collected = r#"{"t":"collected","items":[{"id":"t.py::a","file":"t.py","line":3}],"deselected":1,"errors":0}"#;
        assert_eq!(
            parse_message(collected).unwrap(),
            serde_json::from_str::<FromPython>(collected).unwrap()
        );
        assert!(
            parse_message(r#"{"t":"flush"}"#).is_err(),
            "not a Python->agent message"
        );
    }

    #[tokio::test]
    async fn only_a_hello_with_the_secret_is_heard() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, mut rx) = unbounded_channel::<ConnEvent>();
        let _acceptor = spawn_acceptor(listener, tx, "s3cret".into());
        let hello = |secret: &str| {
            format!(
                r#"{{"t":"hello","v":{PROTOCOL_VERSION},"role":"worker","slot":"gw0","pid":7{secret}}}"#
            ) + "\n"
        };
        for wrong in ["", r#","secret":"guess""#] {
            let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
            stream.write_all(hello(wrong).as_bytes()).await.unwrap();
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty(), "dropped without an answer");
        }
        let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
        stream
            .write_all(hello(r#","secret":"s3cret""#).as_bytes())
            .await
            .unwrap();
        let event = rx.recv().await.unwrap();
        assert!(
            matches!(event, ConnEvent::Opened { ref slot, .. } if slot.as_deref() == Some("gw0")),
            "{event:?}"
        );
        assert!(rx.try_recv().is_err(), "the wrong hellos made no event");
    }
}
