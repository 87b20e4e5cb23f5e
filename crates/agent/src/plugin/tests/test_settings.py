"""The run's settings come from the agent's configure message, the first on every connection."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from shardex_plugin import channel as channel_module
from shardex_plugin.settings import LAUNCH, SETTINGS, SETTINGS_VERSION, ProtocolError, RunSettings

CONFIGURE = {
    "t": "configure",
    "v": SETTINGS_VERSION,
    "worker_count": 3,
    "testrunuid": "run1",
    "color": True,
    "width": 132,
    "retry": {"reruns": 2, "only_rerun": ["Conn"]},
    "junit": False,
    "loadgroup": True,
    "rundir": "/tmp/somewhere",
    "timeout": 2.5,
}


def test_apply_takes_every_setting():
    settings = RunSettings()
    settings.apply(dict(CONFIGURE))
    assert vars(settings) == {
        "worker_count": 3,
        "testrunuid": "run1",
        "color": True,
        "width": 132,
        "retry": {"reruns": 2, "only_rerun": ["Conn"]},
        "junit": False,
        "loadgroup": True,
        "rundir": "/tmp/somewhere",
        "timeout": 2.5,
    }


def test_timeout_is_optional():
    settings = RunSettings()
    settings.apply({k: v for k, v in CONFIGURE.items() if k != "timeout"})
    assert settings.timeout is None


@pytest.mark.parametrize(
    ("msg", "error"),
    [
        ({"t": "run", "ids": []}, "expected the agent's configure message, got 'run'"),
        (dict(CONFIGURE, v=SETTINGS_VERSION + 1), f"v{SETTINGS_VERSION + 1}, this plugin reads v{SETTINGS_VERSION}"),
        ({k: v for k, v in CONFIGURE.items() if k != "width"}, "malformed configure message"),
        (["configure"], "got 'list'"),
    ],
)
def test_apply_refuses_what_it_cannot_read(msg, error):
    with pytest.raises(ProtocolError, match=error.replace("(", r"\(").replace(")", r"\)")):
        RunSettings().apply(msg)


class FakeAgent:
    """Accepts one connection, records the hello, answers with configure and a run message."""

    def __init__(self, path: str) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(1)
        self.hello = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        peer, _ = self.server.accept()
        with peer:
            data = b""
            while b"\n" not in data:
                data += peer.recv(4096)
            self.hello = json.loads(data.split(b"\n")[0])
            # Both in one write: the configure must not swallow what follows it.
            peer.sendall(json.dumps(CONFIGURE).encode() + b'\n{"t":"run","ids":["t.py::a"]}\n')
            peer.recv(1)  # until the client closes

    def close(self) -> None:
        self.thread.join(5)
        self.server.close()


@pytest.fixture
def fake_agent(tmp_path, monkeypatch):
    path = str(tmp_path / "agent.sock")
    monkeypatch.setattr(LAUNCH, "socket", path)
    for name, value in vars(RunSettings()).items():
        monkeypatch.setattr(SETTINGS, name, value)
    agent = FakeAgent(path)
    yield agent
    agent.close()


@pytest.mark.parametrize("secret", ["", "s3cret"])
def test_connect_sends_hello_then_waits_for_the_settings(fake_agent, monkeypatch, secret):
    monkeypatch.setattr(LAUNCH, "secret", secret)
    channel = channel_module.connect("worker", "gw1")
    try:
        assert SETTINGS.worker_count == 3 and SETTINGS.width == 132 and SETTINGS.rundir == "/tmp/somewhere"
        assert channel.recv(timeout=5) == {"t": "run", "ids": ["t.py::a"]}
    finally:
        channel.close()
    hello = fake_agent.hello
    assert hello["t"] == "hello" and hello["v"] == channel_module.PROTOCOL_VERSION == 5
    assert (hello["role"], hello["slot"]) == ("worker", "gw1")
    if secret:
        assert hello["secret"] == secret
    else:
        assert "secret" not in hello
