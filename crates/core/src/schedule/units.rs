//! Units of scheduling: the groups of tests that go to a worker together, and how the
//! light ones are seeded. `Load`: runs of consecutive tests of one file, heavy tests alone,
//! tests without a recorded time chunked by file; `LoadScope` and `LoadFile`: whole scopes
//! or files.

use std::cmp::Reverse;
use std::collections::{HashMap, VecDeque};

use crate::test_id::TestId;

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

#[derive(Clone, Debug)]
pub(super) struct Item {
    pub id: TestId,
    pub micros: u64,
    /// `LoadGroup`: its `xdist_group`.
    pub group: Option<String>,
}

impl From<SchedTest> for Item {
    fn from(test: SchedTest) -> Self {
        Item {
            micros: to_micros(test.estimate),
            id: test.id,
            group: test.group,
        }
    }
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
        }
    }

    /// Splits off the last `n` items as a new, unstarted unit.
    pub fn split_tail(&mut self, n: usize) -> Unit {
        let tail = self.items.split_off(self.items.len() - n);
        let tail = Unit::new(self.key.clone(), self.order, tail);
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

/// Forms the units of `tests` (collection order); `unknown[i]` says test `i` has no
/// recorded time (missing entries: known).
pub(super) fn form_units(
    tests: Vec<SchedTest>,
    unknown: &[bool],
    workers: usize,
    mode: DistMode,
) -> Formed {
    let items: Vec<Item> = tests.into_iter().map(Item::from).collect();
    let total: u64 = items.iter().map(|i| i.micros).sum();
    let share = total / workers.max(1) as u64;
    let cap = (share / CHUNKS_PER_SHARE).max(1);
    let heavy_cap = (share / HEAVY_PER_SHARE).max(1);
    let units = match mode {
        DistMode::Load | DistMode::LoadGroup => {
            // `LoadGroup`: each group is one whole unit, in the pool (by size, like a heavy
            // test: it starts early on whichever worker is free); the rest as `Load`.
            let mut groups: Vec<Unit> = Vec::new();
            let (mut rest, mut rest_unknown) = (Vec::new(), Vec::new());
            let mut index: HashMap<String, usize> = HashMap::new();
            for (pos, item) in items.into_iter().enumerate() {
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
                unit.heavy = is_heavy(unit.micros, heavy_cap);
                // Pooled like a heavy unit whatever its size; not risky unless heavy or
                // unknown (the agent sends at most one risky test ahead).
            }
            // A guessed estimate can hide a long test anywhere in a file: hand unknown tests
            // out in pieces small enough that every worker gets some early (a long one
            // then starts early, whatever its place), large enough to keep file affinity
            // when most of the suite is new.
            let guessed = rest_unknown.iter().filter(|&&u| u).count();
            let max_guessed_len = (guessed / (UNKNOWN_PIECES_PER_WORKER * workers.max(1))).max(1);
            let mut units = load_chunks(rest, &rest_unknown, cap, heavy_cap, max_guessed_len);
            units.extend(groups);
            units
        }
        // Whole scopes and files mix known and guessed tests: ordering them by size (LPT)
        // matters more than running the guesses early, so `unknown` is not used.
        DistMode::LoadScope | DistMode::LoadFile => {
            let mut units = group_by_key(items, mode, 0);
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

/// Whole scopes or files: every test of a key in one unit, in collection order, even if
/// the key's tests are not adjacent (as xdist's loadscope does).
pub(super) fn group_by_key(items: Vec<Item>, mode: DistMode, order_base: usize) -> Vec<Unit> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut units: Vec<Unit> = Vec::new();
    for (pos, item) in items.into_iter().enumerate() {
        let key = key_of(mode, &item.id);
        let unit = match index.get(key) {
            Some(&u) => &mut units[u],
            None => {
                index.insert(key.to_owned(), units.len());
                units.push(Unit::new(key.to_owned(), order_base + pos, VecDeque::new()));
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
    max_guessed_len: usize,
) -> Vec<Unit> {
    let class_cap = heavy_cap;
    let mut guess: Vec<bool> = (0..items.len())
        .map(|pos| unknown.get(pos).copied().unwrap_or(false))
        .collect();
    let mut start = 0;
    for (len, _) in blocks(&items, class_cap) {
        let block = &mut guess[start..start + len];
        if block.contains(&true) {
            block.fill(true);
        }
        start += len;
    }
    let mut units = Vec::new();
    let mut segment: Vec<(usize, Item)> = Vec::new();
    let mut guessed: Vec<(usize, Item)> = Vec::new();
    for (pos, item) in items.into_iter().enumerate() {
        if guess[pos] {
            guessed.push((pos, item));
            continue;
        }
        let heavy = is_heavy(item.micros, heavy_cap);
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
    let mut by_file: Vec<Vec<(usize, Item)>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (pos, item) in guessed {
        let file = item.id.file().to_owned();
        let slot = *index.entry(file).or_insert_with(|| {
            by_file.push(Vec::new());
            by_file.len() - 1
        });
        by_file[slot].push((pos, item));
    }
    for group in by_file {
        let start = units.len();
        let mut rest = Vec::new();
        for (pos, item) in group {
            if is_heavy(item.micros, heavy_cap) {
                units.push(heavy_unit(pos, item));
            } else {
                rest.push((pos, item));
            }
        }
        // Pieces of whole blocks, so no small class is cut.
        let mut lens = blocks(rest.iter().map(|(_, item)| item), class_cap).into_iter();
        while !rest.is_empty() {
            let mut n = 0;
            while n < max_guessed_len {
                let Some((len, _)) = lens.next() else { break };
                n += len;
            }
            let mut piece: Vec<(usize, Item)> = rest.drain(..n).collect();
            cut_segment(&mut piece, cap, class_cap, &mut units);
        }
        for unit in &mut units[start..] {
            unit.unknown = true;
        }
    }
    units
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
/// as possible. The units of a range are its runs of one file.
pub(super) fn contiguous_ranges(
    runs: Vec<Unit>,
    workers: usize,
    class_cap: u64,
) -> Vec<VecDeque<Unit>> {
    let workers = workers.max(1);
    let total: u64 = runs.iter().map(|u| u.micros).sum();
    let mut out: Vec<VecDeque<Unit>> = vec![VecDeque::new(); workers];
    let mut before: u64 = 0;
    for run in runs {
        let block_lens = blocks(&run.items, class_cap);
        let mut items = (run.order..).zip(run.items);
        for (len, micros) in block_lens {
            let mid = u128::from(before) * 2 + u128::from(micros);
            let w = (mid * workers as u128 / (u128::from(total) * 2)).min(workers as u128 - 1);
            before += micros;
            let range = &mut out[w as usize];
            for (pos, item) in items.by_ref().take(len) {
                match range.back_mut() {
                    Some(unit) if unit.key == run.key => {
                        unit.micros += item.micros;
                        unit.items.push_back(item);
                    }
                    _ => range.push_back(Unit::new(run.key.clone(), pos, VecDeque::from([item]))),
                }
            }
        }
    }
    for range in &mut out {
        // Runs holding the longest tests first: the tail, which thieves take and which runs
        // last, is then made of short tests, so the run ends evenly.
        range
            .make_contiguous()
            .sort_by_key(|u| (Reverse(u.items.iter().map(|i| i.micros).max()), u.order));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tests(spec: &[(&str, f64)]) -> Vec<SchedTest> {
        spec.iter()
            .map(|&(id, estimate)| SchedTest {
                id: TestId::new(id),
                estimate,
                group: None,
            })
            .collect()
    }

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
        tests.iter().map(|t| Item::from(t.clone())).collect()
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
        let units = load_chunks(items(&input), &[], 2_000_000, 2_000_000, usize::MAX);
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
        let scope = group_by_key(items(&input), DistMode::LoadScope, 0);
        assert_eq!(
            shape(&scope),
            vec![
                vec!["a.py::C::t1", "a.py::C::t3[x::y]"],
                vec!["a.py::t2"],
                vec!["b.py::t1"],
                vec!["a.py::D::t4"],
            ]
        );
        let file = group_by_key(items(&input), DistMode::LoadFile, 0);
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
        let formed = form_units(input.clone(), &[], 1, DistMode::LoadFile);
        assert_eq!(
            formed
                .pooled
                .iter()
                .map(|u| u.key.as_str())
                .collect::<Vec<_>>(),
            ["a.py", "b.py"]
        );
        let formed = form_units(input, &[false, false, false, true], 1, DistMode::LoadScope);
        let keys: Vec<_> = formed.pooled.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(keys, ["a.py::C", "a.py", "b.py", "a.py::D"]);
    }

    #[test]
    fn unknown_tests_are_pooled_first() {
        // 10.1 s on 1 worker: heavy from 0.63 s. Unknown tests of a file are chunked
        // together, apart from the known ones, in pieces of at most
        // unknown / (UNKNOWN_PIECES_PER_WORKER * workers) tests: 4 / 4 = 1 here.
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
            input,
            &[false, true, true, false, true, false, true],
            1,
            DistMode::Load,
        );
        assert_eq!(
            shape(&formed.pooled),
            vec![
                vec!["a.py::new1"],
                vec!["a.py::new2"],
                vec!["a.py::new3"],
                vec!["c.py::new"],
                vec!["b.py::big"]
            ]
        );
        assert_eq!(shape(&formed.seeded), vec![vec!["a.py::t1", "a.py::t2"]]);
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
        let mut runs = load_chunks(items(&input), &[], 1, 5_000_000, usize::MAX);
        runs.retain(|u| !u.heavy);
        // 7 s of light tests: 3.5 s each; b.py::t1's midpoint (2.75 s) is in the first
        // half. Each range lists its runs by their longest test.
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
                vec!["b.py::t1", "a.py::t1 a.py::t2"],
                vec!["d.py::t1", "a.py::t3", "c.py::t1 c.py::t2"],
            ]
        );
    }
}
