//! SIGINT/SIGTERM as a stream of `Interrupt`s for the run loop. The only place that installs
//! signal handlers; a run in a test gets no stream at all.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// A request from outside to stop the run: its name as pytest reports it.
pub type Interrupt = &'static str;

pub fn watch_signals() -> std::io::Result<UnboundedReceiver<Interrupt>> {
    let (tx, rx) = unbounded_channel();
    for (kind, name) in [
        (SignalKind::interrupt(), "KeyboardInterrupt"),
        (SignalKind::terminate(), "SIGTERM"),
    ] {
        let mut stream = signal(kind)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(name).is_err() {
                    return;
                }
            }
        });
    }
    Ok(rx)
}
