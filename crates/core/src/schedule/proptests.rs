//! Property tests of the scheduler: random suites, worker counts and interleavings of
//! `next_for`, completions, `push_front` of in-flight tests and `release`.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use proptest::prelude::*;

use crate::test_id::{TestId, WorkerId};

use super::steal::{DistMode, SchedTest, Scheduler};
use super::units::{key_of, to_micros};

#[derive(Clone, Copy, Debug)]
enum Op {
    /// The worker asks for a test.
    Next(usize),
    /// The worker asks for a test, a risky one not allowed (it has one in flight).
    NextSafe(usize),
    /// The worker finishes its oldest in-flight test.
    Complete(usize),
    /// The worker's oldest in-flight test fails and is retried on the second worker (see
    /// `push_next`), if it has retries left.
    Fail(usize, usize),
    /// The worker dies in its oldest in-flight test (retried on the second worker if it has
    /// retries left); the tests it held but had not started go back (`push_front`).
    Crash(usize, usize),
    /// The worker gives back every test it holds but has not run.
    PushBack(usize),
    /// The worker dies for good in its oldest test (retried on another if it may be): what
    /// it held goes back, it is released and never asks again.
    Disable(usize),
    /// The worker stops (crash with nothing queued): its started unit becomes stealable.
    Release(usize),
    /// The next batch arrives (`Scheduler::extend`), if any is left.
    Extend,
}

/// Retries each test may be granted.
const RERUNS: u32 = 2;

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
    prop::collection::vec(op(workers), 0..400)
}

/// `ops`, with the next batch arriving now and then.
fn batched_ops(workers: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![12 => op(workers), 1 => Just(Op::Extend)];
    prop::collection::vec(op, 0..400)
}

fn op(workers: usize) -> impl Strategy<Value = Op> {
    (0..workers + 1, 0..workers + 1, 0..16u8).prop_map(|(w, to, k)| match k {
        0..=4 => Op::Next(w),
        5 => Op::NextSafe(w),
        6..=8 => Op::Complete(w),
        9 | 10 => Op::Fail(w, to),
        11 => Op::Fail(w, w),
        12 => Op::Crash(w, to),
        13 => Op::PushBack(w),
        14 if w == to => Op::Disable(w),
        _ => Op::Release(w),
    })
}

/// A suite cut into batches (`Scheduler::extend`): the suite reordered so that each batch
/// is consecutive, with the batches' lengths (the first, given at construction, maybe
/// empty). What must stay whole in the mode (a small class in `Load`, a group in
/// `LoadGroup`, else a scope or file) arrives in one batch, as a queue entry keeps it.
fn batched_suite() -> impl Strategy<Value = (Vec<SchedTest>, Vec<bool>, DistMode, Vec<usize>)> {
    (
        suite(),
        mode(),
        prop::collection::vec(0..4usize, 70),
        any::<bool>(),
    )
        .prop_map(|((tests, unknown), mode, picks, start_empty)| {
            let key = |t: &SchedTest| -> Option<String> {
                match mode {
                    DistMode::LoadGroup if t.group.is_some() => t.group.clone(),
                    DistMode::Load | DistMode::LoadGroup => t.id.top_class().map(str::to_owned),
                    DistMode::LoadScope | DistMode::LoadFile => {
                        Some(key_of(mode, &t.id).to_owned())
                    }
                }
            };
            let mut batch_of_key: BTreeMap<String, usize> = BTreeMap::new();
            let mut batched: Vec<(usize, SchedTest, bool)> = Vec::new();
            for (i, (test, guessed)) in tests.into_iter().zip(unknown).enumerate() {
                let mut batch = picks[i] + usize::from(start_empty);
                if let Some(k) = key(&test) {
                    batch = *batch_of_key.entry(k).or_insert(batch);
                }
                batched.push((batch, test, guessed));
            }
            batched.sort_by_key(|(b, ..)| *b);
            let mut lens = vec![0usize; 5];
            for (b, ..) in &batched {
                lens[*b] += 1;
            }
            let (tests, unknown) = batched.into_iter().map(|(_, t, u)| (t, u)).unzip();
            (tests, unknown, mode, lens)
        })
}

/// What a run did: per worker, the tests handed out in order (retries apart); every
/// attempt that ended; keys disturbed by push-backs and releases.
#[derive(Debug, Default, PartialEq)]
struct Trace {
    dispatched: Vec<Vec<TestId>>,
    /// Per worker, the retries it was handed, in order.
    retried: Vec<Vec<TestId>>,
    /// Attempts that ended (a failed attempt that was retried included).
    completed: Vec<TestId>,
    /// Keys whose unit was pushed back or released: exempt from the contiguity check.
    disturbed: BTreeSet<String>,
    /// The scheduler's class cap after the first batch with tests (it only grows).
    class_cap: Option<u64>,
    /// Per worker, the places in the collection of the tests it took in order (not from
    /// the pool, not retried or put back, not left by a stopped worker).
    ordered: Vec<Vec<usize>>,
}

/// Drives a scheduler as the agent does, and checks at every step that nothing is
/// dispatched twice unless granted (a retry or a push-back), nothing is lost, and no worker
/// is told there is work it cannot get.
struct Sim<'a> {
    sched: Scheduler,
    mode: DistMode,
    tests: BTreeMap<TestId, &'a SchedTest>,
    /// Each test's place in the collection.
    place: BTreeMap<TestId, usize>,
    trace: Trace,
    /// Per worker: held tests, oldest (running) first.
    inflight: Vec<VecDeque<TestId>>,
    /// Dispatches each test may still get: 1, plus one per retry granted or push-back.
    owed: BTreeMap<TestId, u32>,
    /// Retries granted per test (tests with none absent), and in total.
    retries: BTreeMap<TestId, u32>,
    granted: usize,
    /// Workers gone for good.
    dead: BTreeSet<usize>,
    /// Per worker, as the scheduler sees it: stopped (`release`, also by `push_front`) and
    /// not handed a test since.
    released: Vec<bool>,
    /// Per worker: the scheduler knows it (one of the first `workers`, or it has called in).
    seen: Vec<bool>,
    /// Per worker: the place of the last test it took in order (its frontier).
    frontier: Vec<Option<usize>>,
    /// Tests whose order is not guaranteed: put back (`push_front`), or queued on a worker
    /// when it stopped (anyone may take them).
    exempt: BTreeSet<TestId>,
    /// Batches not yet given (`Op::Extend`), and how many tests were given so far.
    pending: VecDeque<(Vec<SchedTest>, Vec<bool>)>,
    arrived: usize,
}

impl<'a> Sim<'a> {
    fn new(tests: &'a [SchedTest], unknown: &[bool], workers: usize, mode: DistMode) -> Self {
        Self::batched(tests, unknown, workers, mode, &[tests.len()])
    }

    /// The tests arrive in consecutive batches of the given lengths: the first at
    /// construction (maybe none), the others by `Op::Extend` (or at the end).
    fn batched(
        tests: &'a [SchedTest],
        unknown: &[bool],
        workers: usize,
        mode: DistMode,
        lens: &[usize],
    ) -> Self {
        let slots = workers + 1;
        let mut pending = VecDeque::new();
        let mut start = 0;
        for &len in lens {
            let end = start + len;
            let guessed = unknown.get(start..end.min(unknown.len())).unwrap_or(&[]);
            pending.push_back((tests[start..end].to_vec(), guessed.to_vec()));
            start = end;
        }
        assert_eq!(start, tests.len());
        let (first, guessed) = pending.pop_front().unwrap_or_default();
        let arrived = first.len();
        let sched = Scheduler::with_options(first, workers, mode, &guessed, &HashSet::new());
        Sim {
            sched,
            mode,
            tests: tests.iter().map(|t| (t.id.clone(), t)).collect(),
            place: (0..).zip(tests).map(|(i, t)| (t.id.clone(), i)).collect(),
            trace: Trace {
                dispatched: vec![Vec::new(); slots],
                retried: vec![Vec::new(); slots],
                ordered: vec![Vec::new(); slots],
                ..Trace::default()
            },
            inflight: vec![VecDeque::new(); slots],
            owed: tests.iter().map(|t| (t.id.clone(), 1)).collect(),
            retries: BTreeMap::new(),
            granted: 0,
            dead: BTreeSet::new(),
            released: vec![false; slots],
            seen: (0..slots).map(|w| w < workers).collect(),
            frontier: vec![None; slots],
            exempt: BTreeSet::new(),
            pending,
            arrived,
        }
        .noting_cap()
    }

    fn noting_cap(mut self) -> Self {
        if self.trace.class_cap.is_none() && self.arrived > 0 {
            self.trace.class_cap = Some(self.sched.class_cap());
        }
        self
    }

    /// The next batch arrives; false if none is left.
    fn extend(&mut self) -> bool {
        let Some((batch, guessed)) = self.pending.pop_front() else {
            return false;
        };
        self.arrived += batch.len();
        self.sched.extend(batch, &guessed);
        if self.trace.class_cap.is_none() && self.arrived > 0 {
            self.trace.class_cap = Some(self.sched.class_cap());
        }
        true
    }

    /// `w` stops: what is queued for it may go to anyone, in any order.
    fn stopped(&mut self, w: usize) {
        self.released[w] = true;
        self.exempt.extend(self.sched.queued_for(WorkerId(w)));
    }

    /// A pool test goes only to a worker whose position (`Scheduler::position_of`, read
    /// before the dispatch: the place of the last test it took in order) comes before it,
    /// so it never runs behind a test the worker ran in order (which must be increasing:
    /// `assert_collection_order`); pool tests may run ahead of their place. The one
    /// exception, the fallback: a pool unit at or before the position of every live worker
    /// (not stopped, see `released`) goes to the live worker with the lowest position, and
    /// its tests may then run behind. Retries, tests put back and work left by a stopped
    /// worker are exempt.
    fn check_place(&self, w: usize, id: &TestId, before: &[Option<usize>]) {
        if self.retries.contains_key(id) || self.exempt.contains(id) || self.sched.last_in_order() {
            return;
        }
        let p = self.place[id];
        let mine = before[w];
        let behind = mine.is_some_and(|f| p <= f);
        if self.sched.last_fallback() {
            assert!(
                behind,
                "worker {w} took {id} ({p}) by the fallback, in order"
            );
            for v in (0..self.slots()).filter(|&v| v != w) {
                if self.seen[v] && !self.released[v] {
                    assert!(
                        mine <= before[v] && before[v].is_some_and(|f| p <= f),
                        "fallback {id} ({p}) to worker {w} at {mine:?}, but worker {v} is at \
                         {:?}",
                        before[v]
                    );
                }
            }
        }
        assert!(
            !behind || self.sched.last_behind(),
            "worker {w} ran {id} ({p}) from the pool behind its position {mine:?}: {:?}",
            self.trace.dispatched[w]
        );
    }

    fn slots(&self) -> usize {
        self.inflight.len()
    }

    /// A pushed-back or released test's file (or scope) and group are exempt from the
    /// order checks.
    fn disturb(&mut self, id: &TestId) {
        self.trace
            .disturbed
            .insert(key_of(self.mode, id).to_owned());
        if let Some(group) = &self.tests[id].group {
            self.trace.disturbed.insert(format!("group:{group}"));
        }
    }

    fn sched_test(&self, id: &TestId) -> SchedTest {
        (*self.tests[id]).clone()
    }

    fn next(&mut self, w: usize, allow_risky: bool) -> bool {
        self.seen[w] = true;
        let before: Vec<Option<usize>> = (0..self.slots())
            .map(|v| self.sched.position_of(v))
            .collect();
        let Some(d) = self.sched.next_for_opts(WorkerId(w), allow_risky) else {
            assert!(
                !allow_risky || self.sched.idle_is_justified(WorkerId(w)),
                "worker {w} idle with {} left",
                self.sched.remaining()
            );
            return false;
        };
        self.check_place(w, &d.id, &before);
        self.released[w] = false;
        if self.sched.last_in_order() {
            self.frontier[w] = self.frontier[w].max(Some(self.place[&d.id]));
        }
        let owed = self.owed.get_mut(&d.id).expect("a test of the suite");
        assert!(*owed > 0, "{} dispatched twice: {:?}", d.id, self.trace);
        *owed -= 1;
        // Every dispatch of a test once retried is left out of the order checks.
        let retried = self.retries.contains_key(&d.id);
        let seq = if retried {
            &mut self.trace.retried[w]
        } else {
            &mut self.trace.dispatched[w]
        };
        seq.push(d.id.clone());
        if self.sched.last_in_order() {
            self.trace.ordered[w].push(self.place[&d.id]);
        }
        self.inflight[w].push_back(d.id);
        true
    }

    /// The oldest test `w` holds ends; failed, it is retried on `to` if it may be.
    fn end_oldest(&mut self, w: usize, failed: bool, to: usize) {
        let Some(id) = self.inflight[w].pop_front() else {
            return;
        };
        self.trace.completed.push(id.clone());
        let n = self.retries.entry(id.clone()).or_insert(0);
        if failed && *n < RERUNS {
            *n += 1;
            self.granted += 1;
            *self.owed.get_mut(&id).expect("known") += 1;
            let test = self.sched_test(&id);
            self.seen[to] = true;
            self.sched.push_next(WorkerId(to), test);
        } else if *n == 0 {
            self.retries.remove(&id);
        }
    }

    fn push_back(&mut self, w: usize) {
        let back: Vec<TestId> = self.inflight[w].drain(..).collect();
        if back.is_empty() {
            return;
        }
        // `push_front` releases the unit the worker was in, as `release` does.
        if let Some(last) = self.trace.dispatched[w].last().cloned() {
            self.disturb(&last);
        }
        for id in &back {
            self.disturb(id);
            *self.owed.get_mut(id).expect("known") += 1;
        }
        let tests = back.iter().map(|id| self.sched_test(id)).collect();
        self.seen[w] = true;
        self.sched.push_front(WorkerId(w), tests);
        self.stopped(w);
    }

    fn apply(&mut self, op: Op) {
        let (w, to) = match op {
            Op::Fail(w, to) | Op::Crash(w, to) => (w, to),
            Op::Next(w)
            | Op::NextSafe(w)
            | Op::Complete(w)
            | Op::PushBack(w)
            | Op::Disable(w)
            | Op::Release(w) => (w, w),
            Op::Extend => {
                self.extend();
                self.check();
                return;
            }
        };
        if self.dead.contains(&w) {
            return;
        }
        // A retry goes to a live worker (see `attempts::retry_worker`).
        let to = if self.dead.contains(&to) { w } else { to };
        match op {
            Op::Next(w) => {
                self.next(w, true);
            }
            Op::NextSafe(w) => {
                self.next(w, false);
            }
            Op::Complete(w) => self.end_oldest(w, false, w),
            Op::Fail(..) => self.end_oldest(w, true, to),
            Op::Crash(..) => {
                if self.inflight[w].is_empty() {
                    return;
                }
                self.end_oldest(w, true, to);
                self.push_back(w);
            }
            Op::PushBack(w) => self.push_back(w),
            Op::Disable(w) => {
                let live = self.slots() - self.dead.len();
                if live == 1 {
                    return;
                }
                self.dead.insert(w);
                let other = (0..self.slots()).find(|o| !self.dead.contains(o));
                self.end_oldest(w, true, other.expect("one is live"));
                self.push_back(w);
                if let Some(last) = self.trace.dispatched[w].last().cloned() {
                    self.disturb(&last);
                }
                self.stopped(w);
                self.sched.release(WorkerId(w));
            }
            Op::Extend => unreachable!("handled above"),
            Op::Release(w) => {
                if let Some(last) = self.trace.dispatched[w].last().cloned() {
                    self.disturb(&last);
                }
                self.stopped(w);
                self.sched.release(WorkerId(w));
            }
        }
        self.check();
    }

    /// Nothing lost; no worker told there is work it cannot get.
    fn check(&self) {
        let held: usize = self.inflight.iter().map(VecDeque::len).sum();
        assert_eq!(
            self.sched.remaining() + held + self.trace.completed.len(),
            self.arrived + self.granted
        );
        assert_eq!(
            self.sched.remaining() == 0,
            self.sched.remaining_estimate() == 0.0
        );
        let mut someone = false;
        for w in 0..self.slots() {
            if self.sched.has_work_for(WorkerId(w)) {
                someone |= !self.dead.contains(&w);
                let mut probe = self.sched.clone();
                assert!(
                    probe.next_for_opts(WorkerId(w), true).is_some(),
                    "worker {w} has work but gets none: {:?}",
                    self.sched
                );
            }
        }
        assert!(
            someone || self.sched.remaining() == 0,
            "work left for no live worker: {:?}",
            self.sched
        );
    }

    /// Every worker finishes what it holds, then asks until nothing is left.
    fn finish(mut self) -> Trace {
        loop {
            for w in 0..self.slots() {
                while !self.inflight[w].is_empty() {
                    self.end_oldest(w, false, w);
                }
            }
            let mut progressed = false;
            for w in 0..self.slots() {
                if self.dead.contains(&w) {
                    continue;
                }
                progressed |= self.next(w, true);
            }
            if !progressed && !self.extend() {
                break;
            }
        }
        assert_eq!(self.sched.remaining(), 0, "work left but every worker idle");
        assert!(self.owed.values().all(|&n| n == 0), "{:?}", self.owed);
        self.trace
    }
}

fn run(tests: &[SchedTest], unknown: &[bool], workers: usize, mode: DistMode, ops: &[Op]) -> Trace {
    let mut sim = Sim::new(tests, unknown, workers, mode);
    for &op in ops {
        sim.apply(op);
    }
    sim.finish()
}

fn run_batched(
    tests: &[SchedTest],
    unknown: &[bool],
    workers: usize,
    mode: DistMode,
    lens: &[usize],
    ops: &[Op],
) -> Trace {
    let mut sim = Sim::batched(tests, unknown, workers, mode, lens);
    for &op in ops {
        sim.apply(op);
    }
    sim.finish()
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

/// `Load`/`LoadGroup`: what each worker takes in order (all but pooled, retried and
/// put-back tests, see `Trace::ordered`) is a subsequence of the collection, as under
/// xdist's `load`, so it never comes back to a file it has left (a file whose tests are
/// together in the collection).
fn assert_collection_order(tests: &[SchedTest], trace: &Trace) {
    let mut spans: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for (i, t) in tests.iter().enumerate() {
        let span = spans.entry(t.id.file()).or_insert((i, i, 0));
        span.1 = i;
        span.2 += 1;
    }
    for (w, places) in trace.ordered.iter().enumerate() {
        assert!(
            places.windows(2).all(|p| p[0] < p[1]),
            "worker {w} out of collection order: {places:?}"
        );
        let mut left: BTreeSet<&str> = BTreeSet::new();
        let mut current: Option<&str> = None;
        for &p in places {
            let file = tests[p].id.file();
            let (first, last, n) = spans[file];
            let together = last - first + 1 == n;
            if current != Some(file) {
                assert!(
                    !(together && left.contains(file)),
                    "worker {w} came back to {file}: {places:?}"
                );
                left.extend(current);
                current = Some(file);
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
        done.dedup();
        let mut want: Vec<&TestId> = tests.iter().map(|t| &t.id).collect();
        want.sort();
        prop_assert_eq!(done, want);
        match mode {
            DistMode::Load => {
                let class_cap = Scheduler::with_unknown(tests.clone(), workers, mode, &unknown).class_cap();
                assert_small_classes_whole(&tests, class_cap, &trace);
                assert_collection_order(&tests, &trace);
            }
            DistMode::LoadGroup => {
                assert_groups_whole(&tests, &trace);
                assert_collection_order(&tests, &trace);
            }
            DistMode::LoadScope | DistMode::LoadFile => assert_units_contiguous(&trace, mode),
        }
        // Same input, same calls: same dispatch sequence.
        prop_assert_eq!(run(&tests, &unknown, workers, mode, &ops), trace);
    }

    #[test]
    fn batches_every_test_once_and_whole_units(
        ((tests, unknown, mode, lens), workers, ops) in (batched_suite(), 1..6usize)
            .prop_flat_map(|(s, w)| (Just(s), Just(w), batched_ops(w)))
    ) {
        let trace = run_batched(&tests, &unknown, workers, mode, &lens, &ops);
        let mut done: Vec<&TestId> = trace.completed.iter().collect();
        done.sort();
        done.dedup();
        let mut want: Vec<&TestId> = tests.iter().map(|t| &t.id).collect();
        want.sort();
        prop_assert_eq!(done, want);
        match mode {
            DistMode::Load => {
                if let Some(class_cap) = trace.class_cap {
                    assert_small_classes_whole(&tests, class_cap, &trace);
                }
                assert_collection_order(&tests, &trace);
            }
            DistMode::LoadGroup => {
                assert_groups_whole(&tests, &trace);
                assert_collection_order(&tests, &trace);
            }
            DistMode::LoadScope | DistMode::LoadFile => assert_units_contiguous(&trace, mode),
        }
        prop_assert_eq!(run_batched(&tests, &unknown, workers, mode, &lens, &ops), trace);
    }

    #[test]
    fn one_worker_runs_in_collection_order(
        (tests, unknown) in suite(), picks in prop::collection::vec(any::<bool>(), 70)
    ) {
        // `-n 1`: plain pytest's order, whatever the timings; the tests put first (failed
        // last time) ahead of the rest, each part in collection order.
        let first: HashSet<TestId> = tests
            .iter()
            .zip(&picks)
            .filter(|(_, &p)| p)
            .map(|(t, _)| t.id.clone())
            .collect();
        let mut sched = Scheduler::with_options(tests.clone(), 1, DistMode::Load, &unknown, &first);
        let order: Vec<TestId> = std::iter::from_fn(|| sched.next_for(WorkerId(0))).collect();
        let (mut want, rest): (Vec<TestId>, Vec<TestId>) =
            tests.into_iter().map(|t| t.id).partition(|id| first.contains(id));
        want.extend(rest);
        prop_assert_eq!(order, want);
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
