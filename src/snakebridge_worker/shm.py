"""Shared-memory segments for out-of-band buffers (stdlib only; used by host and worker).

A segment is a file in ``/dev/shm`` named ``sb-<run>-<creator pid>-<128-bit token>``, mode
0600, opened with ``O_NOFOLLOW``. ``<run>`` is ``<host pid>x<host start time>``: every segment of
one host session carries it, so a later host can sweep the segments of a host that died. The
first 64 bytes are a header the two sides coordinate through:

- bytes 0-3 ``SBM1``; byte 4 the state (0 free, 1 busy, 2 retired);
- bytes 8-15 the generation (bumped on every reuse, and checked against the descriptor);
- bytes 16-19 the pid of the process that mapped it for the current generation.

The sender fills a segment from its pool, marks it busy and sends a descriptor; the receiver
maps it (one mapping per transfer, whose lifetime is that of the views made from it) and marks
it free when the last view dies; the sender then reuses it. Reuse is what makes this fast: the
pages of a fresh tmpfs file cost far more to fault in than copying into them (see
docs/dataplane.md).

(Over 350 lines on purpose: naming, mode checks, the header protocol, pooling and the sweep of
a dead host's segments are one safety story, tested together.)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import re
import stat
import struct
import threading
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

SHM_DIR = "/dev/shm"
HEADER_SIZE = 64
MAGIC = b"SBM1"
FREE, BUSY, RETIRED = 0, 1, 2
_GEN = struct.Struct("<Q")
_PID = struct.Struct("<I")
_GEN_AT, _PID_AT, _STATE_AT = 8, 16, 4
NAME_RE = re.compile(r"sb-(\d+)x(\d+)-(\d+)-[0-9a-f]{32}\Z")
DEFAULT_THRESHOLD = 128 * 1024  # measured: see docs/dataplane.md, "The threshold"
_POOL_KEEP = 6  # free segments kept for reuse (and at most _POOL_KEEP_BYTES of them)
_POOL_KEEP_BYTES = 512 * 1024 * 1024
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


class ShmError(ValueError):
    """A descriptor that does not name a valid live segment (a decode error, never a crash)."""


def available() -> bool:
    """Whether this platform has a tmpfs ``/dev/shm`` to put segments in."""
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)


def process_start(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot (Linux), else ``"0"``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
        return data[data.rindex(b")") + 2 :].split()[19].decode()
    except (OSError, ValueError, IndexError):
        return "0"


def alive(pid: int, start: Optional[str] = None) -> bool:
    """Whether ``pid`` runs (and, when ``start`` is given, is the process that started then)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start is None or start == "0" or process_start(pid) in (start, "0")


class Config:
    """This process's data-plane settings (set by the host's runtime, or by the worker's INIT)."""

    def __init__(self) -> None:
        self.enabled = False
        self.host = False  # the host opens peers' segments once and removes their names
        self.run = ""  # "<host pid>x<host start>"
        self.threshold = DEFAULT_THRESHOLD
        self.threshold_source: Optional[Callable[[], int]] = None
        self.peer_arrow = False  # whether the peer has pyarrow (a worker: its host, from INIT)
        self.peer_pandas = False
        self.peer_source: Optional[Callable[[], Optional[Tuple[bool, bool]]]] = None
        """The host's: (pyarrow, pandas) of the worker a value is being sent to, if known."""
        self.reuse = True  # False: a fresh segment per transfer (for measurement)

    def limit(self) -> int:
        """The size from which buffers go out of band (the host reads its settings each time:
        a pool restarted with other settings applies them)."""
        source = self.threshold_source
        if source is not None:
            self.threshold = source()
        return self.threshold


CONFIG = Config()


def segment_path(name: str) -> str:
    return os.path.join(SHM_DIR, name)


class Segment:
    """A segment this process created and writes into."""

    __slots__ = ("__weakref__", "capacity", "generation", "mm", "name")

    def __init__(self, capacity: int) -> None:
        self.name = f"sb-{CONFIG.run}-{os.getpid()}-{os.urandom(16).hex()}"
        fd = os.open(
            segment_path(self.name), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
        )
        try:
            os.ftruncate(fd, HEADER_SIZE + capacity)
            self.mm = mmap.mmap(fd, HEADER_SIZE + capacity)
        except BaseException:
            os.close(fd)
            unlink(self.name)
            raise
        os.close(fd)
        self.mm[0:4] = MAGIC
        self.capacity = capacity
        self.generation = 0

    @property
    def state(self) -> int:
        return self.mm[_STATE_AT]

    @property
    def reader(self) -> int:
        return int(_PID.unpack_from(self.mm, _PID_AT)[0])

    def claim(self) -> int:
        """Start a new generation, busy, with no reader yet; the generation."""
        self.generation += 1
        _GEN.pack_into(self.mm, _GEN_AT, self.generation)
        _PID.pack_into(self.mm, _PID_AT, 0)
        self.mm[_STATE_AT] = BUSY
        return self.generation

    def data(self, nbytes: int) -> memoryview:
        """A writable view of the first ``nbytes`` data bytes."""
        return memoryview(self.mm)[HEADER_SIZE : HEADER_SIZE + nbytes]

    def retire(self) -> None:
        """Mark retired (a reader's cached handle sees it), remove the name, unmap if possible."""
        try:
            self.mm[_STATE_AT] = RETIRED
        except ValueError:  # already closed
            return
        unlink(self.name)
        with contextlib.suppress(BufferError):  # a view lives on: unmapped when it goes
            self.mm.close()


def unlink(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(segment_path(name))


class Pool:
    """Segments this process sends through: busy ones come back when the reader frees them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.free: List[Segment] = []
        self.busy: List[Segment] = []

    def acquire(self, nbytes: int) -> Segment:
        """A segment holding at least ``nbytes`` (reused when one is free), claimed busy."""
        with self.lock:
            if CONFIG.reuse:
                self._reclaim()
                best = None
                for segment in self.free:
                    fits = nbytes <= segment.capacity <= 2 * nbytes + (1 << 20)
                    if fits and (best is None or segment.capacity < best.capacity):
                        best = segment
                if best is not None:
                    self.free.remove(best)
                    best.claim()
                    self.busy.append(best)
                    return best
            segment = Segment(max(nbytes, 1))
            segment.claim()
            self.busy.append(segment)
            self._trim(_POOL_KEEP, _POOL_KEEP_BYTES)
            return segment

    def _reclaim(self) -> None:
        """Move to the free list every busy segment its reader freed, or whose reader died."""
        for segment in list(self.busy):
            state = segment.state
            if state == FREE or (state == BUSY and segment.reader and not alive(segment.reader)):
                self.busy.remove(segment)
                self.free.append(segment)

    def reader_gone(self, pid: int) -> None:
        """Reclaim the segments ``pid`` had mapped (it died holding them)."""
        with self.lock:
            for segment in list(self.busy):
                if segment.reader == pid:
                    self.busy.remove(segment)
                    self.free.append(segment)

    def _trim(self, keep: int, keep_bytes: int) -> None:
        while self.free and (
            len(self.free) > keep or sum(s.capacity for s in self.free) > keep_bytes
        ):
            self.free.pop(0).retire()
        if not CONFIG.reuse:
            for segment in [s for s in self.busy if s.state == FREE]:
                self.busy.remove(segment)
                segment.retire()

    def trim(self, unsent_too: bool = False) -> None:
        """Retire every free segment (and, with ``unsent_too``, those never mapped by a reader)."""
        with self.lock:
            self._reclaim()
            if unsent_too:
                for segment in [s for s in self.busy if s.state == BUSY and not s.reader]:
                    self.busy.remove(segment)
                    self.free.append(segment)
            self._trim(0, 0)

    def close(self) -> None:
        """Retire everything (process exit)."""
        with self.lock:
            for segment in self.free + self.busy:
                segment.retire()
            self.free, self.busy = [], []


POOL = Pool()


class Opened:
    """A segment another process created: opened by name once, mapped once, then reused."""

    __slots__ = ("creator", "mm", "name", "size")

    def __init__(self, name: str, expect_run: str) -> None:
        match = NAME_RE.match(name) if isinstance(name, str) else None
        if match is None or f"{match.group(1)}x{match.group(2)}" != expect_run:
            raise ShmError(f"descriptor names no segment of this session: {name!r:.80}")
        self.name, self.creator = name, int(match.group(3))
        try:
            fd = os.open(segment_path(name), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            reason = "it is gone" if exc.errno == errno.ENOENT else exc.strerror
            raise ShmError(f"cannot open shared-memory segment {name}: {reason}") from None
        try:
            info = os.fstat(fd)
            if (
                not stat.S_ISREG(info.st_mode)
                or info.st_uid != os.getuid()
                or info.st_mode & 0o077
                or info.st_size <= HEADER_SIZE
            ):
                raise ShmError(
                    f"segment {name} is not a private shared-memory segment of this user"
                )
            self.mm = _map(fd, info.st_size)
        finally:
            os.close(fd)
        if self.mm[0:4] != MAGIC:
            self.mm.close()
            raise ShmError(f"segment {name} has no snakebridge header")
        self.size = info.st_size - HEADER_SIZE

    def view(self, generation: int, offset: int, nbytes: int, readonly: bool) -> memoryview:
        """The bytes of one transfer; the segment is marked free when the last view of them dies.

        ShmError when the range lies outside the segment or the generation is not current.
        Generation 0 (resident data) is never reused, so nothing is marked.
        """
        if not (type(offset) is int and type(nbytes) is int and type(generation) is int):
            raise ShmError("descriptor offset, length and generation must be integers")
        if offset < 0 or nbytes <= 0 or offset + nbytes > self.size:
            raise ShmError(
                f"descriptor range {offset}+{nbytes} lies outside segment {self.name} "
                f"({self.size} data bytes)"
            )
        mm = self.mm
        if mm[_STATE_AT] == RETIRED:
            raise ShmError(f"segment {self.name} was released")
        if generation:
            _PID.pack_into(mm, _PID_AT, os.getpid())
            if _GEN.unpack_from(mm, _GEN_AT)[0] != generation or mm[_STATE_AT] != BUSY:
                raise ShmError(f"segment {self.name} was reused or released before it was read")
        # A distinct exporter per transfer: numpy, Arrow and memoryviews keep it (not the shared
        # mapping) alive, so its death tells exactly when the transfer's last view is gone.
        exporter = (ctypes.c_char * nbytes).from_buffer(mm, HEADER_SIZE + offset)
        if generation:
            weakref.finalize(exporter, _mark_free, mm, generation)
        view = memoryview(exporter)
        return view.toreadonly() if readonly else view

    def retired(self) -> bool:
        try:
            return bool(self.mm[_STATE_AT] == RETIRED)
        except ValueError:
            return True

    def close(self) -> None:
        with contextlib.suppress(BufferError):  # views live on: unmapped when the last goes
            self.mm.close()


def _map(fd: int, size: int) -> mmap.mmap:
    """A shared read-write mapping, every page faulted in at once (the reader reads them all).

    Read-only views are made with ``toreadonly``: a PROT_READ mapping would still export a
    writable buffer, and a write through it would fault.
    """
    if _POPULATE:
        flags = mmap.MAP_SHARED | _POPULATE
        return mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    return mmap.mmap(fd, size)


def _mark_free(mm: mmap.mmap, generation: int) -> None:
    try:
        if _GEN.unpack_from(mm, _GEN_AT)[0] == generation:
            mm[_STATE_AT] = FREE
    except (ValueError, OSError):
        pass


class OpenCache:
    """Peers' segments this process has open, by name.

    The host removes a worker segment's name as soon as it has it open (``unlink``); workers
    keep the host's names, which other workers may still need.
    """

    def __init__(self, unlink: bool, keep: int = 32) -> None:
        self.lock = threading.Lock()
        self.opened: Dict[str, Opened] = {}
        self.unlink, self.keep = unlink, keep

    def get(self, name: str, expect_run: str) -> Opened:
        with self.lock:
            found = self.opened.get(name)
            if found is not None:
                return found
            for other in [o for o in self.opened.values() if o.retired()]:
                self._drop(other)
            opened = Opened(name, expect_run)
            if opened.creator == os.getpid():
                opened.close()
                raise ShmError(f"descriptor names a segment of this process: {name}")
            if self.unlink:
                unlink(name)  # the host owns cleanup: once open, the name is not needed
            while len(self.opened) >= self.keep:
                self._drop(next(iter(self.opened.values())))
            self.opened[name] = opened
            return opened

    def _drop(self, opened: Opened) -> None:
        self.opened.pop(opened.name, None)
        opened.close()

    def creator_gone(self, pid: int) -> None:
        with self.lock:
            for opened in [o for o in self.opened.values() if o.creator == pid]:
                self._drop(opened)


OPENED = OpenCache(unlink=False)


def sweep(keep_run: str, creator: Optional[int] = None) -> List[str]:
    """Unlink this user's segments of dead hosts (and, given ``creator``, that process's own
    segments of run ``keep_run``); the names removed."""
    removed: List[str] = []
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return removed
    uid = os.getuid()
    for name in names:
        match = NAME_RE.match(name)
        if match is None:
            continue
        run = f"{match.group(1)}x{match.group(2)}"
        if run == keep_run:
            if creator is None or int(match.group(3)) != creator:
                continue
        elif alive(int(match.group(1)), match.group(2)):
            continue
        try:
            if os.stat(segment_path(name), follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue
        unlink(name)
        removed.append(name)
    return removed


def configure_worker(options: Any) -> None:
    """Apply the ``shm`` entry of the INIT options (absent: the host sends nothing out of band)."""
    if not isinstance(options, dict) or not available():
        return
    CONFIG.run = str(options.get("run", ""))
    CONFIG.threshold = int(options.get("threshold", DEFAULT_THRESHOLD))
    CONFIG.peer_arrow = bool(options.get("arrow"))
    CONFIG.peer_pandas = bool(options.get("pandas"))
    CONFIG.reuse = bool(options.get("reuse", True))
    CONFIG.enabled = bool(CONFIG.run) and CONFIG.threshold >= 0
