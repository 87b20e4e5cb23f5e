//! The embedded Python plugin (the `shardex_plugin` package), written to the run folder at
//! start and loaded by a bootstrap (`python -c BOOTSTRAP`, see [`launch_args`]) that leaves
//! no trace the tests could see: no `PYTHONPATH`, no `sys.path` entry, no environment
//! variable (it takes the launch variables out of `os.environ` before pytest starts).

use std::path::{Path, PathBuf};

/// Environment variables the bootstrap reads and removes at once: the process's role
/// (`zygote` or `worker`), the agent's socket and, when the launcher gives one, a secret
/// the plugin sends back in its hello.
pub const ENV_MODE: &str = "SHARDEX_MODE";
pub const ENV_SOCKET: &str = "SHARDEX_SOCKET";
pub const ENV_SECRET: &str = "SHARDEX_SECRET";

/// Run with `python -c BOOTSTRAP PACKAGE_DIR PYTEST_ARGS...`: imports the package from
/// PACKAGE_DIR (nothing added to `sys.path`), then runs pytest exactly as
/// `python -m pytest PYTEST_ARGS` would: pytest's `__main__` run as `__main__` with runpy
/// (`sys.argv[0]` its file, the exit code its `SystemExit`), `sys.path[0]` the working
/// directory (unless `-P`/`PYTHONSAFEPATH`). Not `pytest.console_main()`: pytest 9.1
/// deprecates calling it.
pub const BOOTSTRAP: &str = r#"import sys
def _shardex_main():
    import importlib.util
    import os
    package = sys.argv.pop(1)
    launch = {
        key: os.environ.pop(var, "")
        for key, var in (("mode", "SHARDEX_MODE"), ("socket", "SHARDEX_SOCKET"), ("secret", "SHARDEX_SECRET"))
    }
    if sys.path and sys.path[0] == "":
        sys.path[0] = os.getcwd()
    spec = importlib.util.spec_from_file_location(
        "shardex_plugin", os.path.join(package, "__init__.py"), submodule_search_locations=[package]
    )
    plugin = importlib.util.module_from_spec(spec)
    sys.modules["shardex_plugin"] = plugin
    spec.loader.exec_module(plugin)
    plugin.launched(**launch)
    import runpy
    # What `-m pytest` runs, as `-m` runs it: sys.argv[0] and __main__ are pytest's.
    runpy.run_module("pytest", run_name="__main__", alter_sys=True)
_shardex_main()
"#;

/// The environment variable that tells the daemon's base process (see
/// [`base_launch_args`]) which fd is its socket to the daemon; popped at once.
pub const ENV_BASE_FD: &str = "SHARDEX_BASE_FD";

/// Run with `python -c BASE_BOOTSTRAP PACKAGE_DIR PYTEST_ARGS...` (the daemon's warm base,
/// `daemon::base`): imports the package from PACKAGE_DIR as [`BOOTSTRAP`] does (nothing
/// added to `sys.path`), takes its socket's fd out of `SHARDEX_BASE_FD`, and hands over to
/// `shardex_plugin.base.serve`, which warms pytest up with PYTEST_ARGS and forks each run's
/// zygote. `sys.path[0]` is the working directory, as with [`BOOTSTRAP`]; `serve` is told
/// whether it was (so each fork sets it to the run's directory, or leaves it under `-P`).
pub const BASE_BOOTSTRAP: &str = r#"import sys
def _shardex_base():
    import importlib.util
    import os
    package = sys.argv.pop(1)
    fd = int(os.environ.pop("SHARDEX_BASE_FD"))
    cwd_first = bool(sys.path) and sys.path[0] == ""
    if cwd_first:
        sys.path[0] = os.getcwd()
    if fd == 0:
        # The socket came as stdin: moved off it, and stdin reads nothing, as in a run.
        fd = os.dup(0)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    spec = importlib.util.spec_from_file_location(
        "shardex_plugin", os.path.join(package, "__init__.py"), submodule_search_locations=[package]
    )
    plugin = importlib.util.module_from_spec(spec)
    sys.modules["shardex_plugin"] = plugin
    spec.loader.exec_module(plugin)
    import importlib
    importlib.import_module("shardex_plugin.base").serve(fd, sys.argv[1:], cwd_first)
_shardex_base()
"#;

/// The package's import name.
pub const MODULE_NAME: &str = "shardex_plugin";

/// The package's files (name, source), embedded in the binary.
pub const FILES: &[(&str, &str)] = &[
    ("__init__.py", include_str!("shardex_plugin/__init__.py")),
    ("base.py", include_str!("shardex_plugin/base.py")),
    (
        "base_child.py",
        include_str!("shardex_plugin/base_child.py"),
    ),
    ("channel.py", include_str!("shardex_plugin/channel.py")),
    ("consumed.py", include_str!("shardex_plugin/consumed.py")),
    (
        "controller.py",
        include_str!("shardex_plugin/controller.py"),
    ),
    ("cov.py", include_str!("shardex_plugin/cov.py")),
    ("dbclone.py", include_str!("shardex_plugin/dbclone.py")),
    (
        "early_stop.py",
        include_str!("shardex_plugin/early_stop.py"),
    ),
    ("ending.py", include_str!("shardex_plugin/ending.py")),
    ("forkcheck.py", include_str!("shardex_plugin/forkcheck.py")),
    ("internals.py", include_str!("shardex_plugin/internals.py")),
    ("junit.py", include_str!("shardex_plugin/junit.py")),
    ("learn.py", include_str!("shardex_plugin/learn.py")),
    ("plugin.py", include_str!("shardex_plugin/plugin.py")),
    ("relay.py", include_str!("shardex_plugin/relay.py")),
    ("reports.py", include_str!("shardex_plugin/reports.py")),
    ("retries.py", include_str!("shardex_plugin/retries.py")),
    (
        "session_end.py",
        include_str!("shardex_plugin/session_end.py"),
    ),
    ("settings.py", include_str!("shardex_plugin/settings.py")),
    ("wire.py", include_str!("shardex_plugin/wire.py")),
    ("worker.py", include_str!("shardex_plugin/worker.py")),
    ("zygote.py", include_str!("shardex_plugin/zygote.py")),
];

/// The interpreter arguments that start pytest with the plugin installed in `dir` (see
/// [`install`]) registered (`-p shardex_plugin`): pytest's own arguments follow.
pub fn launch_args(dir: &Path) -> Vec<String> {
    vec![
        "-c".to_owned(),
        BOOTSTRAP.to_owned(),
        dir.join(MODULE_NAME).display().to_string(),
        "-p".to_owned(),
        MODULE_NAME.to_owned(),
    ]
}

/// The interpreter arguments that start the daemon's base process with the plugin
/// installed in `dir` (see [`install`]): the pytest arguments of the runs it serves follow
/// (without `-p shardex_plugin`: the base loads the package as a module, not as a plugin),
/// and its socket's fd is given in [`ENV_BASE_FD`].
pub fn base_launch_args(dir: &Path) -> Vec<String> {
    vec![
        "-c".to_owned(),
        BASE_BOOTSTRAP.to_owned(),
        dir.join(MODULE_NAME).display().to_string(),
    ]
}

/// Writes the package into `dir/shardex_plugin` (created if needed) and returns `dir`, what
/// [`launch_args`] takes.
pub fn install(dir: &Path) -> std::io::Result<PathBuf> {
    let package = dir.join(MODULE_NAME);
    std::fs::create_dir_all(&package)?;
    for (name, source) in FILES {
        let path = package.join(name);
        // Written only when changed, through a rename: concurrent runs may share the folder.
        if std::fs::read_to_string(&path).ok().as_deref() != Some(*source) {
            let tmp = package.join(format!(".{name}.{}.tmp", std::process::id()));
            std::fs::write(&tmp, source)?;
            std::fs::rename(&tmp, &path)?;
        }
    }
    Ok(dir.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_of_the_package_is_embedded() {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/plugin/shardex_plugin");
        let mut on_disk: Vec<String> = std::fs::read_dir(&folder)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".py"))
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = FILES.iter().map(|(name, _)| *name).collect();
        assert_eq!(on_disk, embedded, "FILES must list every module, sorted");
    }

    #[test]
    fn the_bootstrap_takes_the_launch_variables_out() {
        for var in [ENV_MODE, ENV_SOCKET, ENV_SECRET] {
            assert!(
                BOOTSTRAP.contains("os.environ.pop(var")
                    && BOOTSTRAP.contains(&format!("\"{var}\"")),
                "{var} must be popped by the bootstrap"
            );
        }
        let args = launch_args(Path::new("/run/py"));
        assert_eq!(args[0], "-c");
        assert_eq!(args[2], "/run/py/shardex_plugin");
        assert_eq!(&args[3..], ["-p", MODULE_NAME]);
    }

    #[test]
    fn the_base_bootstrap_pops_its_fd_and_serves() {
        assert!(BASE_BOOTSTRAP.contains(&format!("os.environ.pop(\"{ENV_BASE_FD}\")")));
        assert!(BASE_BOOTSTRAP.contains("shardex_plugin.base\").serve(fd, sys.argv[1:]"));
        let args = base_launch_args(Path::new("/run/py"));
        assert_eq!(args, ["-c", BASE_BOOTSTRAP, "/run/py/shardex_plugin"]);
    }

    #[test]
    fn install_writes_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let root = install(dir.path()).unwrap();
        for (name, source) in FILES {
            let written = std::fs::read_to_string(root.join(MODULE_NAME).join(name)).unwrap();
            assert_eq!(&written, source);
        }
    }
}
