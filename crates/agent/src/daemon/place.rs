//! Where a project's daemon lives: `<root>/.shardex/` (mode 0700) holds `daemon.sock`
//! (0600), `daemon.lock` (held with `flock` by the live daemon: a socket whose lock is free
//! is stale) and `daemon.log`. The root is the nearest folder, from the working directory
//! up, with a pytest or project configuration file.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `sun_path` holds 108 bytes with its NUL: a longer path is reached through
/// `/proc/self/fd/N` of the open folder.
const SUN_PATH_MAX: usize = 107;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub root: PathBuf,
    pub dir: PathBuf,
}

impl Place {
    pub fn of_root(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            dir: root.join(".shardex"),
        }
    }

    /// The project root for `cwd`: the nearest folder with a configuration file, else `cwd`.
    pub fn for_cwd(cwd: &Path) -> Self {
        let root = cwd
            .ancestors()
            .find(|dir| {
                shardex_core::PYTEST_INI_FILES
                    .iter()
                    .any(|name| dir.join(name).is_file())
            })
            .unwrap_or(cwd);
        Self::of_root(root)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("daemon.sock")
    }

    pub fn lock(&self) -> PathBuf {
        self.dir.join("daemon.lock")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// Makes `.shardex/` (0700 when we create it) and checks that it is ours and closed to
    /// others: a socket in a folder another user can write to could be replaced.
    pub fn prepare(&self) -> std::io::Result<()> {
        if !self.dir.exists() {
            std::fs::create_dir_all(&self.dir)?;
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        }
        check_private(&self.dir, 0o022)
    }
}

/// The live daemon's hold on its project (released when dropped, or when it dies).
#[derive(Debug)]
pub struct DaemonLock {
    _held: nix::fcntl::Flock<std::fs::File>,
}

impl Place {
    /// Takes the project's daemon lock and writes this process's pid in it; None when a
    /// live daemon holds it.
    pub fn take_lock(&self) -> std::io::Result<Option<DaemonLock>> {
        use std::io::{Seek, Write};
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(self.lock())?;
        let Ok(mut held) =
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        else {
            return Ok(None);
        };
        held.set_len(0)?;
        held.rewind()?;
        write!(*held, "{}", std::process::id())?;
        Ok(Some(DaemonLock { _held: held }))
    }

    /// The pid the lock's holder wrote, as text ("" when unknown).
    pub fn lock_holder(&self) -> String {
        std::fs::read_to_string(self.lock())
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}

/// An error unless `path` belongs to this user and has none of `forbidden` mode bits.
pub fn check_private(path: &Path, forbidden: u32) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    let uid = nix::unistd::getuid().as_raw();
    if meta.uid() != uid {
        return Err(std::io::Error::other(format!(
            "{} belongs to user {}, not to this user ({uid})",
            path.display(),
            meta.uid()
        )));
    }
    if meta.mode() & forbidden != 0 {
        return Err(std::io::Error::other(format!(
            "{} is open to other users (mode {:o})",
            path.display(),
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

/// A path to `socket` that fits in `sun_path`: itself, or through the open folder
/// (`/proc/self/fd/N/daemon.sock`; the returned file keeps N open while it is used).
pub fn addressable(socket: &Path) -> std::io::Result<(PathBuf, Option<std::fs::File>)> {
    if socket.as_os_str().len() <= SUN_PATH_MAX {
        return Ok((socket.to_owned(), None));
    }
    let dir = socket.parent().unwrap_or(Path::new("."));
    let name = socket.file_name().unwrap_or_default();
    let folder = std::fs::File::open(dir)?;
    let path = Path::new("/proc/self/fd")
        .join(std::os::fd::AsRawFd::as_raw_fd(&folder).to_string())
        .join(name);
    Ok((path, Some(folder)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_the_nearest_folder_with_a_configuration_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("proj");
        std::fs::create_dir_all(root.join("tests/unit")).unwrap();
        std::fs::write(root.join("pytest.ini"), "[pytest]\n").unwrap();
        assert_eq!(Place::for_cwd(&root.join("tests/unit")).root, root);
        let bare = dir.path().join("bare");
        std::fs::create_dir_all(&bare).unwrap();
        assert_eq!(Place::for_cwd(&bare).root, bare);
    }

    #[test]
    fn the_folder_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let place = Place::of_root(dir.path());
        place.prepare().unwrap();
        let mode = std::fs::metadata(&place.dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&place.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = place.prepare().unwrap_err();
        assert!(err.to_string().contains("open to other users"), "{err}");
    }

    #[test]
    fn a_long_socket_path_is_reached_through_the_open_folder() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(120));
        std::fs::create_dir_all(&deep).unwrap();
        let socket = deep.join("daemon.sock");
        let (path, folder) = addressable(&socket).unwrap();
        assert!(
            folder.is_some() && path.as_os_str().len() <= SUN_PATH_MAX,
            "{path:?}"
        );
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(socket.exists());
        let (short, _open_folder) = addressable(&socket).unwrap();
        std::os::unix::net::UnixStream::connect(short).unwrap();
        drop(listener);
    }
}
