"""The worker's side of streams, driven frame by frame over a real worker's socket.

The harness speaks docs/protocol.md directly (spawn, INIT, HELLO, frames), so these tests pin
the wire contract: CHUNK under CREDIT, CANCEL closing the generator, errors at their item.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from snakebridge_worker import protocol as p

BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); from snakebridge_worker.main import main; main()"
)
WORKER_PACKAGE = Path(__file__).resolve().parents[2] / "src" / "snakebridge_worker"
GENERATORS = """
import itertools

CLOSED = []


def counting(n):
    try:
        yield from range(n)
    finally:
        CLOSED.append(n)


def endless():
    try:
        yield from itertools.count()
    finally:
        CLOSED.append("endless")


def failing():
    yield 1
    yield 2
    raise ValueError("third item")


def calling_back(callback, n):
    for i in range(n):
        yield callback(i)


def closed():
    return CLOSED
"""


def ext_hook(code: int, data: bytes) -> Any:
    return msgpack.ExtType(code, data)


class RawWorker:
    """A worker process and its socket, with nothing of the host runtime in between."""

    def __init__(self, path_dir: str) -> None:
        self.sock, child = socket.socketpair()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-u",
                "-c",
                BOOT,
                path_dir,
                str(child.fileno()),
                str(os.getpid()),
            ],
            pass_fds=(child.fileno(),),
            stdout=subprocess.DEVNULL,
            cwd="/",
        )
        child.close()
        self.sock.settimeout(20)
        self.buffer = b""
        self.ids = iter(range(1, 1_000_000))
        helpers = {"gens": {"source": GENERATORS, "filename": "gens.py", "package": False}}
        self.send([p.INIT, 0, {"host_numpy": False, "helpers": helpers}])
        assert self.read()[0] == p.HELLO

    def send(self, *messages: list[Any]) -> None:
        self.sock.sendall(b"".join(p.frame(msgpack.packb(m)) for m in messages))

    def read(self) -> list[Any]:
        while True:
            if len(self.buffer) >= 4:
                size = p.HEADER.unpack_from(self.buffer)[0]
                if len(self.buffer) >= 4 + size:
                    body, self.buffer = self.buffer[4 : 4 + size], self.buffer[4 + size :]
                    message: list[Any] = msgpack.unpackb(body, ext_hook=ext_hook, raw=False)
                    return message
            data = self.sock.recv(1 << 16)
            assert data, "the worker closed its socket"
            self.buffer += data

    def stream(self, symbol: str, args: list[Any], credit: int) -> int:
        call_id = next(self.ids)
        call = [p.CALL, call_id, 0, p.FLAG_STREAM, "gens", symbol, None, "call", args, None]
        self.send(call, [p.CREDIT, call_id, credit])
        return call_id

    def call(self, symbol: str, args: list[Any]) -> Any:
        call_id = next(self.ids)
        self.send([p.CALL, call_id, 0, 0, "gens", symbol, None, "call", args, None])
        kind, answered, value = self.read()
        assert (kind, answered) == (p.RESULT, call_id)
        return value

    def close(self) -> None:
        self.sock.close()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def path_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as directory:
        os.symlink(WORKER_PACKAGE, Path(directory) / "snakebridge_worker")
        yield directory


@pytest.fixture
def worker(path_dir: str) -> Iterator[RawWorker]:
    raw = RawWorker(path_dir)
    yield raw
    raw.close()


def drain(worker: RawWorker, call_id: int, grant: bool = True) -> tuple[list[Any], list[Any]]:
    """Items of a stream and its last frame, granting one credit per chunk read."""
    items: list[Any] = []
    while True:
        message = worker.read()
        assert message[1] == call_id
        if message[0] != p.CHUNK:
            return items, message
        items += message[2]
        if grant:
            worker.send([p.CREDIT, call_id, 1])


def test_a_generator_streams_in_chunks_and_ends(worker: RawWorker) -> None:
    call_id = worker.stream("counting", [5000], credit=8)
    first = worker.read()
    assert first[0] == p.CHUNK and first[2] == [0]  # the first item is never held back
    worker.send([p.CREDIT, call_id, 1])
    items, last = drain(worker, call_id)
    assert [0, *items] == list(range(5000))
    assert last == [p.STREAM_END, call_id, None]
    assert worker.call("closed", []) == [5000]


def test_the_worker_sends_no_more_chunks_than_credited(worker: RawWorker) -> None:
    call_id = worker.stream("endless", [], credit=3)
    chunks = [worker.read() for _ in range(3)]
    assert all(chunk[0] == p.CHUNK for chunk in chunks)
    worker.send([p.CANCEL, call_id])
    # without more credit nothing else can have been sent: the next frame is the cancel's answer
    assert worker.read() == [p.STREAM_END, call_id, {"cancelled": True}]
    assert worker.call("closed", []) == ["endless"]  # its finally ran before the next call


def test_cancel_mid_stream_runs_finally_before_the_next_call(worker: RawWorker) -> None:
    call_id = worker.stream("counting", [10**9], credit=4)
    assert worker.read()[0] == p.CHUNK
    worker.send([p.CANCEL, call_id], [p.CREDIT, call_id, 100])
    last = worker.read()
    while last[0] == p.CHUNK:
        last = worker.read()
    assert last == [p.STREAM_END, call_id, {"cancelled": True}]
    assert worker.call("closed", []) == [10**9]


def test_an_exception_arrives_after_the_items_before_it(worker: RawWorker) -> None:
    call_id = worker.stream("failing", [], credit=8)
    items, last = drain(worker, call_id)
    assert items == [1, 2]
    assert last[0] == p.ERROR and last[1] == call_id
    assert last[2]["builtin"] == "ValueError" and last[2]["message"] == "third item"
    assert "gens.py" in last[2]["traceback"]


def test_a_result_that_is_not_iterable_is_a_clear_error(worker: RawWorker) -> None:
    call_id = worker.stream("closed", [], credit=1)  # returns a list: iterable, streams
    items, last = drain(worker, call_id)
    assert (items, last) == ([], [p.STREAM_END, call_id, None])
    call_id = next(worker.ids)
    call = [p.CALL, call_id, 0, p.FLAG_STREAM, "math", "sqrt", None, "call", [4.0], None]
    worker.send(call, [p.CREDIT, call_id, 1])
    kind, answered, payload = worker.read()
    assert (kind, answered, payload["builtin"]) == (p.ERROR, call_id, "TypeError")
    assert "must return an iterable, not float" in payload["message"]
    worker.send([p.CREDIT, call_id, 5], [p.PING, 99])  # a late credit is ignored quietly
    assert worker.read()[:2] == [p.PONG, 99]


def test_credit_sent_while_the_generator_calls_back_is_not_lost(worker: RawWorker) -> None:
    callback = msgpack.ExtType(p.EXT_CALLBACK, msgpack.packb(7))
    call_id = worker.stream("calling_back", [callback, 20], credit=1)
    items: list[Any] = []
    while True:
        message = worker.read()
        if message[0] == p.CALLBACK:
            # the credit lands while the worker waits for the callback's answer
            reply = [p.CALLBACK_RESULT, message[1], message[2][0] * 10, message[5]]
            worker.send([p.CREDIT, call_id, 1], reply)
        elif message[0] == p.CHUNK:
            items += message[2]
        else:
            assert message[:2] == [p.STREAM_END, call_id]
            break
    assert items == [i * 10 for i in range(20)]
