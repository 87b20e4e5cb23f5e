//! Whether a run goes through the project's daemon, and getting its launcher: a running
//! daemon is used unless `--no-daemon`/`--spawn`; `--daemon` starts one when none runs.
//! Anything that keeps the daemon from serving is one line on stderr and a run without it.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use shardex_agent::daemon::client::{find, request_for, Found, RemoteLauncher};
use shardex_agent::daemon::place::Place;
use shardex_agent::RunConfig;

use crate::settings::Settings;

/// What the settings ask of the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    Never,
    IfRunning,
    StartIfMissing,
}

/// How long `--daemon` waits for a daemon it started to listen.
const START_WAIT: Duration = Duration::from_secs(15);

pub fn want(settings: &Settings) -> Want {
    // --spawn workers are started by the client, one pytest each: nothing to keep warm.
    if settings.no_daemon || settings.spawn {
        Want::Never
    } else if settings.daemon {
        Want::StartIfMissing
    } else {
        Want::IfRunning
    }
}

/// Whether a daemon will probably serve the run (its socket is there): the interpreter's
/// own check is then left to the daemon's warm process.
pub fn likely(want: Want, cwd: &Path) -> bool {
    want != Want::Never && Place::for_cwd(cwd).socket().exists()
}

/// The daemon's launcher for this run, or None (a run without it; the reason, if any, was
/// printed). `run_argv`: the run's own arguments, for a daemon `--daemon` starts.
pub fn launcher(want: Want, config: &RunConfig, run_argv: &[String]) -> Option<RemoteLauncher> {
    if want == Want::Never {
        return None;
    }
    let place = Place::for_cwd(&config.cwd);
    let client = match find(&place) {
        Found::Connected(client) => client,
        Found::Unusable(line) => {
            eprintln!("shardex: {line}");
            return None;
        }
        Found::None if want == Want::StartIfMissing => match start(&place, config, run_argv) {
            Ok(client) => client,
            Err(line) => {
                eprintln!("shardex: {line}; running without a daemon");
                return None;
            }
        },
        Found::None => return None,
    };
    let mut client = client;
    if let Some(line) = client.other_build.take() {
        eprintln!("shardex: {line}");
        return None;
    }
    match client.acquire(request_for(config), |text| {
        eprintln!("shardex: daemon: {text}")
    }) {
        Ok(_generation) => Some(client.into_launcher()),
        Err(line) => {
            eprintln!("shardex: {line}");
            None
        }
    }
}

/// Starts `shardex serve` with the run's options, detached (its own process group, output
/// to `.shardex/daemon.log`), and connects once it listens.
fn start(
    place: &Place,
    config: &RunConfig,
    run_argv: &[String],
) -> Result<shardex_agent::daemon::client::DaemonClient, String> {
    place
        .prepare()
        .map_err(|err| format!("cannot start the daemon: {err}"))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(place.log())
        .map_err(|err| format!("cannot start the daemon: {}: {err}", place.log().display()))?;
    let exe = std::env::current_exe().map_err(|err| format!("cannot start the daemon: {err}"))?;
    // The run's own options; those that only make sense for a run are left out.
    let args: Vec<&String> = run_argv
        .iter()
        .filter(|a| !matches!(a.as_str(), "--daemon" | "--watch" | "--watch-all"))
        .collect();
    let child = std::process::Command::new(exe)
        .arg("serve")
        .args(args)
        .current_dir(&config.cwd)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|err| err.to_string())?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|err| format!("cannot start the daemon: {err}"))?;
    eprintln!(
        "shardex: started the daemon for {} (pid {}; log in {})",
        place.root.display(),
        child.id(),
        relative(&place.log(), &config.cwd)
    );
    let started = Instant::now();
    loop {
        match find(place) {
            Found::Connected(client) => return Ok(client),
            Found::Unusable(line) if started.elapsed() >= START_WAIT => return Err(line),
            _ if started.elapsed() >= START_WAIT => {
                return Err(format!(
                    "the daemon did not start within {} s (see {})",
                    START_WAIT.as_secs(),
                    place.log().display()
                ))
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn relative(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_and_no_daemon_never_use_it() {
        use crate::settings::Settings;
        let resolve = |args: &[&str]| {
            let argv: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
            let (flags, pytest) = crate::compat::split_args(argv).unwrap();
            Settings::resolve(flags, pytest, &|_| None, None).unwrap()
        };
        assert_eq!(want(&resolve(&[])), Want::IfRunning);
        assert_eq!(want(&resolve(&["--daemon"])), Want::StartIfMissing);
        assert_eq!(want(&resolve(&["--daemon", "--spawn"])), Want::Never);
        assert_eq!(want(&resolve(&["--no-daemon"])), Want::Never);
    }
}
