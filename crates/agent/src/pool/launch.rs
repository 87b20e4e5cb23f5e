//! Starting and signalling the pool's Python processes, behind a trait so that the run loop
//! can be tested against a scripted fake of the Python side.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::sync::mpsc::UnboundedSender;

use super::conn::ConnEvent;
use super::process::{signal_group, spawn_python, SpawnSpec, StderrTo};

const STDERR_TAIL_LINES: usize = 160;

/// Which process of the pool ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcOwner {
    Zygote,
    /// A `--spawn` worker of this slot, in its `generation`.
    Spawned {
        slot: usize,
        generation: u32,
    },
}

/// What the pool's sources deliver: connection events and process exits.
#[derive(Debug)]
pub enum RawEvent {
    Conn(ConnEvent),
    ProcessExited {
        owner: ProcOwner,
        code: Option<i32>,
        signal: Option<i32>,
    },
}

impl From<ConnEvent> for RawEvent {
    fn from(event: ConnEvent) -> Self {
        RawEvent::Conn(event)
    }
}

/// How to start a Python process of the pool.
#[derive(Clone, Debug)]
pub struct LaunchSpec {
    pub python: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
}

pub trait Launcher: Send {
    /// Starts the zygote; returns its pid (its process group). Its exit arrives as
    /// `RawEvent::ProcessExited { owner: Zygote }` on `events`.
    fn launch_zygote(
        &mut self,
        spec: &LaunchSpec,
        events: &UnboundedSender<RawEvent>,
    ) -> std::io::Result<u32>;

    /// Starts a `--spawn` worker whose stderr goes to `stderr`; returns its pid.
    fn launch_worker(
        &mut self,
        spec: &LaunchSpec,
        owner: ProcOwner,
        stderr: PathBuf,
        events: &UnboundedSender<RawEvent>,
    ) -> std::io::Result<u32>;

    /// Sends `signal` to the process group `pgid` (a worker's or the zygote's).
    fn signal(&mut self, pgid: u32, signal: Signal);

    /// The last lines the zygote wrote to stderr (shown when it ends before collecting).
    fn zygote_stderr_tail(&self) -> String;
}

/// Real processes: `python -m pytest` in their own process groups.
#[derive(Default)]
pub struct ProcessLauncher {
    zygote_stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Launcher for ProcessLauncher {
    fn launch_zygote(
        &mut self,
        spec: &LaunchSpec,
        events: &UnboundedSender<RawEvent>,
    ) -> std::io::Result<u32> {
        let mut child = spawn(spec, StderrTo::Pipe)?;
        if let Some(stderr) = child.stderr.take() {
            let tail = Arc::clone(&self.zygote_stderr);
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut tail = tail.lock().expect("stderr tail lock");
                    tail.push_back(line);
                    if tail.len() > STDERR_TAIL_LINES {
                        tail.pop_front();
                    }
                }
            });
        }
        Ok(watch(child, ProcOwner::Zygote, events))
    }

    fn launch_worker(
        &mut self,
        spec: &LaunchSpec,
        owner: ProcOwner,
        stderr: PathBuf,
        events: &UnboundedSender<RawEvent>,
    ) -> std::io::Result<u32> {
        let file = std::fs::File::create(&stderr).map_err(|err| {
            std::io::Error::new(
                err.kind(),
                format!(
                    "creating the worker's stderr file {}: {err}",
                    stderr.display()
                ),
            )
        })?;
        let child = spawn(spec, StderrTo::File(file))?;
        Ok(watch(child, owner, events))
    }

    fn signal(&mut self, pgid: u32, signal: Signal) {
        signal_group(pgid, signal);
    }

    fn zygote_stderr_tail(&self) -> String {
        let tail = self.zygote_stderr.lock().expect("stderr tail lock");
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

fn spawn(spec: &LaunchSpec, stderr: StderrTo) -> std::io::Result<Child> {
    spawn_python(SpawnSpec {
        python: &spec.python,
        args: &spec.args,
        cwd: &spec.cwd,
        env: &spec.env,
        stderr,
    })
}

/// Reports the child's exit on `events`; returns its pid.
fn watch(mut child: Child, owner: ProcOwner, events: &UnboundedSender<RawEvent>) -> u32 {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id().unwrap_or(0);
    let events = events.clone();
    tokio::spawn(async move {
        let (code, signal) = match child.wait().await {
            Ok(status) => (status.code(), status.signal()),
            Err(_) => (None, None),
        };
        let _ = events.send(RawEvent::ProcessExited {
            owner,
            code,
            signal,
        });
    });
    pid
}
