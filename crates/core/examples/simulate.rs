//! Simulates the work-stealing scheduler on synthetic suites and prints makespan / lower
//! bound, where LB = max(sum / W, longest test), and module setups per worker.
//!
//! `cargo run -p shardex-core --release --example simulate`
//!
//! "load+agent" refills each worker as the agent does (`dispatch::plan_refill`: tests
//! prefetched behind the running one, at most one risky in flight); "behind" counts the
//! tests (over all seeds) that started before, in collection order, a light test their
//! worker had already started.
//!
//! Each worker asks `next_for` whenever it is free (event-driven, ties by worker index);
//! every test costs its true duration plus a fixed dispatch overhead. "accurate" runs give
//! the scheduler the true durations; "stale" ones give estimates off by a log-uniform factor
//! in [0.5, 2] and, for 10% of tests, nothing but `DEFAULT_ESTIMATE_SECS`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use shardex_core::schedule::{DistMode, SchedTest, Scheduler};
use shardex_core::timing::DEFAULT_ESTIMATE_SECS;
use shardex_core::{TestId, WorkerId};

const OVERHEAD_SECS: f64 = 0.0002;
const SEEDS: u64 = 5;

/// SplitMix64: tiny, deterministic, good enough for synthetic suites.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A test: nodeid and true duration.
type Suite = Vec<(TestId, f64)>;

/// Files of `sizes[i]` tests, a class in every third file, durations from `dur`.
fn build(rng: &mut Rng, sizes: &[usize], mut dur: impl FnMut(&mut Rng) -> f64) -> Suite {
    let mut suite = Vec::new();
    for (f, &n) in sizes.iter().enumerate() {
        for t in 0..n {
            let id = if f % 3 == 0 {
                format!("tests/m{}/test_f{f}.py::TestC{}::test_{t}", f % 7, t / 10)
            } else {
                format!("tests/m{}/test_f{f}.py::test_{t}", f % 7)
            };
            suite.push((TestId::new(id), dur(rng)));
        }
    }
    suite
}

/// File sizes with a long tail: many small files, a few big ones.
fn varied_sizes(rng: &mut Rng, tests: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut left = tests;
    while left > 0 {
        let n = ((-rng.unit().max(1e-9).ln()) * 30.0).ceil() as usize;
        let n = n.clamp(1, 200).min(left);
        sizes.push(n);
        left -= n;
    }
    sizes
}

fn uniform(rng: &mut Rng) -> Suite {
    build(rng, &[40; 50], |r| r.range(0.05, 0.15))
}

fn skewed(rng: &mut Rng) -> Suite {
    let sizes = varied_sizes(rng, 3000);
    let mut suite = build(rng, &sizes, |r| r.range(0.001, 0.02));
    // A dozen multi-second tests scattered among the tiny ones.
    for _ in 0..12 {
        let i = rng.below(suite.len());
        suite[i].1 = rng.range(2.0, 8.0);
    }
    suite
}

fn lognormal(rng: &mut Rng) -> Suite {
    let sizes = varied_sizes(rng, 2000);
    build(rng, &sizes, |r| (0.05f64.ln() + 1.5 * r.normal()).exp())
}

struct Outcome {
    ratio: f64,
    setups_per_worker: f64,
}

/// The naive alternative: single tests, LPT-seeded (longest first), one test stolen at a
/// time from the tail of the fullest deque. No notion of files.
struct Naive {
    deques: Vec<std::collections::VecDeque<(TestId, f64)>>,
    left: Vec<f64>,
}

impl Naive {
    fn new(tests: Vec<SchedTest>, workers: usize) -> Self {
        let weights: Vec<f64> = tests.iter().map(|t| t.estimate).collect();
        let plan = shardex_core::schedule::plan::lpt_partition(&weights, workers);
        let deques: Vec<std::collections::VecDeque<(TestId, f64)>> = plan
            .iter()
            .map(|bin| {
                bin.iter()
                    .map(|&i| (tests[i].id.clone(), tests[i].estimate))
                    .collect()
            })
            .collect();
        let left = deques.iter().map(|d| d.iter().map(|t| t.1).sum()).collect();
        Self { deques, left }
    }

    fn next_for(&mut self, w: usize) -> Option<TestId> {
        let (from, front) = if self.deques[w].is_empty() {
            let victim = (0..self.deques.len())
                .filter(|&v| !self.deques[v].is_empty())
                .max_by(|&a, &b| self.left[a].total_cmp(&self.left[b]).then(b.cmp(&a)))?;
            (victim, false)
        } else {
            (w, true)
        };
        let (id, est) = if front {
            self.deques[from].pop_front()?
        } else {
            self.deques[from].pop_back()?
        };
        self.left[from] -= est;
        Some(id)
    }
}

/// Runs the event-driven simulation with the scheduler or, for `no_affinity`, `Naive`.
fn simulate(
    suite: &Suite,
    estimates: &[(f64, bool)],
    workers: usize,
    mode: DistMode,
    no_affinity: bool,
) -> Outcome {
    let tests: Vec<SchedTest> = suite
        .iter()
        .zip(estimates)
        .map(|((id, _), &(estimate, _))| SchedTest {
            id: id.clone(),
            estimate,
            group: None,
        })
        .collect();
    let index: std::collections::HashMap<TestId, usize> = tests
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.clone(), i))
        .collect();
    let unknown: Vec<bool> = estimates.iter().map(|&(_, unknown)| unknown).collect();
    let mut sched = Scheduler::with_unknown(tests.clone(), workers, mode, &unknown);
    let mut naive = Naive::new(tests, workers);
    let mut free: BinaryHeap<Reverse<(Time, usize)>> =
        (0..workers).map(|w| Reverse((Time(0.0), w))).collect();
    let mut last_file: Vec<Option<&str>> = vec![None; workers];
    let mut setups = 0usize;
    let mut makespan: f64 = 0.0;
    while let Some(Reverse((Time(now), w))) = free.pop() {
        let next = if no_affinity {
            naive.next_for(w)
        } else {
            sched.next_for(WorkerId(w))
        };
        let Some(id) = next else {
            makespan = makespan.max(now);
            continue;
        };
        let (real_id, secs) = &suite[index[&id]];
        if last_file[w] != Some(real_id.file()) {
            setups += 1;
            last_file[w] = Some(real_id.file());
        }
        free.push(Reverse((Time(now + secs + OVERHEAD_SECS), w)));
    }
    assert!(no_affinity || sched.remaining() == 0);
    let sum: f64 = suite.iter().map(|(_, d)| d + OVERHEAD_SECS).sum();
    let longest = suite
        .iter()
        .map(|(_, d)| d + OVERHEAD_SECS)
        .fold(0.0, f64::max);
    let lb = (sum / workers as f64).max(longest);
    Outcome {
        ratio: makespan / lb,
        setups_per_worker: setups as f64 / workers as f64,
    }
}

/// As `simulate` with the scheduler, but each worker is refilled as the agent refills it
/// (`dispatch::plan_refill`): tests queued behind the running one, at most one risky in
/// flight, so light tests are prefetched (and frontiers move) while the pool still holds
/// long tests. Returns makespan / LB and the count of tests run behind their worker's place.
fn simulate_prefetch(suite: &Suite, estimates: &[(f64, bool)], workers: usize) -> (f64, usize) {
    use shardex_core::dispatch::{plan_refill, WorkerView};
    use std::collections::VecDeque;
    let tests: Vec<SchedTest> = suite
        .iter()
        .zip(estimates)
        .map(|((id, _), &(estimate, _))| SchedTest {
            id: id.clone(),
            estimate,
            group: None,
        })
        .collect();
    let index: std::collections::HashMap<TestId, usize> = tests
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.clone(), i))
        .collect();
    let unknown: Vec<bool> = estimates.iter().map(|&(_, unknown)| unknown).collect();
    let mut sched = Scheduler::with_unknown(tests, workers, DistMode::Load, &unknown);
    // Per worker: held tests (running first) as (place, estimate, risky); the highest place
    // it started.
    let mut held: Vec<VecDeque<(usize, f64, bool)>> = vec![VecDeque::new(); workers];
    let mut highest: Vec<Option<usize>> = vec![None; workers];
    let mut behind = 0;
    let mut free: BinaryHeap<Reverse<(Time, usize)>> =
        (0..workers).map(|w| Reverse((Time(0.0), w))).collect();
    let mut makespan: f64 = 0.0;
    while let Some(Reverse((Time(now), w))) = free.pop() {
        held[w].pop_front();
        let view = WorkerView {
            held: held[w].len(),
            queued_secs: held[w].iter().skip(1).map(|t| t.1).sum(),
            risky_in_flight: held[w].iter().any(|t| t.2),
        };
        let refill = plan_refill(&mut sched, WorkerId(w), &view, workers);
        for d in refill.batch {
            held[w].push_back((index[&d.id], d.estimate, d.risky));
        }
        let Some(&(place, _, risky)) = held[w].front() else {
            // Idle: ask again a little later (another worker may leave work behind).
            if sched.remaining() > 0 {
                free.push(Reverse((Time(now + 0.001), w)));
            }
            continue;
        };
        // Behind: before a light (not pooled) test this worker already started.
        if highest[w].is_some_and(|h| place < h) {
            behind += 1;
        }
        if !risky {
            highest[w] = highest[w].max(Some(place));
        }
        let end = now + suite[place].1 + OVERHEAD_SECS;
        makespan = makespan.max(end);
        free.push(Reverse((Time(end), w)));
    }
    let sum: f64 = suite.iter().map(|(_, d)| d + OVERHEAD_SECS).sum();
    let longest = suite
        .iter()
        .map(|(_, d)| d + OVERHEAD_SECS)
        .fold(0.0, f64::max);
    let lb = (sum / workers as f64).max(longest);
    (makespan / lb, behind)
}

/// Simulated seconds, totally ordered for the event heap.
#[derive(Clone, Copy, PartialEq)]
struct Time(f64);

impl Eq for Time {}

impl PartialOrd for Time {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Time {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Estimates and whether each is a guess.
fn stale_estimates(rng: &mut Rng, suite: &Suite) -> Vec<(f64, bool)> {
    suite
        .iter()
        .map(|(_, secs)| {
            if rng.unit() < 0.10 {
                (DEFAULT_ESTIMATE_SECS, true)
            } else {
                // true = estimate x factor, factor log-uniform in [0.5, 2].
                (
                    secs / (rng.range(-1.0, 1.0) * std::f64::consts::LN_2).exp(),
                    false,
                )
            }
        })
        .collect()
}

/// Mean and worst over seeds.
#[derive(Default)]
struct Stat {
    sum: f64,
    worst: f64,
    n: usize,
}

impl Stat {
    fn add(&mut self, x: f64) {
        self.sum += x;
        self.worst = self.worst.max(x);
        self.n += 1;
    }
    fn mean(&self) -> f64 {
        self.sum / self.n as f64
    }
}

fn main() {
    type Gen = fn(&mut Rng) -> Suite;
    let suites: [(&str, Gen); 3] = [
        ("uniform", uniform),
        ("skewed", skewed),
        ("lognormal", lognormal),
    ];
    println!("makespan / LB (mean and worst of {SEEDS} seeds), module setups per worker (mean)");
    println!(
        "{:<10} {:<8} {:>2} | {:>13} {:>13} {:>13} {:>13} {:>6} | {:>7} {:>7}",
        "suite",
        "timings",
        "W",
        "load",
        "load+agent",
        "no-affinity",
        "loadfile",
        "behind",
        "setups",
        "no-aff"
    );
    for (name, gen) in suites {
        for stale in [false, true] {
            for workers in [2, 4, 8] {
                let (mut load, mut base, mut file) =
                    (Stat::default(), Stat::default(), Stat::default());
                let (mut setups, mut base_setups) = (Stat::default(), Stat::default());
                let (mut agent, mut behind) = (Stat::default(), 0);
                for seed in 0..SEEDS {
                    let mut rng = Rng(seed * 1000 + 17);
                    let suite = gen(&mut rng);
                    let estimates = if stale {
                        stale_estimates(&mut rng, &suite)
                    } else {
                        suite.iter().map(|(_, d)| (*d, false)).collect()
                    };
                    let ours = simulate(&suite, &estimates, workers, DistMode::Load, false);
                    let naive = simulate(&suite, &estimates, workers, DistMode::Load, true);
                    let whole = simulate(&suite, &estimates, workers, DistMode::LoadFile, false);
                    let (ratio, late) = simulate_prefetch(&suite, &estimates, workers);
                    agent.add(ratio);
                    behind += late;
                    load.add(ours.ratio);
                    base.add(naive.ratio);
                    file.add(whole.ratio);
                    setups.add(ours.setups_per_worker);
                    base_setups.add(naive.setups_per_worker);
                }
                let cell = |s: &Stat| format!("{:.3} ({:.3})", s.mean(), s.worst);
                println!(
                    "{:<10} {:<8} {:>2} | {:>13} {:>13} {:>13} {:>13} {:>6} | {:>7.1} {:>7.1}",
                    name,
                    if stale { "stale" } else { "accurate" },
                    workers,
                    cell(&load),
                    cell(&agent),
                    cell(&base),
                    cell(&file),
                    behind,
                    setups.mean(),
                    base_setups.mean()
                );
            }
        }
    }
    // Cost of the scheduler itself: 10,000 tests dispatched to 8 workers.
    let mut rng = Rng(99);
    let sizes = varied_sizes(&mut rng, 10_000);
    let suite = build(&mut rng, &sizes, |r| r.range(0.001, 0.5));
    let tests: Vec<SchedTest> = suite
        .iter()
        .map(|(id, d)| SchedTest {
            id: id.clone(),
            estimate: *d,
            group: None,
        })
        .collect();
    let start = Instant::now();
    let mut sched = Scheduler::new(tests, 8, DistMode::Load);
    let built = start.elapsed();
    let mut n = 0;
    // Worst case for stealing: three workers do everything, stealing as they go (and the
    // others, once those three may take nothing more: see `Scheduler::has_work_for`).
    let mut w = 0;
    while sched.remaining() > 0 {
        if sched.next_for(WorkerId(w % 8)).is_some() {
            n += 1;
            w = n % 3;
        } else {
            w += 1;
        }
    }
    println!(
        "scheduler cost, 10,000 tests / 8 workers: new {:.2?}, {n} next_for calls {:.2?}",
        built,
        start.elapsed() - built
    );
}
