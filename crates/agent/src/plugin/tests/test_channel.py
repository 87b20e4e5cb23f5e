"""The channel's framing: JSON lines, held lines sent in order in one write, EOF."""

from __future__ import annotations

import json
import socket

import pytest

from shardex_plugin.channel import Channel, encode


@pytest.fixture
def agent(tmp_path):
    """A listening socket standing in for the agent."""
    path = str(tmp_path / "a.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    yield path, server
    server.close()


def _connect(agent, hello=None):
    path, server = agent
    channel = Channel(path, hello or {"t": "hello"})
    peer, _ = server.accept()
    peer.settimeout(5)
    return channel, peer


def _read_lines(peer, count):
    data = b""
    while data.count(b"\n") < count:
        data += peer.recv(65536)
    return [json.loads(line) for line in data.splitlines()]


def test_hello_is_the_first_line(agent):
    channel, peer = _connect(agent, {"t": "hello", "v": 9})
    assert _read_lines(peer, 1) == [{"t": "hello", "v": 9}]
    channel.close()


def test_compact_json_one_object_per_line():
    assert encode({"t": "x", "ids": ["a b", "c"]}) == b'{"t":"x","ids":["a b","c"]}\n'


def test_held_lines_go_out_in_order_with_the_next_send(agent):
    channel, peer = _connect(agent)
    _read_lines(peer, 1)
    channel.hold(encode({"n": 1}))
    channel.hold(encode({"n": 2}))
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(100)  # nothing sent while held
    peer.setblocking(True)
    channel.send({"n": 3})
    assert channel.held == []
    assert _read_lines(peer, 3) == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_messages_split_and_joined_across_reads(agent):
    channel, peer = _connect(agent)
    peer.sendall(b'{"t":"run","ids":["a"]}\n{"t":"fl')
    assert channel.recv() == {"t": "run", "ids": ["a"]}
    assert channel.recv(timeout=0.05) is None  # half a line is not a message
    peer.sendall(b'ush"}\n{"t":"exit"}\n')
    assert channel.recv() == {"t": "flush"}
    assert channel.pop_line() == {"t": "exit"}
    assert channel.pop_line() is None


def test_eof_when_the_agent_is_gone(agent):
    channel, peer = _connect(agent)
    _read_lines(peer, 1)
    peer.sendall(b'{"t":"exit"}\n')
    peer.close()
    assert channel.recv() == {"t": "exit"}
    with pytest.raises(EOFError):
        channel.recv()
