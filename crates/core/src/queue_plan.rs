//! The plan of a job-wide shared queue (`--queue redis://…`): what the seeding node pushes,
//! how an entry is written in the queue, the digest that tells nodes whose collections
//! differ, and how long a lease lasts. Pure: the Redis side lives in the agent.
//!
//! Every node computes the same plan alone, so nothing here may depend on the collection
//! order (pytest-randomly shuffles it differently per node) or on the machine.

use sha2::{Digest, Sha256};

use crate::schedule::{split_atoms_for_nodes, DistMode, SchedTest};
use crate::test_id::TestId;

/// One queue entry: tests that a node takes together (a test, a small class, an
/// `xdist_group` under `LoadGroup`, a scope or file under `LoadScope`/`LoadFile`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// In id order; never empty in a plan.
    pub ids: Vec<TestId>,
    /// Sum of their estimates, microseconds (each test at least 1 µs).
    pub micros: u64,
}

/// What the seeding node pushes, and what every node checks its collection against.
#[derive(Clone, Debug, PartialEq)]
pub struct SeedPlan {
    /// Per node (0-based), its list, head first.
    pub lists: Vec<Vec<Entry>>,
    /// [`collection_digest`] of `sorted_ids`.
    pub digest: String,
    pub sorted_ids: Vec<TestId>,
}

/// The same shares as `split_for_nodes` on the tests sorted by id; each node's list holds
/// its heavy atoms longest first (ties by first id), then its light atoms in id order.
/// An atom is one entry. Deterministic: any collection order of the same tests (ids,
/// estimates, groups) gives the identical plan. `nodes` 0 counts as 1.
pub fn seed_plan(tests: &[SchedTest], nodes: usize, mode: DistMode) -> SeedPlan {
    let mut sorted: Vec<SchedTest> = tests.to_vec();
    // Ids are unique in a collection; the rest of the key only keeps duplicates
    // deterministic.
    sorted.sort_by(|a, b| {
        a.id.cmp(&b.id)
            .then_with(|| a.group.cmp(&b.group))
            .then_with(|| a.estimate.total_cmp(&b.estimate))
    });
    let lists = split_atoms_for_nodes(&sorted, nodes, mode)
        .into_iter()
        .map(|atoms| {
            atoms
                .into_iter()
                .map(|a| Entry {
                    ids: a.ids,
                    micros: a.micros,
                })
                .collect()
        })
        .collect();
    let sorted_ids: Vec<TestId> = sorted.into_iter().map(|t| t.id).collect();
    SeedPlan {
        lists,
        digest: collection_digest(&sorted_ids),
        sorted_ids,
    }
}

/// SHA-256 (lowercase hex) of the ids joined by `"\n"`.
pub fn collection_digest(sorted_ids: &[TestId]) -> String {
    let mut hasher = Sha256::new();
    for (i, id) in sorted_ids.iter().enumerate() {
        if i > 0 {
            hasher.update(b"\n");
        }
        hasher.update(id.as_str().as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The first `limit` differences between two sorted id lists, in id order: `"+ id"` for
/// an id only in `ours`, `"- id"` for one only in `reference`. One linear merge walk (both
/// lists must be sorted, as `SeedPlan::sorted_ids` is).
pub fn first_differences(
    ours_sorted: &[TestId],
    reference_sorted: &[TestId],
    limit: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while out.len() < limit && (i < ours_sorted.len() || j < reference_sorted.len()) {
        match (ours_sorted.get(i), reference_sorted.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                out.push(format!("+ {a}"));
                i += 1;
            }
            (Some(a), None) => {
                out.push(format!("+ {a}"));
                i += 1;
            }
            (_, Some(b)) => {
                out.push(format!("- {b}"));
                j += 1;
            }
            (None, None) => unreachable!("loop condition"),
        }
    }
    out
}

/// An entry as stored in the queue: `"<micros> <id1>\n<id2>…"`. Test ids (pytest node ids)
/// never hold a newline; one that did would not survive the trip (`decode_entry` splits
/// on `'\n'`), which debug builds assert.
pub fn encode_entry(e: &Entry) -> String {
    debug_assert!(
        e.ids.iter().all(|id| !id.as_str().contains('\n')),
        "a test id with a newline: {:?}",
        e.ids
    );
    let len = e.ids.iter().map(|id| id.as_str().len() + 1).sum::<usize>() + 20;
    let mut out = String::with_capacity(len);
    out.push_str(&e.micros.to_string());
    out.push(' ');
    for (i, id) in e.ids.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(id.as_str());
    }
    out
}

/// The entry `encode_entry` wrote, or `None` for anything else: no space, micros that are
/// not ASCII digits (or overflow u64), no id, an empty id. Never panics.
pub fn decode_entry(s: &str) -> Option<Entry> {
    let (micros, ids) = s.split_once(' ')?;
    if micros.is_empty() || !micros.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros: u64 = micros.parse().ok()?;
    let ids: Vec<TestId> = ids
        .split('\n')
        .map(|id| (!id.is_empty()).then(|| TestId::new(id)))
        .collect::<Option<_>>()?;
    Some(Entry { ids, micros })
}

/// A lease's length, milliseconds: `factor` times the estimate (`micros`, rounded up to
/// whole ms), at least `floor_ms`; saturating, never overflows.
pub fn lease_millis(micros: u64, factor: u32, floor_ms: u64) -> u64 {
    let scaled = (u128::from(micros) * u128::from(factor)).div_ceil(1000);
    u64::try_from(scaled).unwrap_or(u64::MAX).max(floor_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::split_for_nodes;
    use crate::schedule::strategies::{any_mode as mode, any_suite};
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn ids(list: &[&str]) -> Vec<TestId> {
        list.iter().map(|&s| TestId::new(s)).collect()
    }

    fn test(id: &str, estimate: f64, group: Option<&str>) -> SchedTest {
        SchedTest {
            id: TestId::new(id),
            estimate,
            group: group.map(str::to_owned),
        }
    }

    #[test]
    fn digest_is_sha256_of_the_joined_ids() {
        // printf 'a.py::t\nb.py::t' | sha256sum
        assert_eq!(
            collection_digest(&ids(&["a.py::t", "b.py::t"])),
            "9725546ba1c555be917ba52fd862b1596d3f4a6ff049a4b3395f5af10085a3b1"
        );
        // The empty collection: sha256 of nothing.
        assert_eq!(
            collection_digest(&[]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            collection_digest(&ids(&["abc"])),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(
            collection_digest(&ids(&["a", "b"])),
            collection_digest(&ids(&["ab"]))
        );
    }

    #[test]
    fn differences_in_id_order_up_to_the_limit() {
        let ours = ids(&["a", "b", "d", "e", "g"]);
        let theirs = ids(&["b", "c", "d", "f", "g", "h"]);
        assert_eq!(
            first_differences(&ours, &theirs, 10),
            ["+ a", "- c", "+ e", "- f", "- h"]
        );
        assert_eq!(first_differences(&ours, &theirs, 2), ["+ a", "- c"]);
        assert!(first_differences(&ours, &ours, 10).is_empty());
        assert!(first_differences(&ours, &theirs, 0).is_empty());
        assert_eq!(first_differences(&[], &ids(&["x"]), 3), ["- x"]);
    }

    #[test]
    fn differences_of_100k_ids_are_linear() {
        let theirs: Vec<TestId> = (0..100_000)
            .map(|i| TestId::new(format!("t.py::t{i:06}")))
            .collect();
        let mut ours = theirs.clone();
        ours.remove(99_998);
        ours.push(TestId::new("u.py::new"));
        assert_eq!(
            first_differences(&ours, &theirs, 5),
            ["- t.py::t099998", "+ u.py::new"]
        );
    }

    #[test]
    fn entries_encode_and_decode() {
        let e = Entry {
            ids: ids(&["a.py::C::t[x y]", "a.py::C::ü"]),
            micros: 1500,
        };
        let s = encode_entry(&e);
        assert_eq!(s, "1500 a.py::C::t[x y]\na.py::C::ü");
        assert_eq!(decode_entry(&s), Some(e));
        for bad in [
            "",
            "1500",
            "1500 ",
            " a.py::t",
            "x1 a.py::t",
            "-1 a.py::t",
            "+1 a.py::t",
            "1 a.py::t\n",
            "1 a\n\nb",
            "99999999999999999999999 a",
            "１ a",
        ] {
            assert_eq!(decode_entry(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lease_length() {
        assert_eq!(lease_millis(2_000_000, 3, 10_000), 10_000);
        assert_eq!(lease_millis(5_000_000, 3, 10_000), 15_000);
        assert_eq!(lease_millis(1, 3, 0), 1);
        assert_eq!(lease_millis(0, 3, 0), 0);
        assert_eq!(lease_millis(u64::MAX, u32::MAX, 7), u64::MAX);
    }

    #[test]
    fn plan_lists_heavy_longest_first_then_light_in_id_order() {
        // Shuffled collection; two heavy tests land on the two nodes; light ones fill.
        let tests = vec![
            test("z.py::t2", 0.1, None),
            test("h.py::big", 5.0, None),
            test("z.py::t1", 0.1, None),
            test("h.py::bigger", 6.0, None),
            test("a.py::t", 0.1, None),
        ];
        let plan = seed_plan(&tests, 2, DistMode::Load);
        let shape: Vec<Vec<Vec<&str>>> = plan
            .lists
            .iter()
            .map(|l| {
                l.iter()
                    .map(|e| e.ids.iter().map(TestId::as_str).collect())
                    .collect()
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                vec![vec!["h.py::bigger"]],
                vec![
                    vec!["h.py::big"],
                    vec!["a.py::t"],
                    vec!["z.py::t1"],
                    vec!["z.py::t2"]
                ],
            ]
        );
        assert_eq!(
            plan.sorted_ids,
            ids(&[
                "a.py::t",
                "h.py::big",
                "h.py::bigger",
                "z.py::t1",
                "z.py::t2"
            ])
        );
        assert_eq!(plan.digest, collection_digest(&plan.sorted_ids));
    }

    fn any_entry() -> impl Strategy<Value = Entry> {
        (prop::collection::vec("[^\n]{1,12}", 1..5), any::<u64>()).prop_map(|(ids, micros)| Entry {
            ids: ids.into_iter().map(TestId::new).collect(),
            micros,
        })
    }

    proptest! {
        #[test]
        fn plan_is_complete_atomic_and_independent_of_collection_order(
            tests in any_suite(),
            nodes in 1..5usize,
            mode in mode(),
            seed in any::<u64>(),
        ) {
            let plan = seed_plan(&tests, nodes, mode);
            prop_assert_eq!(plan.lists.len(), nodes);
            // Every test in exactly one entry of exactly one list.
            let mut where_: HashMap<&TestId, (usize, usize)> = HashMap::new();
            for (n, list) in plan.lists.iter().enumerate() {
                for (k, e) in list.iter().enumerate() {
                    prop_assert!(!e.ids.is_empty());
                    for id in &e.ids {
                        prop_assert!(where_.insert(id, (n, k)).is_none(), "{} twice", id);
                    }
                }
            }
            prop_assert_eq!(where_.len(), tests.len());
            // Groups (LoadGroup) and scopes/files whole: one entry.
            let mut entry_of_key: HashMap<String, (usize, usize)> = HashMap::new();
            for t in &tests {
                let key = match mode {
                    DistMode::LoadGroup => t.group.clone(),
                    DistMode::LoadScope => Some(t.id.scope().to_owned()),
                    DistMode::LoadFile => Some(t.id.file().to_owned()),
                    DistMode::Load => None,
                };
                if let Some(key) = key {
                    let at = *entry_of_key.entry(key.clone()).or_insert(where_[&t.id]);
                    prop_assert_eq!(at, where_[&t.id], "{} split", key);
                }
            }
            // Per-node micros are split_for_nodes' shares of the sorted tests.
            let mut sorted = tests.clone();
            sorted.sort_by(|a, b| a.id.cmp(&b.id));
            let shares = split_for_nodes(&sorted, nodes, mode);
            for (list, share) in plan.lists.iter().zip(&shares) {
                let micros: u64 = list.iter().map(|e| e.micros).sum();
                prop_assert_eq!(micros as f64 / 1e6, share.estimate);
                let mut got: Vec<&TestId> = list.iter().flat_map(|e| &e.ids).collect();
                got.sort();
                let mut want: Vec<&TestId> = share.ids.iter().collect();
                want.sort();
                prop_assert_eq!(got, want);
            }
            // Heavy atoms first, longest first; then light ones in id order.
            let total: u64 = plan.lists.iter().flatten().map(|e| e.micros).sum();
            let heavy_cap = (total / nodes as u64 / 20).max(1);
            for list in &plan.lists {
                let heavy = list.iter().take_while(|e| e.micros >= heavy_cap).count();
                prop_assert!(list[..heavy].windows(2).all(|w| w[0].micros >= w[1].micros));
                prop_assert!(list[heavy..].windows(2).all(|w| w[0].ids[0] < w[1].ids[0]));
                prop_assert!(list[heavy..].iter().all(|e| e.micros < heavy_cap));
            }
            // Any collection order: the identical plan.
            let mut shuffled = tests.clone();
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(seed_plan(&shuffled, nodes, mode), plan);
        }

        #[test]
        fn entries_round_trip(e in any_entry()) {
            prop_assert_eq!(decode_entry(&encode_entry(&e)), Some(e));
        }

        #[test]
        fn decode_never_panics(s in "(?s).{0,40}", t in "[0-9]{0,3} ?[a\n ]{0,6}") {
            for s in [s, t] {
                if let Some(e) = decode_entry(&s) {
                    prop_assert!(!e.ids.is_empty());
                    prop_assert!(e.ids.iter().all(|id| !id.as_str().is_empty()));
                }
            }
        }

        #[test]
        fn differences_match_a_set_difference(
            a in prop::collection::btree_set("[a-d]{1,3}", 0..20),
            b in prop::collection::btree_set("[a-d]{1,3}", 0..20),
            limit in 0..50usize,
        ) {
            let ours: Vec<TestId> = a.iter().map(|s| TestId::new(s.as_str())).collect();
            let theirs: Vec<TestId> = b.iter().map(|s| TestId::new(s.as_str())).collect();
            let mut want: Vec<(String, char)> = a.difference(&b).map(|s| (s.clone(), '+'))
                .chain(b.difference(&a).map(|s| (s.clone(), '-')))
                .collect();
            want.sort();
            let want: Vec<String> =
                want.into_iter().take(limit).map(|(s, c)| format!("{c} {s}")).collect();
            prop_assert_eq!(first_differences(&ours, &theirs, limit), want);
        }
    }
}
