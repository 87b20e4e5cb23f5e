"""JUnit testcases made by pytest's own junitxml, report by report (PYTEST_DONT_REWRITE)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from . import internals
from .consumed import junit_wanted

NO_JUNIT = {"xml": "", "passed": 0, "failures": 0, "errors": 0, "skipped": 0, "double": 0}


class JunitRecorder:
    """pytest's own junitxml machinery, fed report by report, so every <testcase> is
    exactly what ``pytest --junitxml -o junit_family=xunit1`` writes."""

    def __init__(self, config) -> None:
        self.config = config
        self.logxml = internals.new_logxml(config)
        self.mark = internals.logxml_mark(self.logxml)

    def collect(self, report) -> None:
        internals.logxml_feed(self.logxml, report, collect=True)

    def log(self, report) -> None:
        if junit_wanted():
            internals.logxml_feed(self.logxml, report, collect=False)

    def take(self) -> dict:
        """The testcases since the last take, and how the counters moved."""
        if not junit_wanted():
            return NO_JUNIT
        elements, moved = internals.logxml_take(self.logxml, self.mark)
        self.mark = internals.logxml_mark(self.logxml)
        return {
            "xml": "".join(ET.tostring(element, encoding="unicode") for element in elements),
            "passed": moved["passed"],
            "failures": moved["failure"],
            "errors": moved["error"],
            "skipped": moved["skipped"],
            "double": moved["double"],
        }

    def close(self) -> None:
        internals.forget_logxml(self.config, self.logxml)
