"""Writing many files safely: temporaries, folder locks, a thread pool of workers, and
the checks of the crop size and worker count the writers take.

Shared by the export and the crop cache, which both write results that must be
complete or absent (never half-written), must not be written by two processes at
once, and are dominated by per-file I/O and decoding that release the GIL.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

PART_SUFFIX = ".part"


def temp_name(path: str | os.PathLike[str]) -> str:
    """A unique temporary sibling of ``path``, to be renamed onto it when complete.

    Hidden (leading dot) so the catalog's own image scan ignores it, unique so that
    nothing collides with it, and in the final folder so ``os.replace`` is a rename.
    """
    folder, name = os.path.split(os.fspath(path))
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}{PART_SUFFIX}")


def is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(PART_SUFFIX)


def remove_temporaries(folder: str | os.PathLike[str]) -> None:
    """Delete what a killed run left half-written (call it under :func:`locked`)."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if is_temporary(entry.name) and entry.is_file():
                os.unlink(entry.path)


def discard(path: str | os.PathLike[str]) -> None:
    """Remove a temporary file, best effort: it runs while another error is on its way
    (a full disk, a read-only folder), which must reach the user, not this one."""
    try:
        os.unlink(path)
    except OSError:
        pass


#: errno values that say a destination cannot take a file, and what to do about it.
_WRITE_ERRNOS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device", "free some space or choose another place"),
    errno.EDQUOT: ("the disk quota is exhausted", "free some space or choose another place"),
    errno.EFBIG: ("the file is too large for the file system", "choose another place"),
    errno.EROFS: ("the file system is read-only", "choose a writable place"),
    errno.EACCES: ("permission denied", "choose a place you can write to or fix its permissions"),
    errno.EPERM: ("permission denied", "choose a place you can write to or fix its permissions"),
}
#: Of those, the ones that can only be the destination's fault (a source file can be
#: unreadable, EACCES, but it cannot be full).
_FULL_OR_READ_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def is_write_error(err: BaseException, target: str | os.PathLike[str] | None = None) -> bool:
    """True when the OSError ``err`` is the destination's fault: a full or read-only file
    system, or any error naming ``target`` (the file being written)."""
    if not isinstance(err, OSError):
        return False
    if err.errno in _FULL_OR_READ_ONLY:
        return True
    return target is not None and os.fspath(target) in (err.filename, err.filename2)


def write_problem(err: OSError, where: str | os.PathLike[str]) -> str:
    """One line saying why writing into ``where`` failed and what to do, e.g. "cannot
    write into /data/out: no space left on the device; free some space or choose another
    place, then run the same command again"."""
    why, advice = _WRITE_ERRNOS.get(err.errno or 0, (err.strerror or str(err), "fix the cause"))
    return f"cannot write into {os.fspath(where)}: {why}; {advice}, then run the same command again"


def reserve(fd: int, size: int) -> None:
    """Allocate ``size`` bytes of the open file ``fd`` on disk now.

    A file written through a memory map gets its blocks only when a page is first
    written; on a full disk that write kills the process with SIGBUS, no message.
    Reserved first, a full disk is an ``OSError(ENOSPC)`` here instead. File systems
    that cannot reserve space (and platforms without ``posix_fallocate``) skip it.
    """
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is None or size <= 0:  # pragma: no cover - not on Linux
        return
    try:
        fallocate(fd, 0, size)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise


@contextmanager
def locked(folder: str | os.PathLike[str], busy: Callable[[], Exception]) -> Iterator[None]:
    """Hold an exclusive lock on ``folder``; raise ``busy()`` if another process has it.

    A lock on the folder itself (flock), not a lock file: the kernel releases it when
    the process dies, so a killed run never blocks its own resumption. Where flock is
    not available (Windows) there is no lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(Path(folder), os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy() from None
        yield
    finally:
        os.close(fd)  # also releases the lock


def check_size(size: int) -> None:
    """ValueError unless ``size`` (a square crop's side in pixels, as the export and the
    crop cache write them) is a whole number of at least 1; a bool is refused, though
    Python counts it an int, since ``True`` pixels is a caller's mistake."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive whole number of pixels, got {size!r}")


def check_workers(workers: int | None) -> None:
    """ValueError unless ``workers`` (threads for :func:`run_threads`) is None (the
    caller's default) or at least 1; a bool is refused as for :func:`check_size`."""
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise ValueError(f"workers must be at least 1 (or None for the default), got {workers}")


def run_threads(
    tasks: Sequence[T],
    work: Callable[[T], None],
    workers: int,
    on_done: Callable[[], None] | None = None,
    name: str = "worker",
) -> None:
    """Run ``work(task)`` for every task on ``workers`` threads; ``on_done`` per task here.

    Threads take tasks one at a time from a shared queue and report each finished one
    on another: two queue operations per task, where a future per task (submit +
    wait) cost more than copying a small file from the page cache. ``on_done`` runs in
    the calling thread. On any error (a task, ``on_done``, Ctrl-C) the threads stop
    taking tasks and finish the one they hold, so each task ends complete or not
    started; the first error is raised here.
    """
    if not tasks:
        return
    pending: queue.SimpleQueue[T] = queue.SimpleQueue()
    for task in tasks:
        pending.put(task)
    finished: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            try:
                task = pending.get_nowait()
            except queue.Empty:
                return
            try:
                work(task)
            except BaseException as e:  # noqa: BLE001 - handed to the calling thread
                finished.put(e)
                return
            finished.put(None)

    threads = [
        threading.Thread(target=drain, name=f"{name}-{k}", daemon=True)
        for k in range(max(1, min(workers, len(tasks))))
    ]
    for thread in threads:
        thread.start()
    try:
        for _ in tasks:
            error = finished.get()
            if error is not None:
                raise error
            if on_done is not None:
                on_done()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
