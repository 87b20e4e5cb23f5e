//! The shared queue's decisions, with the task played by the test: what it hands out,
//! acknowledges and falls back to, from the news it gets.

use std::collections::{BTreeSet, VecDeque};

use shardex_core::queue_plan::Entry;
use shardex_core::schedule::{split_for_nodes, DistMode, SchedTest};
use shardex_core::{TestId, WorkerId};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::{Command, News, NodeIdentity, SharedQueue};
use crate::queue::redis::Leased;
use crate::queue::{Held, QueueEvent, QueueSignal, WorkQueue};

fn suite(n: usize) -> Vec<SchedTest> {
    (0..n)
        .map(|i| SchedTest {
            id: TestId::from(format!("tests/test_{}.py::test_{i:02}", i % 3).as_str()),
            estimate: 0.01 * (i + 1) as f64,
            group: None,
        })
        .collect()
}

fn node(index: u32, total: u32) -> NodeIdentity {
    NodeIdentity {
        index,
        total,
        source: "CircleCI".into(),
        shown: "redis://h:6379".into(),
    }
}

fn queue(
    index: u32,
    total: u32,
    tests: Vec<SchedTest>,
) -> (SharedQueue, UnboundedReceiver<Command>) {
    let (commands, command_rx) = unbounded_channel();
    let (_events_tx, events) = unbounded_channel();
    let unknown = vec![false; tests.len()];
    let queue = SharedQueue::new(
        node(index, total),
        tests,
        &unknown,
        2,
        DistMode::Load,
        commands,
        events,
    );
    (queue, command_rx)
}

fn news(queue: &mut SharedQueue, news: News) -> Vec<QueueSignal> {
    queue.absorb(QueueEvent::Shared(news))
}

/// Everything the queue hands out to two workers that finish each test at once.
fn drain(queue: &mut SharedQueue) -> Vec<TestId> {
    let mut out = Vec::new();
    let none = VecDeque::new();
    for _ in 0..1000 {
        let mut got = false;
        for w in 0..2 {
            let lease = queue.lease(
                WorkerId(w),
                Held {
                    running: None,
                    queued: &none,
                },
            );
            for id in lease.ids {
                queue.complete(WorkerId(w), &id, Some(0.01));
                queue.settled(&id, false);
                out.push(id);
                got = true;
            }
        }
        if !got {
            break;
        }
    }
    out
}

fn leased(id: &TestId, lease: u64) -> Leased {
    Leased {
        id: id.clone(),
        lease,
        micros: 10_000,
        reclaimed: false,
    }
}

#[test]
fn unreachable_at_start_runs_the_static_share_exactly() {
    let tests = suite(30);
    let mut by_id = tests.clone();
    by_id.sort_by(|a, b| a.id.cmp(&b.id));
    let shares = split_for_nodes(&by_id, 3, DistMode::Load);
    let mut union = BTreeSet::new();
    for index in 0..3 {
        let (mut q, _commands) = queue(index, 3, tests.clone());
        let signals = news(&mut q, News::Unreachable("connection refused".into()));
        assert!(
            matches!(&signals[0], QueueSignal::Note(n) if n.starts_with("warning: the shared queue at redis://h:6379 is unreachable (connection refused)")),
            "{signals:?}"
        );
        let ran = drain(&mut q);
        let expected: BTreeSet<TestId> = shares[index as usize].ids.iter().cloned().collect();
        assert_eq!(ran.iter().cloned().collect::<BTreeSet<_>>(), expected);
        assert!(q.is_exhausted());
        union.extend(ran);
    }
    assert_eq!(union.len(), 30, "every test once across the nodes");
}

#[test]
fn batches_are_leased_run_and_acknowledged_with_their_lease() {
    let tests = suite(6);
    let (mut q, mut commands) = queue(0, 1, tests.clone());
    let none = VecDeque::new();
    let held = Held {
        running: None,
        queued: &none,
    };
    // Joining: nothing to hand out, and nothing asked for before the queue is joined.
    let lease = q.lease(WorkerId(0), held);
    assert!(lease.ids.is_empty());
    assert!(commands.try_recv().is_err());
    news(
        &mut q,
        News::Joined {
            share: vec![Entry {
                ids: tests.iter().map(|t| t.id.clone()).collect(),
                micros: 1,
            }],
            seeded_by: 0,
            seeded_here: true,
        },
    );
    assert!(matches!(commands.try_recv(), Ok(Command::Want { .. })));
    let foreign = TestId::from("tests/test_x.py::not_collected_here");
    let mut batch: Vec<Leased> = tests.iter().take(3).map(|t| leased(&t.id, 7)).collect();
    batch.push(leased(&foreign, 8));
    let signals = news(&mut q, News::Batch(batch));
    assert!(
        signals
            .iter()
            .any(|s| matches!(s, QueueSignal::Note(n) if n.contains("not_collected_here"))),
        "{signals:?}"
    );
    let ran = drain(&mut q);
    assert_eq!(
        ran.len(),
        3,
        "never an id this node did not collect: {ran:?}"
    );
    let mut acked = Vec::new();
    while let Ok(command) = commands.try_recv() {
        if let Command::Ack(ack) = command {
            assert_eq!(ack.lease, 7);
            acked.push(ack.id);
        }
    }
    assert_eq!(acked, ran);
    // Not exhausted until the queue says so.
    assert!(!q.is_exhausted());
    news(&mut q, News::Exhausted);
    assert!(q.is_exhausted());
}

#[test]
fn a_worker_with_nothing_left_here_is_told_at_once() {
    let tests = suite(4);
    let (mut q, mut commands) = queue(0, 2, tests.clone());
    news(
        &mut q,
        News::Joined {
            share: Vec::new(),
            seeded_by: 1,
            seeded_here: false,
        },
    );
    assert!(matches!(commands.try_recv(), Ok(Command::Want { .. })));
    news(&mut q, News::Batch(vec![leased(&tests[0].id, 1)]));
    let none = VecDeque::new();
    let held = Held {
        running: None,
        queued: &none,
    };
    let lease = q.lease(WorkerId(0), held);
    assert_eq!(lease.ids, vec![tests[0].id.clone()]);
    // The next batch is asked for, and the worker is not held back waiting for it (a
    // slow or failing Redis would stall it).
    assert!(lease.dry);
    assert!(matches!(commands.try_recv(), Ok(Command::Want { .. })));
}

#[test]
fn a_lost_queue_runs_the_rest_of_the_seeded_share() {
    let tests = suite(8);
    let (mut q, _commands) = queue(0, 2, tests.clone());
    let share: Vec<TestId> = tests.iter().take(5).map(|t| t.id.clone()).collect();
    news(
        &mut q,
        News::Joined {
            share: vec![Entry {
                ids: share.clone(),
                micros: 1,
            }],
            seeded_by: 0,
            seeded_here: true,
        },
    );
    news(
        &mut q,
        News::Batch(vec![leased(&share[0], 1), leased(&share[1], 2)]),
    );
    let ran_before = drain(&mut q);
    assert_eq!(ran_before.len(), 2);
    let signals = news(&mut q, News::Lost("connection reset".into()));
    assert!(
        matches!(&signals[0], QueueSignal::Note(n) if n.contains("lost the shared queue") && n.contains("(3 tests;")),
        "{signals:?}"
    );
    let ran_after: BTreeSet<TestId> = drain(&mut q).into_iter().collect();
    assert_eq!(ran_after, share[2..].iter().cloned().collect());
    assert!(q.is_exhausted());
    assert_eq!(
        q.shared_summary().unwrap().without_queue,
        share[2..].to_vec()
    );
    // A loss once every test is acknowledged changes nothing.
    let (mut done, _c) = queue(0, 1, tests);
    news(&mut done, News::Exhausted);
    assert!(news(&mut done, News::Lost("x".into())).is_empty());
}

#[test]
fn a_second_acknowledgement_and_a_job_stop_are_signalled() {
    let (mut q, _commands) = queue(0, 1, suite(2));
    let a = TestId::from("a.py::t");
    let b = TestId::from("b.py::t");
    let signals = news(&mut q, News::Acked(vec![(a, true), (b.clone(), false)]));
    assert_eq!(signals, vec![QueueSignal::RanTwice(b)]);
    let signals = news(
        &mut q,
        News::Stopped("1 hard failure reached --maxfail=1 (node 2)".into()),
    );
    assert_eq!(
        signals,
        vec![QueueSignal::Stop(
            "1 hard failure reached --maxfail=1 (node 2)".into()
        )]
    );
    assert!(q.is_exhausted());
}
