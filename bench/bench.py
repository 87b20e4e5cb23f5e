#!/usr/bin/env python3
"""shardex benchmark: shardex run -n N vs pytest and pytest-xdist on generated suites.

Run by bench/run.sh with the repository's venv python. Prints one markdown report and
writes it to bench/results/latest.md. Every variant of a section is measured in the
same round-robin loop (rep 1 of every variant, then rep 2, ...) so that noise from other
processes on the machine hits all of them alike; figures are medians.

Every command runs in its own session under `timeout`, with a tag in its environment;
after it ends, any process still carrying the tag is reported (an anomaly) and killed
by pid, so the benchmark never leaves processes behind.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("BENCH_VENV", REPO / ".venv"))
PY = str(VENV / "bin" / "python")
SHARDEX = os.environ.get("SHARDEX_BIN", str(REPO / "target" / "release" / "shardex"))
SHARDEX_ORIG = SHARDEX
BIN_SHA = BIN_MTIME = "?"
RESULTS = REPO / "bench" / "results"

STATS_RE = re.compile(
    r"shardex stats: agent cpu ([\d.]+)s user \+ ([\d.]+)s sys \(([\d.]+) us/test\), "
    r"max rss ([\d.]+) MB, (\d+) tests"
)

anomalies: list[str] = []


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- running


@dataclass
class Run:
    label: str
    wall: float  # seconds, Popen to exit
    start_epoch: float  # time.time() just before Popen
    rc: int | None  # None: timed out
    out: str
    err: str
    leaked: int = 0
    ok: bool = True
    # First test start to last test end, from the tests' own timestamps (skewed suite).
    span: float | None = None

    def passed(self) -> int | None:
        m = re.findall(r"(\d+) passed", self.out)
        return int(m[-1]) if m else None

    def collected(self) -> int | None:
        m = re.findall(r"(\d+) tests? collected", self.out)
        return int(m[-1]) if m else None

    def stats(self) -> dict | None:
        m = STATS_RE.search(self.err)
        if not m:
            return None
        return {
            "user": float(m[1]),
            "sys": float(m[2]),
            "us_per_test": float(m[3]),
            "rss_mb": float(m[4]),
            "tests": int(m[5]),
        }


def base_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "SHARDEX_"))}
    env["VIRTUAL_ENV"] = str(VENV)
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env.pop("PYTHONPATH", None)
    env["NO_COLOR"] = "1"
    env["PY_COLORS"] = "0"
    return env


def tagged_pids(tag: str) -> list[int]:
    needle = f"BENCH_TAG={tag}".encode()
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if needle in f.read():
                    pids.append(int(d))
        except OSError:
            pass
    return pids


def run(label: str, cmd: list[str], cwd: Path, limit: float, env_extra: dict | None = None) -> Run:
    tag = uuid.uuid4().hex
    env = base_env()
    env["BENCH_TAG"] = tag
    if env_extra:
        env.update(env_extra)
    full = ["timeout", "--kill-after=5", str(limit), *cmd]
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        t_epoch = time.time()
        t0 = time.perf_counter()
        p = subprocess.Popen(full, cwd=cwd, env=env, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        try:
            rc = p.wait(timeout=limit + 15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            rc = 124
        wall = time.perf_counter() - t0
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read(), fe.read()
    if rc == 124:
        rc_val = None
        anomalies.append(f"{label}: timed out after {limit:.0f}s: `{' '.join(cmd)}` in {cwd}")
    else:
        rc_val = rc
    r = Run(label, wall, t_epoch, rc_val, out, err)
    # Anything still alive with our tag was left behind by the command.
    time.sleep(0.05)
    left = tagged_pids(tag)
    if left:
        deadline = time.time() + 2
        while left and time.time() < deadline:  # give exiting processes a moment
            time.sleep(0.1)
            left = tagged_pids(tag)
        if left:
            r.leaked = len(left)
            desc = []
            for pid in left:
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                    desc.append(f"{pid}: {cmdline[:100]}")
                except OSError:
                    pass
            anomalies.append(f"{label}: {len(left)} process(es) left behind after exit: {desc}")
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
    return r


def check(r: Run, expect_passed: int | None = None, expect_collected: int | None = None) -> bool:
    ok = True
    if r.rc != 0:
        ok = False
        tail = (r.out[-600:] + "\n--- stderr ---\n" + r.err[-600:]).strip()
        anomalies.append(f"{r.label}: exit code {r.rc}; output tail:\n```\n{tail}\n```")
    elif expect_passed is not None and r.passed() != expect_passed:
        ok = False
        anomalies.append(f"{r.label}: {r.passed()} passed, expected {expect_passed}")
    elif expect_collected is not None and r.collected() != expect_collected:
        ok = False
        anomalies.append(f"{r.label}: {r.collected()} collected, expected {expect_collected}")
    return ok


def med(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x: float | None, nd: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def spread(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return "–"
    return f"{min(xs):.2f}–{max(xs):.2f}"


def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}"


@dataclass
class Variant:
    name: str
    cmd: list[str]
    cwd: Path
    expect_passed: int | None = None
    expect_collected: int | None = None
    before: object = None  # callable run before each rep
    env: dict | None = None
    limit: float = 300
    runs: list[Run] = field(default_factory=list)

    def walls(self) -> list[float]:
        return [r.wall for r in self.runs if r.ok]

    def spans(self) -> list[float]:
        return [r.span for r in self.runs if r.ok and r.span is not None]


def cpu_busy(interval: float = 1.0) -> float:
    """Fraction of all CPUs busy over `interval` seconds (from /proc/stat)."""
    def snap():
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = f[3] + f[4]
        return sum(f[:8]), idle
    t1, i1 = snap()
    time.sleep(interval)
    t2, i2 = snap()
    return 1 - (i2 - i1) / max(1, t2 - t1)


quiet_log = {"rounds": 0, "waited": 0.0, "busy_starts": 0}
QUIET_MAX_WAIT = 90.0


def wait_quiet() -> None:
    """Before a round: wait (up to QUIET_MAX_WAIT s) until other processes use < 15% of the
    CPUs, so that builds by others hit as few rounds as possible."""
    t0 = time.time()
    quiet_log["rounds"] += 1
    while True:
        busy = cpu_busy()
        if busy < 0.15:
            break
        if time.time() - t0 > QUIET_MAX_WAIT:
            quiet_log["busy_starts"] += 1
            log(f"  machine still busy ({busy:.0%}) after {QUIET_MAX_WAIT:.0f}s; measuring anyway")
            break
        time.sleep(2)
    quiet_log["waited"] += time.time() - t0


def measure(variants: list[Variant], reps: int) -> None:
    for rep in range(reps):
        wait_quiet()
        for v in variants:
            if v.before:
                v.before()
            span_file = (v.env or {}).get("BENCH_SPAN_FILE")
            if span_file:
                Path(span_file).unlink(missing_ok=True)
            r = run(f"{v.name} (rep {rep + 1})", v.cmd, v.cwd, v.limit, v.env)
            r.ok = check(r, v.expect_passed, v.expect_collected)
            if span_file and Path(span_file).exists():
                spans = [tuple(map(float, line.split())) for line in Path(span_file).read_text().split("\n") if line]
                r.span = max(e for _, e in spans) - min(b for b, _ in spans)
            v.runs.append(r)
            log(f"  {v.name}: {r.wall:.2f}s rc={r.rc}" + ("" if r.ok else "  <-- ANOMALY"))


# ----------------------------------------------------------------------------- suites

PYTEST_INI = "[pytest]\n"


def gen_trivial(root: Path, files: int, per_file: int) -> int:
    root.mkdir(parents=True)
    (root / "pytest.ini").write_text(PYTEST_INI)
    body = "".join(f"def test_{i}():\n    assert True\n\n\n" for i in range(per_file))
    for f in range(files):
        (root / f"test_t{f:03d}.py").write_text(body)
    return files * per_file


LONG = [2.0, 1.5, 1.2, 1.0]
N_SHORT = 300
N_FILES = 15


def gen_skewed(root: Path) -> dict[str, float]:
    """15 files of sleeping tests: 300 of 5–40 ms and 4 long ones placed late in collection
    order (in the middle of files 9, 11, 12 and 14). Returns nodeid -> nominal seconds."""
    root.mkdir(parents=True)
    (root / "pytest.ini").write_text(PYTEST_INI)
    (root / "conftest.py").write_text(SPAN_CONFTEST)
    rng = random.Random(20261126)
    shorts = [round(rng.uniform(0.005, 0.040), 3) for _ in range(N_SHORT)]
    per = N_SHORT // N_FILES
    long_at = {9: LONG[0], 11: LONG[1], 12: LONG[2], 14: LONG[3]}
    durations: dict[str, float] = {}
    k = 0
    for f in range(N_FILES):
        tests = [(f"test_s{j:02d}", shorts[k + j]) for j in range(per)]
        k += per
        if f in long_at:
            tests.insert(per // 2, (f"test_long_{int(long_at[f] * 10):02d}", long_at[f]))
        lines = ["import time\n\n"]
        for name, d in tests:
            lines.append(f"def {name}():\n    time.sleep({d})\n\n\n")
            durations[f"test_k{f:02d}.py::{name}"] = d
        (root / f"test_k{f:02d}.py").write_text("".join(lines))
    return durations


# Each test's call phase appends "start end" to $BENCH_SPAN_FILE: the makespan of the test
# execution itself, whatever the tool's start-up costs.
SPAN_CONFTEST = '''\
import os
import time

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    start = time.time()
    yield
    path = os.environ.get("BENCH_SPAN_FILE")
    if path:
        with open(path, "a") as f:
            f.write(f"{start!r} {time.time()!r}\\n")
'''


TTFR_CONFTEST = '''\
import os
import time

_first = True


def pytest_runtest_call(item):
    global _first
    if _first:
        _first = False
        with open(os.environ["BENCH_T0_FILE"], "a") as f:
            f.write(f"{time.time()!r} {os.getpid()}\\n")
'''


# ----------------------------------------------------------------------------- report


def machine_header(reps: int, load_start: str) -> list[str]:
    def sh(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=20).stdout.strip()
        except Exception:
            return "?"

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = sh([PY, "-c", "import sys, pytest, xdist; print(f'Python {sys.version.split()[0]}, pytest {pytest.__version__}, pytest-xdist {xdist.__version__}')"])
    head = sh(["git", "rev-parse", "--short", "HEAD"])
    dirty = sh(["git", "status", "--porcelain", "--untracked-files=no", "crates"])
    desc = os.environ.get("BENCH_SHARDEX_DESC") or (
        f"{SHARDEX_ORIG}, built {BIN_MTIME}; repo HEAD {head}{', crates/ with uncommitted changes' if dirty else ''}")
    return [
        f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}",
        f"- {versions}; {sh([SHARDEX, '--version'])} ({desc}; sha256 {BIN_SHA})",
        f"- Repetitions: {reps} per variant{' (--quick: a check of the script, not a measurement)' if reps == 1 else ''}, round-robin; wall-clock medians (min–max in brackets). Load average at start: {load_start}",
    ]


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    global SHARDEX, BIN_SHA, BIN_MTIME
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1 repetition of everything")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the generated suites")
    ap.add_argument("--sections", default="1,2,3,4,5,6")
    args = ap.parse_args()
    reps = args.reps or (1 if args.quick else 5)
    sections = {int(s) for s in args.sections.split(",")}

    if not Path(SHARDEX).exists():
        print(f"no shardex binary at {SHARDEX}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="shardex-bench-"))
    # Measure a copy: others may rebuild target/release/shardex during the run.
    BIN_MTIME = time.strftime("%Y-%m-%d %H:%M", time.localtime(Path(SHARDEX).stat().st_mtime))
    (tmp / "bin").mkdir()
    shutil.copy2(SHARDEX, tmp / "bin" / "shardex")
    SHARDEX = str(tmp / "bin" / "shardex")
    BIN_SHA = hashlib.sha256(Path(SHARDEX).read_bytes()).hexdigest()[:12]
    load_start = loadavg()
    log(f"suites in {tmp}; {reps} reps; load {load_start}")
    out: list[str] = ["# shardex benchmark", ""]
    out += machine_header(reps, load_start)
    out.append("")
    pyt = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    shx = [SHARDEX, "run"]
    stats_env = {"SHARDEX_STATS": "1"}

    def rm_store(d: Path):
        return lambda: shutil.rmtree(d / ".shardex", ignore_errors=True)

    try:
        # ------------------------------------------------------------- 1. trivial suite
        trivial = tmp / "trivial"
        n_triv = gen_trivial(trivial, 40, 100)
        warm_stats: list[dict] = []
        cold_stats: list[dict] = []
        if sections & {1, 3, 5}:
            # Warm-up (bytecode, page cache, timing store): not measured.
            run("warm-up plain", pyt, trivial, 300)
            run("warm-up shardex", [*shx, "-n", "2", "-q", "-p", "no:cacheprovider"], trivial, 300)
        if 1 in sections or 3 in sections:
            log("1. trivial suite")
            v_plain = Variant("`pytest` (serial)", pyt, trivial, n_triv)
            v_coll = Variant("pytest --collect-only", [*pyt, "--collect-only"], trivial, expect_collected=n_triv)
            v_load = Variant("`pytest -n 2 --dist load`", [*pyt, "-n", "2", "--dist", "load"], trivial, n_triv)
            v_ws = Variant("`pytest -n 2 --dist worksteal`", [*pyt, "-n", "2", "--dist", "worksteal"], trivial, n_triv)
            v_cold = Variant("`shardex run -n 2`, cold (no `.shardex/`)", [*shx, "-n", "2", "-q", "-p", "no:cacheprovider"], trivial, n_triv,
                             before=rm_store(trivial), env=stats_env)
            v_warm = Variant("`shardex run -n 2`, warm (`.shardex/timings.json`)", [*shx, "-n", "2", "-q", "-p", "no:cacheprovider"], trivial, n_triv,
                             env=stats_env)
            vs = [v_plain, v_coll, v_load, v_ws, v_cold, v_warm]
            measure(vs, reps)
            if not (trivial / ".shardex" / "timings.json").exists():
                anomalies.append("shardex did not write .shardex/timings.json in the trivial suite's rootdir")
            plain, coll = med(v_plain.walls()), med(v_coll.walls())
            ideal = None if plain is None or coll is None else coll + (plain - coll) / 2
            xl, xw = med(v_load.walls()), med(v_ws.walls())
            warm_stats = [s for r in v_warm.runs if (s := r.stats())]
            cold_stats = [s for r in v_cold.runs if (s := r.stats())]
            if 1 in sections:
                out += [
                    f"## 1. Trivial suite ({n_triv:,} tests: 40 files × 100 `assert True`), 2 workers",
                    "",
                    "| Variant | Wall s | Range s | / ideal | / xdist load | / xdist worksteal |",
                    "|---|---:|---:|---:|---:|---:|",
                ]
                for v in vs:
                    m = med(v.walls())
                    if v is v_coll:
                        out.append(f"| `pytest --collect-only` (collection) | {fmt(m)} | {spread(v.walls())} | | | |")
                        continue
                    out.append(f"| {v.name} | {fmt(m)} | {spread(v.walls())} "
                               f"| {ratio(m, ideal)} | {ratio(m, xl)} | {ratio(m, xw)} |")
                out.append(f"| **ideal** = collection + (plain − collection) / 2 | {fmt(ideal)} | | 1.00 | {ratio(ideal, xl)} | {ratio(ideal, xw)} |")
                out += ["", f"Target: shardex / ideal ≤ 1.0. Measured: warm {ratio(med(v_warm.walls()), ideal)}, cold {ratio(med(v_cold.walls()), ideal)}.", ""]

        # ------------------------------------------------------------- 2. skewed suite
        if 2 in sections:
            log("2. skewed sleeping suite")
            skew = tmp / "skewed"
            durs = gen_skewed(skew)
            n_skew = len(durs)
            total = sum(durs.values())
            longest = max(durs.values())
            # Stale timings: every duration × a factor in [0.5, 2] (log-uniform), 10% missing.
            rng = random.Random(7)
            ids = sorted(durs)
            missing = set(rng.sample(ids, round(len(ids) * 0.10)))
            stale = {t: round(d * 2 ** rng.uniform(-1, 1), 4) for t, d in durs.items() if t not in missing}
            stale_path = tmp / "stale.test_durations"
            stale_path.write_text(json.dumps(stale, indent=1, sort_keys=True))
            long_missing = sorted(t for t in missing if durs[t] >= 1)
            long_scaled = {t: f"{durs[t]}→{stale[t]:.2f}" for t in ids if durs[t] >= 1 and t in stale}
            run("warm-up plain skewed", pyt, skew, 120)
            run("warm-up shardex skewed", [*shx, "-n", "4", "-q", "-p", "no:cacheprovider"], skew, 120)
            rows = {}
            span_env = {"BENCH_SPAN_FILE": str(tmp / "spans.txt")}
            for w in (4, 8):
                vs = [
                    Variant(f"xdist -n {w} load", [*pyt, "-n", str(w), "--dist", "load"], skew, n_skew, limit=120, env=span_env),
                    Variant(f"xdist -n {w} worksteal", [*pyt, "-n", str(w), "--dist", "worksteal"], skew, n_skew, limit=120, env=span_env),
                    Variant(f"shardex -n {w} accurate (store)", [*shx, "-n", str(w), "-q", "-p", "no:cacheprovider"], skew, n_skew, limit=120, env=span_env),
                    Variant(f"shardex -n {w} stale (--timings, --no-timing-store)",
                            [*shx, "-n", str(w), "--timings", str(stale_path), "--no-timing-store", "-q", "-p", "no:cacheprovider"],
                            skew, n_skew, limit=120, env=span_env),
                ]
                measure(vs, reps)
                lb = max(total / w, longest)
                rows[w] = (lb, vs)
            out += [
                f"## 2. Skewed sleeping suite ({n_skew} tests in {N_FILES} files: {N_SHORT} of 5–40 ms + sleeps of "
                f"{', '.join(f'{x:g}' for x in LONG)} s placed late in collection order; total {total:.2f} s)",
                "",
                "Makespan = first test start to last test end, from the tests' own timestamps (the "
                "issue's measure: start-up excluded); wall = the whole command, start-up included. "
                "LB = max(total / W, longest).",
                "",
                f"| Variant | W=4 makespan s | W=4 / LB ({rows[4][0]:.2f} s) | W=4 wall s | "
                f"W=8 makespan s | W=8 / LB ({rows[8][0]:.2f} s) | W=8 wall s | Target (makespan / LB) |",
                "|---|---:|---:|---:|---:|---:|---:|---:|",
            ]
            targets = ["", "", "≤ 1.10", "≤ 1.15"]
            for i, name in enumerate(["xdist load", "xdist worksteal", "shardex, accurate timings (store from a previous run)",
                                      "shardex, stale timings (×[0.5, 2], 10% missing)"]):
                cells = []
                for w in (4, 8):
                    lb, vs = rows[w]
                    m = med(vs[i].spans())
                    cells += [f"{fmt(m)} [{spread(vs[i].spans())}]", ratio(m, lb), fmt(med(vs[i].walls()))]
                out.append(f"| {name} | {' | '.join(cells)} | {targets[i]} |")
            scaled = ", ".join(f"{k.split('::')[1]} {v}" for k, v in long_scaled.items())
            out += ["", f"Stale file: {len(stale)} of {n_skew} tests; missing long tests: {long_missing or 'none'}; "
                        f"long tests scaled: {scaled}.", ""]

        # ------------------------------------------------------------- 3. overhead
        if 3 in sections:
            log("3. overhead (10,000-test suite)")
            big = tmp / "trivial10k"
            n_big = gen_trivial(big, 100, 100)
            run("warm-up plain 10k", [*pyt, "--collect-only"], big, 300)
            run("warm-up shardex 10k", [*shx, "-n", "2", "-q", "-p", "no:cacheprovider"], big, 300)
            v_big = Variant("shardex -n 2 10k warm", [*shx, "-n", "2", "-q", "-p", "no:cacheprovider"], big, n_big, env=stats_env)
            measure([v_big], max(1, min(reps, 3)))
            big_stats = [s for r in v_big.runs if (s := r.stats())]
            for lbl, runs_, st in (("trivial warm", v_warm.runs, warm_stats),
                                   ("10k", v_big.runs, big_stats)):
                if any(r.ok for r in runs_) and not st:
                    anomalies.append(f"shardex {lbl}: no `shardex stats:` line on stderr with SHARDEX_STATS=1")
                for s in st:
                    exp = n_triv if lbl == "trivial warm" else n_big
                    if s["tests"] != exp:
                        anomalies.append(f"shardex {lbl}: stats line counts {s['tests']} tests, expected {exp}")
                        break

            def m_of(st, k):
                return med([s[k] for s in st])

            out += [
                "## 3. shardex agent overhead (`SHARDEX_STATS=1`, agent process only, children excluded)",
                "",
                "| Metric | Value | Target |",
                "|---|---:|---:|",
                f"| agent CPU per test, {n_triv:,}-test suite, warm (µs/test) | {fmt(m_of(warm_stats, 'us_per_test'), 1)} | ≤ 20 |",
                f"| agent CPU per test, {n_triv:,}-test suite, cold (µs/test) | {fmt(m_of(cold_stats, 'us_per_test'), 1)} | ≤ 20 |",
                f"| agent CPU per test, {n_big:,}-test suite, warm (µs/test) | {fmt(m_of(big_stats, 'us_per_test'), 1)} | ≤ 20 |",
                f"| agent max RSS, {n_triv:,}-test suite (MB) | {fmt(m_of(warm_stats, 'rss_mb'), 1)} | |",
                f"| agent max RSS, {n_big:,}-test suite (MB) | {fmt(m_of(big_stats, 'rss_mb'), 1)} | ≤ 50 |",
                f"| wall, {n_big:,}-test suite, shardex -n 2 (s) | {fmt(med(v_big.walls()))} | |",
                "",
            ]

        # ------------------------------------------------------------- 4. time to first result
        if 4 in sections:
            log("4. time to first result")
            tt = tmp / "ttfr"
            n_tt = gen_trivial(tt, 40, 100)
            (tt / "conftest.py").write_text(TTFR_CONFTEST)
            t0file = tmp / "t0.txt"
            env_tt = {"BENCH_T0_FILE": str(t0file)}
            run("warm-up plain ttfr", [*pyt, "--collect-only"], tt, 300, env_tt)
            run("warm-up shardex ttfr", [*shx, "-n", "2", "-q", "-p", "no:cacheprovider"], tt, 300, env_tt)
            vs = [
                Variant("pytest --collect-only", [*pyt, "--collect-only"], tt, expect_collected=n_tt, env=env_tt),
                Variant("`pytest` (serial)", pyt, tt, n_tt, env=env_tt),
                Variant("`pytest -n 2`", [*pyt, "-n", "2"], tt, n_tt, env=env_tt),
                Variant("`shardex run -n 2`, warm", [*shx, "-n", "2", "-q", "-p", "no:cacheprovider"], tt, n_tt, env=env_tt),
                Variant("`shardex run -n 2`, cold", [*shx, "-n", "2", "-q", "-p", "no:cacheprovider"], tt, n_tt, env=env_tt,
                        before=rm_store(tt)),
            ]
            # measure() inline, to read the t0 file after each run
            firsts: dict[str, list[float]] = {v.name: [] for v in vs}
            writers: dict[str, list[int]] = {v.name: [] for v in vs}
            for rep in range(reps):
                wait_quiet()
                for v in vs:
                    if v.before:
                        v.before()
                    t0file.unlink(missing_ok=True)
                    r = run(f"{v.name} ttfr (rep {rep + 1})", v.cmd, v.cwd, v.limit, v.env)
                    r.ok = check(r, v.expect_passed, v.expect_collected)
                    v.runs.append(r)
                    if t0file.exists():
                        lines = [ln.split() for ln in t0file.read_text().splitlines() if ln.strip()]
                        if lines and r.ok:
                            firsts[v.name].append(min(float(a) for a, _ in lines) - r.start_epoch)
                            writers[v.name].append(len({p for _, p in lines}))
                    log(f"  {v.name}: wall {r.wall:.2f}s, first result "
                        f"{firsts[v.name][-1] if firsts[v.name] and len(firsts[v.name]) == rep + 1 else float('nan'):.2f}s")
            coll = med(vs[0].walls())
            target = None if coll is None else coll + 0.15
            plain_first = med(firsts[vs[1].name])
            strict = None if plain_first is None else plain_first + 0.15
            out += [
                f"## 4. Time to first result ({n_tt:,}-test trivial suite; the first test in each worker appends "
                "`time.time()` to a file; first result = earliest time − process start)",
                "",
                "| Variant | First result s | Range s | Workers that ran a test | / target | / strict target |",
                "|---|---:|---:|---:|---:|---:|",
                f"| `pytest --collect-only` wall (collection) | {fmt(coll)} | {spread(vs[0].walls())} | | | |",
                f"| **target** = collection + 0.15 s | {fmt(target)} | | | 1.00 | |",
                f"| **strict target** = serial pytest's first result + 0.15 s | {fmt(strict)} | | | | 1.00 |",
            ]
            for v in vs[1:]:
                m = med(firsts[v.name])
                w = sorted(set(writers[v.name]))
                out.append(f"| {v.name} | {fmt(m)} | {spread(firsts[v.name])} | "
                           f"{'/'.join(map(str, w)) or 'n/a'} | {ratio(m, target)} | {ratio(m, strict)} |")
            out += ["", "`--collect-only` wall includes printing every test id and pytest's exit; serial pytest starts "
                        "its first test earlier than that, so the strict target compares with the moment plain pytest "
                        "could run a test.", ""]

        # ------------------------------------------------------------- 5. retries cost
        if 5 in sections:
            log("5. retries cost")
            has_rr = subprocess.run([PY, "-c", "import pytest_rerunfailures"], capture_output=True).returncode == 0
            base = [*shx, "-n", "2", "-q", "-p", "no:cacheprovider"]
            v_no = Variant("shardex -n 2", base, trivial, n_triv)
            v_rr = Variant("shardex -n 2 --reruns 3", [*base, "--reruns", "3"], trivial, n_triv)
            # A probe: if shardex rejects --reruns, report n/a instead of an anomaly.
            probe = run("probe --reruns", [*base, "--reruns", "3"], trivial, 300)
            rejected = probe.rc != 0 or probe.passed() != n_triv
            if rejected:
                measure([v_no], reps)
                tail = (probe.err.strip().splitlines() or ["?"])[-1][:200]
            else:
                measure([v_no, v_rr], reps)
            a, b = med(v_no.walls()), (None if rejected else med(v_rr.walls()))
            out += [
                f"## 5. Retries cost ({n_triv:,}-test trivial suite, all passing, warm timing store; pytest-rerunfailures "
                f"{'installed' if has_rr else 'NOT installed'})",
                "",
                "| Variant | Wall s | Range s | / without |",
                "|---|---:|---:|---:|",
                f"| `shardex run -n 2` | {fmt(a)} | {spread(v_no.walls())} | 1.00 |",
                f"| `shardex run -n 2 --reruns 3` | {'n/a' if rejected else fmt(b)} | "
                f"{'' if rejected else spread(v_rr.walls())} | {'n/a' if rejected else ratio(b, a)} |",
                "",
            ]
            if rejected:
                out += [f"`--reruns 3` was rejected or failed (exit {probe.rc}): {tail}", ""]
        # ------------------------------------------------------------- 6. early stop
        if 6 in sections:
            log("6. -x on 200 short tests, the 6th fails")
            stop_suite = tmp / "stop"
            shutil.copytree(REPO / "fixtures" / "stop", stop_suite)
            stop_log = tmp / "stop.log"
            stop_env = {"STOP_LOG": str(stop_log)}
            rows6 = []
            for name, cmd in (
                ("`pytest -n 4 -x` (xdist)", [*pyt, "-n", "4", "-x"]),
                ("`shardex run -n 4 -x`", [*shx, "-n", "4", "-x", "-q", "-p", "no:cacheprovider"]),
            ):
                late, delay, codes = [], [], []
                for rep in range(reps):
                    wait_quiet()
                    stop_log.unlink(missing_ok=True)
                    r = run(f"{name} (rep {rep + 1})", cmd, stop_suite, 120, stop_env)
                    codes.append(r.rc)
                    events = [line.split() for line in stop_log.read_text().splitlines() if line.strip()]
                    fails = [float(e[2]) for e in events if e[0] == "fail"]
                    if not fails:
                        anomalies.append(f"{r.label}: no failure logged")
                        continue
                    t_fail = min(fails)
                    late.append(sum(1 for e in events if e[0] == "start" and float(e[2]) > t_fail))
                    delay.append(r.start_epoch + r.wall - t_fail)
                rows6.append((name, med([float(x) for x in late]), med(delay), sorted(set(codes), key=str)))
            out += [
                "## 6. Early stop (`fixtures/stop`: 200 tests of 10 ms, `test_a[5]`, 6th in collection order, always fails)",
                "",
                "| Variant | Tests started after the hard failure | Failure to exit s | Exit code | Target |",
                "|---|---:|---:|---:|---:|",
            ]
            for name, late_m, delay_m, codes in rows6:
                target = "≤ 4 tests; ≤ 0.5 s + grace needed; exit 1" if "shardex" in name else ""
                out.append(f"| {name} | {fmt(late_m, 0)} | {fmt(delay_m)} | {', '.join(map(str, codes))} | {target} |")
            out.append("")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")

    out.append(f"Load average at end: {loadavg()}. Before each round the benchmark waited for other processes to use "
               f"< 15% CPU: {quiet_log['waited']:.0f} s waited over {quiet_log['rounds']} rounds; "
               f"{quiet_log['busy_starts']} round(s) started while the machine was still busy.")
    out.append("")
    if anomalies:
        out += ["## Anomalies", ""] + [f"- {a}" for a in anomalies] + [""]
    else:
        out += ["No anomalies: every command exited as expected (0; 1 or 2 under -x) with the expected test count, and no process outlived its command.", ""]
    text = "\n".join(out)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
