"""The bootstrap (BOOTSTRAP in plugin/mod.rs) runs pytest as `python -m pytest` does and
leaves nothing of shardex where tests could see it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

PLUGIN = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SUITE = """
import json, os, sys

def test_dump():
    main = sys.modules["__main__"]
    with open(os.environ["DUMP"], "w") as f:
        json.dump({
            "argv": sys.argv,
            "path": sys.path,
            "main": getattr(getattr(main, "__spec__", None), "name", None),
            "shardex_env": sorted(k for k in os.environ if k.startswith("SHARDEX_")),
            "shardex_path": [p for p in sys.path if "shardex_plugin" in p],
        }, f)

def test_fails():
    assert 0
"""


def bootstrap() -> str:
    with open(os.path.join(PLUGIN, "mod.rs")) as f:
        source = f.read()
    return re.search(r'pub const BOOTSTRAP: &str = r#"(.*?)"#;', source, re.S).group(1)


def _run(pytester, launcher, name):
    dump = pytester.path / f"{name}.json"
    # No SHARDEX_* but the launch variables (scripts/test.sh exports SHARDEX_PG_*); no
    # SHARDEX_MODE: the plugin loads but stays inactive.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDEX_") and k != "PYTEST_ADDOPTS"}
    env.update(DUMP=str(dump), SHARDEX_SOCKET="/nowhere", SHARDEX_SECRET="s")
    args = ["-p", "no:cacheprovider", "-q", "test_suite.py"]
    command = [sys.executable, *launcher, *args]
    done = subprocess.run(command, cwd=pytester.path, env=env, capture_output=True, check=False)
    return done.returncode, json.loads(dump.read_text())


@pytest.fixture
def suite(pytester):
    pytester.makepyfile(test_suite=SUITE)
    return pytester


def test_runs_pytest_as_dash_m_does(suite):
    plain_code, plain = _run(suite, ["-m", "pytest"], "plain")
    boot_code, boot = _run(suite, ["-c", bootstrap(), os.path.join(PLUGIN, "shardex_plugin")], "boot")
    assert boot_code == plain_code == 1
    assert boot["argv"] == plain["argv"]
    assert boot["argv"][0].endswith(os.path.join("pytest", "__main__.py"))
    assert boot["path"] == plain["path"]
    assert boot["path"][0] == str(suite.path)
    assert boot["main"] == plain["main"] == "pytest.__main__"


def test_takes_the_launch_variables_out(suite):
    _, boot = _run(suite, ["-c", bootstrap(), os.path.join(PLUGIN, "shardex_plugin")], "boot")
    assert boot["shardex_env"] == []
    assert boot["shardex_path"] == []
