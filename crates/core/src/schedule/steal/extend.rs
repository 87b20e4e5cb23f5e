//! `Scheduler::extend`: tests that arrive after construction (the next batch a node takes
//! from the job-wide shared queue; such a node starts with no tests at all).

use std::collections::HashMap;

use super::super::units::{
    form_units, group_key, in_collection_order, key_of, positioned, seed, to_micros, Item, Unit,
    HEAVY_PER_SHARE, NO_POS,
};
use super::{DistMode, SchedTest, Scheduler};

/// Where a queued unit is.
#[derive(Clone, Copy)]
enum Place {
    Deque(usize),
    Pool,
}

impl Scheduler {
    /// Adds a batch of tests (in its order; `unknown[i]` as for `with_unknown`) as ordinary
    /// work for the workers, after everything given so far in collection order, so any
    /// worker may take it whatever its place. Units are formed as at construction, with
    /// the caps (heavy, class) from all work queued now: file and class affinity inside the
    /// batch, each `xdist_group` whole under `LoadGroup`, each scope or file whole under
    /// `LoadScope`/`LoadFile`. A test whose group (`LoadGroup`) or scope/file
    /// (`LoadScope`/`LoadFile`) still has a unit queued or in progress joins that unit, so a
    /// worker running it goes on with it; once a unit is wholly handed out, later tests of
    /// its key form a new unit (which may go to another worker). Batches never carry a
    /// group or scope across (a queue entry holds it whole), so this is rare. Call
    /// `expect_total` first when batches are small.
    pub fn extend(&mut self, tests: Vec<SchedTest>, unknown: &[bool]) {
        if tests.is_empty() {
            return;
        }
        let base = self.next_pos;
        self.next_pos += tests.len();
        // Places relative to the batch while its units are formed (`unknown` is indexed
        // by them), then moved after everything given so far.
        let rest = self.join_queued(positioned(tests), base, unknown);
        if rest.is_empty() {
            return;
        }
        let (n, micros) = (rest.len(), rest.iter().map(|i| i.micros).sum::<u64>());
        let total = (self.micros + micros).max(self.total_micros);
        self.total_micros = total;
        let (workers, mode) = (self.workers, self.mode);
        if workers == 1 && mode != DistMode::LoadGroup {
            self.class_cap = self.class_cap.max((total / HEAVY_PER_SHARE).max(1));
            for unit in in_collection_order(rest, mode) {
                self.deques[0].push_back(shifted(unit, base));
            }
        } else {
            let formed = form_units(rest, unknown, workers, mode, Some(total));
            self.class_cap = self.class_cap.max(formed.class_cap);
            for unit in formed.pooled {
                self.pool.push_back(shifted(unit, base));
            }
            let seeded: Vec<Unit> = formed
                .seeded
                .into_iter()
                .map(|u| shifted(u, base))
                .collect();
            if mode.per_test() {
                self.add_ranges(seeded);
            } else {
                self.add_by_lpt(seeded);
            }
        }
        self.len += n;
        self.micros += micros;
    }

    /// The estimated seconds of all the work this scheduler is expected to get through
    /// `extend` (a node's seeded share of the shared queue). A batch's units are formed
    /// against at least this total, as if it had been given at construction: otherwise in
    /// a small batch every test is "heavy" (a 32nd of a worker's share of the batch), so
    /// pooled and risky, and a worker with one in flight queues nothing behind it.
    pub fn expect_total(&mut self, secs: f64) {
        self.total_micros = self.total_micros.max(to_micros(secs));
    }

    /// `Load`/`LoadGroup`: the light units as contiguous ranges, claimed like the first
    /// ones (with one worker: its deque).
    fn add_ranges(&mut self, seeded: Vec<Unit>) {
        let queues = seed(seeded, self.workers, self.mode, self.class_cap);
        for queue in queues.into_iter().filter(|q| !q.is_empty()) {
            if self.workers == 1 {
                for unit in queue {
                    self.deques[0].push_back(unit);
                }
                continue;
            }
            let mut range = super::Deque::default();
            for unit in queue {
                range.push_back(unit);
            }
            self.unclaimed.push_back(range);
        }
    }

    /// `LoadScope`/`LoadFile`: whole units longest first onto the deque with the least
    /// estimated time queued (what it has counts), each deque's new ones in batch order.
    fn add_by_lpt(&mut self, mut seeded: Vec<Unit>) {
        seeded.sort_by(|a, b| b.micros.cmp(&a.micros).then(a.order.cmp(&b.order)));
        let workers = self.workers;
        let mut loads: Vec<u64> = self.deques[..workers].iter().map(|d| d.micros).collect();
        let mut bins: Vec<Vec<Unit>> = (0..workers).map(|_| Vec::new()).collect();
        for unit in seeded {
            let w = (0..workers)
                .min_by_key(|&w| (loads[w], w))
                .expect("at least one worker");
            loads[w] += unit.micros;
            bins[w].push(unit);
        }
        for (w, mut bin) in bins.into_iter().enumerate() {
            bin.sort_by_key(|u| u.order);
            for unit in bin {
                self.deques[w].push_back(unit);
            }
        }
    }

    /// Appends to a queued unit of the same group (`LoadGroup`) or scope/file
    /// (`LoadScope`/`LoadFile`) the batch's tests of it, preferring a worker's deque (a
    /// unit it has started continues there) to the pool; returns the other tests.
    fn join_queued(&mut self, items: Vec<Item>, base: usize, unknown: &[bool]) -> Vec<Item> {
        let mode = self.mode;
        let key = |item: &Item| -> Option<String> {
            match mode {
                DistMode::Load => None,
                DistMode::LoadGroup => item.group.as_deref().map(group_key),
                DistMode::LoadScope | DistMode::LoadFile => Some(key_of(mode, &item.id).to_owned()),
            }
        };
        if mode == DistMode::Load {
            return items;
        }
        // A retry's unit (urgent) is keyed by its file: never joined.
        let joinable = |u: &Unit| !u.urgent && (mode != DistMode::LoadGroup || u.whole);
        let mut at: HashMap<String, (Place, usize)> = HashMap::new();
        for (w, deque) in self.deques.iter().enumerate() {
            for (i, unit) in deque.units.iter().enumerate() {
                if joinable(unit) {
                    at.entry(unit.key.clone()).or_insert((Place::Deque(w), i));
                }
            }
        }
        for (i, unit) in self.pool.units.iter().enumerate() {
            if joinable(unit) {
                at.entry(unit.key.clone()).or_insert((Place::Pool, i));
            }
        }
        let mut rest = Vec::with_capacity(items.len());
        for mut item in items {
            let Some(&(place, i)) = key(&item).and_then(|k| at.get(&k)) else {
                rest.push(item);
                continue;
            };
            let guessed = unknown.get(item.pos).copied().unwrap_or(false);
            let deque = match place {
                Place::Deque(w) => &mut self.deques[w],
                Place::Pool => &mut self.pool,
            };
            let unit = &mut deque.units[i];
            // Places in a unit are increasing or all unknown (see `Item::pos`).
            let placed = unit.items.back().is_some_and(|last| last.pos != NO_POS);
            item.pos = if placed { base + item.pos } else { NO_POS };
            unit.micros += item.micros;
            unit.unknown |= guessed && mode.per_test();
            deque.micros += item.micros;
            deque.len += 1;
            self.len += 1;
            self.micros += item.micros;
            unit.items.push_back(item);
        }
        rest
    }
}

/// A unit of a batch, its places moved after everything given before (`base` of them).
fn shifted(mut unit: Unit, base: usize) -> Unit {
    unit.order += base;
    for item in &mut unit.items {
        if item.pos != NO_POS {
            item.pos += base;
        }
    }
    unit
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::suite_of;
    use super::*;
    use crate::test_id::{TestId, WorkerId};

    fn light(file: &str, range: std::ops::Range<usize>) -> Vec<SchedTest> {
        range
            .map(|i| SchedTest {
                id: TestId::new(format!("{file}::t{i:02}")),
                estimate: 0.1,
                group: None,
            })
            .collect()
    }

    /// Both workers take tests, in turn, until neither gets one.
    fn drain(s: &mut Scheduler) -> Vec<String> {
        let mut got = Vec::new();
        loop {
            let before = got.len();
            got.extend((0..2).filter_map(|w| next(s, w)));
            if got.len() == before {
                return got;
            }
        }
    }

    fn next(s: &mut Scheduler, w: usize) -> Option<String> {
        s.next_for(WorkerId(w)).map(|id| id.to_string())
    }

    #[test]
    fn an_empty_scheduler_takes_batches() {
        for mode in [
            DistMode::Load,
            DistMode::LoadGroup,
            DistMode::LoadScope,
            DistMode::LoadFile,
        ] {
            let mut s = Scheduler::with_options(vec![], 2, mode, &[], &HashSet::new());
            assert_eq!((s.remaining(), s.remaining_estimate()), (0, 0.0));
            assert_eq!(next(&mut s, 0), None);
            assert!(!s.has_work_for(WorkerId(1)));
            s.extend(light("a.py", 0..10), &[]);
            s.extend(Vec::new(), &[]);
            assert_eq!(s.remaining(), 10, "{mode:?}");
            assert!((s.remaining_estimate() - 1.0).abs() < 1e-9);
            let mut got: Vec<String> = drain(&mut s);
            s.extend(light("b.py", 0..3), &[true, false, false]);
            assert_eq!(s.remaining(), 3);
            got.extend(drain(&mut s));
            got.sort();
            let mut want: Vec<String> = light("a.py", 0..10)
                .into_iter()
                .chain(light("b.py", 0..3))
                .map(|t| t.id.to_string())
                .collect();
            want.sort();
            assert_eq!(got, want, "{mode:?}");
        }
    }

    #[test]
    fn a_batch_comes_after_every_workers_place() {
        // gw1 has run to the end of the first batch in order: the next batch's tests are
        // after its place, so it takes them in order (not as pool work, not behind).
        let mut s = Scheduler::new(light("a.py", 0..80), 2, DistMode::Load);
        while next(&mut s, 1).is_some() {}
        assert!(s.last_in_order());
        s.extend(light("b.py", 0..80), &[]);
        assert_eq!(next(&mut s, 1).as_deref(), Some("b.py::t00"));
        assert!(s.last_in_order());
        assert_eq!(next(&mut s, 0).as_deref(), Some("b.py::t40"));
        assert!(s.last_in_order());
        assert_eq!(s.remaining(), 78);
    }

    #[test]
    fn small_batches_are_light_against_the_expected_total() {
        // 4 tests of 0.1 s for 2 workers: alone, each is a 32nd of a worker's share or
        // more (heavy: risky, one at a time); against the node's 8 s share, light.
        let risky = |expect: Option<f64>| {
            let mut s = Scheduler::with_options(vec![], 2, DistMode::Load, &[], &HashSet::new());
            if let Some(secs) = expect {
                s.expect_total(secs);
            }
            s.extend(light("a.py", 0..4), &[]);
            s.next_for_opts(WorkerId(0), true).expect("queued").risky
        };
        assert!(risky(None));
        assert!(!risky(Some(8.0)));
    }

    #[test]
    fn a_scope_in_progress_continues_on_its_worker() {
        let spec = [("a.py::C::t0", 1.0), ("a.py::C::t1", 1.0), ("b.py::t", 1.0)];
        let mut s = Scheduler::new(suite_of(&spec), 2, DistMode::LoadScope);
        assert_eq!(next(&mut s, 0).as_deref(), Some("a.py::C::t0"));
        assert_eq!(next(&mut s, 1).as_deref(), Some("b.py::t"));
        s.extend(suite_of(&[("a.py::C::t2", 1.0)]), &[]);
        assert_eq!(
            s.queued_for(WorkerId(0)),
            [TestId::new("a.py::C::t1"), TestId::new("a.py::C::t2")]
        );
        assert!(!s.has_work_for(WorkerId(1)));
        assert_eq!((s.remaining(), s.remaining_estimate()), (2, 2.0));
        assert_eq!(next(&mut s, 0).as_deref(), Some("a.py::C::t1"));
        assert_eq!(next(&mut s, 0).as_deref(), Some("a.py::C::t2"));
        // Wholly handed out: a later test of it is a new unit, anyone's.
        s.extend(suite_of(&[("a.py::C::t3", 1.0)]), &[]);
        assert_eq!(next(&mut s, 1).as_deref(), Some("a.py::C::t3"));
    }

    #[test]
    fn a_group_arriving_in_a_batch_runs_whole_on_one_worker() {
        let mut s = Scheduler::with_options(vec![], 3, DistMode::LoadGroup, &[], &HashSet::new());
        let mut batch = light("a.py", 0..6);
        for t in batch.iter_mut().step_by(2) {
            t.group = Some("db".into());
        }
        s.extend(batch, &[]);
        assert_eq!(next(&mut s, 2).as_deref(), Some("a.py::t00"));
        // The rest of the group is gw2's alone, even with a part arriving later.
        let late = SchedTest {
            group: Some("db".into()),
            ..light("c.py", 0..1).remove(0)
        };
        s.extend(vec![late], &[]);
        let mut others = Vec::new();
        for w in [0, 1] {
            while let Some(id) = next(&mut s, w) {
                others.push(id);
            }
        }
        assert_eq!(others.len(), 3, "{others:?}");
        assert!(others
            .iter()
            .all(|id| !["a.py::t02", "a.py::t04", "c.py::t00"].contains(&id.as_str())));
        let rest: Vec<String> = std::iter::from_fn(|| next(&mut s, 2)).collect();
        assert_eq!(rest, ["a.py::t02", "a.py::t04", "c.py::t00"]);
    }
}
