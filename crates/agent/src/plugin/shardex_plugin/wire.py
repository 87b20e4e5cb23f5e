"""Encoding messages for the agent so that nothing a test produces can break the
connection (PYTEST_DONT_REWRITE).

A test's failure text can hold lone surrogates (``'\\udcff'``, from ``surrogateescape``)
that JSON cannot carry as valid Unicode, or be tens of megabytes long (a huge repr). Such
a message is encoded the slow way: surrogates become their backslash escape, and each text
longer than ``FIELD_CAP`` is cut, with a note saying how much was cut. The agent refuses a
line over 64 MiB; what this sends stays well under it.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

# A single text field longer than this (in characters) is cut. A result holds a few copies
# of a failure's text (the rendered report, the crash message and line, the JUnit XML):
# at up to 4 bytes a character they stay far below the agent's line cap.
FIELD_CAP = 1 << 20
# Messages up to this size (bytes) are sent as they are; bigger ones get their fields cut.
_FAST_LIMIT = 4 << 20


def encode(msg) -> bytes:
    """One JSON line; never raises for text content, never over the agent's cap."""
    try:
        data = json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if len(data) <= _FAST_LIMIT:
            return data + b"\n"
    except (UnicodeEncodeError, TypeError, ValueError):
        pass
    safe = json.dumps(clean(msg), ensure_ascii=False, separators=(",", ":"), default=_unknown)
    return safe.encode("utf-8") + b"\n"


def clean(value, key: str = ""):
    """`value` with every text made sendable: surrogates escaped, huge texts cut."""
    if isinstance(value, dict):
        return {str(k): clean(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, str):
        if key == "xml" and len(value) > FIELD_CAP:
            return cap_xml(value)
        return safe_text(value)
    return value


def safe_text(text: str, cap: int = FIELD_CAP) -> str:
    if len(text) > cap:
        # The middle goes: a report ends with the test's captured output, worth keeping.
        head, tail = cap * 3 // 4, cap // 4
        cut = len(text) - head - tail
        note = f"\n[shardex: {cut} of {len(text)} characters cut here: too large to send]\n"
        text = text[:head] + note + text[len(text) - tail :]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def cap_xml(xml: str) -> str:
    """JUnit testcases with each text and attribute cut as `safe_text` does, still XML."""
    try:
        root = ET.fromstring(f"<r>{xml}</r>")
    except ET.ParseError:
        return ""
    share = max(FIELD_CAP // 8, 1024)
    for element in root.iter():
        if element.text:
            element.text = safe_text(element.text, share)
        if element.tail:
            element.tail = safe_text(element.tail, share)
        for name, attr in element.attrib.items():
            element.attrib[name] = safe_text(attr, share)
    return "".join(ET.tostring(child, encoding="unicode") for child in root)


def _unknown(value) -> str:
    try:
        return safe_text(repr(value))
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"
