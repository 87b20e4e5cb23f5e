#!/usr/bin/env python3
"""4 CI nodes x 2 workers on this machine: one shared Redis queue vs the static split.

Run by bench/queue_nodes.sh. Each repetition starts 4 `shardex run -n 2 --node-index i
--node-total 4` agents at once, each on its own copy of fixtures/queue_skew (its own
checkout), with the stale timings `--timings stale_durations.json --no-timing-store`;
the queue variant adds `--queue redis://… --build-id <fresh>` against a private
redis-server (emptied before each run, so the timings Redis keeps from the previous run
do not make the stale ones accurate). Measured per run:

- job makespan (the issue's measure): first test start (the tests' own timestamps) to the
  last node's exit, so start-up (4 agents collecting at once on this machine) is excluded
  and each node's end (JUnit, report, timings) is included;
- test makespan: first test start to last test end;
- wall: first node's process start to the last node's exit;
- finish spread: last node's exit - first node's exit;
- every test exactly once across the 4 JUnit files, exit code 0 on every node.

LB = max(total / 8, longest test) from fixtures/queue_skew/_table.py. Variants run
round-robin (rep 1 of each, then rep 2, ...); the report gives medians [min-max].
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B

REPO = B.REPO
FIXTURE = REPO / "fixtures" / "queue_skew"
NODES = 4
WORKERS = 2

sys.path.insert(0, str(FIXTURE))
import _table

TOTAL = _table.total()
LONGEST = max(max(_table.durations(f)) for f in range(_table.FILES))
TESTS = _table.FILES * _table.PER_FILE
LB = max(TOTAL / (NODES * WORKERS), LONGEST)


@dataclass
class JobRun:
    wall: float
    job_makespan: float
    test_makespan: float
    spread: float
    exactly_once: bool
    problems: list[str] = field(default_factory=list)


class Redis:
    """A private redis-server on a free port, no persistence."""

    def __init__(self, tmp: Path):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.time() + 20
        while self.cli("PING") != "PONG":
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit("bench: redis-server did not start")
            time.sleep(0.05)
        self.url = f"redis://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        r = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True)
        return r.stdout.strip()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def junit_ids(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    return [f"{c.get('classname')}::{c.get('name')}" for c in root.iter("testcase")]


def run_job(shardex: str, tmp: Path, redis: Redis | None, details: bool = False) -> JobRun:
    """One job: 4 nodes started at once; waits for all, checks, measures."""
    problems: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="job-", dir=tmp))
    build = f"bench-{uuid.uuid4().hex[:12]}"
    tag = uuid.uuid4().hex
    if redis:
        redis.cli("FLUSHALL")
    procs, logs, junits, outs = [], [], [], []
    for i in range(NODES):
        suite = work / f"node{i}"
        shutil.copytree(FIXTURE, suite, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
        junit = work / f"junit-{i}.xml"
        log = work / f"skew-{i}.log"
        cmd = [shardex, "run", "--python", B.PY, "-n", str(WORKERS), "--node-index", str(i),
               "--node-total", str(NODES), "--timings", str(suite / "stale_durations.json"),
               "--no-timing-store", f"--junitxml={junit}"]
        if redis:
            cmd += ["--queue", redis.url, "--build-id", build]
        env = B.base_env()
        env["SKEW_LOG"] = str(log)
        env["BENCH_TAG"] = tag
        out = open(work / f"out-{i}.txt", "w+")
        if i == 0:
            t0 = time.time()
        procs.append(subprocess.Popen(cmd, cwd=suite, env=env, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True))
        logs.append(log)
        junits.append(junit)
        outs.append(out)
    exits = [None] * NODES
    deadline = t0 + 120
    while None in exits:
        for i, p in enumerate(procs):
            if exits[i] is None and p.poll() is not None:
                exits[i] = time.time()
        if time.time() > deadline:
            for i, p in enumerate(procs):
                if exits[i] is None:
                    p.kill()
                    p.wait()
                    exits[i] = time.time()
                    problems.append(f"node {i}: timed out")
        time.sleep(0.01)
    for i, p in enumerate(procs):
        if p.returncode != 0:
            outs[i].seek(0)
            problems.append(f"node {i}: exit code {p.returncode}: ...{outs[i].read()[-800:]}")
        outs[i].close()
    time.sleep(0.5)
    left = B.tagged_pids(tag)
    if left:
        problems.append(f"{len(left)} process(es) left behind by the nodes (killed)")
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    spans = []
    per_node = []
    for log in logs:
        mine = []
        if log.exists():
            for line in log.read_text().splitlines():
                start, end, nodeid = line.split(" ", 2)
                mine.append((float(start), float(end), nodeid))
        per_node.append(mine)
        spans += [(s, e) for s, e, _ in mine]
    seen: dict[str, int] = {}
    for i, j in enumerate(junits):
        try:
            for k in junit_ids(j):
                seen[k] = seen.get(k, 0) + 1
        except (OSError, ET.ParseError) as e:
            problems.append(f"node {i}: JUnit: {e}")
    once = len(seen) == TESTS and all(n == 1 for n in seen.values())
    if not once:
        twice = sorted(k for k, n in seen.items() if n > 1)
        problems.append(f"JUnit union: {len(seen)} distinct of {TESTS}, twice: {twice[:5]}")
    first = min((s for s, _ in spans), default=float("nan"))
    if details:
        for i, mine in enumerate(per_node):
            longs = [f"{n.split('::')[-1]} {s - first:.2f}-{e - first:.2f}" for s, e, n in mine if e - s > 1.0]
            B.log(f"  node {i}: {len(mine)} tests, first start +{min(s for s, _, _ in mine) - first:.2f} s, "
                  f"last end +{max(e for _, e, _ in mine) - first:.2f} s, exit +{exits[i] - first:.2f} s; "
                  f"long tests: {', '.join(longs) or '-'}")
    test_makespan = max((e for _, e in spans), default=float("nan")) - first
    shutil.rmtree(work, ignore_errors=True)
    return JobRun(max(exits) - t0, max(exits) - first, test_makespan, max(exits) - min(exits), once,
                  problems)


def fmt_range(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}–{max(xs):.2f}]"


def report(results: dict[str, list[JobRun]], reps: int, load: str, version: str) -> list[str]:
    out = ["# shardex: 4 nodes x 2 workers, one Redis queue vs the static split", ""]
    out += B.machine_header(reps, load)[:1] + [
        f"- {version}; {reps} repetitions per variant, round-robin; medians [min–max]; "
        f"load average at start: {load}",
        f"- fixtures/queue_skew: {TESTS} tests, total {TOTAL:.2f} s, longest {LONGEST:.2f} s; "
        f"LB = max(total / {NODES * WORKERS}, longest) = {LB:.2f} s; stale timings "
        "(stale_durations.json, --no-timing-store)", ""]
    out.append("| Variant | job makespan s | / LB | test makespan s | / LB | finish spread s | "
               "wall s | every test once | target |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---|---|")
    meds = {}
    for name, runs in results.items():
        wall = [r.wall for r in runs]
        jm = [r.job_makespan for r in runs]
        tm = [r.test_makespan for r in runs]
        sp = [r.spread for r in runs]
        meds[name] = (statistics.median(jm), statistics.median(tm), statistics.median(sp))
        once = "yes" if all(r.exactly_once for r in runs) else "NO"
        target = "≤ 1.10 × LB, spread ≤ 0.5 s" if name == "queue" else ""
        out.append(f"| {name} | {fmt_range(jm)} | {meds[name][0] / LB:.2f} | {fmt_range(tm)} | "
                   f"{meds[name][1] / LB:.2f} | {fmt_range(sp)} | {fmt_range(wall)} | {once} | {target} |")
    if "queue" in meds and "static" in meds:
        q, s = meds["queue"], meds["static"]
        out += ["", "Job makespan = first test start to the last node's exit; test makespan = first "
                "test start to last test end; finish spread = last node exit - first node exit; "
                "wall = first process start to last exit.",
                "", f"Queue / static (medians): job makespan {q[0] / s[0]:.2f}, test makespan "
                f"{q[1] / s[1]:.2f}, finish spread {q[2]:.2f} s vs {s[2]:.2f} s."]
    problems = [p for runs in results.values() for r in runs for p in r.problems]
    out += ["", "Anomalies: " + ("none" if not problems else "")]
    out += [f"- {p}" for p in problems]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--variants", default="queue,static")
    ap.add_argument("--details", action="store_true",
                    help="log each node's first start, last end, exit and long tests (relative to the first test start)")
    args = ap.parse_args()
    if not Path(B.SHARDEX).exists():
        print(f"bench: no shardex binary at {B.SHARDEX}", file=sys.stderr)
        return 2
    if shutil.which("redis-server") is None:
        print("bench: no redis-server: run scripts/setup.sh (it installs redis-server)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="shardex-bench-queue-"))
    shardex = str(tmp / "shardex")
    shutil.copy2(B.SHARDEX, shardex)  # others may rebuild the binary during the run
    version = subprocess.run([shardex, "--version"], capture_output=True, text=True).stdout.strip()
    version += f" ({B.SHARDEX})"
    load = B.loadavg()
    redis = Redis(tmp)
    variants = args.variants.split(",")
    results: dict[str, list[JobRun]] = {v: [] for v in variants}
    try:
        for rep in range(args.reps):
            B.wait_quiet()
            for v in variants:
                r = run_job(shardex, tmp, redis if v == "queue" else None, args.details)
                B.log(f"rep {rep + 1} {v}: job {r.job_makespan:.2f} s, tests {r.test_makespan:.2f} s, wall {r.wall:.2f} s, "
                      f"spread {r.spread:.2f} s, once {r.exactly_once} {r.problems}")
                results[v].append(r)
    finally:
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    text = "\n".join(report(results, args.reps, load, version))
    print(text)
    B.RESULTS.mkdir(exist_ok=True)
    (B.RESULTS / "queue_nodes.md").write_text(text + "\n")
    return 0 if not any(r.problems for runs in results.values() for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
