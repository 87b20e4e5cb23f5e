#!/usr/bin/env python3
"""Which worker ran what, and when: a diagnostic for section 2 of the benchmark.

    .venv/bin/python bench/worker_spans.py [-n W] [--xdist] [--timings PATH --no-timing-store]

Generates the benchmark's skewed sleeping suite (bench.gen_skewed) in a temp dir with a
conftest that logs (pid, start, end, nodeid) of every test, runs `shardex run -n W` once to
fill the timing store, then once more measured (or `pytest -n W --dist worksteal` with
--xdist), and prints one line per worker: tests, first start, last end and the long tests
it ran, in seconds since the command started.
"""

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

CONFTEST = '''\
import os, time
import pytest

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    t = time.time()
    yield
    with open(os.environ["BENCH_SPANS"], "a") as f:
        f.write(f"{os.getpid()} {t!r} {time.time()!r} {item.nodeid}\\n")
'''


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=8)
    ap.add_argument("--xdist", action="store_true")
    a, rest = ap.parse_known_args()  # the rest: extra shardex options
    tmp = Path(tempfile.mkdtemp(prefix="shardex-spans-"))
    try:
        suite = tmp / "skewed"
        bench.gen_skewed(suite)
        (suite / "conftest.py").write_text(CONFTEST)
        spans = tmp / "spans.txt"
        env = bench.base_env()
        env["BENCH_SPANS"] = str(spans)
        pyt = [bench.PY, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        shx = [bench.SHARDEX, "run", "-n", str(a.n), "-q", "-p", "no:cacheprovider", *rest]
        cmd = [*pyt, "-n", str(a.n), "--dist", "worksteal"] if a.xdist else shx
        if not a.xdist:
            subprocess.run(["timeout", "120", *shx], cwd=suite, env=env, capture_output=True)
        spans.unlink(missing_ok=True)
        t0 = time.time()
        p = subprocess.run(["timeout", "120", *cmd], cwd=suite, env=env, capture_output=True, text=True)
        wall = time.time() - t0
        print(f"$ {' '.join(cmd)}\n{p.stdout.strip().splitlines()[-1] if p.stdout.strip() else p.stderr[-500:]}")
        print(f"wall {wall:.2f}s")
        by = collections.defaultdict(list)
        for line in spans.read_text().splitlines():
            pid, s, e, nodeid = line.split()
            by[pid].append((float(s) - t0, float(e) - t0, nodeid.split("::")[1]))
        for pid, v in sorted(by.items(), key=lambda kv: kv[1][-1][1]):
            v.sort()
            longs = ", ".join(f"{n} at {s:.2f}" for s, _, n in v if n.startswith("test_long"))
            print(f"worker {pid}: {len(v):3d} tests, first start {v[0][0]:.2f}, last end {v[-1][1]:.2f}"
                  f"{'; ' + longs if longs else ''}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
