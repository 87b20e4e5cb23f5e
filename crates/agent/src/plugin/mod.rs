//! The embedded Python plugin, written to a private folder at start and loaded with `-p`.

use std::path::{Path, PathBuf};

pub const MODULE_NAME: &str = "shardex_worker";
pub const SOURCE: &str = include_str!("shardex_worker.py");

/// Writes the plugin into `dir` (created if needed) and returns the folder to put on
/// `PYTHONPATH`.
pub fn install(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{MODULE_NAME}.py"));
    // Written only when changed: concurrent runs share the folder.
    if std::fs::read_to_string(&path).ok().as_deref() != Some(SOURCE) {
        let tmp = dir.join(format!(".{MODULE_NAME}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, SOURCE)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(dir.to_owned())
}
