//! Units of scheduling: the groups of tests that go to a worker together, and how the
//! light ones are seeded. `Load`: runs of consecutive tests of one file, heavy tests alone,
//! tests without a recorded time chunked by file; `LoadScope` and `LoadFile`: whole scopes
//! or files.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::test_id::TestId;

use super::plan::lpt_partition;
use super::steal::{DistMode, SchedTest};

/// `Load` cuts the tests of one file that have no recorded time into pool chunks of at
/// most a worker's share (total estimate / workers) divided by this.
pub(super) const CHUNKS_PER_SHARE: u64 = 2;

/// Unknown tests are cut into at least this many pieces per worker (see `form_units`).
const UNKNOWN_PIECES_PER_WORKER: usize = 4;

/// A unit estimated at a share / `HEAVY_PER_SHARE` or more is "heavy": it goes to the
/// shared pool, longest first, so long tests start early on whichever worker is free and a
/// wrong estimate cannot stack two of them on one worker. In `Load` a heavy unit is a
/// single test, and the end of a run is even to within a light test, so below 1/16 of a
/// share. (Chosen with `examples/simulate.rs`: 1/8 let a mis-estimated test near the
/// threshold end a run 7% late; 1/32 cost module setups for no gain.)
pub(super) const HEAVY_PER_SHARE: u64 = 16;

/// `Load`: a test estimated at a share / `POOL_PER_SHARE` or more goes to the pool too
/// (heavy): the only tests moved ahead of their place in collection order, as they can
/// decide the makespan. The others run in collection order on their worker, so the end of
/// a range may be such a test, and one of a 32nd of a share costs at most 3% there.
/// (Chosen with `examples/simulate.rs`: 16 left lognormal suites 3% over the bound, 64
/// and 128 gained nothing more but moved more tests.)
const POOL_PER_SHARE: u64 = 32;

fn is_heavy(micros: u64, heavy_cap: u64) -> bool {
    micros >= heavy_cap
}

/// Estimated time in whole microseconds: integers keep the running sums exact and the
/// dispatch order independent of summation order. Every test costs at least 1 µs, so a
/// suite of zero estimates still spreads by count.
pub(super) fn to_micros(secs: f64) -> u64 {
    const MAX: f64 = 1e12; // 11.6 days: sums of 10^7 tests still fit in u64.
    if secs.is_nan() || secs <= 0.0 {
        return 1;
    }
    (secs * 1e6).round().clamp(1.0, MAX) as u64
}

/// `Item::pos` of a test put back into the queue (pushed back, retried): its place in the
/// collection is not known, and no worker's order depends on it.
pub(super) const NO_POS: usize = usize::MAX;

#[derive(Clone, Debug)]
pub(super) struct Item {
    pub id: TestId,
    pub micros: u64,
    /// `LoadGroup`: its `xdist_group`.
    pub group: Option<String>,
    /// Its index in the collection, or `NO_POS`. Within a unit, increasing or all `NO_POS`.
    pub pos: usize,
}

impl From<SchedTest> for Item {
    fn from(test: SchedTest) -> Self {
        Item {
            micros: to_micros(test.estimate),
            id: test.id,
            group: test.group,
            pos: NO_POS,
        }
    }
}

/// The suite's items, each with its place in the collection.
pub(super) fn positioned(tests: Vec<SchedTest>) -> Vec<Item> {
    (0..)
        .zip(tests)
        .map(|(pos, test)| Item {
            pos,
            ..Item::from(test)
        })
        .collect()
}

/// The unit key of an `xdist_group` (file paths never start like it).
pub(super) fn group_key(group: &str) -> String {
    format!("group:{group}")
}

#[derive(Clone, Debug)]
pub(super) struct Unit {
    /// What keeps the unit together: the file (`Load`, `LoadFile`) or the scope.
    pub key: String,
    pub items: VecDeque<Item>,
    /// Sum of `items`' micros.
    pub micros: u64,
    /// A worker has taken a test of it since it was last (re)queued: in `LoadScope` and
    /// `LoadFile` it can no longer be stolen.
    pub started: bool,
    /// Position of its first test in the input: breaks ties, keeps collection order.
    pub order: usize,
    /// See `HEAVY_PER_SHARE`: goes to the pool.
    pub heavy: bool,
    /// Holds tests without a recorded time: goes to the pool, to run early.
    pub unknown: bool,
    /// Runs next on its worker, before the pool (a retry).
    pub urgent: bool,
    /// Outermost class (`TestId::top_class`) of the last test taken from it: nothing may
    /// cut into a class its worker is in (see `locked_len`).
    pub last_class: Option<String>,
    /// An `xdist_group` (`LoadGroup`): never split, and once started only its worker takes
    /// from it, like a small class.
    pub whole: bool,
    /// Came from the shared pool (or was put first): its tests run ahead of their place in
    /// collection order, so they do not move the worker's place (see `Scheduler::frontier`).
    pub pooled: bool,
    /// Taken from the pool by the fallback (see `Scheduler::pool_pick`): its tests may run
    /// behind tests its worker ran in order.
    pub behind: bool,
}

impl Unit {
    pub fn new(key: String, order: usize, items: VecDeque<Item>) -> Self {
        let micros = items.iter().map(|i| i.micros).sum();
        Self {
            key,
            items,
            micros,
            started: false,
            order,
            heavy: false,
            unknown: false,
            urgent: false,
            last_class: None,
            whole: false,
            pooled: false,
            behind: false,
        }
    }

    /// Splits off the last `n` items as a new, unstarted unit.
    pub fn split_tail(&mut self, n: usize) -> Unit {
        let tail = self.items.split_off(self.items.len() - n);
        let mut tail = Unit::new(self.key.clone(), self.order, tail);
        tail.pooled = self.pooled;
        tail.behind = self.behind;
        self.micros -= tail.micros;
        tail
    }
}

pub(super) fn key_of(mode: DistMode, id: &TestId) -> &str {
    match mode {
        DistMode::Load | DistMode::LoadGroup | DistMode::LoadFile => id.file(),
        DistMode::LoadScope => id.scope(),
    }
}

/// The units of a suite: `pooled` ones, in the order any free worker takes them (tests
/// whose estimate is a guess, then heavy ones longest first), and `seeded` ones, in
/// collection order, for the per-worker deques.
pub(super) struct Formed {
    pub pooled: Vec<Unit>,
    pub seeded: Vec<Unit>,
    /// Classes estimated below this run uninterrupted on one worker (see `blocks`).
    pub class_cap: u64,
}

/// The blocks of consecutive `items` that `Load` never cuts, as (tests, micros): the tests
/// of one class (outermost, so nested classes count with it) estimated below `class_cap`;
/// every other test is a block alone. A worker that ran part of a class and then left it
/// would set its class-scoped fixtures up twice (plain pytest sets them up once); a class
/// too big to keep whole is cut like module-level tests, for balance, as xdist's `load`
/// does.
pub(super) fn blocks<'a>(
    items: impl IntoIterator<Item = &'a Item>,
    class_cap: u64,
) -> Vec<(usize, u64)> {
    let mut out: Vec<(usize, u64)> = Vec::new();
    // The open block: its class and the micros of each of its tests.
    let mut open: Option<&str> = None;
    let mut members: Vec<u64> = Vec::new();
    let close = |members: &mut Vec<u64>, out: &mut Vec<(usize, u64)>| {
        let sum: u64 = members.iter().sum();
        if members.len() > 1 && sum >= class_cap {
            out.extend(members.iter().map(|&m| (1, m)));
        } else if !members.is_empty() {
            out.push((members.len(), sum));
        }
        members.clear();
    };
    for item in items {
        let class = item.id.top_class();
        if class.is_none() || class != open {
            close(&mut members, &mut out);
        }
        open = class;
        members.push(item.micros);
    }
    close(&mut members, &mut out);
    out
}

/// How many tests at the head of `unit` continue the class its worker is in, when that
/// rest is small (below `class_cap`): only that worker may take them. Zero otherwise.
pub(super) fn locked_len(unit: &Unit, class_cap: u64) -> usize {
    if unit.whole {
        return if unit.started { unit.items.len() } else { 0 };
    }
    let Some(class) = unit.last_class.as_deref().filter(|_| unit.started) else {
        return 0;
    };
    let mut n = 0;
    let mut micros = 0;
    for item in &unit.items {
        if item.id.top_class() != Some(class) {
            break;
        }
        n += 1;
        micros += item.micros;
    }
    if micros < class_cap {
        n
    } else {
        0
    }
}

/// Forms the units of `items` (collection order, see `positioned`); `unknown[pos]` says
/// the test at that place has no recorded time (missing entries: known). The caps (heavy,
/// chunk, class) come from `total` micros of work (`None`: the items'), which is more
/// than the items' for a batch joining queued work (`Scheduler::extend`).
pub(super) fn form_units(
    items: Vec<Item>,
    unknown: &[bool],
    workers: usize,
    mode: DistMode,
    total: Option<u64>,
) -> Formed {
    let total = total.unwrap_or_else(|| items.iter().map(|i| i.micros).sum());
    let share = total / workers.max(1) as u64;
    let cap = (share / CHUNKS_PER_SHARE).max(1);
    let heavy_cap = (share / HEAVY_PER_SHARE).max(1);
    let units = match mode {
        DistMode::Load | DistMode::LoadGroup => {
            let (groups, rest, rest_unknown) = split_groups(items, unknown, mode, heavy_cap);
            // A guessed estimate can hide a long test anywhere in a file: hand unknown tests
            // out in pieces small enough that every worker gets some early (a long one
            // then starts early, whatever its place), large enough to keep file affinity
            // when most of the suite is new.
            let guessed = rest_unknown.iter().filter(|&&u| u).count();
            let max_guessed_len = (guessed / (UNKNOWN_PIECES_PER_WORKER * workers.max(1))).max(1);
            let pool_cap = (share / POOL_PER_SHARE).max(1);
            let mut units = load_chunks(
                rest,
                &rest_unknown,
                cap,
                pool_cap,
                heavy_cap,
                max_guessed_len,
            );
            units.extend(groups);
            units
        }
        // Whole scopes and files mix known and guessed tests: ordering them by size (LPT)
        // matters more than running the guesses early, so `unknown` is not used.
        DistMode::LoadScope | DistMode::LoadFile => {
            let mut units = group_by_key(items, mode);
            for unit in &mut units {
                unit.heavy = is_heavy(unit.micros, heavy_cap);
            }
            units
        }
    };
    let class_cap = heavy_cap;
    let (mut pooled, seeded): (Vec<Unit>, Vec<Unit>) = units
        .into_iter()
        .partition(|u| u.heavy || u.unknown || u.whole);
    pooled.sort_by(|a, b| {
        // Unknown first (collection order), then heavy by size, longest first.
        b.unknown
            .cmp(&a.unknown)
            .then_with(|| {
                if a.unknown {
                    std::cmp::Ordering::Equal
                } else {
                    b.micros.cmp(&a.micros)
                }
            })
            .then(a.order.cmp(&b.order))
    });
    Formed {
        pooled,
        seeded,
        class_cap,
    }
}

/// `LoadGroup`: each group is one whole unit, in the pool (by size, like a heavy test: it
/// starts early on whichever worker is free); the rest as `Load`, with their unknown flags.
fn split_groups(
    items: Vec<Item>,
    unknown: &[bool],
    mode: DistMode,
    heavy_cap: u64,
) -> (Vec<Unit>, Vec<Item>, Vec<bool>) {
    let mut groups: Vec<Unit> = Vec::new();
    let (mut rest, mut rest_unknown) = (Vec::new(), Vec::new());
    let mut index: HashMap<String, usize> = HashMap::new();
    for item in items {
        let pos = item.pos;
        let guessed = unknown.get(pos).copied().unwrap_or(false);
        let Some(key) = item
            .group
            .as_deref()
            .filter(|_| mode == DistMode::LoadGroup)
        else {
            rest.push(item);
            rest_unknown.push(guessed);
            continue;
        };
        let key = group_key(key);
        let slot = *index.entry(key.clone()).or_insert_with(|| {
            let mut unit = Unit::new(key, pos, VecDeque::new());
            unit.whole = true;
            groups.push(unit);
            groups.len() - 1
        });
        let unit = &mut groups[slot];
        unit.micros += item.micros;
        unit.unknown |= guessed;
        unit.items.push_back(item);
    }
    for unit in &mut groups {
        // Pooled like a heavy unit whatever its size; not risky unless heavy or unknown
        // (the agent sends at most one risky test ahead).
        unit.heavy = is_heavy(unit.micros, heavy_cap);
    }
    (groups, rest, rest_unknown)
}

/// Whole scopes or files: every test of a key in one unit, in collection order, even if
/// the key's tests are not adjacent (as xdist's loadscope does).
pub(super) fn group_by_key(items: Vec<Item>, mode: DistMode) -> Vec<Unit> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut units: Vec<Unit> = Vec::new();
    for item in items {
        let pos = item.pos;
        let key = key_of(mode, &item.id);
        let unit = match index.get(key) {
            Some(&u) => &mut units[u],
            None => {
                index.insert(key.to_owned(), units.len());
                units.push(Unit::new(key.to_owned(), pos, VecDeque::new()));
                units.last_mut().expect("just pushed")
            }
        };
        unit.micros += item.micros;
        unit.items.push_back(item);
    }
    units
}

/// `Load` units. Known tests: runs of consecutive tests of one file. Tests without a
/// recorded time: all of one file together, in pieces of about `max_guessed_len` tests cut
/// into chunks of at most about `cap` (balanced, not greedy, so no tiny leftovers; they go
/// to the pool, and new tests tend to come by the file). Heavy tests are alone either way.
/// A small class (see `blocks`, with `heavy_cap`) is never cut, and is guessed as a whole
/// if any of its tests is new.
fn load_chunks(
    items: Vec<Item>,
    unknown: &[bool],
    cap: u64,
    heavy_cap: u64,
    class_cap: u64,
    max_guessed_len: usize,
) -> Vec<Unit> {
    let mut guess: Vec<bool> = (0..items.len())
        .map(|pos| unknown.get(pos).copied().unwrap_or(false))
        .collect();
    // A test of a small class is never pooled alone, even when it is long enough (the
    // pool's threshold is below the class cap): that would cut the class.
    let mut in_class = vec![false; items.len()];
    let mut start = 0;
    for (len, _) in blocks(&items, class_cap) {
        let block = &mut guess[start..start + len];
        if block.contains(&true) {
            block.fill(true);
        }
        in_class[start..start + len].fill(len > 1);
        start += len;
    }
    let mut units = Vec::new();
    let mut segment: Vec<(usize, Item)> = Vec::new();
    let mut guessed: Vec<(usize, Item, bool)> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let pos = item.pos;
        if guess[i] {
            guessed.push((pos, item, in_class[i]));
            continue;
        }
        let heavy = is_heavy(item.micros, heavy_cap) && !in_class[i];
        let same_file = segment
            .last()
            .is_some_and(|(_, last)| last.id.file() == item.id.file());
        if !same_file || heavy {
            close_run(&mut segment, &mut units);
        }
        if heavy {
            units.push(heavy_unit(pos, item));
        } else {
            segment.push((pos, item));
        }
    }
    close_run(&mut segment, &mut units);
    guessed_units(
        guessed,
        cap,
        heavy_cap,
        class_cap,
        max_guessed_len,
        &mut units,
    );
    units
}

/// Tests without a recorded time (with whether each is in a small class): all of one file
/// together, heavy ones alone, the rest in pieces of about `max_len` tests cut into chunks
/// of at most about `cap`.
fn guessed_units(
    guessed: Vec<(usize, Item, bool)>,
    cap: u64,
    heavy_cap: u64,
    class_cap: u64,
    max_len: usize,
    units: &mut Vec<Unit>,
) {
    let mut by_file: Vec<Vec<(usize, Item, bool)>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (pos, item, in_class) in guessed {
        let file = item.id.file().to_owned();
        let slot = *index.entry(file).or_insert_with(|| {
            by_file.push(Vec::new());
            by_file.len() - 1
        });
        by_file[slot].push((pos, item, in_class));
    }
    for group in by_file {
        let start = units.len();
        let mut rest = Vec::new();
        for (pos, item, in_class) in group {
            if is_heavy(item.micros, heavy_cap) && !in_class {
                units.push(heavy_unit(pos, item));
            } else {
                rest.push((pos, item));
            }
        }
        // Pieces of whole blocks, so no small class is cut.
        let mut lens = blocks(rest.iter().map(|(_, item)| item), class_cap).into_iter();
        while !rest.is_empty() {
            let mut n = 0;
            while n < max_len {
                let Some((len, _)) = lens.next() else { break };
                n += len;
            }
            let mut piece: Vec<(usize, Item)> = rest.drain(..n).collect();
            cut_segment(&mut piece, cap, class_cap, units);
        }
        for unit in &mut units[start..] {
            unit.unknown = true;
        }
    }
}

fn close_run(run: &mut Vec<(usize, Item)>, units: &mut Vec<Unit>) {
    let Some(&(order, ref first)) = run.first() else {
        return;
    };
    let key = first.id.file().to_owned();
    units.push(Unit::new(
        key,
        order,
        run.drain(..).map(|(_, item)| item).collect(),
    ));
}

fn heavy_unit(pos: usize, item: Item) -> Unit {
    let mut unit = Unit::new(item.id.file().to_owned(), pos, VecDeque::from([item]));
    unit.heavy = true;
    unit
}

/// Cuts a segment of one file into `ceil(sum / cap)` chunks: each block (see `blocks`)
/// goes to the chunk its midpoint (in cumulative time) falls into.
fn cut_segment(segment: &mut Vec<(usize, Item)>, cap: u64, class_cap: u64, units: &mut Vec<Unit>) {
    if segment.is_empty() {
        return;
    }
    let sum: u64 = segment.iter().map(|(_, i)| i.micros).sum();
    let chunks = sum.div_ceil(cap).max(1);
    let key = segment[0].1.id.file().to_owned();
    let block_lens = blocks(segment.iter().map(|(_, item)| item), class_cap);
    let mut before: u64 = 0;
    let mut current: Option<(u64, Unit)> = None;
    let mut drained = segment.drain(..);
    for (len, micros) in block_lens {
        let mid = u128::from(before) * 2 + u128::from(micros);
        let chunk =
            ((mid * u128::from(chunks)) / (u128::from(sum) * 2)).min(u128::from(chunks - 1));
        let chunk = chunk as u64;
        before += micros;
        for (pos, item) in drained.by_ref().take(len) {
            place(&mut current, chunk, pos, item, &key, units);
        }
    }
    drop(drained);
    if let Some((_, done)) = current {
        units.push(done);
    }
}

/// Appends `item` to the open chunk if it is number `chunk`, else closes it and opens one.
fn place(
    current: &mut Option<(u64, Unit)>,
    chunk: u64,
    pos: usize,
    item: Item,
    key: &str,
    units: &mut Vec<Unit>,
) {
    match current {
        Some((c, unit)) if *c == chunk => {
            unit.micros += item.micros;
            unit.items.push_back(item);
        }
        _ => {
            if let Some((_, done)) = current.take() {
                units.push(done);
            }
            *current = Some((
                chunk,
                Unit::new(key.to_owned(), pos, VecDeque::from([item])),
            ));
        }
    }
}

/// `Load` seeding: the light known tests in collection order, cut into `workers`
/// contiguous ranges of equal estimate (McNaughton's wrap-around rule, at block boundaries:
/// a block, see `blocks`, goes to the range its midpoint falls in). Balanced to within a
/// block, and at most `workers - 1` files are split, so each worker sets up as few modules
/// as possible. The units of a range are its runs of one file, in collection order: a
/// worker runs its tests in pytest's order and never comes back to a file it has left
/// (a later file's test may change module state an earlier file reads, as with xdist's
/// `load`, which gives each worker a subsequence of the collection).
pub(super) fn contiguous_ranges(
    runs: Vec<Unit>,
    workers: usize,
    class_cap: u64,
) -> Vec<VecDeque<Unit>> {
    let workers = workers.max(1);
    let total: u64 = runs.iter().map(|u| u.micros).sum();
    let ends = range_ends(total, workers);
    let mut out: Vec<VecDeque<Unit>> = vec![VecDeque::new(); workers];
    let mut before: u64 = 0;
    for run in runs {
        let block_lens = blocks(&run.items, class_cap);
        let mut items = run.items.into_iter();
        for (len, micros) in block_lens {
            let mid = u128::from(before) * 2 + u128::from(micros);
            let r = ends.partition_point(|&e| e * 2 <= mid).min(ends.len() - 1);
            before += micros;
            let range = &mut out[r % workers];
            for item in items.by_ref().take(len) {
                match range.back_mut() {
                    Some(unit) if unit.key == run.key => {
                        unit.micros += item.micros;
                        unit.items.push_back(item);
                    }
                    _ => range.push_back(Unit::new(
                        run.key.clone(),
                        item.pos,
                        VecDeque::from([item]),
                    )),
                }
            }
        }
    }
    out
}

/// The per-worker deques of the seeded (light) units: contiguous ranges in `Load`; in
/// `LoadScope`/`LoadFile` whole units by LPT (longest first onto the least-loaded worker),
/// each worker's then run in collection order.
pub(super) fn seed(
    seeded: Vec<Unit>,
    workers: usize,
    mode: DistMode,
    class_cap: u64,
) -> Vec<VecDeque<Unit>> {
    match mode {
        DistMode::Load | DistMode::LoadGroup => contiguous_ranges(seeded, workers, class_cap),
        DistMode::LoadScope | DistMode::LoadFile => {
            let weights: Vec<f64> = seeded.iter().map(|u| u.micros as f64).collect();
            let plan = lpt_partition(&weights, workers);
            let mut slots: Vec<Option<Unit>> = seeded.into_iter().map(Some).collect();
            plan.into_iter()
                .map(|bin| {
                    let mut units: Vec<Unit> = bin
                        .into_iter()
                        .map(|i| slots[i].take().expect("each unit planned once"))
                        .collect();
                    units.sort_by_key(|u| u.order);
                    units.into()
                })
                .collect()
        }
    }
}

/// Takes the tests of `first` out of `items`, as the units to hand out before all others,
/// in collection order: each test alone, with its whole group in `LoadGroup`, with its
/// whole scope or file in `LoadScope`/`LoadFile`. Returns them and the rest.
pub(super) fn take_first(
    items: Vec<Item>,
    mode: DistMode,
    first: &HashSet<TestId>,
) -> (Vec<Unit>, Vec<Item>) {
    if first.is_empty() {
        return (Vec::new(), items);
    }
    let whole_key = |item: &Item| -> Option<String> {
        match mode {
            DistMode::Load => None,
            DistMode::LoadGroup => item.group.as_deref().map(group_key),
            DistMode::LoadScope | DistMode::LoadFile => Some(key_of(mode, &item.id).to_owned()),
        }
    };
    let keys: HashSet<String> = items
        .iter()
        .filter(|i| first.contains(&i.id))
        .filter_map(whole_key)
        .collect();
    let (ahead, rest): (Vec<Item>, Vec<Item>) = items
        .into_iter()
        .partition(|i| first.contains(&i.id) || whole_key(i).is_some_and(|k| keys.contains(&k)));
    let mut units: Vec<Unit> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for item in ahead {
        let Some(key) = whole_key(&item) else {
            let key = item.id.file().to_owned();
            units.push(Unit::new(key, item.pos, VecDeque::from([item])));
            continue;
        };
        let slot = *index.entry(key.clone()).or_insert_with(|| {
            let mut unit = Unit::new(key, item.pos, VecDeque::new());
            unit.whole = mode == DistMode::LoadGroup;
            units.push(unit);
            units.len() - 1
        });
        units[slot].micros += item.micros;
        units[slot].items.push_back(item);
    }
    (units, rest)
}

/// Cumulative ends (micros) of the `workers` equal ranges.
fn range_ends(total: u64, workers: usize) -> Vec<u128> {
    (1..=workers as u128)
        .map(|w| u128::from(total) * w / workers as u128)
        .collect()
}

/// One worker (`-n 1`), in `Load`: the whole suite in collection order, as plain pytest
/// runs it, in runs of consecutive tests of one file; nothing is pooled. In `LoadScope` and
/// `LoadFile`: whole scopes or files, in the order of their first tests.
pub(super) fn in_collection_order(items: Vec<Item>, mode: DistMode) -> VecDeque<Unit> {
    if mode != DistMode::Load {
        return group_by_key(items, mode).into();
    }
    let mut units: VecDeque<Unit> = VecDeque::new();
    for item in items {
        match units.back_mut() {
            Some(unit) if unit.key == item.id.file() => {
                unit.micros += item.micros;
                unit.items.push_back(item);
            }
            _ => units.push_back(Unit::new(
                item.id.file().to_owned(),
                item.pos,
                VecDeque::from([item]),
            )),
        }
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::schedule::steal::suite_of as tests;

    fn shape(units: &[Unit]) -> Vec<Vec<&str>> {
        units
            .iter()
            .map(|u| u.items.iter().map(|i| i.id.as_str()).collect())
            .collect()
    }

    #[test]
    fn micros() {
        let cases = [
            (0.0, 1),
            (-1.0, 1),
            (f64::NAN, 1),
            (1e-9, 1),
            (0.25, 250_000),
            (f64::INFINITY, 1_000_000_000_000),
        ];
        for (secs, want) in cases {
            assert_eq!(to_micros(secs), want, "{secs}");
        }
    }

    fn items(tests: &[SchedTest]) -> Vec<Item> {
        positioned(tests.to_vec())
    }

    #[test]
    fn load_units_are_runs_of_one_file() {
        // Heavy from 2 s: heavy tests are alone and end a run; a file seen again later is a
        // new run.
        let input = tests(&[
            ("a.py::t1", 1.0),
            ("a.py::t2", 1.0),
            ("a.py::t3", 1.0),
            ("a.py::big", 8.0),
            ("a.py::t4", 0.5),
            ("b.py::t1", 0.5),
            ("b.py::t2", 0.5),
            ("a.py::t5", 2.0),
            ("a.py::t6", 0.5),
        ]);
        let units = load_chunks(
            items(&input),
            &[],
            2_000_000,
            2_000_000,
            2_000_000,
            usize::MAX,
        );
        assert_eq!(
            shape(&units),
            vec![
                vec!["a.py::t1", "a.py::t2", "a.py::t3"],
                vec!["a.py::big"],
                vec!["a.py::t4"],
                vec!["b.py::t1", "b.py::t2"],
                vec!["a.py::t5"],
                vec!["a.py::t6"],
            ]
        );
        assert_eq!(
            units.iter().map(|u| (u.order, u.heavy)).collect::<Vec<_>>(),
            vec![
                (0, false),
                (3, true),
                (4, false),
                (5, false),
                (7, true),
                (8, false)
            ]
        );
    }

    #[test]
    fn scope_and_file_units() {
        let input = tests(&[
            ("a.py::C::t1", 1.0),
            ("a.py::t2", 1.0),
            ("a.py::C::t3[x::y]", 1.0),
            ("b.py::t1", 1.0),
            ("a.py::D::t4", 1.0),
        ]);
        let scope = group_by_key(items(&input), DistMode::LoadScope);
        assert_eq!(
            shape(&scope),
            vec![
                vec!["a.py::C::t1", "a.py::C::t3[x::y]"],
                vec!["a.py::t2"],
                vec!["b.py::t1"],
                vec!["a.py::D::t4"],
            ]
        );
        let file = group_by_key(items(&input), DistMode::LoadFile);
        assert_eq!(
            shape(&file),
            vec![
                vec![
                    "a.py::C::t1",
                    "a.py::t2",
                    "a.py::C::t3[x::y]",
                    "a.py::D::t4"
                ],
                vec!["b.py::t1"],
            ]
        );
        assert_eq!(file[0].micros, 4_000_000);
        // On 1 worker the cap is 5 s / 8: every unit is heavy, so all are pooled, longest
        // first, whether or not their tests have recorded times.
        let formed = form_units(items(&input), &[], 1, DistMode::LoadFile, None);
        assert_eq!(
            formed
                .pooled
                .iter()
                .map(|u| u.key.as_str())
                .collect::<Vec<_>>(),
            ["a.py", "b.py"]
        );
        let formed = form_units(
            items(&input),
            &[false, false, false, true],
            1,
            DistMode::LoadScope,
            None,
        );
        let keys: Vec<_> = formed.pooled.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(keys, ["a.py::C", "a.py", "b.py", "a.py::D"]);
    }

    #[test]
    fn unknown_tests_are_pooled_first() {
        // 10.1 s on 1 worker: known tests from 0.32 s are pooled (a 32nd of a share).
        // Unknown tests of a file are chunked together, apart from the known ones, in
        // pieces of at most unknown / (UNKNOWN_PIECES_PER_WORKER * workers) tests: 4 / 4 = 1
        // here.
        let input = tests(&[
            ("a.py::t1", 0.5),
            ("a.py::new1", 0.1),
            ("a.py::new2", 0.1),
            ("a.py::t2", 0.5),
            ("a.py::new3", 0.1),
            ("b.py::big", 5.0),
            ("c.py::new", 3.8),
        ]);
        let formed = form_units(
            items(&input),
            &[false, true, true, false, true, false, true],
            1,
            DistMode::Load,
            None,
        );
        assert_eq!(
            shape(&formed.pooled),
            vec![
                vec!["a.py::new1"],
                vec!["a.py::new2"],
                vec!["a.py::new3"],
                vec!["c.py::new"],
                vec!["b.py::big"],
                vec!["a.py::t1"],
                vec!["a.py::t2"],
            ]
        );
        assert!(formed.seeded.is_empty());
    }

    #[test]
    fn contiguous_ranges_split_few_files() {
        let input = tests(&[
            ("a.py::t1", 1.0),
            ("a.py::t2", 1.0),
            ("b.py::t1", 1.5),
            ("a.py::big", 9.0),
            ("a.py::t3", 1.0),
            ("c.py::t1", 0.5),
            ("c.py::t2", 0.5),
            ("d.py::t1", 1.5),
        ]);
        let mut runs = load_chunks(items(&input), &[], 1, 5_000_000, 5_000_000, usize::MAX);
        runs.retain(|u| !u.heavy);
        // 7 s of light tests: 3.5 s each; b.py::t1's midpoint (2.75 s) is in the first
        // half. Each range keeps collection order.
        let shapes: Vec<Vec<String>> = contiguous_ranges(runs, 2, 5_000_000)
            .into_iter()
            .map(|mut r| {
                shape(r.make_contiguous())
                    .into_iter()
                    .map(|u| u.join(" "))
                    .collect()
            })
            .collect();
        assert_eq!(
            shapes,
            vec![
                vec!["a.py::t1 a.py::t2", "b.py::t1"],
                vec!["a.py::t3", "c.py::t1 c.py::t2", "d.py::t1"],
            ]
        );
    }
}
