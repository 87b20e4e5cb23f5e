//! A stand-in for `shardex_core::queue_plan` (helper CORE builds it in parallel): the same
//! signatures as in notes/redis-spec.md, minimal implementations. At merge the lead deletes this
//! file and points the one `use` in `mod.rs` at `shardex_core::queue_plan`.

use shardex_core::TestId;

/// An atom of the queue: tests that stay together, with their estimated micros.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub ids: Vec<TestId>,
    pub micros: u64,
}

/// What the seeding node pushes: one list per node, the digest and the sorted ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedPlan {
    pub lists: Vec<Vec<Entry>>,
    pub digest: String,
    pub sorted_ids: Vec<TestId>,
}

/// A digest of the sorted ids (the real one is sha256 hex; this stand-in hashes with SipHash's
/// fixed keys, deterministic across processes, which is all the queue compares).
pub fn collection_digest(sorted_ids: &[TestId]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for id in sorted_ids {
        id.as_str().hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

/// `+ id` for ids only in ours, `- id` for ids only in the reference, in id order.
pub fn first_differences(
    ours_sorted: &[TestId],
    reference_sorted: &[TestId],
    limit: usize,
) -> Vec<String> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while out.len() < limit && (i < ours_sorted.len() || j < reference_sorted.len()) {
        match (ours_sorted.get(i), reference_sorted.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), b) if b.is_none_or(|b| a < b) => {
                out.push(format!("+ {a}"));
                i += 1;
            }
            (_, Some(b)) => {
                out.push(format!("- {b}"));
                j += 1;
            }
            _ => break,
        }
    }
    out
}

/// `"<micros> <id1>\n<id2>..."`.
pub fn encode_entry(e: &Entry) -> String {
    let ids: Vec<&str> = e.ids.iter().map(TestId::as_str).collect();
    format!("{} {}", e.micros, ids.join("\n"))
}

pub fn decode_entry(s: &str) -> Option<Entry> {
    let (micros, ids) = s.split_once(' ')?;
    let ids: Vec<TestId> = ids
        .split('\n')
        .filter(|l| !l.is_empty())
        .map(TestId::new)
        .collect();
    (!ids.is_empty()).then_some(Entry {
        ids,
        micros: micros.parse().ok()?,
    })
}

/// `max(factor * micros, floor)` in milliseconds.
pub fn lease_millis(micros: u64, factor: u32, floor_ms: u64) -> u64 {
    (micros.saturating_mul(u64::from(factor)) / 1000).max(floor_ms)
}
