//! Connections from Python processes: accept, check the hello, then translate lines into
//! `ConnEvent`s for the run loop. Reader tasks never touch run state.

use shardex_core::protocol::{Collection, FromPython, Role, TestDone, ToPython, PROTOCOL_VERSION};
use shardex_core::TestId;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

pub type ConnId = u64;

/// A line longer than this is refused without being read into memory (the plugin cuts
/// huge texts well below it).
pub const MAX_LINE: usize = 64 << 20;
/// How much of a refused line is kept, to tell what it was.
const HEAD_KEPT: usize = 512;

/// What an unreadable line was, as far as its start tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineKind {
    /// The connection's first line, which must be a `hello` of this protocol version: the
    /// connection is dropped.
    Hello,
    /// A test's result (`done`), with the test's id when it could be read.
    Result { id: Option<TestId> },
    /// Anything else.
    Other,
}

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
    /// A peer spoke something we cannot read. Its hello: the connection is dropped;
    /// after it, reading goes on with the next line.
    Invalid {
        conn: ConnId,
        reason: String,
        kind: LineKind,
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
                let mut reader = BufReader::new(read);
                let mut buf = Vec::new();
                let hello = match read_line_capped(&mut reader, &mut buf, MAX_LINE).await {
                    Ok(Some(LineRead::Whole)) => check_hello(&buf, &secret),
                    _ => return,
                };
                let (role, slot, pid) = match hello {
                    Ok(Some(hello)) => hello,
                    Ok(None) => {
                        tracing::debug!(conn, "a connection without the run's secret: dropped");
                        return;
                    }
                    Err(reason) => {
                        let kind = LineKind::Hello;
                        let _ = events.send(ConnEvent::Invalid { conn, reason, kind }.into());
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
                    let event = match read_line_capped(&mut reader, &mut buf, MAX_LINE).await {
                        Ok(Some(read)) => line_event(conn, &buf, read),
                        Ok(None) | Err(_) => {
                            let _ = events.send(ConnEvent::Closed { conn }.into());
                            return;
                        }
                    };
                    if events.send(event.into()).is_err() {
                        return;
                    }
                }
            });
        }
    })
}

/// The hello's role, slot and pid; `None` when it lacks the run's secret (dropped unheard);
/// the reason when the connection is refused.
type Hello = (Role, Option<String>, u32);

fn check_hello(line: &[u8], secret: &str) -> Result<Option<Hello>, String> {
    match serde_json::from_slice::<FromPython>(line) {
        Ok(FromPython::Hello { secret: given, .. }) if given.as_deref() != Some(secret) => Ok(None),
        Ok(FromPython::Hello {
            v, role, slot, pid, ..
        }) if v == PROTOCOL_VERSION => Ok(Some((role, slot, pid))),
        Ok(FromPython::Hello { v, .. }) => Err(format!(
            "plugin speaks protocol {v}, agent {PROTOCOL_VERSION}"
        )),
        other => Err(format!("expected hello, got {other:?}")),
    }
}

/// How `read_line_capped` ended a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineRead {
    /// The buffer holds the whole line (without its newline).
    Whole,
    /// The line was longer than the cap: the buffer holds its first bytes only.
    TooLong { len: usize },
}

/// Reads one line into `buf` (cleared first), keeping at most `cap` bytes: the rest of a
/// longer line is skipped as it arrives. `None` at the end of the stream.
async fn read_line_capped<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<Option<LineRead>> {
    buf.clear();
    let mut len = 0usize;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            // The stream ended: a last line without its newline still counts.
            return Ok((len > 0).then(|| ended(buf, len, cap)));
        }
        let newline = chunk.iter().position(|&b| b == b'\n');
        let piece = &chunk[..newline.unwrap_or(chunk.len())];
        len += piece.len();
        if len <= cap {
            buf.extend_from_slice(piece);
        } else if buf.len() > HEAD_KEPT {
            buf.truncate(HEAD_KEPT);
            buf.shrink_to(HEAD_KEPT);
        }
        let used = newline.map_or(chunk.len(), |pos| pos + 1);
        reader.consume(used);
        if newline.is_some() {
            return Ok(Some(ended(buf, len, cap)));
        }
    }
}

fn ended(buf: &mut Vec<u8>, len: usize, cap: usize) -> LineRead {
    if len <= cap {
        LineRead::Whole
    } else {
        buf.truncate(HEAD_KEPT);
        LineRead::TooLong { len }
    }
}

/// The event for one line after the hello.
fn line_event(conn: ConnId, line: &[u8], read: LineRead) -> ConnEvent {
    let parsed = match read {
        LineRead::TooLong { len } => Err(format!(
            "a message of {len} bytes, over the limit of {MAX_LINE} bytes"
        )),
        LineRead::Whole => match std::str::from_utf8(line) {
            Ok(text) => parse_message(text).map_err(|err| format!("{err}")),
            Err(err) => Err(format!("invalid UTF-8 at byte {}", err.valid_up_to())),
        },
    };
    match parsed {
        Ok(msg) => ConnEvent::Message {
            conn,
            msg: Box::new(msg),
        },
        Err(reason) => {
            let head = String::from_utf8_lossy(&line[..line.len().min(200)]);
            ConnEvent::Invalid {
                conn,
                reason: format!("{reason}; the message starts: {head}"),
                kind: line_kind(line),
            }
        }
    }
}

/// What an unreadable line was meant to be, from its first bytes (the plugin writes the
/// tag first, then a result's id).
pub fn line_kind(line: &[u8]) -> LineKind {
    const DONE: &[u8] = br#"{"t":"done","id":"#;
    let Some(rest) = line.strip_prefix(DONE) else {
        return LineKind::Other;
    };
    let id = serde_json::Deserializer::from_slice(rest)
        .into_iter::<String>()
        .next()
        .and_then(Result::ok)
        .map(TestId::new);
    LineKind::Result { id }
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

    #[tokio::test]
    async fn a_line_over_the_cap_is_skipped_and_reading_goes_on() {
        let long = "x".repeat(5000);
        let input = format!("short\n{{\"t\":\"done\",\"id\":\"t.py::a\",{long}\nnext\nlast");
        let mut reader = tokio::io::BufReader::with_capacity(64, input.as_bytes());
        let mut buf = Vec::new();
        let read = read_line_capped(&mut reader, &mut buf, 1000).await.unwrap();
        assert_eq!(
            (read, buf.as_slice()),
            (Some(LineRead::Whole), &b"short"[..])
        );
        let read = read_line_capped(&mut reader, &mut buf, 1000).await.unwrap();
        assert_eq!(read, Some(LineRead::TooLong { len: 5027 }));
        assert!(
            buf.len() <= HEAD_KEPT,
            "only the head of a refused line is kept"
        );
        assert_eq!(
            line_kind(&buf),
            LineKind::Result {
                id: Some(TestId::new("t.py::a"))
            }
        );
        for want in ["next", "last"] {
            let read = read_line_capped(&mut reader, &mut buf, 1000).await.unwrap();
            assert_eq!(
                (read, buf.as_slice()),
                (Some(LineRead::Whole), want.as_bytes())
            );
        }
        assert_eq!(
            read_line_capped(&mut reader, &mut buf, 1000).await.unwrap(),
            None
        );
    }

    #[test]
    fn an_unreadable_result_names_its_test() {
        // serde_json refuses a lone surrogate escape; the line is still known as a result.
        let line =
            br#"{"t":"done","id":"t.py::b","duration":0.1,"reports":[{"longrepr":"\udcff"}]}"#;
        let ConnEvent::Invalid { reason, kind, .. } = line_event(1, line, LineRead::Whole) else {
            panic!("a lone surrogate must not parse");
        };
        assert!(reason.contains("surrogate"), "{reason}");
        assert_eq!(
            kind,
            LineKind::Result {
                id: Some(TestId::new("t.py::b"))
            }
        );
        let ConnEvent::Invalid { reason, kind, .. } = line_event(
            1,
            b"{\"t\":\"warning\",\"message\":\"\xff\"}",
            LineRead::Whole,
        ) else {
            panic!("invalid UTF-8 must not parse");
        };
        assert!(reason.starts_with("invalid UTF-8 at byte 26"), "{reason}");
        assert_eq!(kind, LineKind::Other);
        let line = br#"{"t":"done","id":"t.py::\udcff","duration":0.1}"#;
        assert_eq!(line_kind(line), LineKind::Result { id: None });
    }

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
