//! Helpers shared by the tests that run real pytest processes (`run_real.rs`,
//! `daemon_base.rs`): the project's venv and small suites in temporary folders.
#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};

/// The project's venv's python (`scripts/setup.sh` makes it).
pub fn venv_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh",
        python.display()
    );
    python
}

/// A temporary folder with a `pytest.ini` and `files` (paths relative to it).
pub fn suite(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pytest.ini"), "[pytest]\n").unwrap();
    for (name, body) in files {
        write(&dir.path().join(name), body);
    }
    dir
}

/// Writes `body` to `path`, making its folders.
pub fn write(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}
