"""Worker main loop: read frames, run the named call, answer with values or Refs.

(Over 350 lines on purpose: the worker ships as few files as possible into every library env;
values, streams, policy and host objects already live in their own modules.)

Started by the host as ``python -I -u -c BOOT <worker-dir> <socket-fd> <host-pid>``.
"""

from __future__ import annotations

import builtins
import collections
import importlib
import itertools
import operator
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
import types
from typing import Any, Deque, Dict, List, Optional, Set, Tuple, Union

import msgpack

from snakebridge_worker import hostrefs, kinds, lanes, oob, shm, startup, streams
from snakebridge_worker import policy as pol
from snakebridge_worker import protocol as p
from snakebridge_worker import values as v

_BUILTIN_OPS = {
    name: getattr(builtins, name)
    for name in (
        "len",
        "repr",
        "str",
        "bool",
        "hash",
        "float",
        "int",
        "complex",
        "iter",
        "dir",
        "abs",
        "format",
        "bytes",
        "reversed",
        "round",
    )
}
_BUILTIN_OPS["index"] = operator.index


SPIN_S = 50e-6
SPIN_PREEMPTED_S = 15e-6  # a gap this long between two polls: we were not running
BACK_TO_BACK_S = 1e-3
SPIN_MISSES = 4
SPIN_SKIP = 64


class SymbolError(Exception):
    """A module or attribute named by a call does not exist."""


class RefError(Exception):
    """A Ref id is not (or no longer) in the registry."""


class Registry:
    """Objects held for the host, by ref id, grouped by session."""

    def __init__(self) -> None:
        self.objects: Dict[int, Any] = {}
        self.sessions: Dict[int, Set[int]] = {}
        self._next_id = 1
        self.lock = threading.Lock()  # scale (#15): calls of the thread profile share it

    def add(self, session: int, obj: Any) -> int:
        with self.lock:
            ref_id = self._next_id
            self._next_id += 1
            self.objects[ref_id] = obj
            self.sessions.setdefault(session, set()).add(ref_id)
        return ref_id

    def get(self, ref_id: int) -> Any:
        try:
            return self.objects[ref_id]  # one dict read: atomic
        except KeyError:
            raise RefError(f"ref #{ref_id} is not held by worker {os.getpid()}") from None

    def release(self, session: int, ref_ids: List[int]) -> None:
        with self.lock:
            held = self.sessions.get(session, set())
            for ref_id in ref_ids:
                self.objects.pop(ref_id, None)
                held.discard(ref_id)

    def release_session(self, session: int) -> None:
        with self.lock:
            for ref_id in self.sessions.pop(session, ()):
                self.objects.pop(ref_id, None)


class WorkerCodec(v.ValueCodec):
    """Opaque results become Refs registered in the current session; host objects, by-name
    values and in-out arrays from the host are rebuilt here."""

    def __init__(self, registry: Registry, host_numpy: bool, connection: "Connection") -> None:
        super().__init__()
        self.registry = registry
        self.host_numpy = host_numpy
        self.connection = connection
        self.session = 0
        self.path_values = False
        self.classes_sent: Set[str] = set()
        self.added: List[int] = []
        self.inout: List[Tuple[int, Any]] = []
        self.inout_calls: Dict[int, List[Tuple[int, Any]]] = {}
        self.decoders[p.EXT_REF] = lambda d: registry.get(msgpack.unpackb(d))
        self.decoders[p.EXT_METHOD] = lambda d: _bound_method(registry, msgpack.unpackb(d))
        self.decoders[p.EXT_CALLBACK] = lambda d: hostrefs.make(msgpack.unpackb(d), None)
        self.decoders[p.EXT_NDARRAY] = lambda d: v.decode_ndarray(d, writable=False)
        self.builders[p.EXT_NAME] = self._by_name
        self.builders[p.EXT_HOSTREF] = lambda items: hostrefs.make(items[1], items[2])
        self.builders[p.EXT_INOUT] = self._inout
        hostrefs.install(_call_host)

    def fallback(self, obj: Any) -> Any:
        if type(obj) is _Opaque:
            return self.as_ref(obj.value)
        if isinstance(obj, hostrefs.HostObject):  # back to the host as its own object
            return msgpack.ExtType(p.EXT_CALLBACK, msgpack.packb(obj._sb_id))
        if self.path_values and v.is_path(obj):
            return v.encode_path(self, obj)
        if v.is_namedtuple(obj):
            return v.encode_namedtuple(obj)
        if isinstance(obj, (type, types.BuiltinFunctionType)):
            name = v.builtin_name(obj)
            if name is not None:  # int, len, ValueError…: the host's own
                return v.encode_builtin(name)
        if self.host_numpy:
            kind = v.numpy_kind(obj)
            if kind == "ndarray":
                return v.encode_ndarray(self, obj)
            if kind == "scalar":
                return v.encode_npscalar(self, obj)
            if kind == "dtype":
                return v.encode_dtype(self, obj)
        return self.as_ref(obj)

    def as_ref(self, obj: Any) -> msgpack.ExtType:
        """Register ``obj`` for the host and describe it as a Ref."""
        cls = type(obj)
        ref_id = self.registry.add(self.session, obj)
        self.added.append(ref_id)
        key = v.type_key(cls)
        if key in self.classes_sent:
            described = [ref_id, cls.__module__, cls.__qualname__]
        else:  # the first Ref of a class on this connection carries its MRO (no extra trip)
            self.classes_sent.add(key)
            described = v.describe_class(ref_id, cls)
        return msgpack.ExtType(p.EXT_REF, msgpack.packb(described))

    def _by_name(self, items: List[Any]) -> Any:
        _, module, qualname, fallback = items
        plain = kinds.plain_builtin(module, qualname)
        if plain is not None:  # len, str, ValueError: every library has them anyway
            return plain
        try:
            worker = _CURRENT
            return resolve(module, qualname, worker.policy if worker is not None else _OPEN)
        except Exception as exc:
            if fallback is not None:
                return fallback  # the host's object by reference (or an enum member's value)
            raise ValueError(f"cannot resolve {module}.{qualname} in the worker: {exc}") from None

    def _inout(self, items: List[Any]) -> Any:
        _, array, host_id = items
        for known_id, known in self.inout:  # the same host array twice: one array here too
            if known_id == host_id:
                return known
        array = array.copy()  # writeable; copied back to the host before the answer
        self.inout.append((host_id, array))
        return array

    def unpack(self, data: Union[bytes, bytearray]) -> Any:
        """Decode a frame; ArgumentError (naming the frame) when only its values are bad."""
        mark = len(self.inout)
        try:
            message = super().unpack(data)
        except Exception as exc:
            del self.inout[mark:]
            head = v.frame_head(data)
            if head is None:
                raise ValueError(f"a malformed frame: {exc}") from None
            raise v.ArgumentError(f"the worker cannot decode the values: {exc}", *head) from None
        if len(self.inout) > mark:  # in-out arrays belong to the call that brought them
            if type(message) is list and len(message) > 1 and message[0] == p.CALL:
                self.inout_calls[message[1]] = self.inout[mark:]
            del self.inout[mark:]
        return message

    def copy_back(self, call_id: int) -> None:
        """Send the in-out arrays of call ``call_id`` back to the host (before its answer)."""
        for host_id, array in self.inout_calls.pop(call_id, ()):
            _call_host(host_id, [array], {})

    def pack_reply(self, packer: msgpack.Packer, message: List[Any]) -> bytes:
        """Pack a call's answer; a failed pack leaves no Refs registered for it."""
        if self.added:
            self.added = []
        try:
            body = packer.pack(v.lift_message(message))
        except BaseException as exc:
            packer.reset()
            self.registry.release(self.session, self.added)
            raise v.as_depth_error(exc) from None
        if len(body) > self.connection.max_frame:
            self.registry.release(self.session, self.added)
            raise v.Unsendable(
                f"the answer encodes to {len(body):,} bytes, over the "
                f"{self.connection.max_frame:,}-byte frame limit"
            )
        return body


def _bound_method(registry: "Registry", described: Any) -> Any:
    """``getattr(object, name)`` for a method the host looked up on a Ref (EXT_METHOD)."""
    ref_id, name = described
    subject = registry.get(ref_id)
    policy = _CURRENT.policy if _CURRENT is not None else _OPEN
    policy.check_attribute(subject, name)
    return getattr(subject, name)


class _Opaque:
    """Marks a value that must travel as a Ref even where its type travels by value."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _call_host(callback_id: int, args: List[Any], kwargs: Dict[str, Any]) -> Any:
    worker = _CURRENT
    if worker is None:
        raise RuntimeError("snakebridge: no host connection")
    return worker.callback(callback_id, args, kwargs)


class Connection:
    """Length-prefixed frames over the socket to the host."""

    def __init__(self, sock: socket.socket, max_frame: int) -> None:
        self.sock = sock
        self.max_frame = max_frame
        self.buffer = bytearray()
        self.scratch = bytearray(1 << 16)
        self.back_to_back = False
        self.spin_misses = 0
        self.spin_skip = 0
        self.view = memoryview(self.scratch)
        self.poller = select.poll()
        self.poller.register(sock.fileno(), select.POLLIN)

    def read(self) -> Optional[bytes]:
        """The next frame body, or None at EOF."""
        while True:
            if len(self.buffer) >= 4:
                (size,) = p.HEADER.unpack_from(self.buffer)
                if size > self.max_frame:
                    raise ValueError(f"frame of {size} bytes exceeds the {self.max_frame} limit")
                if len(self.buffer) >= 4 + size:
                    body = bytes(self.buffer[4 : 4 + size])
                    del self.buffer[: 4 + size]
                    return body
            got = self._receive()
            if not got:
                return None
            if not self.buffer and got >= 4:
                (size,) = p.HEADER.unpack_from(self.scratch)
                if size + 4 == got:  # exactly one whole frame: the common case
                    return bytes(self.view[4:got])
            self.buffer += self.view[:got]

    def _receive(self) -> int:
        """recv_into the scratch buffer, polling briefly before blocking when calls come fast.

        While requests arrive back to back, a short poll finds the next one without the
        scheduler wake-up (tens of microseconds) a blocked process pays; an idle worker does not
        poll at all, so the CPU cost is bounded by ``SPIN_S`` per busy call. A poll that was
        preempted (the host shares this CPU, so it cannot send while we spin) counts as a miss.

        It blocks in ``poll`` for POLLIN rather than in ``recv``: a task asleep in ``recv`` is
        also woken whenever the host reads our last answer (the socket's write-space wake-up),
        a wasted context switch per call that preempts the host when both share a CPU.
        """
        sock = self.sock
        try:  # whatever is there already (pipelined calls): no wait at all
            return sock.recv_into(self.scratch, 0, socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass
        started = time.perf_counter()
        if self.back_to_back and self.spin_skip:
            self.spin_skip -= 1
        elif self.back_to_back:
            deadline = started + SPIN_S
            last = started
            while True:
                now = time.perf_counter()
                if now >= deadline or now - last > SPIN_PREEMPTED_S:
                    break
                last = now
                try:
                    got = sock.recv_into(self.scratch, 0, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                self.spin_misses = 0
                return got
            self.spin_misses += 1  # the caller may share our CPU: pause spinning a while
            if self.spin_misses >= SPIN_MISSES:
                self.spin_misses, self.spin_skip = 0, SPIN_SKIP
        while True:
            self.poller.poll()
            try:
                got = sock.recv_into(self.scratch, 0, socket.MSG_DONTWAIT)
                break
            except BlockingIOError:  # woken for something else: wait again
                continue
        self.back_to_back = time.perf_counter() - started < BACK_TO_BACK_S
        return got

    def send(self, body: bytes) -> None:
        self.sock.sendall(_HEADER_PACK(len(body)) + body)  # p.frame, one call less


def _close_matches(name: str, candidates: Any) -> str:
    import difflib  # only for error hints: ~30 ms off every worker's start

    matches = difflib.get_close_matches(name, sorted(set(candidates)), n=3)
    return f"; did you mean {', '.join(matches)}?" if matches else ""


def _import(module_name: str) -> Any:
    module = sys.modules.get(module_name)
    if module is not None:
        return module
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            parent, _, leaf = missing.rpartition(".")
            if parent:
                known = dir(_import(parent))
            else:
                known = list(getattr(sys, "stdlib_module_names", ())) + list(sys.modules)
            hint = _close_matches(leaf or missing, known)
            raise SymbolError(
                f"no module named {missing!r} in the worker's environment ({sys.executable}){hint}"
            ) from None
        raise


_OPEN = pol.Policy(None)
_HEADER_PACK = p.HEADER.pack
_MISSING = object()


def resolve(module_name: Any, qualname: Any, policy: pol.Policy = _OPEN) -> Any:
    """The object ``module_name.qualname``, walked one attribute at a time under ``policy``."""
    if policy.open and type(qualname) is str and "." not in qualname:  # the common case, short
        module = sys.modules.get(module_name) if type(module_name) is str else None
        found = getattr(module, qualname, _MISSING) if module is not None and qualname else _MISSING
        if found is not _MISSING:
            return found
    if not isinstance(module_name, str) or not isinstance(qualname, str) or not module_name:
        raise SymbolError(f"a call names a module and a symbol, got {module_name!r}, {qualname!r}")
    policy.check_module_name(module_name)
    obj = _import(module_name)
    if not qualname:
        return obj
    path = module_name
    for part in qualname.split("."):
        policy.check_attribute(obj, part)
        try:
            obj = getattr(obj, part)
        except AttributeError:
            if isinstance(obj, type(sys)):
                submodule = f"{obj.__name__}.{part}"
                try:
                    policy.check_module_name(submodule)
                    obj = _import(submodule)
                    path = f"{path}.{part}"
                    continue
                except (SymbolError, pol.NotAllowed):
                    pass
            hint = _close_matches(part, _public(dir(obj), policy))
            raise SymbolError(f"{path} has no attribute {part!r}{hint}") from None
        path = f"{path}.{part}"
        policy.check_reached(obj, path)
    return obj


def _public(names: List[str], policy: pol.Policy) -> List[str]:
    """Names worth suggesting: the public ones when a boundary is set."""
    return names if policy.open else [name for name in names if not name.startswith("_")]


def _builtin_base(exc: BaseException) -> Optional[str]:
    for cls in type(exc).__mro__:
        if cls.__module__ == "builtins" and issubclass(cls, BaseException):
            return cls.__name__
    return None


_GROUP = getattr(builtins, "BaseExceptionGroup", None)  # Python >= 3.11


def error_payload(
    kind: str, exc: BaseException, with_traceback: bool = True, depth: int = 0
) -> Dict[str, Any]:
    cls = type(exc)
    payload: Dict[str, Any] = {
        "kind": kind,
        "type": v.type_key(cls),
        "builtin": _builtin_base(exc),
        "mro": [v.type_key(base) for base in cls.__mro__[1:-1]],  # codegen: facade exceptions
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(cls, exc, exc.__traceback__))
        if with_traceback
        else "",
        "host_exception": getattr(exc, "_sb_host_exception", None),
    }
    if _GROUP is not None and isinstance(exc, _GROUP):  # members travel too, for except*
        payload["message"] = exc.message
        if depth < 8:
            members = exc.exceptions[:1000]
            payload["exceptions"] = [error_payload(kind, e, False, depth + 1) for e in members]
    return payload


def _exit_exception(spec: Any) -> Any:
    if spec is None:
        return None, None, None
    name, message = spec
    cls = getattr(builtins, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        cls = Exception
    exc = cls(message)
    return cls, exc, None


def _memory_rss() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class Worker:
    """One worker process: a registry, a codec and the dispatch loop.

    Exactly one thread at a time reads the socket (the *reader role*): the main loop while
    idle, or any thread waiting for a host callback's answer — callbacks may come from threads
    the library started. What the reader reads is routed by id: callback answers to the thread
    waiting for them, nested calls (sent from inside a host callback) run at once, other calls
    wait until the running call has finished (``deferred``), so calls never interleave.
    """

    def __init__(
        self, connection: Connection, host_numpy: bool, channel_fd: Optional[int] = None
    ) -> None:
        self.connection = connection
        self.lanes = lanes.Lanes(channel_fd)
        self.call_lanes: Dict[int, socket.socket] = {}  # lane calls running -> their lane
        self.top: Tuple[int, Optional[socket.socket]] = (0, None)  # top-level call, its lane
        self.registry = Registry()
        self.codec = WorkerCodec(self.registry, host_numpy, connection)
        self.packer = self.codec.packer()
        self.calls = 0
        self.options: Dict[str, Any] = {}
        self.policy = _OPEN
        self.send_lock = threading.Lock()
        self.cv_lock = threading.RLock()
        self.cv = threading.Condition(self.cv_lock)  # hot paths enter cv_lock directly
        self.reading = False
        self.waiting = 0  # threads waiting in _lead_or_wait
        self.replies: Dict[int, List[Any]] = {}
        self.deferred: Deque[List[Any]] = collections.deque()
        self._local = threading.local()  # per thread: calls running (nested on top), session
        self.stopping = False
        self._requests = itertools.count(1)
        self.threads: Any = None  # scale (#15): the thread profile's pool of call threads
        self._released_lock = threading.Lock()

    @property
    def running(self) -> List[int]:
        """Ids of the calls this thread is executing (nested ones on top)."""
        stack: Optional[List[int]] = getattr(self._local, "running", None)
        if stack is None:
            stack = self._local.running = []
        return stack

    def use_threads(self, count: int) -> None:
        """Thread profile (#15): non-nested calls run on ``count`` threads, answered by id."""
        import concurrent.futures

        self.threads = concurrent.futures.ThreadPoolExecutor(count, "snakebridge-call")

    def send(self, message: List[Any], lane: Optional[socket.socket] = None) -> None:
        with self.send_lock:
            self._write(self.packer.pack(message), lane)

    def _write(self, body: bytes, lane: Optional[socket.socket]) -> None:
        """One frame to the host: on ``lane`` (that call's answer lane), else the connection."""
        if lane is None:
            self.connection.send(body)
        else:
            lanes.write(lane, body)

    def reply(self, kind: int, call_id: int, payload: Any) -> None:
        codec = self.codec
        lane = self.call_lanes.get(call_id) if self.call_lanes else None
        if codec.inout_calls:
            try:
                codec.copy_back(call_id)  # in-out arrays see the call's writes first
            except Exception as exc:
                kind, payload = p.ERROR, error_payload(p.ERR_REMOTE, exc)
        if _RELEASED_CALLBACKS:  # tell the host which of its callables we no longer hold
            with self._released_lock:
                released = _RELEASED_CALLBACKS[:]
                del _RELEASED_CALLBACKS[: len(released)]
            if released:
                self.send([p.CALLBACK_RELEASE, 0, released], lane)
        with self.send_lock:
            state = getattr(self._local, "call", None)  # this thread's call (thread profile)
            if state is not None:
                codec.session, codec.path_values = state
            try:
                body = codec.pack_reply(self.packer, [kind, call_id, payload])
            except Exception as exc:  # an unencodable result: report it instead of dying
                error_kind = p.ERR_DECODE if isinstance(exc, v.Unsendable) else p.ERR_REMOTE
                body = self.packer.pack([p.ERROR, call_id, error_payload(error_kind, exc)])
            self._write(body, lane)

    # -- the reader role ------------------------------------------------------------------------
    def _read(self) -> List[Any]:
        """One decoded frame (reader role held); exits when the host has gone."""
        while True:
            body = self.connection.read()
            if body is None:
                os._exit(0)
            try:
                message: List[Any] = self.codec.unpack(body)
            except v.ArgumentError as exc:  # a whole frame whose values did not decode
                if exc.kind in (p.CALLBACK_RESULT, p.CALLBACK_ERROR):  # the waiter raises it
                    failure = {"type": "ValueError", "builtin": "ValueError", "message": str(exc)}
                    return [p.CALLBACK_ERROR, exc.call_id, failure, exc.request]
                if exc.kind != p.CALL:
                    raise
                lane = self.lanes.by_number.get(exc.request) if exc.request else None
                self.send([p.ERROR, exc.call_id, error_payload(p.ERR_DECODE, exc, False)], lane)
                continue
            return message

    def _lead_or_wait(self, ready: Any) -> bool:
        """With ``cv`` held: wait until ``ready()`` or the reader role is free; True if taken."""
        while self.reading and not ready():
            self.waiting += 1
            try:
                self.cv.wait()
            finally:
                self.waiting -= 1
        if ready():
            return False
        self.reading = True
        return True

    def _done_reading(self) -> None:
        with self.cv_lock:
            self.reading = False
            if self.waiting:
                self.cv.notify_all()

    def _has_deferred(self) -> bool:
        return bool(self.deferred)

    def read_and_act(self, in_callback: bool) -> None:
        """Read one frame (reader role held) and act on it, giving the role up."""
        try:
            message = self._read()
        except BaseException:
            self._done_reading()
            raise
        self._act_on(message, in_callback)

    def _act_on(self, message: Any, in_callback: bool) -> None:
        """Route a frame just read and give the reader role up.

        A frame other than a call is acted on *before* the role is given up: a thread woken by
        that (waiting for a callback's answer, or for a stream's credit) then finds it done,
        instead of taking the role and blocking on a frame that never comes (#15: with
        threads, another thread may be the one reading). A call is routed after (it may run
        long in this thread).
        """
        if type(message) is list and message and message[0] == p.CALL:
            self._done_reading()
            self.route(message, in_callback)
            return
        try:
            self.route(message, in_callback)
        finally:
            self._done_reading()

    def run(self) -> None:
        lock = self.cv_lock
        while not self.stopping:
            with lock:
                message = self.deferred.popleft() if self.deferred else None
                if message is None:
                    if not self.reading:  # the common case: nobody else reads, lead
                        self.reading = True
                    elif not self._lead_or_wait(self._has_deferred):
                        continue
            if message is None:
                try:
                    message = self._read()
                except BaseException as exc:
                    self._done_reading()
                    if not isinstance(exc, Exception):
                        raise
                    self.send([p.ERROR, 0, error_payload(p.ERR_PROTOCOL, exc, False)])
                    return
                if (  # the common case, in short (what _act_on and route do)
                    type(message) is list
                    and len(message) >= 10
                    and message[0] == p.CALL
                    and self.threads is None
                ):
                    with lock:
                        self.reading = False
                        if self.waiting:
                            self.cv.notify_all()
                    self.handle_call(message)
                    continue
                self._act_on(message, in_callback=False)
                continue
            self.route(message, in_callback=False)

    def route(self, message: Any, in_callback: bool) -> None:
        """Act on one frame from the host."""
        if type(message) is not list or len(message) < 2:
            raise ValueError(f"a frame is not [kind, id, ...]: {message!r:.60}")
        kind = message[0]
        if kind == p.CALL:
            nested = bool(message[3] & p.FLAG_NESTED) if len(message) > 3 else False
            if self.threads is not None and not nested:  # thread profile: runs beside others
                if len(message) > 3 and message[3] & p.FLAG_STREAM:
                    streams.expect(message[1])  # its credit may arrive before its thread runs
                self.threads.submit(self.handle_call, message)
            elif in_callback and not nested:
                with self.cv:
                    self.deferred.append(message)
                    self.cv.notify_all()
            else:
                self.handle_call(message)
        elif kind in (p.CALLBACK_RESULT, p.CALLBACK_ERROR):
            request = message[3] if len(message) > 3 else message[1]
            with self.cv:
                self.replies[request] = message
                self.cv.notify_all()
        elif kind == p.RELEASE:
            self.registry.release(message[2], message[3])
        elif kind == p.RELEASE_SESSION:
            self.registry.release_session(message[2])
        elif kind == p.PING:
            stats = {"rss": _memory_rss(), "refs": len(self.registry.objects), "calls": self.calls}
            self.send([p.PONG, message[1], stats])
        elif kind == p.SHUTDOWN:
            self.stopping = True
        elif kind == p.LANE:
            self.lanes.open(message[1], self.top[0])
        elif kind in (p.CREDIT, p.CANCEL):  # streams (#14); late ones are dropped
            streams.control(message)
        else:
            problem = ValueError(f"unexpected frame kind {kind!r}")
            self.send([p.ERROR, message[1], error_payload(p.ERR_PROTOCOL, problem, False)])

    def handle_call(self, message: List[Any]) -> None:
        lane = None
        if len(message) > 10:  # sent with a lane: its answer and callbacks go there
            lane = self.lanes.by_number.get(message[10])
            message = message[:10]
        _, call_id, session, flags, module, qualname, ref_id, op, args, kwargs = message
        self.calls += 1
        codec, local = self.codec, self._local
        outer = codec.session, codec.path_values
        outer_call = getattr(local, "call", None)
        codec.session = session
        codec.path_values = path_values = bool(flags & p.FLAG_PATH_VALUES)
        local.call = (session, path_values)
        try:
            running = local.running
        except AttributeError:
            running = self.running
        running.append(call_id)
        top = not flags & p.FLAG_NESTED and self.threads is None
        if lane is not None:
            self.call_lanes[call_id] = lane
        if top:
            self.top = (call_id, lane)
            began = self.lanes.started(call_id)
        try:
            self._execute(call_id, module, qualname, ref_id, op, args, kwargs, flags)
        finally:
            if flags & p.FLAG_STREAM:
                streams.forget(call_id)
            if lane is not None:
                del self.call_lanes[call_id]
            if top:
                self.top = (0, None)
                self.lanes.finished(began)
            running.pop()
            local.call = outer_call
            codec.session, codec.path_values = outer

    def _execute(
        self,
        call_id: int,
        module: Optional[str],
        qualname: str,
        ref_id: Optional[int],
        op: str,
        args: List[Any],
        kwargs: Optional[Dict[str, Any]],
        flags: int = 0,
    ) -> None:
        try:
            subject: Any = self.registry.get(ref_id) if ref_id is not None else None
            if module is not None:
                subject = resolve(module, qualname, self.policy)
            if op == p.OP_CALL and not kwargs:  # the common case, in short (what apply does)
                result = subject(*args)
            else:
                result = self.apply(subject, op, qualname, args, kwargs or {})
        except (SymbolError, pol.NameRefused) as exc:
            self.reply(p.ERROR, call_id, error_payload(p.ERR_SYMBOL, exc, False))
        except pol.NotAllowed as exc:
            self.reply(p.ERROR, call_id, error_payload(p.ERR_NOT_ALLOWED, exc, False))
        except RefError as exc:
            self.reply(p.ERROR, call_id, error_payload(p.ERR_REF, exc, False))
        except BaseException as exc:  # SystemExit from a library is an answer, not our exit
            self.reply(p.ERROR, call_id, error_payload(p.ERR_REMOTE, exc))
        else:
            if flags & p.FLAG_STREAM:  # streams (#14): CHUNK frames under credit
                streams.push(self, call_id, result, error_payload)
            else:
                self.reply(p.RESULT, call_id, result)

    def apply(
        self, subject: Any, op: str, qualname: str, args: List[Any], kwargs: Dict[str, Any]
    ) -> Any:
        if op == p.OP_CALL:
            return subject(*args, **kwargs)
        if op == p.OP_GET:
            return subject
        if op == p.OP_METHOD:
            self.policy.check_attribute(subject, args[0])
            return getattr(subject, args[0])(*args[1:], **kwargs)
        if op == p.OP_GETATTR:
            self.policy.check_attribute(subject, args[0])
            found = getattr(subject, args[0])
            self.policy.check_reached(found, f"attribute {args[0]!r}")
            return found
        if op == p.OP_SETATTR:
            self.policy.check_attribute(subject, args[0], write=True)
            setattr(subject, args[0], args[1])
            return None
        if op == p.OP_DELATTR:
            self.policy.check_attribute(subject, args[0], write=True)
            delattr(subject, args[0])
            return None
        if op == p.OP_OPERATOR:
            self.policy.check_operator(qualname)
            return getattr(operator, qualname)(*args)
        if op == p.OP_BUILTIN:
            function = _BUILTIN_OPS.get(qualname)
            if function is None:
                raise SymbolError(f"{qualname!r} is not a builtin a Ref can forward")
            if qualname == "iter":
                return iter(subject)
            return function(subject, *args)
        if op == p.OP_NEXT_BATCH:
            items: List[Any] = []
            for _ in range(int(args[0])):
                try:
                    items.append(next(subject))
                except StopIteration:
                    return [items, True]
            return [items, False]
        if op == p.OP_ITER:
            iterator = iter(subject)
            return [True, None] if iterator is subject else [False, _Opaque(iterator)]
        if op == p.OP_TYPE_MRO:
            return [v.type_key(cls) for cls in type(subject).__mro__]
        if op == p.OP_EXIT:
            return subject.__exit__(*_exit_exception(args[0]))
        raise SymbolError(f"unknown operation {op!r}")

    def callback(self, callback_id: int, args: List[Any], kwargs: Dict[str, Any]) -> Any:
        """Ask the host to run callback ``callback_id`` and wait for its answer (any thread)."""
        request = next(self._requests)
        call_id = self.running[-1] if self.running else 0
        lane = self.call_lanes.get(call_id) if call_id else self.top[1]
        self.send([p.CALLBACK, callback_id, args, kwargs, call_id, request], lane)
        while True:
            with self.cv:
                if not self._lead_or_wait(lambda: request in self.replies):
                    message = self.replies.pop(request)
                    break
            self.read_and_act(in_callback=True)
        if message[0] == p.CALLBACK_ERROR:
            raise _callback_error(message[2])
        return message[2]


def _callback_error(payload: Dict[str, Any]) -> BaseException:
    return hostrefs.callback_exception(payload)


_CURRENT: Optional[Worker] = None
_RELEASED_CALLBACKS: List[int] = hostrefs.RELEASED


def _watch_parent(host_pid: int) -> None:
    """Exit when the host dies (Linux: parent-death signal; elsewhere: poll the parent pid)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != host_pid:
            os._exit(0)
        return

    def poll() -> None:
        while os.getppid() == host_pid:
            time.sleep(0.25)
        os._exit(0)

    threading.Thread(target=poll, name="snakebridge-parent-watch", daemon=True).start()


def _read_init(connection: Connection) -> Dict[str, Any]:
    """The host's INIT options (``host_numpy``, ``max_frame`` and any the host adds)."""
    body = connection.read()
    if body is None:
        os._exit(0)
    kind, _, options = msgpack.unpackb(body, raw=False)
    if kind != p.INIT or not isinstance(options, dict):
        raise SystemExit(f"snakebridge worker: expected INIT, got frame kind {kind}")
    shm.configure_worker(options.get("shm"))  # dataplane: shared-memory settings of the host
    return options


def _policy_from(options: Dict[str, Any]) -> pol.Policy:
    """The allowlist the host sent; a malformed one allows nothing (fail closed)."""
    try:
        return pol.Policy.from_options(options.get("allowlist"))
    except ValueError as exc:
        sys.stderr.write(f"snakebridge worker {os.getpid()}: {exc}; nothing is allowed\n")
        return pol.Policy({})


def main() -> None:
    global _CURRENT
    fds = [int(fd) for fd in sys.argv[2].split(",")]  # the connection, the lane channel
    fd, host_pid = fds[0], int(sys.argv[3])
    if len(sys.argv) > 4:  # scale (#15): forked by the zygote, whose own death ends us too
        from snakebridge_worker import zygote

        zygote.watch_host(host_pid)
    else:
        _watch_parent(host_pid)
    import faulthandler

    faulthandler.enable()
    sock = socket.socket(fileno=fd)
    connection = Connection(sock, p.DEFAULT_MAX_FRAME)
    hello = {
        "protocol": p.PROTOCOL_VERSION,
        "python": ".".join(map(str, sys.version_info[:3])),
        "implementation": sys.implementation.name,
        "pid": os.getpid(),
        "executable": sys.executable,
        "data": oob.capabilities(),  # dataplane: pyarrow/pandas here (how frames are sent)
    }
    options = _read_init(connection)
    try:  # streams (#14): helpers, preload and init run before HELLO, off every call's clock
        hello["startup"] = startup.prepare(options)
    except startup.StartupError as exc:
        sys.stderr.write(f"snakebridge worker {os.getpid()}: {exc}\n")
        os._exit(3)
    connection.send(msgpack.packb([p.HELLO, 0, hello]))
    connection.max_frame = int(options.get("max_frame", p.DEFAULT_MAX_FRAME))
    worker = Worker(connection, bool(options.get("host_numpy")), fds[1] if len(fds) > 1 else None)
    worker.options = options
    worker.policy = _policy_from(options)
    if int(options.get("threads") or 1) > 1:  # scale (#15): the thread profile
        worker.use_threads(int(options["threads"]))
    _CURRENT = worker
    try:
        worker.run()
    except (ConnectionError, ValueError) as exc:
        sys.stderr.write(f"snakebridge worker {os.getpid()}: connection closed: {exc}\n")
    os._exit(0)
