"""Malformed and oversized frames from a fake peer close that connection with a clear error."""

from __future__ import annotations

import os
import stat
import sys
import textwrap
from pathlib import Path

import msgpack
import pytest

from snakebridge import DecodeError, PoolClosed, ProtocolError, WorkerStartError
from snakebridge.config import PoolSpec
from snakebridge.runtime.calls import Call
from snakebridge.runtime.codec import codec_for_thread
from snakebridge.runtime.pool import Pool
from snakebridge.runtime.refs import Session
from snakebridge_worker import protocol as p
from snakebridge_worker.framing import FrameBuffer, FrameTooLarge


def test_oversized_frame_is_refused_before_reading_it() -> None:
    frames = FrameBuffer(max_frame=1024)
    frames.feed(p.HEADER.pack(10**9) + b"x" * 16)
    with pytest.raises(FrameTooLarge, match="over the 1024-byte limit"):
        frames.next_body()


def test_frames_split_and_joined_arbitrarily() -> None:
    frames = FrameBuffer(max_frame=p.DEFAULT_MAX_FRAME)
    bodies = [msgpack.packb([p.RESULT, i, "x" * i * 1000]) for i in range(1, 80)]
    data = b"".join(p.frame(body) for body in bodies)
    got: list[bytes] = []
    for start in range(0, len(data), 7777):
        frames.feed(data[start : start + 7777])
        while (body := frames.next_body()) is not None:
            got.append(body)
    assert got == bodies and frames.empty()


FAKE_WORKER = textwrap.dedent(
    """
    import socket, struct, sys, msgpack
    sock = socket.socket(fileno=int(sys.argv[-2].split(",")[0]))
    def send(body): sock.sendall(struct.pack(">I", len(body)) + body)
    send(msgpack.packb([0, 0, {"protocol": 1, "python": "3", "pid": 0}]))
    mode = open(sys.argv[-1] + ".mode").read().strip()
    while True:
        header = sock.recv(4)
        if not header:
            break
        size = struct.unpack(">I", header)[0]
        body = b""
        while len(body) < size:
            body += sock.recv(size - len(body))
        kind, call_id = msgpack.unpackb(body, strict_map_key=False)[:2]
        if kind != 2:
            continue
        if mode == "garbage":
            send(b"\\xc1\\xc1\\xc1")
        elif mode == "wrong-id":
            send(msgpack.packb([3, call_id + 1000, None]))
        elif mode == "bad-ext":
            send(msgpack.packb([3, call_id, msgpack.ExtType(99, b"")]))
        elif mode == "oversized":
            sock.sendall(struct.pack(">I", 2**31) + b"\\0" * 64)
    """
)


@pytest.fixture
def fake_interpreter(tmp_path: Path) -> Path:
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    launcher = tmp_path / "fakepython"
    # the pool runs: INTERPRETER -I -u -c BOOT DIR FD HOST_PID; keep FD and a mode file path
    launcher.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$6" {tmp_path}/fake\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IEXEC)
    return launcher


def _call() -> Call:
    codec = codec_for_thread()
    frame = codec.encode([p.CALL, 7, 0, 0, "math", "sqrt", None, p.OP_CALL, [4], None])
    return Call(frame=frame, call_id=7, description="math.sqrt", session=Session(0), timeout=5)


@pytest.mark.parametrize(
    ("mode", "error", "match"),
    [
        ("garbage", ProtocolError, "malformed frame"),
        ("wrong-id", ProtocolError, "call 1007, which is not in flight"),
        ("oversized", ProtocolError, "over the"),
        ("bad-ext", DecodeError, "unknown extension type 99"),
    ],
)
def test_misbehaving_worker(
    fake_interpreter: Path, tmp_path: Path, mode: str, error: type[Exception], match: str
) -> None:
    (tmp_path / "fake.mode").write_text(mode)
    pool = Pool("fake", PoolSpec(size=1), str(fake_interpreter), dict(os.environ))
    try:
        pool.start()
        (worker,) = pool.workers
        with pytest.raises(error, match=match):
            pool.run(_call())
        if error is ProtocolError:
            assert not worker.alive
    finally:
        pool.close(0.5)
    with pytest.raises(PoolClosed):
        pool.run(_call())


def test_worker_that_cannot_start_is_a_start_error(tmp_path: Path) -> None:
    pool = Pool(
        "broken", PoolSpec(size=1, startup_timeout=5), str(tmp_path / "no-python"), dict(os.environ)
    )
    with pytest.raises(WorkerStartError, match="cannot start a worker"):
        pool.start()


def test_worker_dying_at_start_shows_its_output(tmp_path: Path) -> None:
    launcher = tmp_path / "dying"
    launcher.write_text("#!/bin/sh\necho 'broken environment: no msgpack' >&2\nexit 3\n")
    launcher.chmod(0o755)
    pool = Pool("dying", PoolSpec(size=1, startup_timeout=5), str(launcher), dict(os.environ))
    with pytest.raises(WorkerStartError, match=r"exited with code 3(.|\n)*no msgpack"):
        pool.start()


def test_real_worker_rejects_a_malformed_frame() -> None:
    import snakebridge
    from snakebridge.runtime.client import runtime

    snakebridge.call("math", "sqrt", [1])
    pool = runtime().pools["default"]
    worker = pool.leaser.acquire()
    try:
        worker.transport.send(p.frame(b"\xc1 not msgpack"))
        reply = msgpack.unpackb(worker.transport.recv(None), raw=False)
        assert reply[0] == p.ERROR and reply[2]["kind"] == "protocol"
    finally:
        worker.transport.kill()
        pool.retire(worker, reason="test")
        pool.leaser.release(worker)
    assert snakebridge.call("math", "sqrt", [4]) == 2.0
    assert sys.modules["snakebridge"] is snakebridge
