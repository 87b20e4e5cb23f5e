//! A worker's deque of units, and what a thief may take from it: the steal plans that
//! `Scheduler::has_work_for` and `Scheduler::next_for` must agree on.

use std::collections::VecDeque;

use super::steal::DistMode;
use super::units::{blocks, locked_len, Item, Unit};

#[derive(Clone, Debug, Default)]
pub(super) struct Deque {
    pub units: VecDeque<Unit>,
    pub micros: u64,
    pub len: usize,
    /// Its owner stopped (`Scheduler::release`) and has not taken a test since: any
    /// worker may take from it, whatever its place in collection order.
    pub released: bool,
}

impl Deque {
    pub(super) fn push_back(&mut self, unit: Unit) {
        self.micros += unit.micros;
        self.len += unit.items.len();
        self.units.push_back(unit);
    }

    pub(super) fn push_front(&mut self, unit: Unit) {
        self.micros += unit.micros;
        self.len += unit.items.len();
        self.units.push_front(unit);
    }

    /// The next test from the head unit; marks that unit started.
    pub(super) fn pop_test(&mut self) -> Option<Item> {
        let unit = self.units.front_mut()?;
        let item = unit.items.pop_front().expect("units are never empty");
        unit.started = true;
        let class = item.id.top_class();
        if unit.last_class.as_deref() != class {
            unit.last_class = class.map(str::to_owned);
        }
        unit.micros -= item.micros;
        if unit.items.is_empty() {
            self.units.pop_front();
        }
        self.micros -= item.micros;
        self.len -= 1;
        Some(item)
    }

    /// Retries pushed at the front (`Scheduler::push_next`): the owner runs them next, and
    /// they are not for thieves while it lives (`release` frees them).
    pub(super) fn urgent_len(&self) -> usize {
        self.units.iter().take_while(|u| u.urgent).count()
    }

    /// The units a thief may not take, at the head: the owner's retries, and in
    /// `LoadScope`/`LoadFile` the unit it has started.
    pub(super) fn kept(&self, mode: DistMode) -> usize {
        let urgent = self.urgent_len();
        let started = self.units.get(urgent).is_some_and(|u| u.started);
        urgent + usize::from(started && !mode.per_test())
    }

    /// Whether a thief whose place in collection order is `after` may take something:
    /// exactly when [`Deque::plan_steal`] finds something, without its sums.
    pub(super) fn stealable(&self, mode: DistMode, class_cap: u64, after: Option<usize>) -> bool {
        let kept = self.kept(mode);
        if self.units.len() <= kept {
            return false;
        }
        if !mode.per_test() {
            return true;
        }
        let ok = |pos: usize| after_place(after, pos);
        // Put-back units (no place) may sit before units with one: look at each.
        if (kept + 1..self.units.len()).any(|i| ok(self.units[i].items[0].pos)) {
            return true;
        }
        let back = self.units.back().expect("more than kept");
        let start = back.items.len() - last_block_len(back, class_cap);
        let locked = locked_len(back, class_cap) > 0;
        (!locked || start > 0) && ok(back.items[start].pos)
    }

    /// What a thief whose place in collection order is `after` takes, about half the
    /// remaining estimate. In `LoadScope`/`LoadFile`: whole units from the tail, at least
    /// one. In `Load`: the first half of what the owner has not reached yet (whole units
    /// after the one it is in, from the first that starts after `after`), so the thief's
    /// place moves as little as possible and it can help again; the owner skips what was
    /// taken, still in collection order. If only the owner's unit is left: its tail, at
    /// least one block (a small class is never cut, nor taken from a worker inside it).
    pub(super) fn plan_steal(
        &self,
        mode: DistMode,
        class_cap: u64,
        after: Option<usize>,
    ) -> Option<Steal> {
        let keep = self.kept(mode);
        let half = self.micros / 2;
        if !mode.per_test() {
            let (mut n, mut acc) = (0, 0);
            for unit in self.units.iter().skip(keep).rev() {
                if n > 0 && acc + unit.micros > half {
                    break;
                }
                acc += unit.micros;
                n += 1;
            }
            return (n > 0).then_some(Steal::Units(n));
        }
        let ok = |pos: usize| after_place(after, pos);
        let start = (keep + 1..self.units.len()).find(|&i| ok(self.units[i].items[0].pos));
        if let Some(start) = start {
            let (mut n, mut acc) = (0, 0);
            for unit in self.units.range(start..) {
                if n > 0 && (acc + unit.micros > half || !ok(unit.items[0].pos)) {
                    break;
                }
                acc += unit.micros;
                n += 1;
            }
            let first = &self.units[start];
            if n == 1 && acc > half && !first.whole {
                let (mut k, mut sum) = (0, 0);
                for (len, micros) in blocks(&first.items, class_cap) {
                    if k > 0 && sum + micros > half {
                        break;
                    }
                    k += len;
                    sum += micros;
                }
                if k < first.items.len() {
                    return Some(Steal::Front(start, k));
                }
            }
            return Some(Steal::Middle(start, n));
        }
        let back = self.units.iter().skip(keep).next_back()?;
        let free_from = usize::from(locked_len(back, class_cap) > 0);
        let parts = if back.whole {
            vec![(back.items.len(), back.micros)]
        } else {
            blocks(&back.items, class_cap)
        };
        let (mut n, mut sum) = (0, 0);
        for &(len, micros) in parts[free_from..].iter().rev() {
            let start = back.items.len() - n - len;
            if !ok(back.items[start].pos) || (n > 0 && sum + micros > half) {
                break;
            }
            n += len;
            sum += micros;
        }
        (n > 0).then_some(Steal::Tail(n))
    }

    /// Removes the units `range` from the deque.
    pub(super) fn take_units(&mut self, range: std::ops::Range<usize>) -> Vec<Unit> {
        let taken: Vec<Unit> = self.units.drain(range).collect();
        for unit in &taken {
            self.micros -= unit.micros;
            self.len -= unit.items.len();
        }
        taken
    }
}

/// Whether a test at `pos` comes after a thief's frontier `after` (none: anything goes).
pub(super) fn after_place(after: Option<usize>, pos: usize) -> bool {
    // Not `is_none_or`: the workspace's rust-version is 1.80.
    match after {
        Some(a) => pos > a,
        None => true,
    }
}

/// What a thief takes (see `Deque::plan_steal`).
pub(super) enum Steal {
    /// Whole units from the back.
    Units(usize),
    /// Whole units from index `.0`, `.1` of them.
    Middle(usize, usize),
    /// The first `.1` tests of the unit at index `.0`.
    Front(usize, usize),
    /// The last tests of the back unit.
    Tail(usize),
}

/// The length of the last block of `unit` (see `units::blocks`): the run of its outermost
/// class at the end if that is small, else one test; the whole unit if it is a group.
fn last_block_len(unit: &Unit, class_cap: u64) -> usize {
    if unit.whole {
        return unit.items.len();
    }
    let last = unit.items.back().expect("units are never empty");
    let Some(class) = last.id.top_class() else {
        return 1;
    };
    let (mut n, mut micros) = (0, 0);
    for item in unit.items.iter().rev() {
        if item.id.top_class() != Some(class) {
            break;
        }
        n += 1;
        micros += item.micros;
    }
    if n > 1 && micros >= class_cap {
        1
    } else {
        n
    }
}
