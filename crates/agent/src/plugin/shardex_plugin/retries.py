"""Retries, as pytest-rerunfailures defines them (PYTEST_DONT_REWRITE).

shardex owns retries (pytest-rerunfailures is blocked with -p no:rerunfailures) but keeps
its options, ini keys, marker and semantics; the helpers below follow
pytest_rerunfailures.py (16.x). The worker judges each failed attempt here, where the
exception object is; the agent decides where and whether the retry runs.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import platform
import re
import sys

import pytest

from . import internals
from .settings import SETTINGS

_RERUN_OPTIONS = (
    ("--reruns", dict(action="store", dest="reruns", type=int, default=None,
                      help="number of times to re-run failed tests (shardex).")),
    ("--reruns-delay", dict(action="store", dest="reruns_delay", type=float, default=None,
                            help="delay in seconds between re-runs (shardex).")),
    ("--only-rerun", dict(action="append", dest="only_rerun", type=str, default=None,
                          help="re-run only errors matching this regex (shardex).")),
    ("--rerun-except", dict(action="append", dest="rerun_except", type=str, default=None,
                            help="do not re-run errors matching this regex (shardex).")),
    ("--fail-on-flaky", dict(action="store_true", dest="fail_on_flaky",
                             help="exit 7 if a test passed only on a re-run (shardex).")),
    ("--max-suite-reruns", dict(action="store", dest="max_suite_reruns", type=int, default=None,
                                help="cap on re-runs over the run (shardex).")),
)  # fmt: skip
_INI = (("reruns", "string"), ("reruns_delay", "string"), ("only_rerun", "linelist"), ("rerun_except", "linelist"))


def add_options(parser) -> None:
    group = parser.getgroup("rerunfailures", "re-run failing tests (shardex)")
    for name, kwargs in _RERUN_OPTIONS:
        try:
            internals.add_group_option(group, name, **kwargs)
        except ValueError:
            return  # rerunfailures was loaded anyway (e.g. by -p): its options stand
    for name, kind in _INI:
        try:
            parser.addini(name, f"pytest-rerunfailures' {name} (shardex)", type=kind)
        except ValueError:
            pass


def apply_retry_flags(config) -> None:
    """The flags shardex consumed from its command line join pytest's own (addopts)."""
    option = config.option
    flags = SETTINGS.retry
    for name in ("reruns", "reruns_delay", "max_suite_reruns"):
        if flags.get(name) is not None:
            setattr(option, name, flags[name])
    for name in ("only_rerun", "rerun_except"):
        if flags.get(name):
            setattr(option, name, list(getattr(option, name, None) or []) + list(flags[name]))
    if flags.get("fail_on_flaky"):
        option.fail_on_flaky = True
    config.addinivalue_line(
        "markers",
        "flaky(reruns=1, reruns_delay=0, condition=True, only_rerun=None, rerun_except=None): "
        "re-run the test when it fails (shardex, pytest-rerunfailures compatible).",
    )
    for name in ("only_rerun", "rerun_except"):
        for pattern in getattr(option, name, None) or _getini(config, name) or []:
            try:
                re.compile(pattern)
            except re.error as error:
                raise pytest.UsageError(f"invalid regular expression for {name}: {pattern!r} ({error})") from error


def rerunfailures_installed() -> bool:
    try:
        return importlib.util.find_spec("pytest_rerunfailures") is not None
    except (ImportError, ValueError):
        return False


def _getini(config, name):
    try:
        return config.getini(name)
    except ValueError:
        return None


def _global_reruns(config):
    reruns = getattr(config.option, "reruns", None)
    if reruns is not None:
        return reruns
    try:
        return int(_getini(config, "reruns"))
    except (TypeError, ValueError):
        return None


def _global_delay(config) -> float:
    delay = getattr(config.option, "reruns_delay", None)
    if delay is None:
        try:
            delay = float(_getini(config, "reruns_delay"))
        except (TypeError, ValueError):
            delay = 0.0
    return max(float(delay), 0.0)


def flaky_marker(item):
    return item.get_closest_marker("flaky")


def reruns_count(item) -> int:
    marker = flaky_marker(item)
    if marker is not None:
        if "reruns" in marker.kwargs:
            return int(marker.kwargs["reruns"])
        if marker.args:
            return int(marker.args[0])
        return 1
    return int(_global_reruns(item.config) or 0)


def reruns_delay(item) -> float:
    marker = flaky_marker(item)
    if marker is None:
        return _global_delay(item.config)
    if "reruns_delay" in marker.kwargs:
        return max(float(marker.kwargs["reruns_delay"]), 0.0)
    if len(marker.args) > 1:
        return max(float(marker.args[1]), 0.0)
    return 0.0


def filter_list(item, name):
    marker = flaky_marker(item)
    if marker is not None and name in marker.kwargs:
        value = marker.kwargs[name]
        if isinstance(value, str) or (isinstance(value, type) and issubclass(value, BaseException)):
            value = [value]
        return list(value or [])
    value = getattr(item.config.option, name, None)
    if value is None:
        value = _getini(item.config, name)
    return list(value or [])


def exception_chain(exc, follow_context):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        if exc.__cause__ is not None:
            exc = exc.__cause__
        elif follow_context and not getattr(exc, "__suppress_context__", False):
            exc = exc.__context__
        else:
            exc = None


def matches(patterns, excinfo, follow_context) -> bool:
    if not excinfo:
        return False
    for exc in exception_chain(excinfo.value, follow_context):
        err = f"{type(exc).__name__}: {exc}"
        for pattern in patterns:
            if isinstance(pattern, type) and issubclass(pattern, BaseException):
                if isinstance(exc, pattern):
                    return True
            elif re.search(pattern, err):
                return True
    return False


def hard_fail_on_error(item, report, excinfo) -> bool:
    """rerunfailures' _should_hard_fail_on_error: the filter excludes this failure."""
    if report.outcome != "failed":
        return False
    only = filter_list(item, "only_rerun")
    except_ = filter_list(item, "rerun_except")
    if not only and not except_:
        return False
    if only and not except_:
        return not matches(only, excinfo, True)
    if except_ and not only:
        return matches(except_, excinfo, False)
    return (not matches(only, excinfo, True)) or matches(except_, excinfo, False)


def evaluate_condition(item, marker, condition, excinfo) -> bool:
    """rerunfailures' evaluate_condition (bool, string to eval, or callable)."""
    error = excinfo.value if excinfo is not None else None
    try:
        if callable(condition):
            try:
                signature = inspect.signature(condition)
                try:
                    signature.bind(error)
                    return bool(condition(error))
                except TypeError:
                    return bool(condition())
            except (TypeError, ValueError):
                return bool(condition(error))
        if isinstance(condition, str):
            globals_ = {"os": os, "sys": sys, "platform": platform, "config": item.config}
            if hasattr(item, "obj"):
                globals_.update(item.obj.__globals__)
            globals_["error"] = error
            return bool(eval(compile(condition, f"<{marker.name} condition>", "eval"), globals_))
        return bool(condition)
    except Exception:
        return False


def _condition_holds(item, failed_reports, excinfos) -> bool:
    marker = flaky_marker(item)
    if marker is None or "condition" not in marker.kwargs:
        return True
    condition = marker.kwargs["condition"]
    return any(evaluate_condition(item, marker, condition, excinfos.get(r.when)) for r in failed_reports)


def retry_verdict(item, raw_reports):
    """The RetryVerdict (protocol.rs) of a finished attempt; None when it did not fail."""
    failed = [r for r in raw_reports if r.failed]
    if not failed:
        return None
    excinfos = getattr(item, "_shardex_excinfo", {}) or {}
    reruns = reruns_count(item)
    eligible = (
        reruns > 0
        and not any(hasattr(r, "wasxfail") for r in raw_reports)
        and not any(hard_fail_on_error(item, r, excinfos.get(r.when)) for r in failed)
        and _condition_holds(item, failed, excinfos)
    )
    if eligible:
        internals.forget_failed_state(item)
    item._shardex_excinfo = {}
    return {"eligible": eligible, "reruns": reruns, "delay": reruns_delay(item)}


def retry_rules(item, marker) -> dict:
    """The marker's rules, for failures judged by the agent (crash, timeout)."""

    def split(name):
        values = filter_list(item, name)
        return (
            [v for v in values if isinstance(v, str)],
            [v.__name__ for v in values if isinstance(v, type)],
        )

    only, only_classes = split("only_rerun")
    except_, except_classes = split("rerun_except")
    condition = True
    if "condition" in marker.kwargs and not callable(marker.kwargs["condition"]):
        condition = evaluate_condition(item, marker, marker.kwargs["condition"], None)
    return {
        "reruns": reruns_count(item),
        "delay": reruns_delay(item),
        "only_rerun": only,
        "only_rerun_classes": only_classes,
        "rerun_except": except_,
        "rerun_except_classes": except_classes,
        "condition": condition,
    }


def session_retry_rules(config) -> dict:
    only = list(getattr(config.option, "only_rerun", None) or _getini(config, "only_rerun") or [])
    except_ = list(getattr(config.option, "rerun_except", None) or _getini(config, "rerun_except") or [])
    return {
        "reruns": int(_global_reruns(config) or 0),
        "delay": _global_delay(config),
        "only_rerun": only,
        "only_rerun_classes": [],
        "rerun_except": except_,
        "rerun_except_classes": [],
        "condition": True,
    }
