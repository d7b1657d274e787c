"""``celebcat cache``: every face crop of a snapshot decoded once, memory-mapped after.

Training reads the same crops every epoch. Decoding a 500 px JPEG and resampling the
face box takes most of a data-loader worker's time, and it gives the same pixels
every epoch; only the augmentation differs. A crop cache does that work once per
(snapshot, crop size, crop source) and stores the result as one uint8 array, which
Datasets (``catalog.datasets``) read through ``np.load(mmap_mode="r")`` instead of
decoding when :func:`find_cache` finds one.

What a cache holds, for source ``"bbox"`` (built here; ``"aligned/<template>/<landmarks
run id or truth>"`` crops are computed by the alignment step and stored with
:func:`store_crops`, same layout, no face boxes, matrices original -> aligned crop; a
snapshot may have several alignments at one size, and ``find_cache(..., "aligned")``
gives the newest):

- pixels: row ``r`` of an ``(N, size, size, 3)`` uint8 RGB array is the snapshot's
  face box (``snapshot_images.x_1 .. y_2``, exclusive ends, in-the-wild pixels) mapped
  onto ``size`` x ``size`` by :func:`catalog.transforms.box_to_square`, resampled
  once with :func:`catalog.transforms.warp` (its default, bilinear). Large JPEGs are
  decoded at reduced scale (:func:`catalog.transforms.open_for_crop`) and the decode
  matrix is composed into the warp, so the pixels are byte for byte what a Dataset
  computes without the cache for the same box and size and no augmentation.
- matrices: per image the 3x3 affine ``box_to_square(box, size)`` from original
  (in-the-wild) pixel-index coordinates to crop pixel-index coordinates, so landmarks
  and predictions move between the two frames exactly.

Storage. The array is a ``.npy`` file (``np.lib.format.open_memmap``: a header that
states shape and dtype, then the raw rows) in a folder next to the catalog::

    <catalog folder>/<catalog stem>.crops/<snapshot>-<hash[:12]>-<source>-<size>.npy

(``/`` in the source becomes ``+``, which a source cannot hold otherwise).

The index is in the catalog, in two tables this module owns:

- ``crop_caches``: one row per cache, keyed by ``(hash, source, size)``: the snapshot
  *hash*, not its name, so a changed snapshot (a new hash) never finds stale crops;
  ``path`` is relative to the catalog's folder, so the two move together.
- ``crop_cache_rows``: one row per image: its ``row`` in the array, the face box the
  crop was cut from, the matrix (``m00 .. m12``, the top two rows of the 3x3) and the
  image file's size at the time.

The snapshot hash covers each image's face box, so a new ``box_shrink`` gives a new
hash. The box of every row is stored as well and compared with the snapshot's, as a
second guard: a cache whose boxes differ is not used (:func:`find_cache`) and is
rebuilt (:func:`build_cache`). The hash does not cover pixels: an image file replaced
under its name is caught, after a re-ingest scans it again, by its size differing from
the one recorded, for box and aligned crops alike (a replacement of exactly the same
size is not).

Atomicity. The array is written under a hidden temporary name in the crops folder
and renamed into place (``os.replace``) only when complete; the index rows are
inserted after that, in one transaction. An interrupted build therefore leaves no
index rows pointing at a half-written file, and at worst a temporary file, which
the next build removes. Files are not fsynced: this protects against an interrupted
process, not a power cut.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from catalog import files, snapshots
from catalog.db import connect, has_table, resolve_db, transaction
from catalog.errors import CatalogError

if TYPE_CHECKING:
    import duckdb

ProgressFn = Callable[[int, int], None]

#: Crop sources a cache can be built from. "bbox": the snapshot's face box.
SOURCES: tuple[str, ...] = ("bbox",)

#: Crop sources whose pixels are computed elsewhere and stored with :func:`store_crops`.
#: "aligned": faces warped onto a landmark template (models.align_run). A stored cache's
#: source may name its variant after a slash, e.g. ``aligned/arcface/truth``.
STORED_SOURCES: tuple[str, ...] = ("aligned",)


#: A stored source's variant: slash-separated names, none starting with a dot.
_VARIANT = re.compile(r"[\w-][\w.-]*(/[\w-][\w.-]*)*")


def source_kind(source: str) -> str:
    """``"aligned"`` for ``"aligned/arcface/truth"``; a plain source is its own kind."""
    return source.split("/", 1)[0]

CACHE_DDL = """
CREATE TABLE IF NOT EXISTS crop_caches (
    hash       VARCHAR NOT NULL,   -- the snapshot hash the crops were cut for
    source     VARCHAR NOT NULL,   -- 'bbox': the snapshot's face box; 'aligned/<template>/
                                   -- <landmarks run id | truth>': celebcat align
    size       INTEGER NOT NULL,   -- crop side in pixels
    snapshot   VARCHAR NOT NULL,   -- the snapshot name it was built from (informational)
    path       VARCHAR NOT NULL,   -- .npy file, relative to the catalog's folder
    n_images   INTEGER NOT NULL,
    seconds    DOUBLE NOT NULL,    -- build time
    created_at TIMESTAMP NOT NULL, -- UTC
    PRIMARY KEY (hash, source, size)
);
CREATE TABLE IF NOT EXISTS crop_cache_rows (
    hash     VARCHAR NOT NULL,
    source   VARCHAR NOT NULL,
    size     INTEGER NOT NULL,
    image_id VARCHAR NOT NULL,
    "row"    INTEGER NOT NULL,   -- index into the (N, size, size, 3) array
    -- the face box cropped (exclusive ends, in-the-wild pixels); NULL for a source
    -- not cut from a box
    x_1 INTEGER, y_1 INTEGER, x_2 INTEGER, y_2 INTEGER,
    -- original in-the-wild pixels -> crop pixels: [[m00 m01 m02] [m10 m11 m12] [0 0 1]]
    m00 DOUBLE NOT NULL, m01 DOUBLE NOT NULL, m02 DOUBLE NOT NULL,
    m10 DOUBLE NOT NULL, m11 DOUBLE NOT NULL, m12 DOUBLE NOT NULL,
    -- the image file's size when it was cropped (images.file_size); NULL for a source
    -- not cut from a box
    file_size BIGINT
);
"""

_MATRIX_COLUMNS = ("m00", "m01", "m02", "m10", "m11", "m12")
_BOX_COLUMNS = ("x_1", "y_1", "x_2", "y_2")


class CacheError(CatalogError, RuntimeError):
    """A cache cannot be built or read; the message says which image or file, and why."""


@dataclass(frozen=True)
class CacheInfo:
    """One crop cache.

    ``seconds``: from :func:`build_cache`, the time of that call (near zero when the
    cache was already complete, ``built=False``); from :func:`list_caches`, the time
    its build took. ``path`` is absolute.
    """

    path: Path
    snapshot: str
    hash: str
    size: int
    source: str
    n_images: int
    seconds: float
    built: bool
    created_at: datetime | None = None


class CropCache:
    """Read access to one crop cache; pickles cheaply, opens its file lazily.

    Holds the image ids (sorted), their rows and matrices (a few MB for CelebA's
    25,000-image selection), and the file's path. The memory map is opened on the
    first :meth:`crop` in each process and never pickled, so each DataLoader worker
    maps the file itself; the pages are shared through the OS page cache.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        size: int,
        source: str,
        image_ids: np.ndarray,
        rows: np.ndarray,
        matrices: np.ndarray,
        hash: str = "",
    ) -> None:
        self.path = Path(path)
        self.size = int(size)
        self.source = source
        self.hash = hash
        order = np.argsort(np.asarray(image_ids, dtype=str), kind="stable")
        self._ids = np.asarray(image_ids, dtype=str)[order]  # sorted: binary search
        self._rows = np.asarray(rows, dtype=np.int64)[order]
        self._matrices = np.asarray(matrices, dtype=np.float64).reshape(-1, 3, 3)[order]
        self._array: np.ndarray | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, image_id: object) -> bool:
        return isinstance(image_id, str) and self._find(image_id) is not None

    def __repr__(self) -> str:
        return (
            f"CropCache({str(self.path)!r}, size={self.size}, source={self.source!r}, "
            f"n_images={len(self)})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"] = None  # a memory map is per process; the worker opens its own
        state["_pid"] = None
        return state

    @property
    def image_ids(self) -> np.ndarray:
        """(N,) str: the cached images, sorted."""
        return self._ids

    @property
    def matrices(self) -> np.ndarray:
        """(N, 3, 3) float64: original pixels -> crop pixels, in :attr:`image_ids` order
        (read-only; no pixels are read)."""
        view = self._matrices.view()
        view.flags.writeable = False
        return view

    def crop(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (size, size, 3) RGB crop and the 3x3 float64 matrix original in-the-wild
        pixels -> crop pixels (pixel-index coordinates, see :mod:`catalog.transforms`).

        Both are copies the caller may change. KeyError for an image not in the cache.
        """
        i = self._find(image_id)
        if i is None:
            raise KeyError(f"{image_id!r} is not in the crop cache {self.path.name}")
        return np.array(self._open()[self._rows[i]]), self._matrices[i].copy()

    def _find(self, image_id: str) -> int | None:
        i = int(np.searchsorted(self._ids, image_id))
        return i if i < len(self._ids) and self._ids[i] == image_id else None

    def _open(self) -> np.ndarray:
        # Reopened after a fork too: a map inherited from the parent would work, but
        # the pid check keeps "one map per process" true whatever the start method.
        if self._array is None or self._pid != os.getpid():
            try:
                array = np.load(self.path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise CacheError(
                    f"Crop cache {self.path} cannot be read ({e}); rebuild it with "
                    "`celebcat cache build`."
                ) from e
            expected = (int(self._rows.max()) + 1 if len(self) else 0, self.size, self.size, 3)
            if array.dtype != np.uint8 or array.ndim != 4 or array.shape[0] < expected[0] or (
                array.shape[1:] != expected[1:]
            ):
                raise CacheError(
                    f"Crop cache {self.path} holds {array.dtype} {array.shape}, expected "
                    f"uint8 {expected}; rebuild it with `celebcat cache build`."
                )
            self._array, self._pid = array, os.getpid()
        return self._array


# --- finding and listing ---------------------------------------------------------------


def find_cache(
    con: duckdb.DuckDBPyConnection,
    snapshot_hash: str,
    size: int,
    source: str = "bbox",
    *,
    snapshot: str | None = None,
) -> CropCache | None:
    """The complete cache for (``snapshot_hash``, ``size``, ``source``), or None.

    A bare stored kind (``"aligned"``) matches any of its variants (``"aligned/..."``)
    and gives the newest complete one. Read-only safe (creates nothing). None when the
    catalog has no such cache, its file is missing or short, its face boxes differ
    from those of the snapshots with this hash (``snapshot``: compare with that
    snapshot only; default: with every snapshot of the hash), or an image file's size
    in the image index differs from the one recorded when it was cropped. The hash covers the
    boxes, so that last check is a second guard, for caches whose index and snapshots
    were edited by hand.
    """
    if not _has_cache_tables(con):
        return None
    if source in STORED_SOURCES:  # any variant, newest first
        found = con.execute(
            "SELECT source FROM crop_caches WHERE hash = ? AND size = ? "
            "AND (source = ? OR starts_with(source, ? || '/')) ORDER BY created_at DESC",
            [snapshot_hash, size, source, source],
        ).fetchall()
        for (variant,) in found:
            cache = _find_exact(con, snapshot_hash, size, variant, snapshot)
            if cache is not None:
                return cache
        return None
    return _find_exact(con, snapshot_hash, size, source, snapshot)


def _find_exact(
    con: duckdb.DuckDBPyConnection, snapshot_hash: str, size: int, source: str,
    snapshot: str | None,
) -> CropCache | None:  # fmt: skip
    row = con.execute(
        "SELECT path, n_images FROM crop_caches WHERE hash = ? AND source = ? AND size = ?",
        [snapshot_hash, source, size],
    ).fetchone()
    if row is None:
        return None
    path = _absolute(_catalog_dir(con), row[0])
    if not _file_complete(path, row[1], size):
        return None
    if _boxes_differ(con, snapshot_hash, source, size, snapshot):
        return None
    if _files_differ(con, snapshot_hash, source, size):
        return None
    data = con.execute(
        'SELECT image_id, "row", ' + ", ".join(_MATRIX_COLUMNS) + " FROM crop_cache_rows "
        "WHERE hash = ? AND source = ? AND size = ?",
        [snapshot_hash, source, size],
    ).fetchnumpy()
    if len(data["image_id"]) != row[1]:
        return None  # not written by build_cache (it inserts all rows in one transaction)
    top = np.stack([np.asarray(data[c], dtype=np.float64) for c in _MATRIX_COLUMNS], axis=1)
    matrices = np.zeros((len(top), 3, 3))
    matrices[:, :2, :] = top.reshape(-1, 2, 3)
    matrices[:, 2, 2] = 1.0
    return CropCache(
        path, size, source, np.asarray(data["image_id"], dtype=str),
        np.asarray(data["row"]), matrices, hash=snapshot_hash,
    )  # fmt: skip


def list_caches(db: str | os.PathLike[str] | None = None) -> list[CacheInfo]:
    """Every cache in the catalog, oldest first (``built`` is False: nothing was built)."""
    con = connect(db, read_only=True)
    try:
        if not _has_cache_tables(con):
            return []
        base = _catalog_dir(con)
        rows = con.execute(
            "SELECT path, snapshot, hash, size, source, n_images, seconds, created_at "
            "FROM crop_caches ORDER BY created_at, snapshot, size"
        ).fetchall()
    finally:
        con.close()
    return [
        CacheInfo(_absolute(base, p), snap, h, size, source, n, secs, False, created)
        for p, snap, h, size, source, n, secs, created in rows
    ]


def drop_cache(
    snapshot: str,
    db: str | os.PathLike[str] | None = None,
    *,
    size: int | None = None,
    source: str | None = None,
) -> list[CacheInfo]:
    """Delete the caches of ``snapshot`` (all sizes and sources unless given; a source
    kind such as ``"aligned"`` takes all its variants): index rows
    first, in one transaction, then the files. Returns what was dropped.

    ``snapshot`` matches the snapshot's current hash, or the name a cache was built
    from (so caches of a dropped snapshot can be removed too).
    """
    con = connect(db)
    try:
        ensure_tables(con)
        current = con.execute(
            "SELECT hash FROM snapshots WHERE name = ?", [snapshot]
        ).fetchone() if _has_table(con, "snapshots") else None  # fmt: skip
        where = "(snapshot = ? OR hash = ?::VARCHAR)"
        args: list[Any] = [snapshot, current[0] if current else None]
        if size is not None:
            where += " AND size = ?"
            args.append(size)
        if source is not None:  # a kind ("aligned") takes all its variants
            where += " AND (source = ? OR starts_with(source, ? || '/'))"
            args += [source, source]
        base = _catalog_dir(con)
        found = con.execute(
            "SELECT path, snapshot, hash, size, source, n_images, seconds, created_at "
            f"FROM crop_caches WHERE {where}",
            args,
        ).fetchall()
        if not found:
            known = sorted({
                f"{r[0]} ({r[1]})"
                for r in con.execute("SELECT snapshot, size FROM crop_caches").fetchall()
            })
            hint = f"Caches: {', '.join(known)}" if known else "There are no caches"
            raise CacheError(f"No crop cache for {snapshot!r} with these settings. {hint}.")
        with transaction(con):
            for _, _, h, s, src, *_ in found:
                _delete_index(con, h, src, s)
    finally:
        con.close()
    dropped = []
    for p, snap, h, s, src, n, secs, created in found:
        path = _absolute(base, p)
        path.unlink(missing_ok=True)
        dropped.append(CacheInfo(path, snap, h, s, src, n, secs, False, created))
    return dropped


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
            _record(db_path, snapshot, hash_, source, size, final, rows, seconds)
        except BaseException:
            final.unlink(missing_ok=True)  # no index row points at it (rolled back)
            raise
    return _info(final, snapshot, hash_, size, source, shape[0], seconds, built=True)


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


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(CACHE_DDL)
    # caches built before file sizes were recorded: NULL, not compared
    con.execute("ALTER TABLE crop_cache_rows ADD COLUMN IF NOT EXISTS file_size BIGINT")


# --- helpers ---------------------------------------------------------------------------


def _has_cache_tables(con: duckdb.DuckDBPyConnection) -> bool:
    # duckdb_tables(), not CREATE IF NOT EXISTS: a read-only connection cannot create.
    return has_table(con, "crop_caches", "crop_cache_rows")


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return has_table(con, name)


def _catalog_dir(con: duckdb.DuckDBPyConnection) -> Path:
    path = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()[0]
    return Path(path).resolve().parent


def _absolute(base: Path, stored: str) -> Path:
    path = Path(stored)
    return path if path.is_absolute() else base / path


def _relative(base: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(base).as_posix()
    except ValueError:  # not under the catalog's folder: keep it absolute
        return str(path.resolve())


def _file_complete(path: Path, n_images: int, size: int) -> bool:
    """The file exists and is long enough for its rows (one stat, no open)."""
    try:
        return path.stat().st_size >= n_images * size * size * 3
    except OSError:
        return False


def _boxes_differ(
    con: duckdb.DuckDBPyConnection, hash_: str, source: str, size: int, snapshot: str | None
) -> bool:
    """Whether any snapshot of this hash (or ``snapshot``) has another box for an image."""
    if source != "bbox" or not _has_table(con, "snapshots"):
        return False  # not cut from the face box, or no snapshot to compare with
    return bool(con.execute(
        "SELECT count(*) FROM crop_cache_rows AS r "
        "JOIN snapshots AS s ON s.hash = r.hash "
        "JOIN snapshot_images AS i ON i.snapshot = s.name AND i.image_id = r.image_id "
        "WHERE r.hash = ? AND r.source = ? AND r.size = ? AND (?::VARCHAR IS NULL OR s.name = ?) "
        "AND (i.x_1, i.y_1, i.x_2, i.y_2) IS DISTINCT FROM (r.x_1, r.y_1, r.x_2, r.y_2)",
        [hash_, source, size, snapshot, snapshot],
    ).fetchone()[0])  # fmt: skip


def _files_differ(con: duckdb.DuckDBPyConnection, hash_: str, source: str, size: int) -> bool:
    """Whether an image file was replaced since its crop was cut: the image index (a
    re-ingest scans the files again) gives another size than the one recorded."""
    if not _has_table(con, "images") or not con.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'crop_cache_rows' "
        "AND column_name = 'file_size'"
    ).fetchone()[0]:
        return False  # no index to compare with, or a cache from before sizes were kept
    return bool(con.execute(
        "SELECT count(*) FROM crop_cache_rows AS r JOIN images AS i USING (image_id) "
        "WHERE r.hash = ? AND r.source = ? AND r.size = ? AND r.file_size IS NOT NULL "
        "AND r.file_size <> i.file_size",
        [hash_, source, size],
    ).fetchone()[0])  # fmt: skip


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


def _rows_frame(
    image_ids: list[str], rows: np.ndarray, boxes: np.ndarray | None, matrices: np.ndarray,
    file_sizes: list[int] | None = None,
) -> Any:
    """The crop_cache_rows columns (less hash, source, size) as a DataFrame."""
    import pandas as pd

    matrices = np.asarray(matrices, dtype=np.float64).reshape(-1, 3, 3)
    return pd.DataFrame({
        "image_id": image_ids,
        "row": np.asarray(rows, dtype=np.int32),
        **{
            c: boxes[:, k].astype(np.int32) if boxes is not None
            else pd.array([None] * len(image_ids), dtype="Int32")
            for k, c in enumerate(_BOX_COLUMNS)
        },
        **{c: matrices[:, k // 3, k % 3] for k, c in enumerate(_MATRIX_COLUMNS)},
        "file_size": pd.array(file_sizes or [None] * len(image_ids), dtype="Int64"),
    })  # fmt: skip


def _record(
    db_path: Path,
    snapshot: str,
    hash_: str,
    source: str,
    size: int,
    final: Path,
    tasks: list[_Task] | Any,
    seconds: float,
) -> None:
    """Insert the index of a complete file, replacing any older index of the key.

    ``tasks``: the build's tasks (face-box crops), or a frame from :func:`_rows_frame`.
    """
    from catalog.transforms import box_to_square

    if isinstance(tasks, list):
        boxes = np.array([t.box for t in tasks], dtype=np.int64).reshape(-1, 4)
        matrices = np.array([box_to_square(t.box, size) for t in tasks]).reshape(-1, 3, 3)
        frame = _rows_frame([t.image_id for t in tasks], np.array([t.row for t in tasks]),
                            boxes, matrices, [t.file_size for t in tasks])  # fmt: skip
    else:
        frame = tasks
    frame.insert(0, "size", size)
    frame.insert(0, "source", source)
    frame.insert(0, "hash", hash_)
    con = connect(db_path)
    try:
        with transaction(con):
            ensure_tables(con)
            _delete_index(con, hash_, source, size)
            con.register("_crop_rows", frame)
            con.execute("INSERT INTO crop_cache_rows BY NAME SELECT * FROM _crop_rows")
            con.unregister("_crop_rows")
            con.execute(
                "INSERT INTO crop_caches VALUES (?, ?, ?, ?, ?, ?, ?, now()::TIMESTAMP)",
                [hash_, source, size, snapshot, _relative(_catalog_dir(con), final),
                 len(frame), seconds],
            )  # fmt: skip
    finally:
        con.close()


def _forget(db_path: Path, hash_: str, source: str, size: int) -> None:
    """Delete an incomplete or mismatching cache's index rows, then its file."""
    con = connect(db_path)
    try:
        row = con.execute(
            "SELECT path FROM crop_caches WHERE hash = ? AND source = ? AND size = ?",
            [hash_, source, size],
        ).fetchone()
        with transaction(con):
            _delete_index(con, hash_, source, size)
        base = _catalog_dir(con)
    finally:
        con.close()
    if row is not None:
        _absolute(base, row[0]).unlink(missing_ok=True)


def _delete_index(con: duckdb.DuckDBPyConnection, hash_: str, source: str, size: int) -> None:
    for table in ("crop_cache_rows", "crop_caches"):
        con.execute(
            f"DELETE FROM {table} WHERE hash = ? AND source = ? AND size = ?",
            [hash_, source, size],
        )


def _info(
    path: Path, snapshot: str, hash_: str, size: int, source: str, n: int, seconds: float,
    *, built: bool,
) -> CacheInfo:  # fmt: skip
    return CacheInfo(path, snapshot, hash_, size, source, n, seconds, built)


__all__ = [
    "SOURCES",
    "STORED_SOURCES",
    "CacheError",
    "CacheInfo",
    "CropCache",
    "build_cache",
    "drop_cache",
    "find_cache",
    "list_caches",
    "render_crop",
    "source_kind",
    "store_crops",
]
