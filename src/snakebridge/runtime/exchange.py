"""The call exchange on one worker's connection: calls in flight, matched by id.

(Over 350 lines on purpose: the sync, async and lane waiting loops share every step and the
one rule for a lost worker, and stay side by side here so they cannot drift.)

Several calls may be in flight on one worker (pipelined). Exactly one reader at a time holds
the *reader role*: it reads frames from the transport (every frame already buffered, per wake-up)
and hands each to the call it belongs to, waking exactly that caller (a :class:`Signal` for a
thread, a future for an asyncio task, resolved in place on its own loop — no thread hop). A
thread reads itself and passes the role on when its own answer arrives; for asyncio tasks their
event loop reads, through one reader callback kept while any of its tasks waits. Frames that
callers submit meanwhile leave together in one write. Sync and async callers are two thin loops
over the same steps (:meth:`Line._step`, :meth:`Line._dispatch`), so they cannot drift. A
thread's call that finds others in flight may take an *answer lane* (:meth:`Line.lane_for`):
its answer comes on a socket of its own, read by that thread alone.

A worker in the process profile runs non-nested calls one at a time in the order sent, so when
it is lost only the call at the head of the line (and nested calls) had started: the others are
*requeued*, never failed (with lanes, the worker's running-call slot says which call that
is). A call's timeout runs from when it reaches the head.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from snakebridge.errors import DecodeError, ProtocolError
from snakebridge.runtime.answers import callback_reply
from snakebridge.runtime.codec import CALLBACKS, HostCodec, codec_for_thread
from snakebridge.runtime.pending import (
    FINISHING,
    FOR_CALLS,
    ON_LANES,
    Lost,
    Pending,
    Signal,
    answer_value,
    peek,
    resolve,
)
from snakebridge.runtime.transport import PeerClosed, WorkerTransport
from snakebridge_worker import protocol as p

if TYPE_CHECKING:
    import asyncio

    from snakebridge.runtime.socketreader import Lane

__all__ = ["Line", "in_callback_of"]

_POLL_S = 40e-6  # how long a lone caller polls for a fast answer before sleeping
_QUICK_S = 0.0005  # a call that finished faster than this marks its worker's calls as tiny
_LOOP_CHECK_S = 0.1  # a thread waiting while an event loop reads checks that loop this often
_TINY_SHARE = 0.75  # calls are tiny while this share took the worker under 25 µs each
_JUDGE_CALLS = 16  # calls between two judgements of whether they are tiny
_LANE_CHECK_S = 0.2  # a thread waiting on its lane looks at the line this often (more than
# the socket's receive timeout, which then stays as it is: no setsockopt per call)
_LANE_MAX_FRAME = 1 << 16  # larger calls are not re-framed for a lane (a copy)
_LANE_TAG = 0x9B  # msgpack fixarray of 11: a CALL (a fixarray of 10) with a lane number
_DECIDE_WAIT_S = 30.0  # a lane's waiter waits this long at most for lose() to classify


_callback_line: contextvars.ContextVar[Line | None] = contextvars.ContextVar(
    "snakebridge_callback_line", default=None
)


def in_callback_of() -> Line | None:
    """The line whose worker is waiting on the host callback running in this context."""
    return _callback_line.get()


_LEAD, _WAIT, _SERVE, _DONE = range(4)


class _LoopReader:
    """The reader role held by an event loop: a callback that reads whenever the worker's
    handles are readable, for as long as calls of that loop wait on the line.

    It watches duplicates of the handles, closed only once the loop has let go of them: a
    worker's socket may be closed (and its number reused by a new worker's) before a removal
    sent from another thread runs, and that removal must not take the new worker's reader.
    """

    __slots__ = ("done", "fds", "loop", "thread")

    def __init__(self, loop: asyncio.AbstractEventLoop, fds: tuple[int, ...]) -> None:
        self.loop = loop
        self.fds = tuple(os.dup(fd) for fd in fds)
        self.thread = threading.get_ident()
        self.done = False

    def stalled(self) -> bool:
        """Whether the loop cannot read now: this thread is its own (and is blocked in sync
        code), or it is not running."""
        return self.thread == threading.get_ident() or not self.loop.is_running()

    def detach(self) -> None:
        """Stop reading (on the loop's thread, or through the loop from another thread)."""
        if threading.get_ident() == self.thread or not self.loop.is_running():
            self._remove()
            return
        try:
            self.loop.call_soon_threadsafe(self._remove)
        except RuntimeError:  # a closed loop reads nothing
            self._remove()

    def _remove(self) -> None:
        if self.done:
            return
        self.done = True
        for fd in self.fds:
            with contextlib.suppress(ValueError, OSError, RuntimeError):
                self.loop.remove_reader(fd)
            with contextlib.suppress(OSError):
                os.close(fd)


class Line:
    """Calls in flight on one transport; see the module docstring."""

    def __init__(
        self,
        transport: WorkerTransport,
        holder: Any,
        on_lost: Callable[[BaseException, Pending | None], BaseException],
        concurrent: bool = False,
    ) -> None:
        self.transport = transport
        self.holder = holder  # what Refs decoded here point at (the pool's Worker record)
        self._on_lost = on_lost  # (cause, head) -> the error the head call raises
        self._lock = threading.Lock()
        self._outbox: list[tuple[tuple[Pending, ...] | list[Pending], bytes]] = []
        self._sending = False  # a caller is writing the outbox (see submit_many)
        self._flush_soon = False  # an event loop will send the outbox (see _flush)
        self._dropped: set[int] = set()  # ids of queued calls whose callers gave up
        self._pending: dict[int, Pending] = {}
        self._order: collections.deque[Pending] = collections.deque()
        self._reader: Pending | _LoopReader | None = None
        self.lost: BaseException | None = None
        self.callbacks_running = 0
        self.kill_reason = ""
        self.quick = False  # the last call to finish took under _QUICK_S (leasing reads it)
        self.tiny = False  # its recent calls took the worker under 25 µs (leasing packs them)
        self._costs_seen = (0, 0)  # (calls, short calls) of the worker when last judged
        self._finishes = 0
        # thread profile (#15): the worker runs every call it was sent at once, so each one
        # has started (its clock runs from sending) and a lost worker fails them all
        self.concurrent = concurrent
        self._lanes: list[Lane] = []  # answer lanes not in use (see lane_for)
        self._started: Pending | None = None  # once lost: the call that had started
        self._lost_error: BaseException | None = None  # the error the started call raises
        self._decided = threading.Event()  # set once a loss has been classified

    # -- state read by leasing (benign races: hints only) ---------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._order)

    def head_age(self) -> float:
        """Seconds the call at the head has been running (0 when none): as the worker reports
        it where it can (the host may not have read earlier answers yet)."""
        slot = self.transport.slot()
        if slot is not None:
            return 0.0 if not slot[0] else time.monotonic() - slot[1] * 1e-9
        order = self._order
        if not order:
            return 0.0
        clock = order[0].clock
        return 0.0 if clock is None else time.monotonic() - clock

    # -- answer lanes (see socketreader) ----------------------------------------------------------
    def lane_for(self, pending: Pending, frame: bytes) -> bytes:
        """``frame``, tagged with an answer lane for ``pending`` when that helps: another call
        is in flight here, so a thread waiting on the main connection would be woken by
        whoever reads it (a GIL handoff and a context switch) instead of by the kernel."""
        if not self._order or self.concurrent or len(frame) > _LANE_MAX_FRAME or frame[4] != 0x9A:
            return frame
        with self._lock:
            lane = self._lanes.pop() if self._lanes else None
        if lane is None:
            lane = self.transport.open_lane()
            if lane is None:
                return frame
        pending.lane = lane
        return (
            p.HEADER.pack(len(frame) - 3) + bytes((_LANE_TAG,)) + frame[5:] + bytes((lane.number,))
        )

    def drop_lane(self, me: Pending, clean: bool = False) -> None:
        """``me``'s lane is free again (closed if it may still get ``me``'s frames)."""
        lane, me.lane = me.lane, None
        assert lane is not None
        with self._lock:
            if clean and self.lost is None:
                self._lanes.append(lane)
                return
        lane.close()

    def _wait_lane(self, me: Pending) -> None:
        """:meth:`wait` for a call with a lane: read the lane alone, serve callbacks there."""
        lane = me.lane
        assert lane is not None
        codec = codec_for_thread()
        clean = False
        try:
            while True:
                with self._lock:
                    message = me.inbox.popleft() if me.inbox and me.error is None else None
                    if message is None and me.done:
                        break
                if message is not None:
                    self._serve(me, message, codec)
                    continue
                try:
                    self._dispatch_lane(me, lane.recv(time.monotonic() + _LANE_CHECK_S), codec)
                    while (body := lane.recv_buffered()) is not None:
                        self._dispatch_lane(me, body, codec)
                except TimeoutError:  # nothing on the lane: its answer may have come on the
                    if self.lost is None:  # main connection (rare); once lost, the lane is
                        self.pump()  # read to its end (the worker is being killed)
                except ProtocolError as exc:  # on this call's lane: this call is to blame
                    self.lose(exc, culprit=me)
                    self._lane_lost(me)
                except Exception as exc:  # the worker is gone
                    self._lead_failed(exc)
                    self._lane_lost(me)
            clean = me.error is None
        except BaseException:  # interrupted (the worker may be mid-call)
            self._interrupted(me)
            raise
        finally:
            self.drop_lane(me, clean)

    def _dispatch_lane(self, me: Pending, body: bytes | bytearray, codec: HostCodec) -> None:
        """Decode one frame from ``me``'s lane: its answer, a callback, or a release."""
        kind, call_id = peek(body)
        if (kind in FINISHING and call_id != me.call_id) or kind not in ON_LANES:
            raise ProtocolError(
                f"worker {self.transport.pid} sent frame kind {kind} for call {call_id} on the "
                f"lane of call {me.call_id}"
            )
        try:
            message = codec.decode(body, self.holder, me.session)
        except DecodeError as exc:  # whole but undecodable: only that call fails
            self._undecodable(kind, call_id, me, exc)
            return
        if kind in FINISHING:
            value = answer_value(kind, message[2])
            with self._lock:
                if not me.done:
                    self._finish(me, value)
        elif kind == p.CALLBACK_RELEASE:
            for callback_id in message[2]:
                CALLBACKS.pop(callback_id, None)
        else:
            with self._lock:
                me._post(message)

    def _lane_lost(self, me: Pending) -> None:
        """The worker is gone and ``me``'s lane read to its end without its answer: it fails
        if it was the call running, else it is sent again (Lost)."""
        self._decided.wait(_DECIDE_WAIT_S)
        with self._lock:
            if me.done:
                return
            me.done = True
            if me is self._started:
                me.error = self._lost_error or PeerClosed("the worker was lost")
            else:
                me.error = Lost()

    # -- sending --------------------------------------------------------------------------------
    def submit(
        self, pending: Pending, data: bytes, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        """Register ``pending`` and send its frame(s); Lost when the worker is already gone."""
        self.submit_many((pending,), data, loop)

    def submit_many(
        self,
        pendings: tuple[Pending, ...] | list[Pending],
        data: bytes,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """Register calls whose frames ``data`` holds and send them, in order.

        Sends combine: a caller that finds another one sending leaves its frames to it, so
        calls submitted meanwhile from many threads leave in one write (one system call, one
        release of the GIL). An asyncio caller passes its ``loop``: its frames leave once the
        tasks that run now have submitted theirs, all in one write.
        """
        with self._lock:
            if self.lost is not None:
                raise Lost
            order = self._order
            if loop is not None and not order and not self._outbox:
                loop = None  # a lone call: nothing to combine with, so it leaves now
            for pending in pendings:
                self._pending[pending.call_id] = pending
                if pending.nested or not order or self.concurrent:
                    pending.clock = time.monotonic()
                if not pending.nested:
                    order.append(pending)
            if self._sending or loop is not None:
                self._outbox.append((pendings, data))
                if not self._sending and not self._flush_soon and loop is not None:
                    self._flush_soon = True
                    loop.call_soon(self._flush)
                return
            self._sending = True
            if self._outbox:  # frames an event loop has not sent yet go first
                self._outbox.append((pendings, data))
                batch, self._outbox = self._outbox, []
                data = b"".join(frames for _, frames in batch)
            else:
                batch = [(pendings, data)]
        self._drain(batch, data)

    def _flush(self) -> None:
        """Send what the tasks of an event loop submitted (a callback of that loop)."""
        with self._lock:
            self._flush_soon = False
            if self._sending or not self._outbox:
                return
            self._sending = True
            batch, self._outbox = self._outbox, []
        self._drain(batch, b"".join(frames for _, frames in batch))

    def _drain(self, batch: list[tuple[Any, bytes]], data: bytes) -> None:
        """Write ``data`` (the frames of ``batch``), then whatever was queued meanwhile."""
        while True:
            try:
                self.transport.send(data)
            except OSError as exc:  # it was gone before the calls reached it: send them elsewhere
                with self._lock:
                    batch += self._outbox
                    self._outbox, self._sending = [], False
                self.lose(PeerClosed(str(exc)), unsent=tuple(p for ps, _ in batch for p in ps))
                return
            with self._lock:
                batch, self._outbox = self._outbox, []
                if not batch:
                    self._sending = False
                    return
            data = b"".join(frames for _, frames in batch)

    def send(self, data: bytes) -> None:
        """Frames that need no answer (releases, callback results, a stream's CREDIT); a lost
        worker ignores them. They queue behind frames another caller is sending, so they never
        overtake them (a stream's CREDIT written before its CALL would be dropped)."""
        if not data:
            return
        with contextlib.suppress(Lost):
            self.submit_many((), data)

    # -- one step of waiting, shared by the sync and async loops ---------------------------------
    def _step(self, me: Pending) -> tuple[int, list[Any] | None]:
        """What ``me``'s waiter does next: lead (read), wait, serve a message, or finish.

        A thread leads by reading itself; an asyncio task leads by putting a reader on its
        loop (:meth:`_on_readable`) and waiting like everyone else.
        """
        with self._lock:
            reader = self._reader
            if me.inbox and me.error is None:  # first, even once done: the worker waits for it
                if reader is me or (reader is not None and reader is self._loop_reader(me)):
                    self._pass_role()  # the callback may call this worker again
                return _SERVE, me.inbox.popleft()
            if me.done:
                if reader is me:
                    self._pass_role()
                return _DONE, None
            loop = me.loop
            if self.lost is not None:  # being failed right now: lose() wakes it, done
                if loop is not None:
                    me.future = loop.create_future()
                elif me.event is None:
                    me.event = Signal()
                return _WAIT, None
            if loop is None:
                if reader is None or reader is me:
                    self._reader = me
                    return _LEAD, None
                if type(reader) is _LoopReader and reader.stalled():
                    reader.detach()  # its loop cannot read for us: take over
                    self._reader = me
                    return _LEAD, None
                if me.event is None:
                    me.event = Signal()
                return _WAIT, None
            if reader is None:
                reader = self._reader = _LoopReader(loop, self.transport.wait_handles())
                for fd in reader.fds:
                    loop.add_reader(fd, self._on_readable, reader)
            me.future = loop.create_future()
            return _WAIT, None

    def _loop_reader(self, me: Pending) -> _LoopReader | None:
        reader = self._reader
        if type(reader) is _LoopReader and reader.loop is me.loop:
            return reader
        return None

    def _pass_role(self) -> None:
        """Give up the reader role and wake a waiting call to take it (lock held)."""
        reader = self._reader
        self._reader = None
        if type(reader) is _LoopReader:
            reader.detach()
        for pending in self._order:  # the next call, unless nobody waits for it (a map's)
            if (
                (not pending.batch or pending.event is not None)
                and pending.lane is None
                and not pending.done
            ):
                pending._wake()  # one still on its way to waiting takes the role itself
                return
        if len(self._pending) > len(self._order):  # nested calls (never in the order)
            for pending in self._pending.values():
                if pending.nested and not pending.done:
                    pending._wake()
                    return

    def _give_up_reading(self, me: Pending) -> None:
        with self._lock:
            if self._reader is me:
                self._pass_role()

    def _serve(self, me: Pending, message: list[Any], codec: HostCodec) -> None:
        """Run the host callback the worker asked ``me``'s call for, and answer it."""
        if message[0] != p.CALLBACK:
            self.lose(
                ProtocolError(
                    f"worker {self.transport.pid} sent stream frame kind {message[0]} for call "
                    f"{me.call_id}, which is not a stream"
                )
            )
            return
        with self._lock:
            self.callbacks_running += 1
        token = _callback_line.set(self)
        try:
            reply = callback_reply(message, codec)
        finally:
            _callback_line.reset(token)
            with self._lock:
                self.callbacks_running -= 1
        self.send(reply)

    def _dispatch(self, body: bytes | bytearray, codec: HostCodec) -> None:
        """Decode one frame and hand it to the call it belongs to (reader role held)."""
        kind, call_id = peek(body)
        if kind == p.CALLBACK:  # its id slot holds the callback id; it belongs to the head
            target = self._order[0] if self._order else None
        else:
            target = self._pending.get(call_id)
        try:
            message = codec.decode(body, self.holder, target.session if target else None)
        except DecodeError as exc:  # whole but undecodable: only that call fails
            self._undecodable(kind, call_id, target, exc)
            return
        kind = message[0]
        if kind in FINISHING and target is not None:
            value = answer_value(kind, message[2])
            with self._lock:
                self._finish(target, value)
                target._wake()
            return
        if kind == p.CALLBACK_RELEASE:
            for callback_id in message[2]:
                CALLBACKS.pop(callback_id, None)
            return
        if target is None and kind in FINISHING and call_id in self._dropped:
            self._dropped.discard(call_id)  # the answer to a call its caller gave up on
            return
        if kind == p.CALLBACK and len(message) > 4 and message[4] in self._pending:
            target = self._pending[message[4]]  # a callback of a nested call
        if target is None or kind not in FOR_CALLS:
            raise ProtocolError(
                f"worker {self.transport.pid} sent frame kind {kind!r} for call "
                f"{message[1]!r}, which is not in flight"
            )
        with self._lock:
            target._post(message)

    def _read(self, me: Pending, codec: HostCodec) -> None:
        """Read one frame (blocking until ``me``'s deadline) and every frame already buffered."""
        transport = self.transport
        self._dispatch(transport.recv(me.deadline(), self._poll_s(me)), codec)
        while (body := transport.recv_buffered()) is not None:
            self._dispatch(body, codec)

    def _on_readable(self, reader: _LoopReader) -> None:
        """The loop's reader: dispatch every frame there is; step down when no call of its
        loop waits any more."""
        with self._lock:
            if self._reader is not reader:
                reader.detach()
                return
        codec = codec_for_thread()
        transport = self.transport
        try:
            body = transport.recv_now()  # what is there now; the loop calls again for more
            while body is not None:
                self._dispatch(body, codec)
                body = transport.recv_buffered()
        except Exception as exc:
            self._lead_failed(exc)
            return
        self._step_down(reader)

    def _step_down(self, reader: _LoopReader | None) -> None:
        """The loop's reader gives up the role once no call of its loop waits any more."""
        with self._lock:
            if reader is None or self._reader is not reader:
                return
            loop = reader.loop
            for pending in self._pending.values():
                if pending.loop is loop and not pending.done:
                    return
            self._pass_role()

    def _undecodable(
        self, kind: int, call_id: int, target: Pending | None, exc: DecodeError
    ) -> None:
        if kind == p.CALLBACK:  # the worker waits for an answer: tell it why there is none
            import msgpack

            payload = {
                "type": "snakebridge.DecodeError",
                "builtin": "TypeError",
                "message": str(exc),
            }
            self.send(p.frame(msgpack.packb([p.CALLBACK_ERROR, call_id, payload])))
            return
        if target is None or kind not in FINISHING:
            raise ProtocolError(f"worker {self.transport.pid} sent an undecodable frame: {exc}")
        with self._lock:
            self._finish(target, exc)
            target._wake()

    def _finish(self, target: Pending, value: Any) -> None:
        """Record an answer (lock held); the next call in order starts its clock."""
        target.done = True
        target.value = value
        self._pending.pop(target.call_id, None)
        if not target.nested:
            order = self._order
            if order and order[0] is target:
                order.popleft()
                now = time.monotonic()
                if target.clock is not None:
                    self.quick = now - target.clock < _QUICK_S
                self._finishes += 1
                if not self._finishes & 31:
                    self._judge_costs()
                if order:
                    nxt = order[0]
                    nxt.clock = now
                    if nxt.timeout is not None:  # its waiter arms the deadline that now runs
                        nxt._wake()
            else:
                with contextlib.suppress(ValueError):
                    order.remove(target)

    def _drain_main(self) -> None:
        """Before a loss is judged: dispatch the answers already on the main connection, if
        nobody is reading it (they finished: they must not count as started or unsent)."""
        with self._lock:
            if self._reader is not None or self.lost is not None:
                return
            holder = self._reader = Pending(-1, None, None)
        codec = codec_for_thread()
        try:
            while (body := self.transport.recv_now()) is not None:
                self._dispatch(body, codec)
        except Exception:  # the end of what it wrote, or garbage: lose() decides from here
            pass
        finally:
            self._give_up_reading(holder)

    def _judge_costs(self) -> None:
        """Whether the worker's recent calls were tiny, from what it reports: most were short
        (a few preempted ones do not count against them)."""
        slot = self.transport.slot()
        if slot is None:
            return
        _, _, calls, short = slot
        seen_calls, seen_short = self._costs_seen
        if calls - seen_calls >= _JUDGE_CALLS:
            self.tiny = short - seen_short >= _TINY_SHARE * (calls - seen_calls)
            self._costs_seen = (calls, short)

    def lose(
        self,
        cause: BaseException,
        unsent: tuple[Pending, ...] = (),
        culprit: Pending | None = None,
    ) -> None:
        """The worker is gone: the head call (and nested ones) fail, the others are requeued.

        ``unsent`` calls never reached the worker (their write failed): requeued even at the
        head. ``culprit``: the call whose lane brought the frame that broke the protocol; it
        fails, whatever the worker runs now (sent again, it would break the next worker too).
        """
        self._drain_main()
        with self._lock:
            if self.lost is not None:
                return
            self.lost = cause
            for queued, _ in self._outbox:  # never written: they never reached the worker
                unsent += tuple(queued)
            self._outbox = []
            head = self._order[0] if self._order else None
            slot = self.transport.slot()
            if slot is not None:  # the worker said which call it runs (lanes: see lane_for)
                head = self._pending.get(slot[0])
            if culprit is not None:
                head = culprit
            everyone = list(self._pending.values())
            self._pending.clear()
            self._order.clear()
            reader, self._reader = self._reader, None
            if type(reader) is _LoopReader:
                reader.detach()
            idle_lanes, self._lanes = self._lanes, []
        for lane in idle_lanes:
            lane.close()
        started_head = head if head is not None and head not in unsent else None
        self._started = started_head
        error = self._on_lost(cause, started_head)
        self._lost_error = error
        self._decided.set()
        with self._lock:  # a waiter steps under this lock: it sees done, or gets woken
            for pending in everyone:
                if pending.lane is not None and pending not in unsent:
                    continue  # its waiter reads its lane to the end, then decides (_lane_lost)
                pending.done = True
                started = (
                    pending is started_head or pending.nested or self.concurrent
                ) and pending not in unsent
                pending.error = error if started else Lost()
                pending._wake()

    def _lead_failed(self, exc: BaseException) -> None:
        """The read failed: a timeout of the reading call or a lost worker."""
        if isinstance(exc, TimeoutError):
            self.kill_reason = "timeout"
            self.transport.kill()
        self.lose(exc)

    def _poll_s(self, me: Pending) -> float:
        return _POLL_S if len(self._pending) <= 1 and self.holder.lone() else 0.0

    # -- the two loops --------------------------------------------------------------------------
    def _advance(self, me: Pending, stream: bool, codec: HostCodec) -> tuple[int, list[Any] | None]:
        """Step, serving host callbacks on the way: (_LEAD, None), (_WAIT, None), or (_DONE,
        None when ``me`` finished, or a stream frame for it when ``stream``)."""
        while True:
            action, message = self._step(me)
            if action != _SERVE:
                return action, None
            assert message is not None
            if stream and message[0] != p.CALLBACK:
                self._give_up_reading(me)
                return _DONE, message
            self._serve(me, message, codec)

    def wait(self, me: Pending, stream: bool = False) -> list[Any] | None:
        """Block until ``me`` is done (its value/error set), serving callbacks and reading.

        With ``stream``, a stream frame for ``me`` (CHUNK) is returned as soon as it arrives.
        """
        if me.lane is not None:
            self._wait_lane(me)
            return None
        codec = codec_for_thread()
        while True:
            action, message = self._advance(me, stream, codec)
            if action == _DONE:
                return message
            if action == _LEAD:
                try:
                    self._read(me, codec)
                    if me.done and not me.inbox:  # its own answer: the common case, in short
                        self._give_up_reading(me)
                        return None
                except BaseException as exc:
                    self._give_up_reading(me)
                    if not isinstance(exc, Exception):  # interrupted: the worker is mid-call
                        self._interrupted(me)
                        raise
                    self._lead_failed(exc)
            else:
                assert me.event is not None
                deadline = me.deadline()
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                if type(self._reader) is _LoopReader:  # look again should that loop stop
                    timeout = _LOOP_CHECK_S if timeout is None else min(timeout, _LOOP_CHECK_S)
                if not me.event.wait(timeout) and me.deadline() is not None:
                    self._overran(me)

    def pump(self, me: Pending | None = None, poll_s: float = 0.0) -> None:
        """Dispatch every frame that can be read without sleeping, if nobody is reading (as
        ``me``, unless it is done); with ``poll_s``, poll that long for the first one."""
        with self._lock:
            if self._reader is not None or self.lost is not None or (me is not None and me.done):
                return
            holder = me if me is not None else Pending(-1, None, None)
            self._reader = holder
        codec = codec_for_thread()
        transport = self.transport
        try:
            body = transport.recv_soon(poll_s) if poll_s else transport.recv_now()
            while body is not None:
                self._dispatch(body, codec)
                body = transport.recv_now()
        except Exception as exc:
            self._give_up_reading(holder)
            self._lead_failed(exc)
            return
        self._give_up_reading(holder)

    async def await_(self, me: Pending, stream: bool = False) -> list[Any] | None:
        """Async twin of :meth:`wait`: the loop reads (see :meth:`_step`), ``me`` awaits a
        future that the reader resolves."""
        import asyncio

        loop = asyncio.get_running_loop()
        codec = codec_for_thread()
        me.loop = loop
        if self._poll_s(me):  # a lone call: a fast answer skips the event loop's trip
            self.pump(me, _POLL_S)
        try:
            while True:
                action, message = self._advance(me, stream, codec)
                if action == _DONE:
                    return message
                future = me.future
                assert future is not None
                deadline = me.deadline()
                if deadline is None:
                    await future
                    continue
                timer = loop.call_at(deadline, resolve, future)
                try:
                    await future
                finally:
                    timer.cancel()
                if not me.done and me.deadline() is not None:
                    self._overran(me)
        except asyncio.CancelledError:
            self._interrupted(me)
            self._step_down(self._loop_reader(me))
            raise

    def _overran(self, me: Pending) -> None:
        deadline = me.deadline()
        if me.done or deadline is None or time.monotonic() < deadline:
            return
        self.kill_reason = "timeout"
        self.transport.kill()
        self.lose(TimeoutError())

    def _interrupted(self, me: Pending) -> None:
        """The caller stopped waiting (Ctrl-C, cancel) while its call may be running."""
        slot = self.transport.slot()
        with self._lock:
            if slot is not None:
                started = me.call_id == slot[0] or me.nested
            else:
                started = me is (self._order[0] if self._order else None) or me.nested
            started = started or self.concurrent
            unsent = [item for item in self._outbox if me in item[0]]
            if unsent and len(unsent[0][0]) == 1:  # still in the outbox: it never left
                self._outbox.remove(unsent[0])
                started = False
            elif not started and me.lane is None:  # queued behind the running call: its answer
                self._dropped.add(me.call_id)  # is dropped (a lane's is: the lane is closed)
            if not started and not me.done:  # never started: just forget it
                self._pending.pop(me.call_id, None)
                with contextlib.suppress(ValueError):
                    self._order.remove(me)
                if self._order and self._order[0].clock is None:  # it was the head, unsent
                    self._order[0].clock = time.monotonic()
                me.done, me.error = True, Lost()
                return
        if not me.done:
            self.kill_reason = "interrupted"
            self.transport.kill()
            self.lose(PeerClosed("interrupted"))
