//! Which picture `--timeline PATH` asks for: decided by the file's extension.

use std::path::Path;

use crate::errors::UsageError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimelineFormat {
    Html,
    Svg,
}

impl TimelineFormat {
    /// `.html`/`.htm` or `.svg` (any case); anything else is a usage error, before the run.
    pub fn from_path(path: &Path) -> Result<Self, UsageError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("html" | "htm") => Ok(Self::Html),
            Some("svg") => Ok(Self::Svg),
            _ => Err(UsageError::new(format!(
                "--timeline must end in .html or .svg, given: {}",
                path.display()
            ))),
        }
    }
}
