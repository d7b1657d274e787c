"""Building a crop cache: planning from the snapshot, threaded decoding, the atomic writer.

Imports :mod:`catalog.cache.index` and :mod:`catalog.cache.reader`, never the other way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from catalog import files, snapshots
from catalog.cache.index import (
    _VARIANT,
    SOURCES,
    STORED_SOURCES,
    CacheInfo,
    _forget,
    _has_cache_tables,
    _has_table,
    _info,
    _record,
    _rows_frame,
    find_cache,
)
from catalog.cache.reader import CacheError
from catalog.db import connect, resolve_db

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
) -> CacheInfo:
    """Crop every image of ``snapshot`` once into a ``size`` x ``size`` crop cache.

    Does nothing (``built=False``) when a complete cache with the same snapshot hash,
    size, source, face boxes and image file sizes exists (:func:`find_cache`).
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

    Raises:
        SnapshotError: no snapshot ``snapshot`` (the message lists the known ones).
        CacheError: the catalog has no image index, an image has no face box, is not
            in the index, was unreadable at ingest or is missing on disk (naming
            image_id and path), or another build is writing into the crops folder.
        catalog.db.CatalogNotFoundError: no catalog at ``db``.
    """
    start = time.perf_counter()
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive whole number of pixels, got {size!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise ValueError(f"workers must be at least 1 (or None for the default), got {workers}")

    db_path = resolve_db(db)
    con = connect(db_path, read_only=True)
    try:
        snap = snapshots.get(con, snapshot)  # SnapshotError naming the known snapshots
        existing = find_cache(con, snap.hash, size, source, snapshot=snapshot)
        if existing is not None:
            return _info(existing.path, snapshot, snap.hash, size, source, len(existing),
                         time.perf_counter() - start, built=False)  # fmt: skip
        stale = _has_cache_tables(con) and con.execute(
            "SELECT count(*) FROM crop_caches WHERE hash = ? AND source = ? AND size = ?",
            [snap.hash, source, size],
        ).fetchone()[0] > 0  # fmt: skip
        tasks = _plan(con, snapshot)
    finally:
        con.close()  # the decoding below needs no catalog: do not hold it open
    shape = (len(tasks), size, size, 3)
    n_workers = workers or os.cpu_count() or 1
    return _write_cache(
        db_path, snapshot, snap.hash, source, size, stale, shape,
        lambda array: _run(tasks, array, size, n_workers, progress), tasks, start,
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
) -> CacheInfo:
    """Store crops computed elsewhere as the cache of (``snapshot``, ``size``, ``source``).

    ``source``: a kind in :data:`STORED_SOURCES`, optionally with a variant after a
    slash (``"aligned/arcface/truth"``). ``crops``: uint8 (N, size, size, 3) RGB, or a
    function that fills such an array in place (the memory-mapped file itself, so N
    crops never need to fit in memory at once); ``image_ids`` (N,): exactly the
    snapshot's images, each once, in the crops' order; ``matrices`` (N, 3, 3):
    original in-the-wild pixels -> crop pixels. Written like :func:`build_cache`
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
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive whole number of pixels, got {size!r}")
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
        wanted = {r[0] for r in con.execute(
            "SELECT image_id FROM snapshot_images WHERE snapshot = ?", [snapshot]
        ).fetchall()}  # fmt: skip
        stale = _has_cache_tables(con) and con.execute(
            "SELECT count(*) FROM crop_caches WHERE hash = ? AND source = ? AND size = ?",
            [snap.hash, source, size],
        ).fetchone()[0] > 0  # fmt: skip
        # the crops were cut from these files: record their sizes, as build_cache does
        sizes = dict(con.execute(
            "SELECT image_id, file_size FROM images WHERE image_id IN "
            "(SELECT image_id FROM snapshot_images WHERE snapshot = ?)", [snapshot]
        ).fetchall()) if _has_table(con, "images") else {}  # fmt: skip
    finally:
        con.close()
    if set(ids) != wanted:
        extra, missing = sorted(set(ids) - wanted), sorted(wanted - set(ids))
        raise ValueError(
            f"image_ids must be the {len(wanted)} images of snapshot {snapshot!r}: "
            f"{len(missing)} missing (first: {', '.join(missing[:3])}), {len(extra)} not in "
            f"it (first: {', '.join(extra[:3])})"
        )
    rows = _rows_frame(ids, np.arange(n), None, matrices, [sizes.get(i) for i in ids])
    return _write_cache(db_path, snapshot, snap.hash, source, size, stale, shape, fill, rows,
                        start)  # fmt: skip


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
    rows: Any,
    start: float,
) -> CacheInfo:
    """Write a cache file atomically, then its index; shared by build and store.

    Under the folder lock: fill a temporary memory map; only when it is complete,
    forget a stale cache of the key (its index rows, then its file: the new file may
    take its name, and its rows would describe other crops), rename the new file into
    place and insert its index in one transaction. A failed fill (a bad image,
    Ctrl-C) leaves the previous cache of the key as it was; a failure after that
    leaves no cache of the key, never a wrong one.
    """
    folder = db_path.parent / f"{db_path.stem}.crops"
    final = folder / f"{snapshot}-{hash_[:12]}-{source.replace('/', '+')}-{size}.npy"
    folder.mkdir(parents=True, exist_ok=True)
    busy = partial(CacheError, f"Another cache build is writing into {folder}; wait for it.")
    with files.locked(folder, busy):
        files.remove_temporaries(folder)  # of killed builds; safe under the lock
        tmp = Path(files.temp_name(final))
        try:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            try:
                fill(array)
                array.flush()
            finally:
                del array  # unmap before the rename (and before unlinking on error)
            if stale:
                _forget(db_path, hash_, source, size)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        seconds = time.perf_counter() - start
        try:
            _record(db_path, snapshot, hash_, source, size, final, _frame(rows, size), seconds)
        except BaseException:
            final.unlink(missing_ok=True)  # no index row points at it (rolled back)
            raise
    return _info(final, snapshot, hash_, size, source, shape[0], seconds, built=True)


def _frame(rows: list[_Task] | Any, size: int) -> Any:
    """The index rows of a build's tasks (face-box crops); a frame passes as it is."""
    if not isinstance(rows, list):
        return rows
    from catalog.transforms import box_to_square

    boxes = np.array([t.box for t in rows], dtype=np.int64).reshape(-1, 4)
    matrices = np.array([box_to_square(t.box, size) for t in rows]).reshape(-1, 3, 3)
    return _rows_frame([t.image_id for t in rows], np.array([t.row for t in rows]),
                       boxes, matrices, [t.file_size for t in rows])  # fmt: skip


def render_crop(src: str | os.PathLike[str], box: tuple[int, int, int, int], size: int
                ) -> np.ndarray:  # fmt: skip
    """The uint8 (size, size, 3) RGB crop of ``box`` (in-the-wild pixels, exclusive ends)
    from the image at ``src``: what a cache row holds.

    Composes the decode matrix of :func:`~catalog.transforms.open_for_crop` (draft mode
    for large JPEGs) into the one warp, so the image is resampled once.
    """
    from catalog.transforms import box_to_square, invert, open_for_crop, warp

    image, m_decode = open_for_crop(str(src), box, size)
    return warp(image, box_to_square(box, size) @ invert(m_decode), size)


def _plan(con: duckdb.DuckDBPyConnection, snapshot: str) -> list[_Task]:
    """One task per snapshot image, in image_id order; refuses what cannot be cropped.

    Everything is checked before a pixel is decoded: a cache is only useful complete,
    and a list of what is wrong beats failing an hour in.
    """
    info = (
        dict(con.execute("SELECT key, value FROM catalog_info").fetchall())
        if _has_table(con, "catalog_info") else {}
    )  # fmt: skip
    if not info.get("image_root") or not _has_table(con, "images"):
        raise CacheError(
            "The catalog has no image index, so there is nothing to crop. Ingest the data "
            "folder with its images (`celebcat ingest DIR`), then create the snapshot again."
        )
    root = Path(info["image_root"])
    rows = con.execute(
        "SELECT s.image_id, s.x_1, s.y_1, s.x_2, s.y_2, i.path, i.error, i.file_size "
        "FROM snapshot_images AS s LEFT JOIN images AS i USING (image_id) "
        "WHERE s.snapshot = ? ORDER BY s.image_id",
        [snapshot],
    ).fetchall()

    def first(ids: list[str]) -> str:
        return ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")

    no_box = [r[0] for r in rows if None in r[1:5] or r[3] <= r[1] or r[4] <= r[2]]
    if no_box:
        raise CacheError(
            f"Snapshot {snapshot!r}: {len(no_box)} of {len(rows)} images have no usable face "
            f"box (first: {first(no_box)}). Was it created from a catalog without images? "
            "Ingest with images and create the snapshot again."
        )
    not_indexed = [r[0] for r in rows if r[5] is None]
    if not_indexed:
        raise CacheError(
            f"{len(not_indexed)} snapshot images are not in the catalog's image index "
            f"(first: {first(not_indexed)}). Re-ingest with the images folder that holds them."
        )
    unreadable = [r for r in rows if r[6] is not None]
    if unreadable:
        image_id, rel, error = unreadable[0][0], unreadable[0][5], unreadable[0][6]
        raise CacheError(
            f"{len(unreadable)} images could not be read at ingest, e.g. {image_id} "
            f"({root / rel}): {error}. Replace them and re-ingest."
        )
    tasks = [
        _Task(k, image_id, str(root / rel), (x1, y1, x2, y2), file_size)
        for k, (image_id, x1, y1, x2, y2, rel, _, file_size) in enumerate(rows)
    ]
    missing = [f"{t.image_id} ({t.src})" for t in tasks if not os.path.isfile(t.src)]
    if missing:
        raise CacheError(
            f"{len(missing)} images are missing on disk: {'; '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}. Restore them, or re-ingest and create "
            "the snapshot again."
        )
    return tasks


def _run(
    tasks: list[_Task], array: np.ndarray, size: int, workers: int, progress: ProgressFn | None
) -> None:
    """Crop every task into ``array[task.row]`` with ``workers`` threads.

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
        except (OSError, ValueError, SyntaxError) as e:  # PIL's bad-file errors
            raise CacheError(f"image {task.image_id}: cropping {task.src}: {e}") from e

    def tick() -> None:
        count[0] += 1
        if progress is not None:
            progress(count[0], total)

    files.run_threads(tasks, one, workers, tick, name="crop-cache")


