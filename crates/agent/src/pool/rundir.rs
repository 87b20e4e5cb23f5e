//! The run folder: a private directory for one pool (socket, plugin, per-worker stderr, spool
//! and capture files), removed when the pool ends.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A fresh folder of mode 0700 that only this process created; removed on drop.
#[derive(Debug)]
pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    /// Creates `<tmp>/shardex-<pid>-<nanos>`. An existing path is refused, never reused:
    /// another user could have prepared it to read our files or answer on our socket.
    pub fn create() -> std::io::Result<Self> {
        Self::create_in(&std::env::temp_dir())
    }

    pub fn create_in(parent: &Path) -> std::io::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // Short: a Unix socket path must fit in 108 bytes.
        Self::create_at(parent.join(format!("shardex-{}-{nanos:x}", std::process::id())))
    }

    /// Creates exactly `path` (its parent must exist); fails if anything is there already.
    pub fn create_at(path: PathBuf) -> std::io::Result<Self> {
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        // The umask may have taken bits away, never added them; make sure of 0700 anyway.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self { path })
    }

    /// Removes the files a run leaves (worker spools, capture and stderr files); keeps the
    /// socket and the plugin.
    pub fn clear_run_files(&self) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.path)? {
            let path = entry?.path();
            let per_run = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e == "results" || e == "err" || e.starts_with("capture"));
            if per_run {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    pub fn socket(&self) -> PathBuf {
        self.path.join("agent.sock")
    }

    pub fn plugin_dir(&self) -> PathBuf {
        self.path.join("py")
    }

    pub fn stderr_file(&self, slot: &str) -> PathBuf {
        self.path.join(format!("{slot}.err"))
    }

    /// Where a worker appends each result before sending it (see `Run::recover_spooled`).
    pub fn results_file(&self, slot: &str) -> PathBuf {
        self.path.join(format!("{slot}.results"))
    }

    /// pytest's capture files of a worker (what a crashed test had printed).
    pub fn capture_file(&self, slot: &str, index: u8) -> PathBuf {
        self.path.join(format!("{slot}.capture{index}"))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_private_and_removed() {
        let parent = tempfile::tempdir().unwrap();
        let dir = RunDir::create_in(parent.path()).unwrap();
        let mode = std::fs::metadata(&dir.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let path = dir.path.clone();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn an_existing_path_is_refused() {
        let parent = tempfile::tempdir().unwrap();
        let prepared = parent.path().join("shardex-prepared");
        std::fs::create_dir(&prepared).unwrap();
        std::fs::set_permissions(&prepared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = RunDir::create_at(prepared.clone()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert!(
            prepared.exists(),
            "a refused folder is left alone, not removed"
        );
    }
}
