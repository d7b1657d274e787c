"""Building a crop cache: planning from the snapshot, threaded decoding, the atomic writer.

Imports :mod:`catalog.cache.index` and :mod:`catalog.cache.reader`, never the other way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from catalog import files, snapshots, transforms
from catalog.cache.index import (
    _VARIANT,
    SOURCES,
    STORED_SOURCES,
    CacheInfo,
    _forget,
    _has_table,
    _index_row,
    _info,
    _record,
    _rows_frame,
    find_cache,
)
from catalog.cache.reader import CacheError
from catalog.db import connect, resolve_db
from catalog.snapshots import BadImage

if TYPE_CHECKING:
    import duckdb

ProgressFn = Callable[[int, int], None]


# --- building -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    row: int
    image_id: str
    src: str
    box: tuple[int, int, int, int]  # x_1, y_1, x_2, y_2 (exclusive), in-the-wild pixels
    file_size: int  # bytes, as the image index has it


def build_cache(
    snapshot: str,
    db: str | os.PathLike[str] | None = None,
    *,
    size: int = 256,
    source: str = "bbox",
    workers: int | None = None,
    progress: ProgressFn | None = None,
    skip_bad: bool = False,
) -> CacheInfo:
    """Crop every image of ``snapshot`` once into a ``size`` x ``size`` crop cache.

    Does nothing (``built=False``) when a complete cache with the same snapshot hash,
    size, source, face boxes and image file sizes exists (:func:`find_cache`) and
    lacks no image, or, with ``skip_bad``, lacks just the images that cannot be read
    now.
    Otherwise writes the array under a temporary name, renames it into place and then
    records the index in one transaction (see the module docstring), replacing an
    incomplete or mismatching cache of the same key.

    ``workers``: decoding threads (default one per CPU). Threads, not processes:
    Pillow releases the GIL while decoding, converting and warping, and each thread
    writes its rows straight into the memory-mapped file. ``bench/loader.py`` times a
    process pool doing the same (its "cache build" line): on 2 shared cores the two
    came within 15% of each other, each ahead about as often, while threads report
    each image and stop at once.
    ``progress(done, total)`` is called once with 0, then after each image.

    Every image is checked before a pixel is decoded
    (:func:`catalog.snapshots.read_images`): a cache is only useful complete, and a list
    of what is wrong beats failing an hour in. ``skip_bad``: build without the images
    that cannot be read (marked unusable by the catalog's checks, missing on disk, or
    failing to decode during the build; their rows stay black and unindexed) instead
    of refusing; the cache's index records which and why (``CacheInfo.skipped``), and
    Datasets reading the cache leave them out.

    Raises:
        SnapshotError: no snapshot ``snapshot`` (the message lists the known ones).
        CacheError: the catalog has no image index, an image has no face box, or
            (without ``skip_bad``) cannot be read (naming image_id, path and why; also
            a :class:`~catalog.snapshots.SnapshotImageError`), or another build is
            writing into the crops folder.
        catalog.db.CatalogNotFoundError: no catalog at ``db``.
    """
    start = time.perf_counter()
    files.check_size(size)
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    files.check_workers(workers)

    db_path = resolve_db(db)
    con = connect(db_path, read_only=True)
    try:
        snap = snapshots.get(con, snapshot)  # SnapshotError naming the known snapshots
        existing = find_cache(con, snap.hash, size, source, snapshot=snapshot)
        # A cache without skips needs no files; one with skips is current only while
        # skipping is asked for and the same images are still unreadable.
        plan: tuple[list[_Task], tuple[BadImage, ...]] | None = None
        if existing is not None and existing.skipped:
            plan = _plan(con, snapshot, skip_bad)
        if existing is not None and (
            not existing.skipped or (skip_bad and _still_skipped(existing.skipped, plan[1]))
        ):
            return _info(
                existing.path,
                snapshot,
                snap.hash,
                size,
                source,
                len(existing),
                time.perf_counter() - start,
                built=False,
                skipped=existing.skipped,
            )
        stale = _index_row(con, snap.hash, source, size) is not None
        tasks, skipped = plan or _plan(con, snapshot, skip_bad)
    finally:
        con.close()  # the decoding below needs no catalog: do not hold it open
    shape = (len(tasks), size, size, 3)
    n_workers = workers or os.cpu_count() or 1
    failed: list[BadImage] = []

    def index() -> tuple[Any, tuple[BadImage, ...]]:
        gone = {b.image_id for b in failed}
        kept = [t for t in tasks if t.image_id not in gone]
        return _frame(kept, size), tuple(sorted((*skipped, *failed), key=lambda b: b.image_id))

    return _write_cache(
        db_path,
        snapshot,
        snap.hash,
        source,
        size,
        stale,
        shape,
        lambda array: _run(tasks, array, size, n_workers, progress, failed if skip_bad else None),
        index,
        start,
    )


def _still_skipped(had: tuple[BadImage, ...], now: tuple[BadImage, ...]) -> bool:
    """Whether a cache built without ``had`` is what a build skipping ``now`` (what the
    checks find before decoding) gives: the same images, and those that only failed
    to decode during that build (no check sees them before decoding)."""
    before = {b.image_id: b.reason for b in had}
    found = {b.image_id for b in now}
    return found <= before.keys() and all(
        before[i] == "image_decode_error" for i in before.keys() - found
    )


def store_crops(
    snapshot: str,
    db: str | os.PathLike[str] | None = None,
    *,
    size: int,
    source: str,
    crops: np.ndarray | Callable[[np.ndarray], None],
    image_ids: Any,
    matrices: np.ndarray,
    skipped: Sequence[BadImage] = (),
) -> CacheInfo:
    """Store crops computed elsewhere as the cache of (``snapshot``, ``size``, ``source``).

    ``source``: a kind in :data:`STORED_SOURCES`, optionally with a variant after a
    slash (``"aligned/arcface/truth"``). ``crops``: uint8 (N, size, size, 3) RGB, or a
    function that fills such an array in place (the memory-mapped file itself, so N
    crops never need to fit in memory at once); ``image_ids`` (N,): the snapshot's
    images, each once, in the crops' order; ``matrices`` (N, 3, 3): original
    in-the-wild pixels -> crop pixels. ``skipped``: the snapshot's images left out
    (:class:`~catalog.snapshots.BadImage`), recorded in the index: those not in
    ``image_ids``, and any that ``crops`` appends to this list while it fills (an
    image that failed to decode; its row is then not indexed). ``image_ids`` and
    ``skipped`` together are exactly the snapshot's images. Written like :func:`build_cache`
    (temporary file renamed into place, then the index in one transaction), replacing
    any cache of the same key. No face boxes are stored (the rows' ``x_1 .. y_2`` are
    NULL).

    Raises ValueError for a source not in :data:`STORED_SOURCES` or inconsistent
    arrays, SnapshotError for an unknown snapshot, CacheError when another build is
    writing into the crops folder; whatever ``crops`` raises, with no cache written.
    """
    start = time.perf_counter()
    kind, slash, variant = source.partition("/")
    if kind not in STORED_SOURCES or (slash and not _VARIANT.fullmatch(variant)):
        raise ValueError(
            f"source must be one of {', '.join(STORED_SOURCES)}, optionally followed by "
            f"/variant (letters, digits, _ -, then also .), got {source!r}"
        )
    files.check_size(size)
    ids = [str(i) for i in image_ids]
    matrices = np.asarray(matrices, dtype=np.float64)
    n = len(ids)
    shape = (n, size, size, 3)
    if callable(crops):
        fill = crops
    else:
        crops = np.asarray(crops)
        if crops.dtype != np.uint8 or crops.shape != shape:
            raise ValueError(f"crops must be uint8 {shape}, got {crops.dtype} {crops.shape}")
        fill = partial(_copy_into, crops)
    if matrices.shape != (n, 3, 3) or not np.isfinite(matrices).all():
        raise ValueError(f"matrices must be finite ({n}, 3, 3), got {matrices.shape}")
    if len(set(ids)) != n:
        raise ValueError("image_ids must not repeat")

    db_path = resolve_db(db)
    con = connect(db_path, read_only=True)
    try:
        snap = snapshots.get(con, snapshot)  # SnapshotError naming the known snapshots
        wanted = {
            r[0]
            for r in con.execute(
                "SELECT image_id FROM snapshot_images WHERE snapshot = ?", [snapshot]
            ).fetchall()
        }
        stale = _index_row(con, snap.hash, source, size) is not None
        # the crops were cut from these files: record their sizes, as build_cache does
        sizes = (
            dict(
                con.execute(
                    "SELECT image_id, file_size FROM images WHERE image_id IN "
                    "(SELECT image_id FROM snapshot_images WHERE snapshot = ?)",
                    [snapshot],
                ).fetchall()
            )
            if _has_table(con, "images")
            else {}
        )
    finally:
        con.close()
    given = set(ids) | {b.image_id for b in skipped}
    if given != wanted or set(ids) & {b.image_id for b in skipped}:
        extra, missing = sorted(given - wanted), sorted(wanted - given)
        raise ValueError(
            f"image_ids and skipped must be the {len(wanted)} images of snapshot "
            f"{snapshot!r}, each once: {len(missing)} missing (first: "
            f"{', '.join(missing[:3])}), {len(extra)} not in it (first: "
            f"{', '.join(extra[:3])})"
        )

    def index() -> tuple[Any, tuple[BadImage, ...]]:
        left_out = sorted(skipped, key=lambda b: b.image_id)
        gone = {b.image_id for b in left_out}
        keep = np.array([i not in gone for i in ids], dtype=bool)
        frame = _rows_frame(
            [i for i in ids if i not in gone],
            np.arange(n)[keep],
            None,
            matrices[keep],
            [sizes.get(i) for i in ids if i not in gone],
        )
        return frame, tuple(left_out)

    return _write_cache(
        db_path, snapshot, snap.hash, source, size, stale, shape, fill, index, start
    )


def _copy_into(crops: np.ndarray, array: np.ndarray) -> None:
    array[:] = crops


def _write_cache(
    db_path: Path,
    snapshot: str,
    hash_: str,
    source: str,
    size: int,
    stale: bool,
    shape: tuple[int, ...],
    fill: Callable[[np.ndarray], None],
    index: Callable[[], tuple[Any, tuple[BadImage, ...]]],
    start: float,
) -> CacheInfo:
    """Write a cache file atomically, then its index; shared by build and store.

    ``index()``, called once ``fill`` is done, gives the index rows (a frame from
    ``_rows_frame``) and the images left out.

    Under the folder lock: fill a temporary memory map; only when it is complete,
    forget a stale cache of the key (its index rows, then its file: the new file may
    take its name, and its rows would describe other crops), rename the new file into
    place and insert its index in one transaction. A failed fill (a bad image,
    Ctrl-C) leaves the previous cache of the key as it was; a failure after that
    leaves no cache of the key, never a wrong one.
    """
    folder = db_path.parent / f"{db_path.stem}.crops"
    final = folder / f"{snapshot}-{hash_[:12]}-{source.replace('/', '+')}-{size}.npy"
    with _writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    busy = partial(CacheError, f"Another cache build is writing into {folder}; wait for it.")
    with files.locked(folder, busy):
        with _writing(folder):
            files.remove_temporaries(folder)  # of killed builds; safe under the lock
        tmp = Path(files.temp_name(final))
        try:
            with _writing(folder):
                array = _open_reserved(tmp, shape)
            try:
                fill(array)
                with _writing(folder):
                    array.flush()
            finally:
                del array  # unmap before the rename (and before unlinking on error)
            frame, skipped = index()
            if not len(frame):
                raise _ImageError(
                    f"Every image of snapshot {snapshot!r} was skipped: nothing to cache "
                    f"({', '.join(sorted({b.reason for b in skipped}))}).",
                    skipped,
                )
            if stale:
                _forget(db_path, hash_, source, size)
            with _writing(folder):
                os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        seconds = time.perf_counter() - start
        try:
            _record(db_path, snapshot, hash_, source, size, final, frame, seconds, skipped)
        except BaseException:
            final.unlink(missing_ok=True)  # no index row points at it (rolled back)
            raise
    return _info(
        final, snapshot, hash_, size, source, len(frame), seconds, built=True, skipped=skipped
    )


def _open_reserved(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A new uint8 ``.npy`` file of ``shape`` at ``path``, its space reserved on disk
    (:func:`catalog.files.reserve`), memory-mapped for writing.

    Without the reservation the file is sparse and a full disk shows only when a crop is
    written through the map: SIGBUS, the process gone without a word, the temporary
    left behind. Reserved, a full disk is an ENOSPC here, before any work.
    """
    header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    offset, total = header.offset, header.offset + header.nbytes
    del header  # nothing was written through it: the file is the header and a hole
    fd = os.open(path, os.O_RDWR)
    try:
        files.reserve(fd, total)
    finally:
        os.close(fd)
    return np.memmap(path, dtype=np.uint8, mode="r+", offset=offset, shape=shape)


@contextmanager
def _writing(folder: Path) -> Iterator[None]:
    """Turn an OSError of writing into ``folder`` (full disk, read-only, no permission)
    into a CacheError that says so and what to do."""
    try:
        yield
    except OSError as e:
        raise CacheError(
            f"Crop cache: {files.write_problem(e, folder)}. The crops are stored "
            "next to the catalog; nothing was written."
        ) from e


def _frame(rows: list[_Task], size: int) -> Any:
    """The index rows of a build's tasks (face-box crops)."""
    from catalog.transforms import box_to_square

    boxes = np.array([t.box for t in rows], dtype=np.int64).reshape(-1, 4)
    matrices = np.array([box_to_square(t.box, size) for t in rows]).reshape(-1, 3, 3)
    return _rows_frame(
        [t.image_id for t in rows],
        np.array([t.row for t in rows]),
        boxes,
        matrices,
        [t.file_size for t in rows],
    )


def render_crop(
    src: str | os.PathLike[str], box: tuple[int, int, int, int], size: int
) -> np.ndarray:
    """The uint8 (size, size, 3) RGB crop of ``box`` (in-the-wild pixels, exclusive ends)
    from the image at ``src``: what a cache row holds.

    Composes the decode matrix of :func:`~catalog.transforms.open_for_crop` (draft mode
    for large JPEGs) into the one warp, so the image is resampled once.
    """
    from catalog.transforms import box_to_square, invert, open_for_crop, warp

    image, m_decode = open_for_crop(str(src), box, size)
    return warp(image, box_to_square(box, size) @ invert(m_decode), size)


class _ImageError(snapshots.SnapshotImageError, CacheError):
    """Images of the snapshot cannot be cropped: a CacheError and a SnapshotImageError."""


def _plan(
    con: duckdb.DuckDBPyConnection, snapshot: str, skip_bad: bool
) -> tuple[list[_Task], tuple[BadImage, ...]]:
    """One task per usable snapshot image, in image_id order, and the images skipped;
    refuses what cannot be cropped (see :func:`catalog.snapshots.read_images`)."""
    images = snapshots.read_images(con, snapshot, skip_bad=skip_bad, error=_ImageError)
    if not len(images):
        raise _ImageError(
            f"None of the images of snapshot {snapshot!r} can be read: nothing to cache.",
            images.skipped,
        )
    tasks = [
        _Task(k, str(image_id), str(path), tuple(int(v) for v in box), int(file_size))
        for k, (image_id, path, box, file_size) in enumerate(
            zip(images.image_id, images.path, images.box, images.file_size, strict=True)
        )
    ]
    return tasks, images.skipped


def _run(
    tasks: list[_Task],
    array: np.ndarray,
    size: int,
    workers: int,
    progress: ProgressFn | None,
    failed: list[BadImage] | None = None,
) -> None:
    """Crop every task into ``array[task.row]`` with ``workers`` threads.

    An image that fails to decode raises, naming it, or with ``failed`` (a list) is
    appended to it and its row left black.

    On any error (an image, the progress callback, Ctrl-C) the threads stop taking
    tasks; the caller then discards the file.
    """
    total = len(tasks)
    if progress is not None:
        progress(0, total)
    count = [0]

    def one(task: _Task) -> None:
        try:
            array[task.row] = render_crop(task.src, task.box, size)
        except transforms.BAD_IMAGE_ERRORS as e:
            bad = snapshots.BadImage(task.image_id, task.src, "image_decode_error", str(e))
            if failed is None:
                raise _ImageError(
                    f"image {task.image_id}: cropping {task.src}: {e}. Nothing was written. "
                    + snapshots.DECODE_ADVICE,
                    [bad],
                ) from e
            failed.append(bad)  # list.append is atomic: threads may share the list

    def tick() -> None:
        count[0] += 1
        if progress is not None:
            progress(count[0], total)

    files.run_threads(tasks, one, workers, tick, name="crop-cache")
