"""Daemon benchmark (bench/daemon.sh): fixtures/django (PostgreSQL, 93 migrations) through
`shardex serve`, against plain pytest and shardex without the daemon, in one run.

Rows: rerun one unchanged test; the same after its file was edited; the whole suite's
second run with 2 workers; the idle memory (PSS) of the daemon and its warm process beside
a plain pytest process after collection. Medians of --reps repetitions, round-robin.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = Path(os.environ.get("BENCH_VENV", REPO / ".venv")) / "bin" / "python"
ONE_TEST = "tests/test_shop.py::test_order_cascade"


def shardex_bin() -> str:
    return os.environ.get("SHARDEX_BIN", str(REPO / "target" / "release" / "shardex"))


def timed(cmd: list, cwd: Path, env: dict, expect: int = 0) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != expect:
        sys.exit(f"bench: {' '.join(cmd)} exited {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return elapsed


def pss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def pytest_pss_after_collection(cwd: Path, env: dict) -> int:
    code = (
        "import pytest\n"
        "pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider'])\n"
        "print('PSS', [l for l in open('/proc/self/smaps_rollup') if l.startswith('Pss:')][0].split()[1])\n"
    )
    out = subprocess.run([str(PY), "-c", code], cwd=cwd, env=env, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("PSS "):
            return int(line.split()[1]) * 1024
    return 0


def status(cwd: Path, env: dict) -> str:
    return subprocess.run([shardex_bin(), "serve", "--status"], cwd=cwd, env=env, capture_output=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shardex-bench-daemon-"))
    suite = work / "django"
    shutil.copytree(REPO / "fixtures" / "django", suite, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    env = dict(os.environ)
    pg = subprocess.run(["bash", str(REPO / "scripts" / "pg.sh"), "env"], capture_output=True, text=True, check=True).stdout
    for line in pg.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value.strip("'\"")
    sx = [shardex_bin(), "run", "--python", str(PY)]
    pytest = [str(PY), "-m", "pytest"]
    test_file = suite / "tests" / "test_shop.py"
    # Test DBs exist for every variant (--reuse-db keeps them).
    timed(pytest + ["--reuse-db", "-n", "2"], suite, env)
    timed(pytest + ["--reuse-db"], suite, env)
    timed(sx + ["-n", "2", "--reuse-db", "--no-daemon"], suite, env)
    daemon_log = open(work / "daemon.log", "w")
    daemon = subprocess.Popen([shardex_bin(), "serve", "--python", str(PY), "--reuse-db"], cwd=suite, env=env, stdout=daemon_log, stderr=daemon_log)
    try:
        deadline = time.time() + 120
        while "warm: pid" not in status(suite, env):
            if time.time() > deadline or daemon.poll() is not None:
                sys.exit(f"bench: the daemon did not get warm; see {work / 'daemon.log'}")
            time.sleep(0.1)
        timed(sx + ["-n", "2", "--reuse-db"], suite, env)  # the daemon's slots' DBs
        timed(sx + ["-n", "1", "--reuse-db", ONE_TEST], suite, env)
        rows = {
            "one test: pytest --reuse-db": lambda: timed(pytest + ["--reuse-db", ONE_TEST], suite, env),
            "one test: shardex run, no daemon": lambda: timed(sx + ["-n", "1", "--reuse-db", "--no-daemon", ONE_TEST], suite, env),
            "one test: shardex run, daemon": lambda: timed(sx + ["-n", "1", "--reuse-db", ONE_TEST], suite, env),
            "one test after editing its file: daemon": lambda: (test_file.write_text(test_file.read_text() + "\n"), timed(sx + ["-n", "1", "--reuse-db", ONE_TEST], suite, env))[1],
            "suite, -n 2: pytest -n 2 --reuse-db": lambda: timed(pytest + ["-n", "2", "--reuse-db"], suite, env),
            "suite, -n 2: shardex run, no daemon": lambda: timed(sx + ["-n", "2", "--reuse-db", "--no-daemon"], suite, env),
            "suite, -n 2: shardex run, daemon": lambda: timed(sx + ["-n", "2", "--reuse-db"], suite, env),
        }
        times: dict = {name: [] for name in rows}
        for _ in range(args.reps):
            for name, measure in rows.items():
                times[name].append(measure())
        time.sleep(1.0)
        text = status(suite, env)
        base_pid = int(text.split("warm: pid ")[1].split(",")[0])
        daemon_pss = pss_of(daemon.pid)
        base_pss = pss_of(base_pid)
        pytest_pss = pytest_pss_after_collection(suite, env)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"## Daemon: fixtures/django (PostgreSQL, 93 migrations), {args.reps} reps, medians\n")
    print("| variant | wall s (median) | min-max | vs pytest |")
    print("|---|---|---|---|")
    one_ref = med["one test: pytest --reuse-db"]
    suite_ref = med["suite, -n 2: pytest -n 2 --reuse-db"]
    for name, values in times.items():
        ref = one_ref if name.startswith("one test") else suite_ref
        print(f"| {name} | {med[name]:.3f} | {min(values):.3f}-{max(values):.3f} | {med[name] / ref:.2f}x |")
    print()
    print("| idle memory (PSS) | MB |")
    print("|---|---|")
    print(f"| daemon (Rust) | {daemon_pss / 1e6:.1f} |")
    print(f"| warm process (Python, after warm-up) | {base_pss / 1e6:.1f} |")
    print(f"| plain pytest after collection | {pytest_pss / 1e6:.1f} |")


if __name__ == "__main__":
    main()
