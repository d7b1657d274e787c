"""The cache index: the ``crop_caches`` and ``crop_cache_rows`` tables, finding a
complete and current cache (staleness checks), listing and dropping caches.

Imports :mod:`catalog.cache.reader` only; :mod:`catalog.cache.build` writes through
:func:`record` and :func:`forget` here.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from catalog.cache.reader import CacheError, CropCache
from catalog.db import connect, has_table, register_frame, transaction
from catalog.snapshots import BadImage

if TYPE_CHECKING:
    import duckdb

#: Crop sources a cache can be built from. "bbox": the snapshot's face box.
SOURCES: tuple[str, ...] = ("bbox",)

#: Crop sources whose pixels are computed elsewhere and stored with :func:`store_crops`.
#: "aligned": faces warped onto a landmark template (models.alignment.snapshot). A stored cache's
#: source may name its variant after a slash, e.g. ``aligned/arcface/truth``.
STORED_SOURCES: tuple[str, ...] = ("aligned",)


#: A stored source's variant: slash-separated names, none starting with a dot.
_VARIANT = re.compile(r"[\w-][\w.-]*(/[\w-][\w.-]*)*")


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
    -- images of the snapshot left out (--skip-bad): [{image_id, path, reason, detail}]
    skipped    JSON,
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
    #: Images of the snapshot left out (``--skip-bad``): which and why.
    skipped: tuple[BadImage, ...] = ()


# --- finding and listing ---------------------------------------------------------------


#: SQL: the cache's source is the given one or, for a kind, any of its variants (the
#: source bound twice), so "aligned" finds "aligned/arcface/truth".
_SOURCE_OR_VARIANT = "(source = ? OR starts_with(source, ? || '/'))"


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
            f"AND {_SOURCE_OR_VARIANT} ORDER BY created_at DESC",
            [snapshot_hash, size, source, source],
        ).fetchall()
        for (variant,) in found:
            cache = _find_exact(con, snapshot_hash, size, variant, snapshot)
            if cache is not None:
                return cache
        return None
    return _find_exact(con, snapshot_hash, size, source, snapshot)


def _find_exact(
    con: duckdb.DuckDBPyConnection,
    snapshot_hash: str,
    size: int,
    source: str,
    snapshot: str | None,
) -> CropCache | None:
    row = _index_row(con, snapshot_hash, source, size, f"path, n_images, {_skipped_column(con)}")
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
        path,
        size,
        source,
        np.asarray(data["image_id"], dtype=str),
        np.asarray(data["row"]),
        matrices,
        hash=snapshot_hash,
        skipped=_bad_images(row[2]),
    )


def list_caches(db: str | os.PathLike[str] | None = None) -> list[CacheInfo]:
    """Every cache in the catalog, oldest first (``built`` is False: nothing was built)."""
    con = connect(db, read_only=True)
    try:
        if not _has_cache_tables(con):
            return []
        base = _catalog_dir(con)
        rows = con.execute(
            "SELECT path, snapshot, hash, size, source, n_images, seconds, created_at, "
            f"{_skipped_column(con)} FROM crop_caches ORDER BY created_at, snapshot, size"
        ).fetchall()
    finally:
        con.close()
    return [
        CacheInfo(
            _absolute(base, p), snap, h, size, source, n, secs, False, created, _bad_images(skipped)
        )
        for p, snap, h, size, source, n, secs, created, skipped in rows
    ]


def _skipped_column(con: duckdb.DuckDBPyConnection) -> str:
    """``skipped``, or NULL in a catalog whose caches predate it (read-only: not added)."""
    return (
        "skipped"
        if con.execute(
            "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'crop_caches' "
            "AND column_name = 'skipped'"
        ).fetchone()[0]
        else "NULL::JSON"
    )


def _bad_images(stored: str | None) -> tuple[BadImage, ...]:
    return tuple(BadImage(**b) for b in json.loads(stored)) if stored else ()


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
        current = (
            con.execute("SELECT hash FROM snapshots WHERE name = ?", [snapshot]).fetchone()
            if _has_table(con, "snapshots")
            else None
        )
        where = "(snapshot = ? OR hash = ?::VARCHAR)"
        args: list[Any] = [snapshot, current[0] if current else None]
        if size is not None:
            where += " AND size = ?"
            args.append(size)
        if source is not None:  # a kind ("aligned") takes all its variants
            where += f" AND {_SOURCE_OR_VARIANT}"
            args += [source, source]
        base = _catalog_dir(con)
        found = con.execute(
            "SELECT path, snapshot, hash, size, source, n_images, seconds, created_at "
            f"FROM crop_caches WHERE {where}",
            args,
        ).fetchall()
        if not found:
            known = sorted(
                {
                    f"{r[0]} ({r[1]})"
                    for r in con.execute("SELECT snapshot, size FROM crop_caches").fetchall()
                }
            )
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


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(CACHE_DDL)
    # caches built before file sizes were recorded: NULL, not compared
    con.execute("ALTER TABLE crop_cache_rows ADD COLUMN IF NOT EXISTS file_size BIGINT")
    # caches built before images could be skipped: NULL, none were
    con.execute("ALTER TABLE crop_caches ADD COLUMN IF NOT EXISTS skipped JSON")


# --- helpers ---------------------------------------------------------------------------


def _has_cache_tables(con: duckdb.DuckDBPyConnection) -> bool:
    # duckdb_tables(), not CREATE IF NOT EXISTS: a read-only connection cannot create.
    return has_table(con, "crop_caches", "crop_cache_rows")


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return has_table(con, name)


def _index_row(
    con: duckdb.DuckDBPyConnection, hash_: str, source: str, size: int, columns: str = "path"
) -> tuple | None:
    """``columns`` of the ``crop_caches`` row of the key (``hash_``, ``source``,
    ``size``), or None: no such cache, or no cache tables (read-only safe)."""
    if not _has_cache_tables(con):
        return None
    return con.execute(
        f"SELECT {columns} FROM crop_caches WHERE hash = ? AND source = ? AND size = ?",
        [hash_, source, size],
    ).fetchone()


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
    return bool(
        con.execute(
            "SELECT count(*) FROM crop_cache_rows AS r "
            "JOIN snapshots AS s ON s.hash = r.hash "
            "JOIN snapshot_images AS i ON i.snapshot = s.name AND i.image_id = r.image_id "
            "WHERE r.hash = ? AND r.source = ? AND r.size = ? "
            "AND (?::VARCHAR IS NULL OR s.name = ?) "
            "AND (i.x_1, i.y_1, i.x_2, i.y_2) IS DISTINCT FROM (r.x_1, r.y_1, r.x_2, r.y_2)",
            [hash_, source, size, snapshot, snapshot],
        ).fetchone()[0]
    )


def _files_differ(con: duckdb.DuckDBPyConnection, hash_: str, source: str, size: int) -> bool:
    """Whether an image file was replaced since its crop was cut: the image index (a
    re-ingest scans the files again) gives another size than the one recorded."""
    if (
        not _has_table(con, "images")
        or not con.execute(
            "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'crop_cache_rows' "
            "AND column_name = 'file_size'"
        ).fetchone()[0]
    ):
        return False  # no index to compare with, or a cache from before sizes were kept
    return bool(
        con.execute(
            "SELECT count(*) FROM crop_cache_rows AS r JOIN images AS i USING (image_id) "
            "WHERE r.hash = ? AND r.source = ? AND r.size = ? AND r.file_size IS NOT NULL "
            "AND r.file_size <> i.file_size",
            [hash_, source, size],
        ).fetchone()[0]
    )


def _rows_frame(
    image_ids: list[str],
    rows: np.ndarray,
    boxes: np.ndarray | None,
    matrices: np.ndarray,
    file_sizes: list[int] | None = None,
) -> Any:
    """The crop_cache_rows columns (less hash, source, size) as a DataFrame."""
    import pandas as pd

    matrices = np.asarray(matrices, dtype=np.float64).reshape(-1, 3, 3)
    return pd.DataFrame(
        {
            "image_id": image_ids,
            "row": np.asarray(rows, dtype=np.int32),
            **{
                c: boxes[:, k].astype(np.int32)
                if boxes is not None
                else pd.array([None] * len(image_ids), dtype="Int32")
                for k, c in enumerate(_BOX_COLUMNS)
            },
            **{c: matrices[:, k // 3, k % 3] for k, c in enumerate(_MATRIX_COLUMNS)},
            "file_size": pd.array(file_sizes or [None] * len(image_ids), dtype="Int64"),
        }
    )


def _record(
    db_path: Path,
    snapshot: str,
    hash_: str,
    source: str,
    size: int,
    final: Path,
    frame: Any,
    seconds: float,
    skipped: tuple[BadImage, ...] = (),
) -> None:
    """Insert the index of a complete file, replacing any older index of the key.

    ``frame``: the rows, from :func:`_rows_frame`.
    """
    frame.insert(0, "size", size)
    frame.insert(0, "source", source)
    frame.insert(0, "hash", hash_)
    con = connect(db_path)
    try:
        with transaction(con):
            ensure_tables(con)
            _delete_index(con, hash_, source, size)
            register_frame(con, "_crop_rows", frame)
            con.execute("INSERT INTO crop_cache_rows BY NAME SELECT * FROM _crop_rows")
            con.unregister("_crop_rows")
            con.execute(
                "INSERT INTO crop_caches (hash, source, size, snapshot, path, n_images, "
                "seconds, created_at, skipped) VALUES (?, ?, ?, ?, ?, ?, ?, now()::TIMESTAMP, ?)",
                [
                    hash_,
                    source,
                    size,
                    snapshot,
                    _relative(_catalog_dir(con), final),
                    len(frame),
                    seconds,
                    json.dumps([b.as_dict() for b in skipped]) if skipped else None,
                ],
            )
    finally:
        con.close()


def _forget(db_path: Path, hash_: str, source: str, size: int) -> None:
    """Delete an incomplete or mismatching cache's index rows, then its file."""
    con = connect(db_path)
    try:
        row = _index_row(con, hash_, source, size)
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
    path: Path,
    snapshot: str,
    hash_: str,
    size: int,
    source: str,
    n: int,
    seconds: float,
    *,
    built: bool,
    skipped: tuple[BadImage, ...] = (),
) -> CacheInfo:
    return CacheInfo(path, snapshot, hash_, size, source, n, seconds, built, skipped=skipped)
