//! A set of files and what their stats said at one moment, and what changed since: how the
//! daemon knows its warm process is older than the code on disk, and how `--watch` sees
//! edits. Stats, not events: every check re-reads them, so nothing depends on a watcher that
//! can miss or drop events (containers, network file systems, editors that rename).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a file's stat said. `ctime` catches an edit that restores an older mtime (a copy
/// with preserved times, a cache restore): the kernel sets ctime on every change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub size: u64,
    pub inode: u64,
}

/// How one file changed between two snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    Created,
    Modified,
    Deleted,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub path: PathBuf,
    pub kind: ChangeKind,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = match self.kind {
            ChangeKind::Created => "created",
            ChangeKind::Modified => "changed",
            ChangeKind::Deleted => "deleted",
        };
        write!(f, "{} {word}", self.path.display())
    }
}

/// Each watched path with its stamp, `None` where it did not exist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    stamps: BTreeMap<PathBuf, Option<Stamp>>,
}

impl Snapshot {
    /// A snapshot from `(path, stamp)` pairs (the stat is the caller's: core does no I/O).
    pub fn from_stamps(stamps: impl IntoIterator<Item = (PathBuf, Option<Stamp>)>) -> Self {
        Self {
            stamps: stamps.into_iter().collect(),
        }
    }

    /// Adds paths with their stamps (a path already watched keeps its first stamp: a
    /// change since then is still a change).
    pub fn extend(&mut self, stamps: impl IntoIterator<Item = (PathBuf, Option<Stamp>)>) {
        for (path, stamp) in stamps {
            self.stamps.entry(path).or_insert(stamp);
        }
    }

    pub fn len(&self) -> usize {
        self.stamps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stamps.is_empty()
    }

    pub fn stamps(&self) -> impl Iterator<Item = (PathBuf, Option<Stamp>)> + '_ {
        self.stamps.iter().map(|(p, s)| (p.clone(), *s))
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.stamps.keys().map(PathBuf::as_path)
    }

    /// What differs in `now` from `self`, sorted by path. A path only one of them watches
    /// counts as created or deleted when it exists on that side.
    pub fn changes(&self, now: &Snapshot) -> Vec<Change> {
        let mut changes = Vec::new();
        for (path, before) in &self.stamps {
            let after = now.stamps.get(path).copied().flatten();
            if let Some(kind) = change_kind(*before, after) {
                changes.push(Change {
                    path: path.clone(),
                    kind,
                });
            }
        }
        for (path, after) in &now.stamps {
            if !self.stamps.contains_key(path) && after.is_some() {
                changes.push(Change {
                    path: path.clone(),
                    kind: ChangeKind::Created,
                });
            }
        }
        changes.sort();
        changes
    }
}

fn change_kind(before: Option<Stamp>, after: Option<Stamp>) -> Option<ChangeKind> {
    match (before, after) {
        (None, None) => None,
        (None, Some(_)) => Some(ChangeKind::Created),
        (Some(_), None) => Some(ChangeKind::Deleted),
        (Some(a), Some(b)) if a == b => None,
        (Some(_), Some(_)) => Some(ChangeKind::Modified),
    }
}

/// One line naming what changed: the first few paths, then how many more.
pub fn describe_changes(changes: &[Change], shown: usize) -> String {
    let mut parts: Vec<String> = changes.iter().take(shown).map(Change::to_string).collect();
    if changes.len() > shown {
        parts.push(format!("{} more", changes.len() - shown));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(mtime: i128, size: u64) -> Stamp {
        Stamp {
            mtime_ns: mtime,
            ctime_ns: mtime,
            size,
            inode: 7,
        }
    }

    fn snap(items: &[(&str, Option<Stamp>)]) -> Snapshot {
        Snapshot::from_stamps(items.iter().map(|(p, s)| (PathBuf::from(p), *s)))
    }

    #[test]
    fn an_unchanged_set_has_no_changes() {
        let a = snap(&[("/a.py", Some(stamp(1, 10))), ("/gone", None)]);
        assert!(a.changes(&a.clone()).is_empty());
    }

    #[test]
    fn each_field_of_the_stamp_counts() {
        let before = snap(&[("/a.py", Some(stamp(1, 10)))]);
        let variants = [
            Stamp {
                mtime_ns: 2,
                ..stamp(1, 10)
            },
            Stamp {
                ctime_ns: 2,
                ..stamp(1, 10)
            },
            Stamp {
                size: 11,
                ..stamp(1, 10)
            },
            Stamp {
                inode: 8,
                ..stamp(1, 10)
            },
        ];
        for after in variants {
            let changes = before.changes(&snap(&[("/a.py", Some(after))]));
            assert_eq!(changes.len(), 1, "{after:?}");
            assert_eq!(changes[0].kind, ChangeKind::Modified);
        }
    }

    #[test]
    fn created_and_deleted_files_are_named() {
        let before = snap(&[("/a.py", Some(stamp(1, 1))), ("/b.py", None)]);
        let after = snap(&[
            ("/a.py", None),
            ("/b.py", Some(stamp(1, 1))),
            ("/c.py", Some(stamp(1, 1))),
        ]);
        let changes = before.changes(&after);
        let kinds: Vec<(String, ChangeKind)> = changes
            .iter()
            .map(|c| (c.path.display().to_string(), c.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("/a.py".into(), ChangeKind::Deleted),
                ("/b.py".into(), ChangeKind::Created),
                ("/c.py".into(), ChangeKind::Created)
            ]
        );
        assert_eq!(
            describe_changes(&changes, 2),
            "/a.py deleted, /b.py created, 1 more"
        );
    }
}
