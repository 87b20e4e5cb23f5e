"""pytest-cov across the zygote's forks (PYTEST_DONT_REWRITE).

pytest-cov (`--cov`) starts measuring in the zygote, before collection, and reports at the
zygote's end (`Central`: stop, save, combine every parallel data file, report). A fork
would go on measuring into the zygote's objects and never save: each worker starts its own
Coverage instead, saved as a parallel data file beside the zygote's when it ends, which
that combine takes in (what coverage's own `patch = fork` does). The zygote then sends the
terminal report its plugins write (see `pytest_terminal_summary` in plugin.py).

pytest-cov's internals used: the plugin named ``_cov`` (``_disabled``, ``cov_controller``,
``cov_total``, ``options``) and its controller (``cov``, ``combining_cov``,
``cov_source``, ``cov_branch``, ``cov_config``).
"""

from __future__ import annotations

import traceback


def _cov_controller(config):
    plugin = config.pluginmanager.get_plugin("_cov")
    if plugin is None or getattr(plugin, "_disabled", False):
        return None
    return getattr(plugin, "cov_controller", None)


def coverage_in_fork(config):
    controller = _cov_controller(config)
    parent = getattr(controller, "cov", None)
    combining = getattr(controller, "combining_cov", None)
    if parent is None or combining is None:
        return None
    try:
        import coverage

        parent.stop()
        child = coverage.Coverage(
            source=controller.cov_source,
            branch=controller.cov_branch,
            data_suffix=True,
            # Absolute, fixed when the zygote started: the combine looks beside it.
            data_file=combining.config.data_file,
            config_file=controller.cov_config,
        )
        child.start()
        # pytest-cov's pause/resume (`no_cover`) and contexts act on the controller's object.
        controller.cov = child
        return child
    except Exception:
        traceback.print_exc()
        return None


def save_coverage(cov) -> None:
    if cov is None:
        return
    try:
        cov.stop()
        cov.save()
    except Exception:
        traceback.print_exc()


def coverage_failure(config):
    """pytest-cov's `--cov-fail-under` verdict in this (the zygote's) session, as the
    message it prints; None when coverage passed or is not measured."""
    plugin = config.pluginmanager.get_plugin("_cov")
    total = getattr(plugin, "cov_total", None)
    options = getattr(plugin, "options", None)
    fail_under = getattr(options, "cov_fail_under", None)
    if total is None or fail_under is None or getattr(options, "collectonly", False):
        return None
    try:
        from coverage.results import display_covered, should_fail_under

        precision = options.cov_precision
        if not should_fail_under(total, fail_under, precision):
            return None
        return "Coverage failure: total of {total} is less than fail-under={fail_under:.{p}f}".format(
            total=display_covered(total, precision), fail_under=fail_under, p=precision
        )
    except Exception:
        return None
