//! The code a run ran on, for the history of outcomes (`shardex_core::history`): git's
//! commit plus a digest of the uncommitted changes' content, or outside git a digest of the
//! test files (and their conftest.py files). Two runs on the same code get the same identity,
//! so a test that passed in one and failed in the other is flaky rather than fixed.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use shardex_core::history::{digest, RunIdentity};

/// Changed files up to this size are hashed by content, larger ones by size and mtime.
const CONTENT_LIMIT: u64 = 1 << 20;

/// A new run's identity: now, on the code found at `rootdir` (`test_files` relative to it).
pub fn run_identity<'a>(
    rootdir: &Path,
    test_files: impl IntoIterator<Item = &'a str>,
) -> RunIdentity {
    let code = code_identity(rootdir, test_files);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let salt = format!("{} {}", std::process::id(), now.as_nanos());
    RunIdentity::new(code, now.as_secs(), salt.as_bytes())
}

/// `git:<commit>[+<changes>]`, else `files:<digest>`, else "" (unknown).
pub fn code_identity<'a>(rootdir: &Path, test_files: impl IntoIterator<Item = &'a str>) -> String {
    git_identity(rootdir).unwrap_or_else(|| files_identity(rootdir, test_files))
}

fn git(dir: &Path, args: &[&str]) -> Option<Vec<u8>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        // `git status` must not take the index lock: the user's own git may be running.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

fn git_identity(rootdir: &Path) -> Option<String> {
    let top = git(rootdir, &["rev-parse", "--show-toplevel"])?;
    let top = String::from_utf8(top).ok()?;
    let top = Path::new(top.trim_end_matches('\n'));
    // A repository without a commit yet is still one: its changes say what ran.
    let head = git(top, &["rev-parse", "--verify", "-q", "HEAD"])
        .and_then(|h| String::from_utf8(h).ok())
        .map_or_else(
            || "none".to_owned(),
            |h| h.trim().chars().take(12).collect(),
        );
    let status = git(
        top,
        &["status", "--porcelain", "-z", "--untracked-files=all"],
    )?;
    let changes = changed_paths(&status);
    if changes.is_empty() {
        return Some(format!("git:{head}"));
    }
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for (state, path) in &changes {
        parts.push(format!("{state} {path}").into_bytes());
        parts.push(file_fingerprint(&top.join(path)));
    }
    let changed = digest(parts.iter().map(Vec::as_slice), 8);
    Some(format!("git:{head}+{changed}"))
}

/// The changes that can change what a test does, from `git status --porcelain -z`: every
/// tracked file, untracked source and config files; never caches and shardex's own files
/// (the store changes at every run), nor other untracked files (reports, logs).
fn changed_paths(status: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut fields = status.split(|&b| b == 0).filter(|f| !f.is_empty());
    while let Some(field) = fields.next() {
        let text = String::from_utf8_lossy(field);
        let (Some(state), Some(path)) = (text.get(..2), text.get(3..)) else {
            continue;
        };
        if state.contains('R') || state.contains('C') {
            // A rename or copy names its source next.
            fields.next();
        }
        let cache = path
            .split('/')
            .any(|part| matches!(part, ".shardex" | ".pytest_cache" | "__pycache__" | ".git"))
            || path.ends_with(".pyc");
        let untracked = state == "??";
        let source = [".py", ".pyi", ".pyx", ".ini", ".cfg", ".toml"]
            .iter()
            .any(|ext| path.ends_with(ext));
        if !cache && (!untracked || source) {
            out.push((state.to_owned(), path.to_owned()));
        }
    }
    out.sort();
    out
}

/// The content of a small file, the size and mtime of a large one, nothing for a missing one.
fn file_fingerprint(path: &Path) -> Vec<u8> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Vec::new();
    };
    if meta.is_file() && meta.len() <= CONTENT_LIMIT {
        if let Ok(bytes) = std::fs::read(path) {
            return bytes;
        }
    }
    let mtime = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    format!("{} {}", meta.len(), mtime.as_nanos()).into_bytes()
}

/// Outside git: the test files and the conftest.py files above them, by content.
fn files_identity<'a>(rootdir: &Path, test_files: impl IntoIterator<Item = &'a str>) -> String {
    let mut files: BTreeSet<String> = BTreeSet::new();
    for file in test_files {
        files.insert(file.to_owned());
        let mut dir = Path::new(file).parent();
        while let Some(d) = dir {
            files.insert(d.join("conftest.py").to_string_lossy().into_owned());
            dir = d.parent();
        }
    }
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for file in &files {
        let path = rootdir.join(file);
        if path.is_file() {
            parts.push(file.as_bytes().to_vec());
            parts.push(file_fingerprint(&path));
        }
    }
    if parts.is_empty() {
        return String::new();
    }
    format!("files:{}", digest(parts.iter().map(Vec::as_slice), 12))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn sh_git(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("git")
            .success();
        assert!(ok, "git {args:?}");
    }

    #[test]
    fn outside_git_the_test_files_decide() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("sub")).unwrap();
        fs::write(d.join("sub/test_a.py"), "def test_a(): pass\n").unwrap();
        fs::write(d.join("conftest.py"), "").unwrap();
        fs::write(d.join("counter.txt"), "1").unwrap();
        let files = ["sub/test_a.py"];
        let first = code_identity(d, files);
        assert!(first.starts_with("files:"), "{first}");
        fs::write(d.join("counter.txt"), "2").unwrap();
        assert_eq!(code_identity(d, files), first, "other files do not count");
        fs::write(d.join("conftest.py"), "x = 1\n").unwrap();
        assert_ne!(code_identity(d, files), first, "a conftest.py above counts");
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            code_identity(empty.path(), ["gone.py"]),
            "",
            "nothing readable: unknown"
        );
    }

    #[test]
    fn in_git_the_commit_and_the_changes_decide() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        sh_git(d, &["init", "-q"]);
        fs::write(d.join("test_a.py"), "def test_a(): pass\n").unwrap();
        fs::write(d.join("data.json"), "{}").unwrap();
        sh_git(d, &["add", "."]);
        sh_git(d, &["commit", "-q", "-m", "one"]);
        let clean = code_identity(d, ["test_a.py"]);
        assert!(clean.starts_with("git:") && clean.len() == 16, "{clean}");
        // The store, caches and untracked reports leave the code as it was.
        fs::create_dir_all(d.join(".shardex")).unwrap();
        fs::write(d.join(".shardex/timings.json"), "{}").unwrap();
        fs::create_dir_all(d.join("__pycache__")).unwrap();
        fs::write(d.join("__pycache__/x.pyc"), "x").unwrap();
        fs::write(d.join("junit.xml"), "<x/>").unwrap();
        assert_eq!(code_identity(d, ["test_a.py"]), clean);
        // A changed tracked file, by content: the same change is the same code.
        fs::write(d.join("data.json"), "{\"a\": 1}").unwrap();
        let dirty = code_identity(d, ["test_a.py"]);
        assert!(dirty.starts_with(&format!("{clean}+")), "{dirty}");
        assert_eq!(code_identity(d, ["test_a.py"]), dirty);
        fs::write(d.join("data.json"), "{\"a\": 2}").unwrap();
        assert_ne!(code_identity(d, ["test_a.py"]), dirty);
        fs::write(d.join("data.json"), "{}").unwrap();
        assert_eq!(code_identity(d, ["test_a.py"]), clean);
        // A new test module counts though untracked.
        fs::write(d.join("test_b.py"), "").unwrap();
        assert_ne!(code_identity(d, ["test_a.py"]), clean);
        // From a folder below the top too.
        fs::create_dir_all(d.join("sub")).unwrap();
        assert_eq!(
            code_identity(&d.join("sub"), ["x.py"]),
            code_identity(d, ["test_a.py"])
        );
    }

    #[test]
    fn run_ids_differ() {
        let dir = tempfile::tempdir().unwrap();
        let a = run_identity(dir.path(), []);
        let b = run_identity(dir.path(), []);
        assert_ne!(a.id, b.id);
        assert_eq!(a.code, "");
    }
}
