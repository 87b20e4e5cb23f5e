"""The connection to the agent: newline-delimited JSON on a Unix socket (PYTEST_DONT_REWRITE).

Never stdout, which tests print to.
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading

from .settings import LAUNCH, SETTINGS
from .wire import encode

PROTOCOL_VERSION = 5


class Channel:
    """Newline-delimited JSON over a connected Unix socket."""

    def __init__(self, path: str, hello: dict) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""
        # Encoded lines held back to go out with the next send (see Worker._report).
        self.held: list[bytes] = []
        # A worker sends from two threads (results from the main one, `retracted` from its
        # reader): one lock keeps lines whole and in order, held ones first.
        self.lock = threading.Lock()
        self.send(hello)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, msg: dict) -> None:
        line = encode(msg)
        with self.lock:
            self.held.append(line)
            self._release()

    def hold(self, line: bytes) -> None:
        with self.lock:
            self.held.append(line)

    def release(self) -> None:
        """Sends what is held, in order, in one write."""
        if self.held:
            with self.lock:
                self._release()

    def _release(self) -> None:
        if self.held:
            data = b"".join(self.held)
            self.held.clear()
            self.sock.sendall(data)

    def pop_line(self):
        """The next whole message already read, or None."""
        pos = self.buf.find(b"\n")
        if pos < 0:
            return None
        line, self.buf = self.buf[:pos], self.buf[pos + 1 :]
        return json.loads(line)

    def recv(self, timeout: float | None = None):
        """The next message; None on timeout. Raises EOFError when the agent is gone.
        One reader only (in a worker, its reader thread once it runs)."""
        while True:
            msg = self.pop_line()
            if msg is not None:
                return msg
            if timeout is not None:
                ready, _, _ = select.select([self.sock], [], [], timeout)
                if not ready:
                    return None
            try:
                chunk = self.sock.recv(65536)
            except InterruptedError:
                continue
            if not chunk:
                raise EOFError
            self.buf += chunk

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def connect(role: str, slot) -> Channel:
    """Connects to the agent: the hello, then the run's settings, which the agent sends
    first on every connection (nothing else is read before them)."""
    hello = {"t": "hello", "v": PROTOCOL_VERSION, "role": role, "slot": slot, "pid": os.getpid()}
    if LAUNCH.secret:
        hello["secret"] = LAUNCH.secret
    channel = Channel(LAUNCH.socket, hello)
    SETTINGS.apply(channel.recv())
    return channel
