//! `TestId` (a pytest nodeid) and `WorkerId` (a stable slot `gwN`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A pytest nodeid such as `tests/test_a.py::TestCls::test_x[1-2]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TestId(String);

impl TestId {
    pub fn new(nodeid: impl Into<String>) -> Self {
        Self(nodeid.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The file part: everything before the first `::`.
    pub fn file(&self) -> &str {
        self.0.split("::").next().unwrap_or(&self.0)
    }

    /// The scope xdist's `loadscope` groups by: the nodeid without its last `::` part
    /// (class if there is one, else the module). Parameters are ignored when splitting, as
    /// `[` may hold `::`.
    pub fn scope(&self) -> &str {
        let base_end = self.0.find('[').unwrap_or(self.0.len());
        match self.0[..base_end].rfind("::") {
            Some(pos) => &self.0[..pos],
            None => self.file(),
        }
    }

    /// The outermost class, as `file::Class`, or `None` for a module-level test. Class-scoped
    /// fixtures of an outer class span its nested classes, so this is what must run
    /// uninterrupted on a worker for them to be set up once.
    pub fn top_class(&self) -> Option<&str> {
        let base_end = self.0.find('[').unwrap_or(self.0.len());
        let base = &self.0[..base_end];
        let after_file = base.find("::")? + 2;
        let class_end = after_file + base[after_file..].find("::")?;
        Some(&self.0[..class_end])
    }
}

impl fmt::Display for TestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for TestId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// A worker slot: `gw0..gw{N-1}`. A replacement worker keeps its slot's id, so per-slot
/// resources (pytest-django's `test_app_gw0`) are reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(pub usize);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gw{}", self.0)
    }
}

impl FromStr for WorkerId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix("gw")
            .and_then(|n| n.parse().ok())
            .map(WorkerId)
            .ok_or_else(|| format!("not a worker id: {s:?} (expected gwN)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_scope() {
        let cases = [
            ("a/test_x.py::test_f", "a/test_x.py", "a/test_x.py", None),
            (
                "test_x.py::TestC::test_m",
                "test_x.py",
                "test_x.py::TestC",
                Some("test_x.py::TestC"),
            ),
            (
                "test_x.py::TestC::TestN::test_m[1]",
                "test_x.py",
                "test_x.py::TestC::TestN",
                Some("test_x.py::TestC"),
            ),
            ("test_x.py::test_p[x::y]", "test_x.py", "test_x.py", None),
            ("test_x.py", "test_x.py", "test_x.py", None),
        ];
        for (id, file, scope, class) in cases {
            let id = TestId::new(id);
            assert_eq!(id.file(), file, "{id}");
            assert_eq!(id.scope(), scope, "{id}");
            assert_eq!(id.top_class(), class, "{id}");
        }
    }

    #[test]
    fn worker_id_round_trip() {
        assert_eq!("gw12".parse::<WorkerId>().unwrap(), WorkerId(12));
        assert_eq!(WorkerId(3).to_string(), "gw3");
        assert!("w1".parse::<WorkerId>().is_err());
    }
}
