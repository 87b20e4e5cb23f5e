//! `shardex serve [--idle-timeout SECS] [RUN OPTIONS] [PYTEST ARGS]`: the project's daemon, in
//! the foreground; `--status` and `--stop` talk to the one that runs.

use std::path::PathBuf;
use std::time::Duration;

use shardex_agent::daemon::client::{find, lock_is_held, request_for, Found};
use shardex_agent::daemon::place::{addressable, Place};
use shardex_agent::daemon::server::{Daemon, ServeConfig};
use shardex_agent::daemon::wire::StatusReport;
use shardex_agent::python::find_python_from;
use shardex_agent::sizing;

use crate::compat::split_args;
use crate::errors::{CliError, UsageError};
use crate::settings::{FileSettings, Settings};

/// A daemon with no client for this long exits.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(30 * 60);
/// The longest `--idle-timeout` (a week): beyond it, a typo.
const MAX_IDLE_SECS: f64 = 7.0 * 24.0 * 3600.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Serve,
    Status,
    Stop,
}

#[derive(Debug, PartialEq)]
struct ServeFlags {
    action: Action,
    idle: Duration,
    /// The rest: run options and pytest's arguments, as `shardex run` takes them.
    rest: Vec<String>,
}

/// serve's own flags, taken out of `argv`; the rest is resolved as `shardex run` would.
fn serve_flags(argv: Vec<String>) -> Result<ServeFlags, UsageError> {
    let mut flags = ServeFlags {
        action: Action::Serve,
        idle: DEFAULT_IDLE,
        rest: Vec::new(),
    };
    let mut iter = argv.into_iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--status" => flags.action = Action::Status,
            "--stop" => flags.action = Action::Stop,
            "--idle-timeout" => {
                let value = iter.next().ok_or_else(|| {
                    UsageError::new("--idle-timeout needs a value in seconds (e.g. 1800)")
                })?;
                flags.idle = idle_secs(&value)?;
            }
            _ => match arg.strip_prefix("--idle-timeout=") {
                Some(value) => flags.idle = idle_secs(value)?,
                None => flags.rest.push(arg),
            },
        }
    }
    Ok(flags)
}

fn idle_secs(value: &str) -> Result<Duration, UsageError> {
    match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= MAX_IDLE_SECS => {
            Ok(Duration::from_secs_f64(secs))
        }
        _ => Err(UsageError::new(format!(
            "--idle-timeout takes seconds between 0 and {MAX_IDLE_SECS} (a week), given: {value}"
        ))),
    }
}

/// `shardex serve`'s help (its run options are `shardex run`'s).
pub fn command() -> clap::Command {
    use clap::{Arg, ArgAction};
    clap::Command::new("serve")
        .about(
            "Keep this project's imports, Django and pytest's collection warm between runs: \
             `shardex run` uses the daemon while it runs",
        )
        .after_help(
            "Takes `shardex run`'s options and pytest's arguments: the first warm process is \
             built for them (a run with other import-relevant options rebuilds it). The \
             daemon listens on .shardex/daemon.sock in the project root; it rebuilds its warm \
             process when any file it imported changes.",
        )
        .arg(
            Arg::new("status")
                .long("status")
                .action(ArgAction::SetTrue)
                .help("Print the running daemon's state: pid, uptime, warm process, memory"),
        )
        .arg(
            Arg::new("stop")
                .long("stop")
                .action(ArgAction::SetTrue)
                .help("Stop the running daemon"),
        )
        .arg(
            Arg::new("idle-timeout")
                .long("idle-timeout")
                .value_name("SECS")
                .help("Exit after this long without a run [default: 1800]"),
        )
        .arg(
            Arg::new("args")
                .value_name("RUN OPTIONS / PYTEST ARGS")
                .num_args(0..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true),
        )
}

pub fn run(argv: Vec<String>) -> Result<i32, CliError> {
    if argv.first().is_some_and(|a| a == "--help" || a == "-h") {
        let _ = crate::args::cli()
            .try_get_matches_from(["shardex", "serve", "--help"])
            .map_err(|e| e.print());
        return Ok(crate::exit_code::OK);
    }
    let flags = serve_flags(argv)?;
    let cwd = std::env::current_dir()
        .map_err(|err| UsageError::new(format!("cannot read the current directory: {err}")))?;
    let place = Place::for_cwd(&cwd);
    match flags.action {
        Action::Status => Ok(status(&place)),
        Action::Stop => Ok(stop(&place)),
        Action::Serve => serve(place, cwd, flags),
    }
}

fn status(place: &Place) -> i32 {
    match find(place) {
        Found::Connected(mut client) => match client.status() {
            Ok(report) => {
                print!("{}", render_status(&report, client.other_build.as_deref()));
                0
            }
            Err(err) => {
                eprintln!("shardex: the daemon does not answer: {err}");
                1
            }
        },
        Found::Unusable(line) => {
            eprintln!("shardex: {line}");
            1
        }
        Found::None => {
            println!("no daemon serves {}", place.root.display());
            1
        }
    }
}

fn mb(bytes: Option<u64>) -> String {
    bytes.map_or("?".into(), |b| format!("{:.1} MB", b as f64 / 1e6))
}

fn render_status(report: &StatusReport, other_build: Option<&str>) -> String {
    let mut out = format!(
        "shardex daemon for {}: pid {}, up {:.0} s, idle {:.0} s (exits after {:.0} s idle), \
         {} runs served, daemon PSS {}\n",
        report.root.display(),
        report.pid,
        report.uptime_secs,
        report.idle_secs,
        report.idle_limit_secs,
        report.runs,
        mb(report.daemon_pss),
    );
    match &report.base {
        Some(base) => out.push_str(&format!(
            "  warm: pid {}, generation {}, built in {:.2} s, {} modules, {} files watched, PSS {}\n",
            base.pid,
            base.generation,
            base.build_secs,
            base.modules,
            base.watched,
            mb(base.pss)
        )),
        None => out.push_str("  warm: none\n"),
    }
    if let Some(building) = &report.building {
        out.push_str(&format!("  building: {building}\n"));
    } else if let Some(last) = &report.last_rebuild {
        out.push_str(&format!("  last build: {last}\n"));
    }
    match report.busy_with {
        Some(pid) => out.push_str(&format!("  serving the run of pid {pid}\n")),
        None => out.push_str("  no run in progress\n"),
    }
    if let Some(line) = other_build {
        out.push_str(&format!("  note: {line}\n"));
    }
    out
}

fn stop(place: &Place) -> i32 {
    match find(place) {
        Found::Connected(mut client) => {
            let pid = client.daemon_pid;
            if let Err(err) = client.stop() {
                eprintln!("shardex: the daemon does not answer: {err}");
                return 1;
            }
            // It has stopped when it let go of its lock.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while lock_is_held(place) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            println!(
                "stopped the daemon for {} (pid {pid})",
                place.root.display()
            );
            0
        }
        Found::Unusable(line) => {
            eprintln!("shardex: {line}");
            0
        }
        Found::None => {
            println!("no daemon serves {}", place.root.display());
            0
        }
    }
}

fn serve(place: Place, cwd: PathBuf, flags: ServeFlags) -> Result<i32, CliError> {
    let (consumed, pytest_args) = split_args(flags.rest)?;
    let file = FileSettings::discover(&cwd)?;
    let settings = Settings::resolve(
        consumed,
        pytest_args,
        &|name| std::env::var(name).ok(),
        file.as_ref(),
    )?;
    let python = find_python_from(
        settings
            .python
            .as_ref()
            .map(|p| (p.path.as_path(), p.origin.as_str())),
    )?;
    let workers = settings.workers(sizing::auto_workers(), sizing::logical_workers());
    let output = crate::reporter::ReporterOptions::detect();
    let config = crate::commands::run::run_config(&settings, &python, cwd, workers, &output);
    let first = request_for(&config);
    let io_err =
        |doing: String| move |err: std::io::Error| UsageError::new(format!("{doing}: {err}"));
    place
        .prepare()
        .map_err(io_err(format!("cannot use {}", place.dir.display())))?;
    let lock = place
        .take_lock()
        .map_err(io_err(format!("cannot open {}", place.lock().display())))?;
    let Some(lock) = lock else {
        eprintln!(
            "shardex: a daemon already serves {} (pid {}); `shardex serve --stop` ends it",
            place.root.display(),
            place.lock_holder()
        );
        return Ok(1);
    };
    let plugin_dir = private_plugin_dir().map_err(io_err("cannot write the plugin".into()))?;
    let socket = place.socket();
    // We hold the lock: a socket left there is a dead daemon's.
    let _ = std::fs::remove_file(&socket);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let config = ServeConfig {
        place: place.clone(),
        first,
        plugin_dir: plugin_dir.clone(),
        idle_limit: flags.idle,
    };
    let root = place.root.clone();
    let reason = runtime.block_on(async move {
        let (path, _open_folder) = addressable(&socket)?;
        let listener = tokio::net::UnixListener::bind(&path)?;
        std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        eprintln!(
            "shardex: serving {} (pid {}); runs in it use this daemon; idle limit {} s",
            root.display(),
            std::process::id(),
            flags.idle.as_secs()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let served = Daemon::new(config).serve(listener);
        tokio::pin!(served);
        loop {
            tokio::select! {
                why = &mut served => return Ok::<String, std::io::Error>(why),
                _ = tokio::signal::ctrl_c() => return Ok("interrupted".into()),
                _ = term.recv() => return Ok("SIGTERM".into()),
                _ = hangup.recv() => {} // the terminal went away: a daemon stays
            }
        }
    });
    // The socket goes first: a run that comes now finds no daemon rather than a dead one.
    let _ = std::fs::remove_file(place.socket());
    let _ = std::fs::remove_dir_all(&plugin_dir);
    // A lock file left behind means a daemon that died (see client::find).
    let _ = std::fs::remove_file(place.lock());
    drop(lock);
    match reason {
        Ok(why) => {
            eprintln!("shardex: daemon stopped: {why}");
            Ok(0)
        }
        Err(err) => Err(UsageError::new(format!("the daemon could not serve: {err}")).into()),
    }
}

/// The daemon's own copy of the plugin (the base imports it), in a folder only we can read.
fn private_plugin_dir() -> std::io::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("shardex-daemon-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir)?;
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    shardex_agent::plugin::install(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn serve_flags_are_taken_out_and_the_rest_kept_in_order() {
        let flags = serve_flags(argv(&[
            "-n",
            "2",
            "--idle-timeout",
            "60",
            "tests",
            "--status",
        ]))
        .unwrap();
        assert_eq!(flags.action, Action::Status);
        assert_eq!(flags.idle, Duration::from_secs(60));
        assert_eq!(flags.rest, argv(&["-n", "2", "tests"]));
        let flags = serve_flags(argv(&["--idle-timeout=1.5"])).unwrap();
        assert_eq!(flags.idle, Duration::from_millis(1500));
    }

    #[test]
    fn a_bad_idle_timeout_is_one_line() {
        for bad in [
            &["--idle-timeout", "0"][..],
            &["--idle-timeout=abc"],
            &["--idle-timeout"],
            &["--idle-timeout", "1e9"],
        ] {
            let err = serve_flags(argv(bad)).unwrap_err();
            assert!(!err.to_string().contains('\n'), "{err}");
            assert!(err.to_string().contains("--idle-timeout"), "{err}");
        }
    }
}
