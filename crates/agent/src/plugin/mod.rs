//! The embedded Python plugin (the `shardex_plugin` package), written to a private folder
//! at start and loaded with `-p`.

use std::path::{Path, PathBuf};

/// The package's import name.
pub const MODULE_NAME: &str = "shardex_plugin";

/// The package's files (name, source), embedded in the binary.
pub const FILES: &[(&str, &str)] = &[
    ("__init__.py", include_str!("shardex_plugin/__init__.py")),
    ("channel.py", include_str!("shardex_plugin/channel.py")),
    (
        "controller.py",
        include_str!("shardex_plugin/controller.py"),
    ),
    ("cov.py", include_str!("shardex_plugin/cov.py")),
    ("ending.py", include_str!("shardex_plugin/ending.py")),
    ("internals.py", include_str!("shardex_plugin/internals.py")),
    ("junit.py", include_str!("shardex_plugin/junit.py")),
    ("plugin.py", include_str!("shardex_plugin/plugin.py")),
    ("relay.py", include_str!("shardex_plugin/relay.py")),
    ("reports.py", include_str!("shardex_plugin/reports.py")),
    ("retries.py", include_str!("shardex_plugin/retries.py")),
    ("settings.py", include_str!("shardex_plugin/settings.py")),
    ("worker.py", include_str!("shardex_plugin/worker.py")),
    ("zygote.py", include_str!("shardex_plugin/zygote.py")),
];

/// Writes the package into `dir/shardex_plugin` (created if needed) and returns `dir`, the
/// folder to put on `PYTHONPATH`.
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
    fn install_writes_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let root = install(dir.path()).unwrap();
        for (name, source) in FILES {
            let written = std::fs::read_to_string(root.join(MODULE_NAME).join(name)).unwrap();
            assert_eq!(&written, source);
        }
    }
}
