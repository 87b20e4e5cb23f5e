//! Starting Python processes in their own process group, and signalling groups.
//! The only place that sends raw signals.

use std::path::Path;
use std::process::Stdio;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// What to do with a process's stderr.
pub enum StderrTo {
    /// Piped back to the agent (the zygote: its start-up errors are shown to the user).
    Pipe,
    /// Appended to a file (a spawned worker: the tail is shown when it crashes).
    File(std::fs::File),
}

pub struct SpawnSpec<'a> {
    pub python: &'a Path,
    pub args: &'a [String],
    pub cwd: &'a Path,
    pub env: &'a [(String, String)],
    pub stderr: StderrTo,
}

/// `python ARGS` (pytest through the plugin's bootstrap, see `plugin::launch_args`) in a
/// new process group whose id is the child's pid, so a timeout or shutdown can reach
/// everything the test started (`killpg`).
pub fn spawn_python(spec: SpawnSpec<'_>) -> std::io::Result<Child> {
    let mut command = Command::new(spec.python);
    command
        .args(spec.args)
        .current_dir(spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        // Tests may print under `-s`: that goes to the user's terminal as with pytest.
        .stdout(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true);
    match spec.stderr {
        StderrTo::Pipe => command.stderr(Stdio::piped()),
        StderrTo::File(file) => command.stderr(Stdio::from(file)),
    };
    command.spawn()
}

/// Sends `signal` to the process group `pgid`. False if the group no longer exists.
pub fn signal_group(pgid: u32, signal: Signal) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    if raw <= 1 {
        return false; // never signal group 0/1: that would be ourselves or init
    }
    killpg(Pid::from_raw(raw), signal).is_ok()
}

/// A readable name for a signal number (`SIGSEGV`), or `signal N`.
pub fn signal_name(signal: i32) -> String {
    Signal::try_from(signal)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(11), "SIGSEGV");
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(250), "signal 250");
    }

    #[test]
    fn refuses_to_signal_own_or_init_group() {
        assert!(!signal_group(0, Signal::SIGTERM));
        assert!(!signal_group(1, Signal::SIGTERM));
    }
}
