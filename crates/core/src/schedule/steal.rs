//! The work-stealing queue: per-worker deques of light tests, a shared pool of long ones;
//! an idle worker takes from the deque with the most estimated time left.
//!
//! Units (see `units.rs`) are what moves between workers: chunks of one file's consecutive
//! tests in `Load`, whole scopes or files otherwise. Heavy units, and in `Load` the tests
//! with no recorded time, sit in a shared pool instead: a worker that is not in the middle
//! of a unit takes the pool's head before its own deque, so long tests start first on
//! whichever worker is free (a wrong estimate cannot stack two on one worker) and guesses
//! are found out while there is time to steal around them. Tests put first (`first`, the
//! previous run's failures) lead the pool.
//!
//! The light units: in `Load`, the tests in collection order are cut into one contiguous
//! range of equal estimate per worker (at most `workers - 1` files split, so module
//! fixtures are set up about once), each in collection order; a worker with nothing queued
//! claims the first range left. In `LoadScope` and `LoadFile`, whole units by LPT (longest
//! first onto the least-loaded deque), each deque in collection order. With one worker,
//! plain pytest's order.
//!
//! Order, as under xdist's `load` (each worker runs a subsequence of the collection): in
//! `Load` a worker takes from other deques only tests after the last one it took from a
//! deque (its frontier), so it never comes back to a file it has left; only pool tests
//! (long ones, new ones) run ahead of their place. A thief takes about half of the victim's
//! remaining estimate: whole units after the one the victim is in, from the first after the
//! thief's frontier (so its frontier moves as little as possible), else the tail of the
//! victim's unit. A pool unit moves only ahead, never behind: it goes to a worker whose
//! frontier is before it (one that has taken nothing in order can take anything); only
//! when no live worker can take it so does the live worker with the lowest frontier take
//! it anyway (the fallback: no test is lost and nobody waits forever). So that this stays
//! rare, places move little while the pool drains: a worker with a long test in flight
//! (`allow_risky` false) that has nothing queued takes, to queue behind it, only the first
//! block of the earliest unclaimed range, and nothing at all if that would pass a long
//! pool test (the caller then queues a second long one). In `LoadScope` and `LoadFile` whole units from the tail, never a started
//! one (until `push_front` or `release`).
//!
//! Costs: `next_for` is O(1) from the pool or the own deque and O(workers + units moved)
//! when stealing; sums are kept incrementally in integer microseconds, so they are exact
//! and the same input and call sequence always give the same dispatch sequence.

use std::collections::{HashSet, VecDeque};

use crate::test_id::{TestId, WorkerId};

use super::deque::{after_place, Deque, Steal};
use super::units::{
    blocks, form_units, group_by_key, group_key, in_collection_order, key_of, positioned, seed,
    take_first, to_micros, Item, Unit, HEAVY_PER_SHARE, NO_POS,
};

mod extend;

/// xdist's `--dist` modes that shardex honours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DistMode {
    /// Single tests (with file affinity where it costs no balance).
    #[default]
    Load,
    /// Whole classes (else modules) stay on one worker, in order.
    LoadScope,
    /// Whole files stay on one worker, in order.
    LoadFile,
    /// `Load`, except that the tests of one `xdist_group` (`SchedTest::group`) run on one
    /// worker, in order, uninterrupted.
    LoadGroup,
}

impl DistMode {
    /// Single tests move between workers (`Load`, `LoadGroup`), not whole scopes or files.
    pub fn per_test(self) -> bool {
        matches!(self, Self::Load | Self::LoadGroup)
    }
}

/// A test handed to a worker.
#[derive(Clone, Debug, PartialEq)]
pub struct Dispatch {
    pub id: TestId,
    /// Heavy (long) or unknown (its length is a guess): see `Scheduler::next_for_opts`.
    pub risky: bool,
    /// The scheduler's estimate, seconds (at least 1 µs).
    pub estimate: f64,
}

/// A test to schedule, in collection order.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedTest {
    pub id: TestId,
    pub estimate: f64,
    /// Its `xdist_group` (used in `LoadGroup` only).
    pub group: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Scheduler {
    mode: DistMode,
    /// Units any free worker takes before its own deque: tests put first, then tests
    /// without a recorded time (so surprises show while there is time to steal around
    /// them), then heavy units longest first (list scheduling, robust to wrong estimates).
    pool: Deque,
    /// `Load`/`LoadGroup`: the contiguous ranges of light tests, in collection order, not
    /// yet claimed. A worker with nothing queued claims the first, so whoever is free first
    /// (not busy with long tests) runs the earliest part of the collection, and can later
    /// help the others: it may only take tests after its place (see `frontier`).
    unclaimed: VecDeque<Deque>,
    deques: Vec<Deque>,
    /// Per worker, in `Load`/`LoadGroup`: the place in collection order of the last test it
    /// took from a deque (not the pool). It steals only tests after it, so each worker runs
    /// its share in pytest's order and never comes back to a file it has left.
    frontier: Vec<Option<usize>>,
    len: usize,
    micros: u64,
    /// Classes estimated below this stay whole on one worker (see `units::blocks`).
    class_cap: u64,
    /// The worker count it was made for (at least 1): how `extend` forms a batch's units.
    workers: usize,
    /// Places in collection order given so far: a batch added by `extend` comes after.
    next_pos: usize,
    /// What `extend` forms a batch's units against: the most work queued at once so far,
    /// or `expect_total`'s if more. It never shrinks, so the caps never do: a class kept
    /// whole by an earlier batch's cap is kept whole by every later one.
    total_micros: u64,
    /// For tests: the last test handed out moved the worker's place (see `frontier`).
    #[cfg(test)]
    last_in_order: bool,
    /// For tests: the last test handed out came from the pool by the fallback (see
    /// `pool_pick`).
    #[cfg(test)]
    last_fallback: bool,
    /// For tests: the last test handed out belongs to a unit taken by the fallback.
    #[cfg(test)]
    last_behind: bool,
}

impl Scheduler {
    pub fn new(tests: Vec<SchedTest>, workers: usize, mode: DistMode) -> Self {
        Self::with_unknown(tests, workers, mode, &[])
    }

    /// Like [`Scheduler::new`], knowing which tests have no recorded time (`unknown[i]`
    /// for `tests[i]`, e.g. `TimingStore::get(id).is_none()`; missing entries: known).
    /// Their estimate is a guess, so they are handed out first.
    pub fn with_unknown(
        tests: Vec<SchedTest>,
        workers: usize,
        mode: DistMode,
        unknown: &[bool],
    ) -> Self {
        Self::with_options(tests, workers, mode, unknown, &HashSet::new())
    }

    /// Like [`Scheduler::with_unknown`], handing out the tests in `first` before all
    /// others (the tests that failed in the previous run, under `-x`/`--maxfail`, so a
    /// failure shows as early as possible): each alone, in collection order (in
    /// `LoadGroup` with its whole group, in `LoadScope`/`LoadFile` with its whole scope or
    /// file). With one worker the rest runs in collection order, as plain pytest's.
    /// `tests` may be empty: a shared-queue node starts so and gets batches by `extend`.
    pub fn with_options(
        tests: Vec<SchedTest>,
        workers: usize,
        mode: DistMode,
        unknown: &[bool],
        first: &HashSet<TestId>,
    ) -> Self {
        let workers = workers.max(1);
        let next_pos = tests.len();
        let (ahead, items) = take_first(positioned(tests), mode, first);
        let mut pool = Deque::default();
        for unit in ahead {
            pool.push_back(unit);
        }
        // `LoadGroup` keeps its groups whole in the pool, whatever the count.
        let (queues, class_cap) = if workers == 1 && mode != DistMode::LoadGroup {
            let total: u64 = items.iter().map(|i| i.micros).sum();
            let class_cap = (total / HEAVY_PER_SHARE).max(1);
            (vec![in_collection_order(items, mode)], class_cap)
        } else {
            let formed = form_units(items, unknown, workers, mode, None);
            for unit in formed.pooled {
                pool.push_back(unit);
            }
            let queues = seed(formed.seeded, workers, mode, formed.class_cap);
            (queues, formed.class_cap)
        };
        let mut deques: Vec<Deque> = queues
            .into_iter()
            .map(|queue| {
                let mut deque = Deque::default();
                for unit in queue {
                    deque.push_back(unit);
                }
                deque
            })
            .collect();
        let mut unclaimed = VecDeque::new();
        if mode.per_test() && workers > 1 {
            unclaimed = deques.drain(..).filter(|d| d.len > 0).collect();
            deques.resize_with(workers, Deque::default);
        }
        let queued = deques.iter().chain(&unclaimed);
        let len = pool.len + queued.clone().map(|d| d.len).sum::<usize>();
        let micros = pool.micros + queued.map(|d| d.micros).sum::<u64>();
        Self {
            mode,
            pool,
            unclaimed,
            frontier: vec![None; deques.len()],
            deques,
            len,
            micros,
            class_cap,
            workers,
            next_pos,
            total_micros: micros,
            #[cfg(test)]
            last_in_order: false,
            #[cfg(test)]
            last_fallback: false,
            #[cfg(test)]
            last_behind: false,
        }
    }

    pub fn mode(&self) -> DistMode {
        self.mode
    }

    /// The next test for `worker`: the rest of the unit it is in, else the pool's head,
    /// else the head of its deque, else stolen from the tail of the deque with the most
    /// estimated time left. `None` once nothing is left anywhere, or, in
    /// `LoadScope`/`LoadFile`, when all that is left belongs to units other workers have
    /// started (ask again after `push_front` or `release`; see `has_work_for`). A worker id
    /// beyond the count given to `new` is a new worker with an empty deque.
    pub fn next_for(&mut self, worker: WorkerId) -> Option<TestId> {
        self.next_for_opts(worker, true).map(|d| d.id)
    }

    /// `next_for`, with whether the test is risky: heavy (long) or unknown (its length is a
    /// guess). With `allow_risky` false a risky pool unit is passed over: a worker that
    /// already has one running or queued must not take a second behind it (it would stack
    /// them while other workers go idle).
    pub fn next_for_opts(&mut self, worker: WorkerId, allow_risky: bool) -> Option<Dispatch> {
        let w = self.slot(worker);
        let own = &self.deques[w];
        let in_unit = own.units.front().is_some_and(|u| u.started);
        let urgent = own.units.front().is_some_and(|u| u.urgent);
        let pick = if urgent {
            None
        } else {
            self.pool_pick(w, allow_risky)
        };
        // In `Load` a started unit is only affinity: the pool's long tests and tests of
        // unknown length go first (they decide the makespan and must start early), but never
        // inside a class, which runs uninterrupted as in plain pytest. In the other modes
        // scopes and files stay whole.
        // Never inside a class (its class-scoped fixtures would be set up twice in this
        // worker); between module-level tests a module fixture may be set up again, as with
        // xdist's load.
        let at_scope_boundary = own.units.front().is_some_and(|u| {
            let next = u.items.front().and_then(|i| i.id.top_class());
            !u.whole && (next.is_none() || u.last_class.as_deref() != next)
        });
        let pick = pick.filter(|_| !in_unit || (self.mode.per_test() && at_scope_boundary));
        if let Some((index, fallback)) = pick {
            let mut unit = self.pool.take_units(index..index + 1).remove(0);
            unit.pooled = true;
            unit.behind = fallback;
            self.deques[w].push_front(unit);
        } else if own.len == 0 {
            // A worker with a long test in flight that will take pool work next only needs a
            // test to queue behind it: the first block of the earliest range, so that its
            // place stays early and the pool's tests after it stay in order for it.
            let nibble = !allow_risky
                && !self.unclaimed.is_empty()
                && self
                    .pool_pick(w, true)
                    .is_some_and(|(_, fallback)| !fallback);
            if nibble && self.nibble_passes_pool() {
                // Passing a pool test would leave it behind this worker's place: rather a
                // second long test queued (the caller's choice) than that.
                return None;
            }
            let units = match self.unclaimed.pop_front() {
                Some(range) if nibble => self.nibble(range),
                Some(range) => Vec::from(range.units),
                None => {
                    let victim = self.victim(w)?;
                    self.take_tail(victim, w)
                }
            };
            for unit in units {
                self.deques[w].push_back(unit);
            }
        }
        let head = self.deques[w].units.front();
        let risky = head.is_some_and(|u| u.heavy || u.unknown);
        let in_order = head.is_some_and(|u| !u.pooled && !u.urgent);
        #[cfg(test)]
        let behind = head.is_some_and(|u| u.behind);
        let item = self.deques[w].pop_test()?;
        self.deques[w].released = false;
        let in_order = in_order && item.pos != NO_POS && self.mode.per_test();
        if in_order {
            self.frontier[w] = self.frontier[w].max(Some(item.pos));
        }
        #[cfg(test)]
        {
            self.last_in_order = in_order;
            self.last_fallback = pick.is_some_and(|(_, fallback)| fallback);
            self.last_behind = behind;
        }
        self.len -= 1;
        self.micros -= item.micros;
        Some(Dispatch {
            estimate: item.micros as f64 / 1e6,
            id: item.id,
            risky,
        })
    }

    /// Tests of `file` without a recorded time turned out short in this run: from now on
    /// they are estimated at `secs` each and no longer handed out one at a time as risky.
    /// (`Load` only; in the other modes the unknown flag is not used.)
    pub fn settle_unknown(&mut self, file: &str, secs: f64) {
        let micros = to_micros(secs);
        let all = std::iter::once(&mut self.pool)
            .chain(&mut self.unclaimed)
            .chain(&mut self.deques);
        for deque in all {
            for unit in deque.units.iter_mut() {
                if !unit.unknown || unit.key != file {
                    continue;
                }
                let before = unit.micros;
                for item in &mut unit.items {
                    item.micros = micros;
                }
                unit.micros = micros * unit.items.len() as u64;
                unit.unknown = false;
                deque.micros = deque.micros - before + unit.micros;
                self.micros = self.micros - before + unit.micros;
            }
        }
    }

    /// Puts tests back at the front of `worker`'s deque (retracted from it, or left
    /// unstarted by a crash), in the given order. Tests of the scope or file at the head of
    /// the deque join that unit. The head is no longer "started": until `worker` takes a
    /// test again, another worker may steal it whole.
    pub fn push_front(&mut self, worker: WorkerId, tests: Vec<SchedTest>) {
        let w = self.slot(worker);
        self.release(worker);
        if tests.is_empty() {
            return;
        }
        let items: Vec<Item> = tests.into_iter().map(Item::from).collect();
        let mode = self.mode;
        let mut units = match mode {
            DistMode::Load | DistMode::LoadGroup => {
                runs_of_file(items, mode == DistMode::LoadGroup)
            }
            DistMode::LoadScope | DistMode::LoadFile => group_by_key(items, mode),
        };
        let deque = &mut self.deques[w];
        let joins_head = match (deque.units.front(), units.last()) {
            (Some(head), Some(last)) => head.key == last.key,
            _ => false,
        };
        if joins_head {
            let last = units.pop().expect("checked above");
            let head = deque.units.front_mut().expect("checked above");
            // Places in a unit are increasing or all unknown (see `Item::pos`).
            for item in &mut head.items {
                item.pos = NO_POS;
            }
            let (n, micros) = (last.items.len(), last.micros);
            for item in last.items.into_iter().rev() {
                head.items.push_front(item);
            }
            head.micros += micros;
            head.order = last.order;
            deque.micros += micros;
            deque.len += n;
            self.len += n;
            self.micros += micros;
        }
        for unit in units.into_iter().rev() {
            self.len += unit.items.len();
            self.micros += unit.micros;
            deque.push_front(unit);
        }
    }

    /// A test to run next on `worker` (a retry): at the front of its deque and served
    /// before the shared pool, like a unit the worker has started.
    pub fn push_next(&mut self, worker: WorkerId, test: SchedTest) {
        let w = self.slot(worker);
        let item = Item::from(test);
        let key = item.id.file().to_owned();
        let mut unit = Unit::new(key, 0, VecDeque::from([item]));
        unit.started = true;
        unit.urgent = true;
        self.len += 1;
        self.micros += unit.micros;
        self.deques[w].push_front(unit);
    }

    /// `worker` stopped for good or for now (crashed, disabled): the unit it had started
    /// may be stolen whole by another worker. In `LoadScope`/`LoadFile`, call it when a
    /// worker dies with nothing to push back, or the rest of its unit waits for that slot.
    pub fn release(&mut self, worker: WorkerId) {
        // Retries pushed in front of the unit it had started go with it: they become
        // ordinary work any worker may take.
        if let Some(deque) = self.deques.get_mut(worker.0) {
            deque.released = true;
            for unit in &mut deque.units {
                unit.started = false;
                unit.urgent = false;
            }
        }
    }

    /// Removes and returns everything not yet dispatched (early stop), worker by worker.
    pub fn drain(&mut self) -> Vec<TestId> {
        let mut out = Vec::with_capacity(self.len);
        let all = std::iter::once(&mut self.pool)
            .chain(&mut self.unclaimed)
            .chain(&mut self.deques);
        for deque in all {
            for unit in deque.units.drain(..) {
                out.extend(unit.items.into_iter().map(|i| i.id));
            }
            deque.micros = 0;
            deque.len = 0;
        }
        self.len = 0;
        self.micros = 0;
        out
    }

    pub fn remaining(&self) -> usize {
        self.len
    }

    /// Estimated seconds of the tests not yet dispatched (each counted as at least 1 µs).
    pub fn remaining_estimate(&self) -> f64 {
        self.micros as f64 / 1e6
    }

    /// Tests queued for `worker` right now, in dispatch order (for display and tests).
    pub fn queued_for(&self, worker: WorkerId) -> Vec<TestId> {
        self.deques
            .get(worker.0)
            .map(|d| {
                d.units
                    .iter()
                    .flat_map(|u| u.items.iter().map(|i| i.id.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `next_for` would give `worker` something now.
    pub fn has_work_for(&self, worker: WorkerId) -> bool {
        self.pool_pick(worker.0, true).is_some()
            || !self.unclaimed.is_empty()
            || self.deques.get(worker.0).is_some_and(|d| d.len > 0)
            || (0..self.deques.len()).any(|v| {
                v != worker.0
                    && self.deques[v].stealable(self.mode, self.class_cap, self.after(worker.0, v))
            })
    }

    fn slot(&mut self, worker: WorkerId) -> usize {
        if worker.0 >= self.deques.len() {
            self.deques.resize_with(worker.0 + 1, Deque::default);
            self.frontier.resize(worker.0 + 1, None);
        }
        worker.0
    }

    /// A worker's position in collection order for the pool: its `frontier` (the place of
    /// the last test it took in order; pool tests run ahead of their place and do not
    /// move it). `None` (before everything) until it has taken a test in order.
    fn position(&self, v: usize) -> Option<usize> {
        self.frontier.get(v).copied().flatten()
    }

    /// The pool unit `w` may take (its index) and whether by the fallback. In order: the
    /// first (in pool order) whose first test comes after `w`'s position (see `position`),
    /// so a pool test moves only ahead of its place, never behind a test the worker ran in
    /// order. The fallback: a unit no live worker (not stopped, see `release`) can take in
    /// order still has to run, so the live worker with the lowest position takes it (the
    /// pool's first such unit, in pool order); a worker that has just stopped counts as
    /// live when it asks. With `allow_risky` false, risky units are passed over.
    fn pool_pick(&self, w: usize, allow_risky: bool) -> Option<(usize, bool)> {
        let eligible = |u: &Unit| allow_risky || !(u.heavy || u.unknown);
        let place = |v: usize| self.position(v);
        let mine = place(w);
        let units = &self.pool.units;
        if let Some(i) = units
            .iter()
            .position(|u| eligible(u) && after_place(mine, u.items[0].pos))
        {
            return Some((i, false));
        }
        // Lowest among the live workers: every unit `w` cannot take in order comes at or
        // before every live worker's place, so none of them can.
        let lowest = (0..self.deques.len())
            .filter(|&v| v != w && !self.deques[v].released)
            .all(|v| mine <= place(v));
        if !lowest {
            return None;
        }
        units.iter().position(eligible).map(|i| (i, true))
    }

    /// The first unclaimed test comes after a long pool test (of a known length: tests of
    /// unknown length are not stacked two on a worker, see `next_for_opts`).
    fn nibble_passes_pool(&self) -> bool {
        let Some(next) = self.unclaimed.front().and_then(|r| r.units.front()) else {
            return false;
        };
        let q = next.items[0].pos;
        self.pool
            .units
            .iter()
            .any(|u| u.heavy && !u.unknown && u.items[0].pos < q)
    }

    /// Takes the first block (see `units::blocks`) of `range`, the first unclaimed one,
    /// and puts the rest back at the head of the unclaimed ranges.
    fn nibble(&mut self, mut range: Deque) -> Vec<Unit> {
        let first = range.units.front_mut().expect("ranges are never empty");
        let (len, _) = blocks(&first.items, self.class_cap)[0];
        let taken = if len == first.items.len() {
            range.take_units(0..1)
        } else {
            let rest = first.split_tail(first.items.len() - len);
            let head = std::mem::replace(first, rest);
            range.micros -= head.micros;
            range.len -= len;
            vec![head]
        };
        if range.len > 0 {
            self.unclaimed.push_front(range);
        }
        taken
    }

    /// The place in collection order after which `thief` may take from `victim`: its
    /// frontier, in `Load`/`LoadGroup`, unless the victim stopped (then anything goes, or
    /// its tests could wait forever).
    fn after(&self, thief: usize, victim: usize) -> Option<usize> {
        if !self.mode.per_test() || self.deques[victim].released {
            return None;
        }
        self.frontier.get(thief).copied().flatten()
    }

    /// The deque with the most estimated time left among those with something to steal;
    /// ties go to the lowest index.
    fn victim(&self, thief: usize) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (v, deque) in self.deques.iter().enumerate() {
            if v == thief || !deque.stealable(self.mode, self.class_cap, self.after(thief, v)) {
                continue;
            }
            match best {
                Some(b) if deque.micros <= self.deques[b].micros => {}
                _ => best = Some(v),
            }
        }
        best
    }

    /// Takes from the victim what `Deque::plan_steal` says, in original order.
    fn take_tail(&mut self, victim: usize, thief: usize) -> Vec<Unit> {
        let after = self.after(thief, victim);
        let deque = &mut self.deques[victim];
        let Some(plan) = deque.plan_steal(self.mode, self.class_cap, after) else {
            return Vec::new();
        };
        let mut taken = Self::take_planned(deque, plan);
        if deque.released {
            // Left by a stopped worker, maybe before the thief's place: run as pool work,
            // out of order, without moving the thief's place.
            for unit in &mut taken {
                unit.pooled = true;
            }
        }
        taken
    }

    fn take_planned(deque: &mut Deque, plan: Steal) -> Vec<Unit> {
        let len = deque.units.len();
        match plan {
            Steal::Units(n) => deque.take_units(len - n..len),
            Steal::Middle(start, n) => deque.take_units(start..start + n),
            Steal::Front(index, n) => {
                let unit = &mut deque.units[index];
                let rest = unit.split_tail(unit.items.len() - n);
                let head = std::mem::replace(unit, rest);
                deque.micros -= head.micros;
                deque.len -= n;
                vec![head]
            }
            Steal::Tail(n) => {
                let back = deque.units.back_mut().expect("planned");
                if n == back.items.len() {
                    return deque.take_units(len - 1..len);
                }
                let tail = back.split_tail(n);
                deque.micros -= tail.micros;
                deque.len -= n;
                vec![tail]
            }
        }
    }

    #[cfg(test)]
    pub(super) fn class_cap(&self) -> u64 {
        self.class_cap
    }

    /// For tests: the last test handed out was taken in collection order (not from the
    /// pool, not a retry or a put-back test, not left by a stopped worker).
    #[cfg(test)]
    pub(super) fn last_in_order(&self) -> bool {
        self.last_in_order
    }

    /// For tests: the last test handed out came from the pool by the fallback: no live
    /// worker could take it in order (see `pool_pick`).
    #[cfg(test)]
    pub(super) fn last_fallback(&self) -> bool {
        self.last_fallback
    }

    /// For tests: `worker`'s position for the pool (see `position`).
    #[cfg(test)]
    pub(super) fn position_of(&self, worker: usize) -> Option<usize> {
        self.position(worker)
    }

    /// For tests: the last test handed out belongs to a unit the fallback gave out.
    #[cfg(test)]
    pub(super) fn last_behind(&self) -> bool {
        self.last_behind
    }

    /// For tests: `next_for(worker)` returned `None` rightly.
    #[cfg(test)]
    pub(super) fn idle_is_justified(&self, worker: WorkerId) -> bool {
        self.len == 0 || !self.has_work_for(worker)
    }
}

/// `Load` units for pushed-back tests: runs of consecutive tests of one file, and with
/// `groups` of one group (whole, as `LoadGroup` made them).
fn runs_of_file(items: Vec<Item>, groups: bool) -> Vec<Unit> {
    let mut units: Vec<Unit> = Vec::new();
    for mut item in items {
        if !groups {
            item.group = None;
        }
        let key = match &item.group {
            Some(group) => group_key(group),
            None => key_of(DistMode::Load, &item.id).to_owned(),
        };
        match units.last_mut() {
            Some(unit) if unit.key == key => {
                unit.micros += item.micros;
                unit.items.push_back(item);
            }
            _ => {
                let whole = item.group.is_some();
                let mut unit = Unit::new(key, 0, VecDeque::from([item]));
                unit.whole = whole;
                units.push(unit);
            }
        }
    }
    units
}

/// Tests of the given ids and estimates, no groups: the unit tests' suites.
#[cfg(test)]
pub(crate) fn suite_of(spec: &[(&str, f64)]) -> Vec<SchedTest> {
    spec.iter()
        .map(|&(id, estimate)| SchedTest {
            id: TestId::new(id),
            estimate,
            group: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pool_cuts_in_only_between_scopes() {
        // One worker, known light tests of a class, then an unknown test (pooled) that
        // arrives while the class runs: it waits for the class to end.
        let ids = [
            "m.py::TestC::test_a",
            "m.py::TestC::test_b",
            "m.py::TestC::test_c",
            "m.py::test_after",
            "n.py::test_new",
        ];
        let tests: Vec<SchedTest> = ids
            .iter()
            .map(|id| SchedTest {
                id: TestId::new(*id),
                estimate: 0.01,
                group: None,
            })
            .collect();
        let unknown = [false, false, false, false, true];
        let mut s = Scheduler::with_unknown(tests, 1, DistMode::Load, &unknown);
        let order: Vec<String> =
            std::iter::from_fn(|| s.next_for(WorkerId(0)).map(|t| t.to_string())).collect();
        // The pool goes first (unknown), or right after the class: never inside it.
        let class: Vec<usize> = (0..3)
            .map(|i| order.iter().position(|o| o == ids[i]).unwrap())
            .collect();
        assert_eq!(class[1], class[0] + 1, "{order:?}");
        assert_eq!(class[2], class[1] + 1, "{order:?}");
    }

    #[test]
    fn a_thief_never_takes_the_rest_of_a_small_class_in_progress() {
        // The class comes first, then module-level tests a thief may take.
        let mut ids: Vec<String> = vec![
            "m.py::TestC::test_first".into(),
            "m.py::TestC::test_second".into(),
        ];
        ids.extend((0..40).map(|i| format!("m.py::test_{i}")));
        let tests: Vec<SchedTest> = ids
            .iter()
            .map(|id| SchedTest {
                id: TestId::new(id.as_str()),
                estimate: 0.01,
                group: None,
            })
            .collect();
        let mut s = Scheduler::new(tests, 1, DistMode::Load);
        assert_eq!(
            s.next_for(WorkerId(0)).unwrap().as_str(),
            "m.py::TestC::test_first"
        );
        // Idle workers now steal, and keep stealing: never the second test of the class
        // worker 0 is in.
        let stolen = steal_all(&mut s);
        assert!(!stolen.iter().any(|t| t.contains("TestC")), "{stolen:?}");
        assert_eq!(s.remaining(), 1);
        assert!(!s.has_work_for(WorkerId(99)));
        assert_eq!(
            s.next_for(WorkerId(0)).unwrap().as_str(),
            "m.py::TestC::test_second"
        );
    }

    #[test]
    fn a_retry_in_front_of_a_class_in_progress_is_not_work_for_a_thief() {
        // gw0 is inside a small class when a retry is pushed in front of it: gw1 must not
        // be told there is work (it would wait, never flushed, for nothing).
        let ids = ["m.py::TestC::t0", "m.py::TestC::t1", "m.py::TestC::t2"];
        let mut tests: Vec<SchedTest> = ids
            .iter()
            .map(|id| SchedTest {
                id: TestId::new(*id),
                estimate: 0.001,
                group: None,
            })
            .collect();
        tests.extend(light("m.py", 40));
        let mut s = Scheduler::new(tests, 1, DistMode::Load);
        assert_eq!(s.next_for(WorkerId(0)).unwrap().as_str(), ids[0]);
        // Others take all they may: the module-level tests.
        steal_all(&mut s);
        assert_eq!(s.remaining(), 2);
        let retry = SchedTest {
            id: TestId::new("n.py::flaky"),
            estimate: 0.01,
            group: None,
        };
        s.push_next(WorkerId(0), retry);
        assert!(!s.has_work_for(WorkerId(99)));
        assert_eq!(s.next_for(WorkerId(99)), None);
        assert_eq!(s.next_for(WorkerId(0)).unwrap().as_str(), "n.py::flaky");
        assert_eq!(s.next_for(WorkerId(0)).unwrap().as_str(), ids[1]);
        // gw0 dies: what it had is anyone's, the retry included.
        let retry = SchedTest {
            id: TestId::new("n.py::flaky"),
            estimate: 0.01,
            group: None,
        };
        s.push_next(WorkerId(0), retry);
        s.release(WorkerId(0));
        assert!(s.has_work_for(WorkerId(99)));
        let mut got = Vec::new();
        while let Some(id) = s.next_for(WorkerId(99)) {
            got.push(id.to_string());
        }
        assert_eq!(got, ["m.py::TestC::t2", "n.py::flaky"]);
    }

    #[test]
    fn first_tests_go_before_all_others() {
        // Two workers; c.py::t1 and a.py::t3 failed last time: they start first, in
        // collection order, before the unknown and heavy tests of the pool.
        let mut input = light("a.py", 40);
        input.extend(light("c.py", 40));
        input.push(SchedTest {
            id: TestId::new("h.py::heavy"),
            estimate: 5.0,
            group: None,
        });
        let first: HashSet<TestId> = ids(&["c.py::t1", "a.py::t3"]).into_iter().collect();
        let mut unknown = vec![false; 81];
        unknown[79] = true;
        let mut s = Scheduler::with_options(input, 2, DistMode::Load, &unknown, &first);
        assert_eq!(next(&mut s, 1).as_deref(), Some("a.py::t3"));
        assert_eq!(next(&mut s, 0).as_deref(), Some("c.py::t1"));
        assert_eq!(next(&mut s, 0).as_deref(), Some("c.py::t39"));
        assert_eq!(next(&mut s, 0).as_deref(), Some("h.py::heavy"));
        assert_eq!(s.remaining(), 77);
    }

    #[test]
    fn push_next_comes_before_the_pool() {
        let tests: Vec<SchedTest> = (0..6)
            .map(|i| SchedTest {
                id: TestId::new(format!("t{i}.py::x")),
                estimate: 1.0,
                group: None,
            })
            .collect();
        let unknown = vec![true; tests.len()];
        let mut s = Scheduler::with_unknown(tests, 1, DistMode::Load, &unknown);
        let first = s.next_for(WorkerId(0)).unwrap();
        s.push_next(
            WorkerId(0),
            SchedTest {
                id: first.clone(),
                estimate: 1.0,
                group: None,
            },
        );
        assert_eq!(s.next_for(WorkerId(0)), Some(first));
        let mut rest = 0;
        while s.next_for(WorkerId(0)).is_some() {
            rest += 1;
        }
        assert_eq!(rest, 5);
    }

    use super::*;

    use crate::schedule::steal::suite_of as tests;

    fn ids(list: &[&str]) -> Vec<TestId> {
        list.iter().map(|&s| TestId::new(s)).collect()
    }

    fn next(s: &mut Scheduler, w: usize) -> Option<String> {
        s.next_for(WorkerId(w)).map(|id| id.as_str().to_owned())
    }

    /// `n` tests of 0.1 s in `file`.
    fn light(file: &str, n: usize) -> Vec<SchedTest> {
        (0..n)
            .map(|i| SchedTest {
                id: TestId::new(format!("{file}::t{i}")),
                estimate: 0.1,
                group: None,
            })
            .collect()
    }

    /// Fresh workers take all they may, one after another; what they got.
    fn steal_all(s: &mut Scheduler) -> Vec<String> {
        let mut got = Vec::new();
        for w in 1..100 {
            while let Some(id) = s.next_for(WorkerId(w)) {
                got.push(id.to_string());
            }
        }
        got
    }

    fn names(file: &str, range: std::ops::Range<usize>) -> Vec<TestId> {
        range
            .map(|i| TestId::new(format!("{file}::t{i}")))
            .collect()
    }

    #[test]
    fn a_new_worker_steals_the_tail_half() {
        let mut s = Scheduler::new(light("a.py", 40), 1, DistMode::Load);
        assert_eq!(s.queued_for(WorkerId(0)), names("a.py", 0..40));
        assert!((s.remaining_estimate() - 4.0).abs() < 1e-9);
        // gw1 was not in the plan: it splits off the last half of gw0's run, in order.
        assert_eq!(next(&mut s, 1).as_deref(), Some("a.py::t20"));
        assert_eq!(s.queued_for(WorkerId(1)), names("a.py", 21..40));
        assert_eq!(next(&mut s, 0).as_deref(), Some("a.py::t0"));
        assert_eq!(s.remaining(), 38);
    }

    #[test]
    fn load_keeps_a_file_on_one_worker_when_balance_allows() {
        // 40 tests a file: each is light (below a 32nd of a worker's share).
        let mut input = light("a.py", 40);
        input.extend(light("b.py", 40));
        input.extend(light("c.py", 40));
        let mut s = Scheduler::new(input, 3, DistMode::Load);
        // The ranges go in collection order to whoever asks first.
        assert_eq!(next(&mut s, 2).as_deref(), Some("a.py::t0"));
        assert_eq!(s.queued_for(WorkerId(2)), names("a.py", 1..40));
        assert_eq!(next(&mut s, 0).as_deref(), Some("b.py::t0"));
        assert_eq!(next(&mut s, 1).as_deref(), Some("c.py::t0"));
        assert_eq!(s.queued_for(WorkerId(1)), names("c.py", 1..40));
        for i in 1..40 {
            assert_eq!(next(&mut s, 1), Some(format!("c.py::t{i}")));
        }
        // gw1 is dry, but what is left comes before its place in the collection.
        assert_eq!(next(&mut s, 1), None);
        assert!(!s.has_work_for(WorkerId(1)));
        for i in 1..40 {
            assert_eq!(next(&mut s, 2), Some(format!("a.py::t{i}")));
        }
        // gw2 is dry: it splits off the tail half of gw0's file, which comes after its
        // place; gw0 goes on with the first half.
        assert_eq!(next(&mut s, 2).as_deref(), Some("b.py::t21"));
        assert_eq!(s.queued_for(WorkerId(2)), names("b.py", 22..40));
        assert_eq!(next(&mut s, 0).as_deref(), Some("b.py::t1"));
    }

    #[test]
    fn heavy_tests_are_shared_longest_first() {
        let mut input = tests(&[("h.py::short", 3.0), ("h.py::long", 6.0)]);
        input.extend(light("s.py", 40));
        let mut s = Scheduler::new(input, 2, DistMode::Load);
        assert_eq!(next(&mut s, 1).as_deref(), Some("h.py::long"));
        assert_eq!(next(&mut s, 0).as_deref(), Some("h.py::short"));
        assert!(next(&mut s, 0).unwrap().starts_with("s"));
    }

    #[test]
    fn unknown_tests_go_first() {
        let spec = [("a.py::t1", 1.0), ("a.py::t2", 1.0), ("b.py::new", 0.1)];
        let mut s = Scheduler::with_unknown(tests(&spec), 2, DistMode::Load, &[false, false, true]);
        assert_eq!(next(&mut s, 0).as_deref(), Some("b.py::new"));
        assert_eq!(next(&mut s, 0).as_deref(), Some("a.py::t1"));
    }

    #[test]
    fn scope_modes_never_steal_a_started_unit() {
        let spec = [
            ("a.py::t0", 1.0),
            ("a.py::t1", 1.0),
            ("a.py::t2", 1.0),
            ("b.py::t0", 1.0),
        ];
        let mut s = Scheduler::new(tests(&spec), 2, DistMode::LoadFile);
        assert_eq!(next(&mut s, 0).as_deref(), Some("a.py::t0"));
        assert_eq!(next(&mut s, 1).as_deref(), Some("b.py::t0"));
        // Only a.py's rest is left and gw0 has started it.
        assert_eq!(next(&mut s, 1), None);
        assert!(!s.has_work_for(WorkerId(1)));
        assert!(s.has_work_for(WorkerId(0)));
        assert_eq!(s.remaining(), 2);
        assert_eq!(next(&mut s, 0).as_deref(), Some("a.py::t1"));
        // gw0 died with nothing queued: a.py may move, whole.
        s.release(WorkerId(0));
        assert_eq!(next(&mut s, 1).as_deref(), Some("a.py::t2"));
        assert_eq!(s.remaining(), 0);
    }

    #[test]
    fn push_front_rejoins_the_unit() {
        let spec = [
            ("a.py::C::t0", 1.0),
            ("a.py::C::t1", 1.0),
            ("a.py::C::t2", 1.0),
            ("b.py::t", 9.0),
        ];
        let mut s = Scheduler::new(tests(&spec), 2, DistMode::LoadScope);
        assert_eq!(next(&mut s, 0).as_deref(), Some("b.py::t"));
        assert_eq!(next(&mut s, 0).as_deref(), Some("a.py::C::t0"));
        assert_eq!(next(&mut s, 0).as_deref(), Some("a.py::C::t1"));
        s.push_front(WorkerId(0), tests(&[("a.py::C::t1", 1.0)]));
        assert_eq!(
            s.queued_for(WorkerId(0)),
            ids(&["a.py::C::t1", "a.py::C::t2"])
        );
        assert_eq!((s.remaining(), s.remaining_estimate()), (2, 2.0));
        // Released by the push: another worker may take the whole rest.
        assert_eq!(next(&mut s, 3).as_deref(), Some("a.py::C::t1"));
        assert_eq!(next(&mut s, 3).as_deref(), Some("a.py::C::t2"));
        assert_eq!(s.drain(), Vec::<TestId>::new());
    }

    #[test]
    fn drain_and_empty() {
        let mut s = Scheduler::new(Vec::new(), 0, DistMode::Load);
        assert_eq!(next(&mut s, 0), None);
        assert_eq!((s.remaining(), s.remaining_estimate()), (0, 0.0));
        let mut s = Scheduler::new(
            tests(&[("a.py::t", 0.0), ("b.py::t", f64::NAN)]),
            3,
            DistMode::Load,
        );
        assert_eq!(s.remaining(), 2);
        let mut drained = s.drain();
        drained.sort();
        assert_eq!(drained, ids(&["a.py::t", "b.py::t"]));
        assert_eq!(next(&mut s, 2), None);
    }
}
