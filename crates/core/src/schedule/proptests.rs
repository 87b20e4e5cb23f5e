//! Property tests of the scheduler: random suites, worker counts and interleavings of
//! `next_for`, completions, `push_front` of in-flight tests and `release`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;

use crate::test_id::{TestId, WorkerId};

use super::steal::{DistMode, SchedTest, Scheduler};
use super::units::{key_of, to_micros};

#[derive(Clone, Copy, Debug)]
enum Op {
    /// The worker asks for a test.
    Next(usize),
    /// The worker finishes its oldest in-flight test.
    Complete(usize),
    /// The worker gives back every test it holds but has not run.
    PushBack(usize),
    /// The worker stops (crash with nothing queued): its started unit becomes stealable.
    Release(usize),
}

/// A random suite and which of its tests have no recorded time.
fn suite() -> impl Strategy<Value = (Vec<SchedTest>, Vec<bool>)> {
    let test = (
        0..6usize,
        prop::option::of(0..3usize),
        prop::bool::weighted(0.15),
        prop_oneof![Just(0.0), 0.0001..0.01f64, 0.01..1.0f64, 1.0..20.0f64,],
        prop::option::weighted(0.2, 0..3usize),
    );
    prop::collection::vec(test, 0..70).prop_map(|specs| {
        // Mostly file-ordered like a real collection, with some stragglers.
        let mut specs: Vec<_> = specs.into_iter().enumerate().collect();
        specs.sort_by_key(|(i, (file, ..))| {
            if i % 7 == 3 {
                (usize::MAX, *i)
            } else {
                (*file, *i)
            }
        });
        specs
            .into_iter()
            .map(|(i, (file, class, unknown, estimate, group))| {
                let id = match class {
                    Some(c) => format!("d/f{file}.py::C{c}::t{i}[a::b]"),
                    None => format!("d/f{file}.py::t{i}"),
                };
                // Honoured in LoadGroup only.
                let test = SchedTest {
                    id: TestId::new(id),
                    estimate,
                    group: group.map(|g| format!("g{g}")),
                };
                (test, unknown)
            })
            .unzip()
    })
}

fn mode() -> impl Strategy<Value = DistMode> {
    prop_oneof![
        Just(DistMode::Load),
        Just(DistMode::LoadScope),
        Just(DistMode::LoadFile),
        Just(DistMode::LoadGroup)
    ]
}

fn ops(workers: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = (0..workers + 1, 0..10u8).prop_map(|(w, k)| match k {
        0..=4 => Op::Next(w),
        5..=7 => Op::Complete(w),
        8 => Op::PushBack(w),
        _ => Op::Release(w),
    });
    prop::collection::vec(op, 0..400)
}

/// What a run did: per worker, the tests handed out in order; plus pushed-back tests.
#[derive(Debug, Default, PartialEq)]
struct Trace {
    dispatched: Vec<Vec<TestId>>,
    completed: Vec<TestId>,
    /// Keys whose unit was pushed back or released: exempt from the contiguity check.
    disturbed: BTreeSet<String>,
}

fn run(tests: &[SchedTest], unknown: &[bool], workers: usize, mode: DistMode, ops: &[Op]) -> Trace {
    let estimates: BTreeMap<TestId, f64> =
        tests.iter().map(|t| (t.id.clone(), t.estimate)).collect();
    let groups: BTreeMap<TestId, Option<String>> = tests
        .iter()
        .map(|t| (t.id.clone(), t.group.clone()))
        .collect();
    // A pushed-back or released group is exempt from the group check, as a file is from
    // the unit check.
    let disturb = |trace: &mut Trace, id: &TestId| {
        trace.disturbed.insert(key_of(mode, id).to_owned());
        if let Some(group) = &groups[id] {
            trace.disturbed.insert(format!("group:{group}"));
        }
    };
    let mut sched = Scheduler::with_unknown(tests.to_vec(), workers, mode, unknown);
    // One more worker than seeded: a slot added later only steals.
    let slots = workers + 1;
    let mut trace = Trace {
        dispatched: vec![Vec::new(); slots],
        ..Trace::default()
    };
    let mut inflight: Vec<VecDeque<TestId>> = vec![VecDeque::new(); slots];
    let next = |sched: &mut Scheduler,
                trace: &mut Trace,
                inflight: &mut Vec<VecDeque<TestId>>,
                w: usize| {
        match sched.next_for(WorkerId(w)) {
            Some(id) => {
                trace.dispatched[w].push(id.clone());
                inflight[w].push_back(id);
                true
            }
            None => {
                assert!(
                    sched.idle_is_justified(WorkerId(w)),
                    "worker {w} idle with {} left",
                    sched.remaining()
                );
                false
            }
        }
    };
    for &op in ops {
        match op {
            Op::Next(w) => {
                next(&mut sched, &mut trace, &mut inflight, w);
            }
            Op::Complete(w) => trace.completed.extend(inflight[w].pop_front()),
            Op::PushBack(w) => {
                if inflight[w].is_empty() {
                    continue;
                }
                let back: Vec<SchedTest> = inflight[w]
                    .drain(..)
                    .map(|id| {
                        disturb(&mut trace, &id);
                        SchedTest {
                            estimate: estimates[&id],
                            group: groups[&id].clone(),
                            id,
                        }
                    })
                    .collect();
                sched.push_front(WorkerId(w), back);
            }
            Op::Release(w) => {
                if let Some(last) = trace.dispatched[w].last().cloned() {
                    disturb(&mut trace, &last);
                }
                sched.release(WorkerId(w));
            }
        }
        let held: usize = inflight.iter().map(VecDeque::len).sum();
        assert_eq!(
            sched.remaining() + held + trace.completed.len(),
            tests.len()
        );
        assert_eq!(sched.remaining() == 0, sched.remaining_estimate() == 0.0);
    }
    // Run to the end: every worker finishes what it holds, then asks until nothing is left.
    loop {
        for (w, held) in inflight.iter_mut().enumerate() {
            trace.completed.extend(held.drain(..));
            let _ = w;
        }
        let mut progressed = false;
        for w in 0..slots {
            progressed |= next(&mut sched, &mut trace, &mut inflight, w);
        }
        if !progressed {
            for held in &mut inflight {
                trace.completed.extend(held.drain(..));
            }
            break;
        }
    }
    assert_eq!(sched.remaining(), 0, "work left but every worker idle");
    trace
}

fn assert_units_contiguous(trace: &Trace, mode: DistMode) {
    let mut owner: BTreeMap<&str, usize> = BTreeMap::new();
    for (w, seq) in trace.dispatched.iter().enumerate() {
        let mut closed: BTreeSet<&str> = BTreeSet::new();
        let mut current: Option<&str> = None;
        for id in seq {
            let key = key_of(mode, id);
            if trace.disturbed.contains(key) {
                continue;
            }
            if let Some(&other) = owner.get(key) {
                assert_eq!(other, w, "unit {key} ran on two workers: {trace:?}");
            }
            owner.insert(key, w);
            if current != Some(key) {
                assert!(
                    !closed.contains(key),
                    "unit {key} interleaved on worker {w}: {seq:?}"
                );
                if let Some(prev) = current {
                    closed.insert(prev);
                }
                current = Some(key);
            }
        }
    }
}

/// `Load`: each small class (a run of consecutive tests of one class in collection order,
/// estimated below the scheduler's class cap) runs on one worker without interruption, so
/// its class fixtures are set up once, as in plain pytest.
fn assert_small_classes_whole(tests: &[SchedTest], class_cap: u64, trace: &Trace) {
    let mut block_of: BTreeMap<&TestId, usize> = BTreeMap::new();
    let mut block_sizes: Vec<(usize, u64)> = Vec::new();
    let mut prev: Option<&str> = None;
    for test in tests {
        let class = test.id.top_class();
        if class.is_none() || class != prev {
            block_sizes.push((0, 0));
        }
        prev = class;
        let last = block_sizes.last_mut().expect("pushed above");
        last.0 += 1;
        last.1 += to_micros(test.estimate);
        block_of.insert(&test.id, block_sizes.len() - 1);
    }
    for (w, seq) in trace.dispatched.iter().enumerate() {
        let mut i = 0;
        while i < seq.len() {
            let b = block_of[&seq[i]];
            let (len, micros) = block_sizes[b];
            let disturbed = trace.disturbed.contains(seq[i].file());
            if len > 1 && micros < class_cap && !disturbed {
                let run = seq[i..].iter().take_while(|id| block_of[id] == b).count();
                assert_eq!(
                    run, len,
                    "class block {b} ({len} tests) cut on worker {w}: {seq:?}"
                );
                i += run;
            } else {
                i += 1;
            }
        }
    }
}

/// `LoadGroup`: the tests of a group run on one worker, one after the other, in collection
/// order.
fn assert_groups_whole(tests: &[SchedTest], trace: &Trace) {
    let mut members: BTreeMap<&str, Vec<&TestId>> = BTreeMap::new();
    for test in tests {
        if let Some(group) = &test.group {
            members.entry(group).or_default().push(&test.id);
        }
    }
    for (group, ids) in members {
        if trace.disturbed.contains(&format!("group:{group}")) {
            continue;
        }
        let Some((w, seq)) = trace
            .dispatched
            .iter()
            .enumerate()
            .find(|(_, seq)| seq.contains(ids[0]))
        else {
            panic!("group {group} never ran: {trace:?}");
        };
        let start = seq.iter().position(|id| id == ids[0]).expect("found above");
        let ran: Vec<&TestId> = seq[start..].iter().take(ids.len()).collect();
        assert_eq!(
            ran, ids,
            "group {group} not whole and in order on worker {w}: {seq:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn every_test_once_and_no_needless_idling(
        ((tests, unknown), workers, mode, ops) in (suite(), 1..6usize, mode())
            .prop_flat_map(|(t, w, m)| (Just(t), Just(w), Just(m), ops(w)))
    ) {
        let trace = run(&tests, &unknown, workers, mode, &ops);
        let mut done: Vec<&TestId> = trace.completed.iter().collect();
        done.sort();
        let mut want: Vec<&TestId> = tests.iter().map(|t| &t.id).collect();
        want.sort();
        prop_assert_eq!(done, want);
        match mode {
            DistMode::Load => {
                let class_cap = Scheduler::with_unknown(tests.clone(), workers, mode, &unknown).class_cap();
                assert_small_classes_whole(&tests, class_cap, &trace);
            }
            DistMode::LoadGroup => assert_groups_whole(&tests, &trace),
            DistMode::LoadScope | DistMode::LoadFile => assert_units_contiguous(&trace, mode),
        }
        // Same input, same calls: same dispatch sequence.
        prop_assert_eq!(run(&tests, &unknown, workers, mode, &ops), trace);
    }

    #[test]
    fn drain_returns_exactly_the_undispatched(
        (tests, unknown) in suite(), workers in 1..5usize, mode in mode(), calls in prop::collection::vec(0..5usize, 0..40)
    ) {
        let mut sched = Scheduler::with_unknown(tests.clone(), workers, mode, &unknown);
        let mut seen: Vec<TestId> = calls.iter().filter_map(|&w| sched.next_for(WorkerId(w))).collect();
        let drained = sched.drain();
        prop_assert_eq!(sched.remaining(), 0);
        prop_assert_eq!(sched.remaining_estimate(), 0.0);
        prop_assert!(sched.next_for(WorkerId(0)).is_none());
        seen.extend(drained);
        seen.sort();
        let mut want: Vec<TestId> = tests.into_iter().map(|t| t.id).collect();
        want.sort();
        prop_assert_eq!(seen, want);
    }

    #[test]
    fn seeding_balances_estimates((tests, _) in suite(), workers in 1..6usize) {
        // Before any stealing, the contiguous ranges of light tests are even to within one
        // light test (under a 16th of a share).
        let sched = Scheduler::new(tests.clone(), workers, DistMode::Load);
        let total: f64 = sched.remaining_estimate();
        let share = total / workers as f64;
        let largest_light = share / 16.0;
        for w in 0..workers {
            let queued = sched.queued_for(WorkerId(w));
            let est: f64 = queued
                .iter()
                .map(|id| tests.iter().find(|t| &t.id == id).map_or(0.0, |t| t.estimate.max(1e-6)))
                .sum();
            prop_assert!(est <= share + largest_light + 1e-3, "{est} vs {total}/{workers}");
        }
    }
}
