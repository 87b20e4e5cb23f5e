//! The static split of a suite between CI nodes (`--node-total N --node-index i`): each
//! node computes the same split from the same collection and timings, and runs its share.
//!
//! The suite is cut into atoms that must stay on one node: a test, a small class (its
//! class fixtures are then set up once), an `xdist_group` under `LoadGroup`, a scope or
//! file under `LoadScope`/`LoadFile`. Heavy atoms (a twentieth of a node's share or more)
//! go first, longest first onto the least-loaded node (LPT; ties by test id, then by node
//! index). The light ones then fill the nodes up to a common level in collection order:
//! each node gets one contiguous range of the light atoms, so a file is split between at
//! most two nodes per boundary and module fixtures are set up about once. Every node is
//! within one light atom of that level, or holds heavy atoms only.
//!
//! Integer microseconds throughout: the split does not depend on summation order.

use std::collections::HashMap;

use crate::test_id::TestId;

use super::steal::{DistMode, SchedTest};
use super::units::{blocks, group_key, key_of, Item};

/// Heavy atoms are those of at least a node's share divided by this: they are placed by
/// LPT, and light ones (below 5% of a share) keep the busiest node within 5% of the mean.
const HEAVY_PER_SHARE: u64 = 20;

/// One node's share.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeShare {
    /// Its tests, in collection order.
    pub ids: Vec<TestId>,
    /// Sum of their estimates, seconds.
    pub estimate: f64,
}

/// Atoms: positions of tests (in collection order) that go to one node together.
struct Atom {
    tests: Vec<usize>,
    micros: u64,
    heavy: bool,
}

/// One atom of a node's share (see [`split_atoms_for_nodes`]): tests that must stay on one
/// node together, in collection order.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitAtom {
    pub ids: Vec<TestId>,
    /// Sum of their estimates, microseconds (each test at least 1 µs).
    pub micros: u64,
    /// Placed by LPT (a twentieth of a node's share or more), not as a light range.
    pub heavy: bool,
}

/// Splits `tests` (collection order) between `nodes` nodes. Deterministic: the same
/// tests, estimates, count and mode give the same split, whatever the machine. Every test
/// is in exactly one share; `nodes` 0 counts as 1.
pub fn split_for_nodes(tests: &[SchedTest], nodes: usize, mode: DistMode) -> Vec<NodeShare> {
    let items: Vec<Item> = tests.iter().cloned().map(Item::from).collect();
    let (per_node, loads) = place_atoms(&items, nodes, mode);
    let mut owner = vec![0usize; items.len()];
    for (node, atoms) in per_node.iter().enumerate() {
        for atom in atoms {
            for &t in &atom.tests {
                owner[t] = node;
            }
        }
    }
    let mut shares = vec![Vec::new(); per_node.len()];
    for (pos, item) in items.into_iter().enumerate() {
        shares[owner[pos]].push(item.id);
    }
    shares
        .into_iter()
        .zip(loads)
        .map(|(ids, micros)| NodeShare {
            ids,
            estimate: micros as f64 / 1e6,
        })
        .collect()
}

/// The same split as [`split_for_nodes`], as each node's atoms: its heavy atoms in the
/// order they were placed (longest first, ties by first test id), then its light atoms in
/// collection order. A node's atoms' micros sum to its share's estimate.
pub fn split_atoms_for_nodes(
    tests: &[SchedTest],
    nodes: usize,
    mode: DistMode,
) -> Vec<Vec<SplitAtom>> {
    let items: Vec<Item> = tests.iter().cloned().map(Item::from).collect();
    let (per_node, _) = place_atoms(&items, nodes, mode);
    per_node
        .into_iter()
        .map(|atoms| {
            atoms
                .into_iter()
                .map(|a| SplitAtom {
                    ids: a.tests.iter().map(|&t| items[t].id.clone()).collect(),
                    micros: a.micros,
                    heavy: a.heavy,
                })
                .collect()
        })
        .collect()
}

/// Each node's atoms (heavy ones in placement order, then light ones in collection order)
/// and its load in micros.
fn place_atoms(items: &[Item], nodes: usize, mode: DistMode) -> (Vec<Vec<Atom>>, Vec<u64>) {
    let nodes = nodes.max(1);
    let total: u64 = items.iter().map(|i| i.micros).sum();
    let heavy_cap = (total / nodes as u64 / HEAVY_PER_SHARE).max(1);
    let (mut heavy, light): (Vec<Atom>, Vec<Atom>) = atoms(items, mode, heavy_cap)
        .into_iter()
        .partition(|a| a.heavy);
    let mut loads = vec![0u64; nodes];
    let mut per_node: Vec<Vec<Atom>> = (0..nodes).map(|_| Vec::new()).collect();
    heavy.sort_by(|a, b| {
        b.micros
            .cmp(&a.micros)
            .then_with(|| items[a.tests[0]].id.cmp(&items[b.tests[0]].id))
    });
    for atom in heavy {
        let node = (0..nodes)
            .min_by_key(|&n| (loads[n], n))
            .expect("at least one node");
        loads[node] += atom.micros;
        per_node[node].push(atom);
    }
    fill_light(light, &mut loads, &mut per_node);
    (per_node, loads)
}

/// The atoms of the suite, in collection order of their first test.
fn atoms(items: &[Item], mode: DistMode, heavy_cap: u64) -> Vec<Atom> {
    let mut keyed: Vec<Atom> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut loose: Vec<usize> = Vec::new();
    for (pos, item) in items.iter().enumerate() {
        let key = match mode {
            DistMode::LoadScope | DistMode::LoadFile => Some(key_of(mode, &item.id).to_owned()),
            DistMode::LoadGroup => item.group.as_deref().map(group_key),
            DistMode::Load => None,
        };
        let Some(key) = key else {
            loose.push(pos);
            continue;
        };
        let slot = *index.entry(key).or_insert_with(|| {
            keyed.push(Atom {
                tests: Vec::new(),
                micros: 0,
                heavy: false,
            });
            keyed.len() - 1
        });
        keyed[slot].tests.push(pos);
        keyed[slot].micros += item.micros;
    }
    // Loose tests: a class below the heavy cap is one atom (the same rule as a worker's:
    // whole unless keeping it whole could cost balance).
    let mut out = keyed;
    let mut next = loose.into_iter();
    let loose_items: Vec<&Item> = next.clone().map(|p| &items[p]).collect();
    for (len, micros) in blocks(loose_items, heavy_cap) {
        out.push(Atom {
            tests: next.by_ref().take(len).collect(),
            micros,
            heavy: false,
        });
    }
    for atom in &mut out {
        atom.heavy = atom.micros >= heavy_cap;
    }
    out.sort_by_key(|a| a.tests[0]);
    out
}

/// Gives the light atoms, in collection order, to the nodes as contiguous ranges, each
/// node filled up to a common level (the water level above the heavy loads). An atom goes
/// to the node whose range holds its midpoint.
fn fill_light(light: Vec<Atom>, loads: &mut [u64], per_node: &mut [Vec<Atom>]) {
    let light_total: u64 = light.iter().map(|a| a.micros).sum();
    if light_total == 0 {
        return;
    }
    let caps = water_caps(loads, light_total);
    // Cumulative end of each node's range.
    let mut ends: Vec<u128> = Vec::with_capacity(caps.len());
    let mut acc: u128 = 0;
    for &cap in &caps {
        acc += u128::from(cap);
        ends.push(acc);
    }
    let mut before: u128 = 0;
    let mut node = 0;
    for atom in light {
        let mid2 = before * 2 + u128::from(atom.micros);
        while node + 1 < ends.len() && ends[node] * 2 <= mid2 {
            node += 1;
        }
        before += u128::from(atom.micros);
        loads[node] += atom.micros;
        per_node[node].push(atom);
    }
}

/// How much light work each node takes so that all nodes that take some end at one
/// level; the caps sum to `light`. Nodes already above the level take none.
fn water_caps(loads: &[u64], light: u64) -> Vec<u64> {
    let mut order: Vec<usize> = (0..loads.len()).collect();
    order.sort_by_key(|&n| (loads[n], n));
    // The level with the k least-loaded nodes filled: (light + their loads) / k; the
    // largest k whose level reaches the k-th load.
    let mut sum: u128 = u128::from(light);
    let mut k = 0;
    for (i, &n) in order.iter().enumerate() {
        let with = sum + u128::from(loads[n]);
        if i > 0 && with / (i as u128 + 1) < u128::from(loads[n]) {
            break;
        }
        sum = with;
        k = i + 1;
    }
    let level = sum / k as u128;
    let mut rest = (sum % k as u128) as u64;
    let mut caps = vec![0u64; loads.len()];
    // Remainder micros to the lowest node indexes among the filled ones.
    let mut filled: Vec<usize> = order[..k].to_vec();
    filled.sort_unstable();
    for n in filled {
        caps[n] = (level - u128::from(loads[n])) as u64 + u64::from(rest > 0);
        rest = rest.saturating_sub(1);
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::strategies::{any_mode as mode, any_suite};
    use crate::schedule::units::to_micros;
    use proptest::prelude::*;

    use crate::schedule::steal::suite_of as suite;

    fn shape(shares: &[NodeShare]) -> Vec<Vec<&str>> {
        shares
            .iter()
            .map(|s| s.ids.iter().map(TestId::as_str).collect())
            .collect()
    }

    #[test]
    fn split_table() {
        type Case = (
            &'static str,
            Vec<(&'static str, f64)>,
            usize,
            DistMode,
            Vec<Vec<&'static str>>,
        );
        let light: Vec<(&str, f64)> = vec![
            ("a.py::t0", 1.0),
            ("a.py::t1", 1.0),
            ("a.py::t2", 1.0),
            ("b.py::t0", 1.0),
            ("b.py::t1", 1.0),
            ("b.py::t2", 1.0),
        ];
        let cases: Vec<Case> = vec![
            ("empty", vec![], 2, DistMode::Load, vec![vec![], vec![]]),
            (
                "one node: everything, in order",
                light.clone(),
                1,
                DistMode::Load,
                vec![vec![
                    "a.py::t0", "a.py::t1", "a.py::t2", "b.py::t0", "b.py::t1", "b.py::t2",
                ]],
            ),
            // All heavy at 2 nodes (1 s >= 3 s / 20): LPT, equal sizes go by id.
            (
                "equal tests by id",
                light.clone(),
                2,
                DistMode::Load,
                vec![
                    vec!["a.py::t0", "a.py::t2", "b.py::t1"],
                    vec!["a.py::t1", "b.py::t0", "b.py::t2"],
                ],
            ),
            (
                "loadfile keeps files whole",
                light.clone(),
                2,
                DistMode::LoadFile,
                vec![
                    vec!["a.py::t0", "a.py::t1", "a.py::t2"],
                    vec!["b.py::t0", "b.py::t1", "b.py::t2"],
                ],
            ),
            // 9 s heavy, then 40 light tests of 0.2 s (8 s): the heavy test's node gets
            // light work only up to the level (8.5 s each).
            (
                "light tests fill up to the heavy one",
                {
                    let mut v = vec![("h.py::big", 9.0)];
                    v.extend(LIGHT40.iter().map(|id| (*id, 0.2)));
                    v
                },
                2,
                DistMode::Load,
                vec![std::iter::once("h.py::big").collect(), LIGHT40.to_vec()],
            ),
        ];
        for (name, spec, nodes, mode, want) in cases {
            let shares = split_for_nodes(&suite(&spec), nodes, mode);
            assert_eq!(shape(&shares), want, "{name}");
        }
    }

    const LIGHT40: [&str; 40] = [
        "l.py::t00",
        "l.py::t01",
        "l.py::t02",
        "l.py::t03",
        "l.py::t04",
        "l.py::t05",
        "l.py::t06",
        "l.py::t07",
        "l.py::t08",
        "l.py::t09",
        "l.py::t10",
        "l.py::t11",
        "l.py::t12",
        "l.py::t13",
        "l.py::t14",
        "l.py::t15",
        "l.py::t16",
        "l.py::t17",
        "l.py::t18",
        "l.py::t19",
        "l.py::t20",
        "l.py::t21",
        "l.py::t22",
        "l.py::t23",
        "l.py::t24",
        "l.py::t25",
        "l.py::t26",
        "l.py::t27",
        "l.py::t28",
        "l.py::t29",
        "l.py::t30",
        "l.py::t31",
        "l.py::t32",
        "l.py::t33",
        "l.py::t34",
        "l.py::t35",
        "l.py::t36",
        "l.py::t37",
        "l.py::t38",
        "l.py::t39",
    ];

    #[test]
    fn light_tests_are_contiguous_and_small_classes_whole() {
        // 3 nodes, 300 light tests in 10 files: each node one range, so at most 2 files
        // are split; the class C (3 tests) stays on one node.
        let mut spec: Vec<(String, f64)> = Vec::new();
        for f in 0..10 {
            for t in 0..30 {
                let id = if f == 4 && (10..13).contains(&t) {
                    format!("f{f}.py::C::t{t}")
                } else {
                    format!("f{f}.py::t{t}")
                };
                spec.push((id, 0.01 + f64::from(t % 7) * 0.003));
            }
        }
        let tests: Vec<SchedTest> = spec
            .iter()
            .map(|(id, e)| SchedTest {
                id: TestId::new(id.as_str()),
                estimate: *e,
                group: None,
            })
            .collect();
        let shares = split_for_nodes(&tests, 3, DistMode::Load);
        let files: Vec<Vec<&str>> = shares
            .iter()
            .map(|s| {
                let mut f: Vec<&str> = s.ids.iter().map(TestId::file).collect();
                f.dedup();
                f
            })
            .collect();
        let split = files.iter().map(Vec::len).sum::<usize>() - 10;
        assert!(split <= 2, "{files:?}");
        let class_nodes = shares
            .iter()
            .filter(|s| s.ids.iter().any(|id| id.top_class().is_some()))
            .count();
        assert_eq!(class_nodes, 1);
        let total: f64 = shares.iter().map(|s| s.estimate).sum();
        let busiest = shares.iter().map(|s| s.estimate).fold(0.0, f64::max);
        assert!(busiest <= 1.05 * total / 3.0, "{busiest} vs {total}");
    }

    proptest! {
        #[test]
        fn every_test_once_balanced_and_deterministic(
            tests in any_suite(), nodes in 1..6usize, mode in mode()
        ) {
            let shares = split_for_nodes(&tests, nodes, mode);
            prop_assert_eq!(shares.len(), nodes);
            // Every test exactly once, each share in collection order.
            let pos: HashMap<&TestId, usize> =
                tests.iter().enumerate().map(|(i, t)| (&t.id, i)).collect();
            let mut seen: Vec<usize> = Vec::new();
            for share in &shares {
                let p: Vec<usize> = share.ids.iter().map(|id| pos[id]).collect();
                prop_assert!(p.windows(2).all(|w| w[0] < w[1]), "{:?}", share.ids);
                seen.extend(p);
            }
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..tests.len()).collect::<Vec<_>>());
            // Whole groups (LoadGroup) and scopes/files (LoadScope/LoadFile) on one node.
            let node_of: HashMap<&TestId, usize> = shares
                .iter()
                .enumerate()
                .flat_map(|(n, s)| s.ids.iter().map(move |id| (id, n)))
                .collect();
            let mut key_node: HashMap<String, usize> = HashMap::new();
            for t in &tests {
                let key = match mode {
                    DistMode::LoadGroup => t.group.clone(),
                    DistMode::LoadScope | DistMode::LoadFile => Some(key_of(mode, &t.id).to_owned()),
                    DistMode::Load => None,
                };
                if let Some(key) = key {
                    let n = *key_node.entry(key.clone()).or_insert(node_of[&t.id]);
                    prop_assert_eq!(n, node_of[&t.id], "{} split", key);
                }
            }
            // Balance: the mean plus the largest atom (LPT's bound), and in `Load` within 5%
            // of the mean when no test is above 5% of it (a kept class is below that).
            let micros: Vec<u64> = tests.iter().map(|t| to_micros(t.estimate)).collect();
            let total: u64 = micros.iter().sum();
            let mean = total as f64 / 1e6 / nodes as f64;
            let busiest = shares.iter().map(|s| s.estimate).fold(0.0, f64::max);
            let mut atom: HashMap<String, f64> = HashMap::new();
            for (t, &m) in tests.iter().zip(&micros) {
                let key = match mode {
                    DistMode::LoadGroup => t.group.clone(),
                    DistMode::LoadScope | DistMode::LoadFile => Some(key_of(mode, &t.id).to_owned()),
                    DistMode::Load => None,
                };
                *atom.entry(key.unwrap_or_else(|| t.id.to_string())).or_default() += m as f64 / 1e6;
            }
            let biggest = atom.values().copied().fold(mean / 20.0, f64::max);
            prop_assert!(busiest <= mean + biggest + 1e-6, "{} vs {} + {}", busiest, mean, biggest);
            let longest = micros.iter().copied().max().unwrap_or(0) as f64 / 1e6;
            if mode == DistMode::Load && longest <= 0.05 * mean {
                prop_assert!(busiest <= 1.05 * mean + 1e-6, "{} vs {}", busiest, mean);
            }
            // Same input, same split (every node computes it alone).
            prop_assert_eq!(split_for_nodes(&tests, nodes, mode), shares);
        }
    }
}
