"""Messages are always encodable: surrogates escaped, huge texts cut (still valid XML)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from shardex_plugin import wire


def test_plain_messages_are_compact_json():
    assert wire.encode({"t": "x", "s": "é"}) == '{"t":"x","s":"é"}\n'.encode()


def test_a_lone_surrogate_becomes_its_escape():
    line = wire.encode({"t": "done", "reports": [{"longrepr": "bad \udcff byte"}]})
    assert json.loads(line)["reports"][0]["longrepr"] == "bad \\udcff byte"
    line.decode("utf-8")  # strict: valid UTF-8


def test_huge_texts_are_cut_in_the_middle_with_a_note():
    text = "head" + "x" * (5 * wire.FIELD_CAP) + "tail"
    line = wire.encode({"t": "done", "reports": [{"longrepr": text}]})
    assert len(line) < 2 * wire.FIELD_CAP
    sent = json.loads(line)["reports"][0]["longrepr"]
    assert sent.startswith("head") and sent.endswith("tail")
    assert "characters cut here: too large to send" in sent


def test_huge_junit_stays_xml():
    big = "y" * (3 * wire.FIELD_CAP)
    xml = f'<testcase name="t"><failure message="{big}">{big}</failure><system-out>out</system-out></testcase>'
    line = wire.encode({"t": "done", "junit": {"xml": xml, "passed": 0}})
    sent = json.loads(line)["junit"]["xml"]
    root = ET.fromstring(sent)
    assert root.find("failure").text.count("y") < wire.FIELD_CAP
    assert root.find("system-out").text == "out"


def test_objects_json_cannot_hold_become_their_repr():
    assert json.loads(wire.encode({"t": "x", "v": ValueError("no")}))["v"] == "ValueError('no')"
