"""What the daemon's base learns from its runs (PYTEST_DONT_REWRITE).

A run imports modules the warm-up did not: plugins import lazily at the session's end
(hypothesis' terminal summary imports the whole of hypothesis, about a second), tests
import libraries. A run's zygote lists, when it ends, the modules it imported from outside
the project; the base imports them between runs, so the next run finds them imported.
Files under the project's rootdir are never imported this way (their edits must be seen
by the next run); what the base imports is added to the daemon's watch set.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import shutil
import sys
import tempfile


class Learner:
    def __init__(self, rootdir: str) -> None:
        self.root = os.path.realpath(rootdir) + os.sep
        self.dir = tempfile.mkdtemp(prefix="shardex-learn-")
        self.known = set(sys.modules)

    def _outside(self, module) -> bool:
        path = getattr(module, "__file__", None)
        if not isinstance(path, str) or not path:
            return False
        real = os.path.realpath(path)
        return not real.startswith(self.root) and os.path.basename(real) != "conftest.py"

    def record(self, pid: int) -> None:
        """In a run's zygote at its end: the modules it imported that the base may import."""
        names = [
            name
            for name, module in list(sys.modules.items())
            if name not in self.known and not name.startswith(("__main__", "shardex_plugin")) and self._outside(module)
        ]
        if not names:
            return
        path = os.path.join(self.dir, str(pid))
        try:
            with open(path + ".tmp", "w", encoding="utf-8") as out:
                out.write("\n".join(names))
            os.replace(path + ".tmp", path)
        except OSError:
            pass

    def absorb(self, pid: int) -> list:
        """In the base, after the zygote `pid` ended: imports what it recorded; returns the
        files of the modules that are new here (for the watch set)."""
        path = os.path.join(self.dir, str(pid))
        try:
            with open(path, encoding="utf-8") as recorded:
                names = recorded.read().split("\n")
            os.unlink(path)
        except OSError:
            return []
        before = set(sys.modules)
        sink = io.StringIO()
        # Parents first; what fails to import (it needed the run's state) is left out.
        for name in sorted(set(names), key=lambda n: n.count(".")):
            if name in sys.modules:
                continue
            try:
                with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                    importlib.import_module(name)
            except BaseException:  # a module that cannot be imported here: left out
                continue
        new = set(sys.modules) - before
        self.known |= new
        files = set()
        for name in new:
            file = getattr(sys.modules.get(name), "__file__", None)
            if isinstance(file, str) and file:
                files.add(os.path.abspath(file))
                files.add(os.path.realpath(file))
        return sorted(f for f in files if os.path.exists(f))

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
