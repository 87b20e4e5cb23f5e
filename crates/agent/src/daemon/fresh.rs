//! The effects behind "never stale": stat the watch set, forget the bytecode of changed
//! files, compute what a run's base must be built for; and the memory figure of status.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use shardex_core::daemon_key::BaseKey;
use shardex_core::fileset::{Change, ChangeKind, Snapshot, Stamp};

use super::wire::LaunchRequest;

/// The stamp of every path now (`None` for a missing one).
pub fn snapshot<'a>(paths: impl Iterator<Item = &'a Path>) -> Snapshot {
    Snapshot::from_stamps(paths.map(|path| (path.to_owned(), stamp(path))))
}

pub fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        size: meta.size(),
        inode: meta.ino(),
    })
}

/// Removes the cached bytecode of changed `.py` files: Python trusts a `.pyc` whose
/// recorded whole-second mtime and size match, so an edit of the same size within the
/// same second would otherwise run the old code.
pub fn forget_bytecode(changes: &[Change]) {
    for change in changes.iter().filter(|c| c.kind != ChangeKind::Created) {
        for pyc in cached_bytecode(&change.path) {
            let _ = std::fs::remove_file(pyc);
        }
    }
}

/// `dir/__pycache__/stem.*.pyc` of `dir/stem.py`.
fn cached_bytecode(source: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(stem)) = (source.parent(), source.file_stem()) else {
        return Vec::new();
    };
    if source.extension().is_none_or(|e| e != "py") {
        return Vec::new();
    }
    let prefix = format!("{}.", stem.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir.join("__pycache__")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".pyc"))
        })
        .collect()
}

/// What a base must have been built for to serve `request`. A positional argument that
/// names an existing path (with `::…` cut off) is a test path, which does not matter.
pub fn key_of(request: &LaunchRequest) -> BaseKey {
    let env: Vec<(String, String)> = request
        .env
        .iter()
        .filter(|(name, _)| !name.starts_with("SHARDEX_"))
        .cloned()
        .collect();
    BaseKey::new(
        request.python.clone(),
        request.cwd.clone(),
        &env,
        &request.pytest_args,
        |arg| {
            let path = arg.split("::").next().unwrap_or(arg);
            !path.is_empty() && request.cwd.join(path).exists()
        },
    )
}

/// A process's proportional set size (`/proc/PID/smaps_rollup`), in bytes.
pub fn pss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_loses_its_bytecode_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("__pycache__");
        std::fs::create_dir_all(&cache).unwrap();
        for name in [
            "app.cpython-311.pyc",
            "app.cpython-312.pyc",
            "apples.cpython-311.pyc",
        ] {
            std::fs::write(cache.join(name), "").unwrap();
        }
        let before = snapshot([dir.path().join("app.py")].iter().map(PathBuf::as_path));
        std::fs::write(dir.path().join("app.py"), "x = 1\n").unwrap();
        let after = snapshot([dir.path().join("app.py")].iter().map(PathBuf::as_path));
        let mut changes = before.changes(&after);
        assert_eq!(changes.len(), 1);
        // A created file has no stale bytecode; say modified to exercise the removal.
        changes[0].kind = ChangeKind::Modified;
        forget_bytecode(&changes);
        let left: Vec<String> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["apples.cpython-311.pyc"]);
    }

    #[test]
    fn test_paths_do_not_change_the_key_but_options_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tests")).unwrap();
        std::fs::write(dir.path().join("tests/test_a.py"), "").unwrap();
        let request = |args: &[&str]| LaunchRequest {
            python: "/venv/bin/python".into(),
            pytest_args: args.iter().map(|s| (*s).to_owned()).collect(),
            cwd: dir.path().to_owned(),
            env: vec![
                ("SHARDEX_SOCKET".into(), "/x".into()),
                ("PATH".into(), "/bin".into()),
            ],
        };
        let all = key_of(&request(&["-p", "shardex_plugin"]));
        let one = key_of(&request(&[
            "-p",
            "shardex_plugin",
            "tests/test_a.py::test_x",
            "-x",
        ]));
        assert!(all.differences(&one).is_empty());
        let other = key_of(&request(&["-p", "shardex_plugin", "--ds", "other"]));
        assert!(!all.differences(&other).is_empty());
    }

    #[test]
    fn this_process_has_a_proportional_set_size() {
        assert!(pss_bytes(std::process::id()).is_some_and(|b| b > 0));
    }
}
