"""``celebcat ingest``: annotation files and image folders into the catalog, atomically.

Order of work:

1. find the annotation files and image roots under the data folder;
2. scan the image roots (headers only, in parallel) *before* touching the catalog,
   since that is the slow part and needs no transaction;
3. load each annotation file into a hidden shadow table (``_ingest_<table>``),
   several files at once, each in its own transaction on its own connection:
   DuckDB runs one statement on barely more than one core here, and building a
   table's key is single-threaded, so files in parallel are what use both cores;
4. in one transaction: drop the old tables, rename the shadows into place, load
   the image index, run the cross-file checks, record what was loaded, rebuild
   the views; commit.

Until that last commit the catalog's tables are untouched. Any error or Ctrl-C
drops the shadows and rolls back, leaving the previous catalog as it was; a
killed process can leave shadow tables behind, which the next ingest removes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from catalog import __version__
from catalog.annotations import (
    AnnotationFile,
    find_annotation_files,
    load_annotation,
    table_ddl,
)
from catalog.db import DbArg, connect, resolve_db, transaction
from catalog.errors import CatalogError
from catalog.formats import ALL_FILES, ANNOTATION_TABLES
from catalog.problems import PROBLEMS_DDL, run_checks
from catalog.views import apply_views

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

ProgressFn = Callable[[int, int], None]

#: The image index tables: one row per image file, keyed by file name.
IMAGE_TABLE_DDL = """
CREATE TABLE {name} (
    image_id  VARCHAR PRIMARY KEY,  -- file name, e.g. 000001.jpg (matches the annotations)
    path      VARCHAR NOT NULL,     -- POSIX path relative to the image root
    file_size BIGINT NOT NULL,      -- bytes
    width     INTEGER,              -- pixels, from the header; NULL if unreadable
    height    INTEGER,
    error     VARCHAR               -- why the file cannot be used (header unreadable, file
                                    -- cut short, a link out of the image root), else NULL
)
"""

INFO_DDL = """
CREATE TABLE catalog_info (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE ingested_files (
    table_name VARCHAR PRIMARY KEY, path VARCHAR NOT NULL, layout VARCHAR NOT NULL,
    rows BIGINT NOT NULL
);
"""

#: Every table ingest owns (recreated on each ingest).
INGEST_TABLES: tuple[str, ...] = (
    *ANNOTATION_TABLES, "images", "images_aligned", "problems", "catalog_info", "ingested_files",
)


@dataclass
class IngestResult:
    """What an ingest loaded. ``rows`` per table; ``problems`` counts per check."""

    db: Path
    data_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    image_root: Path | None = None
    aligned_root: Path | None = None
    problems: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    scan_seconds: float = 0.0
    load_seconds: float = 0.0


@dataclass
class IngestProgress:
    """Callbacks the CLI hooks its progress display to; all optional."""

    step: Callable[[str], None] = lambda message: None
    scan: Callable[[str, int], ProgressFn] | None = None  # (label, total) -> update(done, total)


class IngestError(CatalogError, RuntimeError):
    """Ingest could not start (nothing to load, missing folder); the catalog is untouched."""


def ingest(
    data_dir: str | os.PathLike[str],
    db: DbArg = None,
    *,
    images: str | os.PathLike[str] | None = None,
    scan_images: bool = True,
    workers: int | None = None,
    progress: IngestProgress | None = None,
) -> IngestResult:
    """Load every CelebA file under ``data_dir`` into the catalog ``db``, replacing its data.

    ``images`` overrides the in-the-wild image root found under ``data_dir``;
    ``scan_images=False`` skips the image index (annotations only). Raises
    :class:`~catalog.annotations.AnnotationError` (file, line, problem) on bad input,
    after rolling back: the catalog is then exactly as before the call.
    """
    progress = progress or IngestProgress()
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise IngestError(f"{data_dir} is not a folder. Pass the folder holding the CelebA files.")
    found, notes = find_annotation_files(data_dir)
    result = IngestResult(db=resolve_db(db), data_dir=data_dir.resolve(), notes=notes)
    result.files = {table: f.path for table, f in found.items()}

    scans = {}
    if scan_images:
        t0 = time.perf_counter()
        scans = _scan(data_dir, images, workers, progress, result)
        result.scan_seconds = time.perf_counter() - t0
    if not found and not any(len(s) for s in scans.values()):
        expected = ", ".join(spec.name for spec in ALL_FILES[:6])
        raise IngestError(
            f"No CelebA annotation files or images found in {data_dir}. Expected files such as "
            f"{expected} (or the Kaggle CSVs), and images in img_celeba/ or img_align_celeba/."
        )

    t0 = time.perf_counter()
    con = connect(db)
    try:
        _drop_shadows(con)  # left by a killed run
        progress.step(f"loading {len(found)} annotation files")
        result.rows.update(_load_shadows(con, found, workers))
        con.execute("BEGIN TRANSACTION")
        _create_tables(con, empty=[t for t in ANNOTATION_TABLES if t not in found])
        for table in found:
            con.execute(f"ALTER TABLE {SHADOW_PREFIX}{table} RENAME TO {table}")
        result.rows.update(_load_images(con, scans))
        progress.step("checking across files")
        result.problems = run_checks(con, set(scans))
        _record(con, result, found)
        _rebuild_views(con, result)
        result.rows = {  # in table order, whatever order the parallel loads finished in
            t: result.rows.get(t, 0) for t in (*ANNOTATION_TABLES, "images", "images_aligned")
        }
        con.execute("COMMIT")
    except BaseException:
        # Also on KeyboardInterrupt: nothing of this run may reach the catalog.
        try:
            con.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - no transaction may be open
            pass
        _drop_shadows(con)
        raise
    finally:
        con.close()
    result.load_seconds = time.perf_counter() - t0
    return result


SHADOW_PREFIX = "_ingest_"


def _drop_shadows(con: duckdb.DuckDBPyConnection) -> None:
    names = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
        "AND starts_with(table_name, ?)",
        [SHADOW_PREFIX],
    ).fetchall()
    for (name,) in names:
        con.execute(f'DROP TABLE IF EXISTS "{name}"')


def _load_shadows(
    con: duckdb.DuckDBPyConnection, found: dict[str, AnnotationFile], workers: int | None
) -> dict[str, int]:
    """Load every file into its shadow table, in parallel; return rows per table.

    Each file gets its own cursor (connection) and transaction. On any error the
    other loads are interrupted, and the error of the first failing file (in file
    order, so the message does not depend on timing) is raised.
    """
    from concurrent.futures import CancelledError, ThreadPoolExecutor

    n_threads = max(1, min(workers or os.cpu_count() or 1, len(found), 4))
    cursors: dict[str, duckdb.DuckDBPyConnection] = {}

    def load(table: str) -> int:
        with transaction(cursors[table]) as cur:
            return load_annotation(cur, found[table], SHADOW_PREFIX + table)

    # Largest files first, so the long ones do not start last.
    order = sorted(found, key=lambda t: -found[t].path.stat().st_size)
    for table in order:
        cursors[table] = con.cursor()
    errors: dict[str, BaseException] = {}
    rows: dict[str, int] = {}
    try:
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            futures = {table: pool.submit(load, table) for table in order}
            try:
                for table, future in futures.items():
                    try:
                        rows[table] = future.result()
                    except CancelledError:
                        pass  # not started because another file failed
                    except Exception as exc:  # noqa: BLE001 - collected, re-raised below
                        errors[table] = exc
                        for other in futures.values():
                            other.cancel()
            except BaseException:  # Ctrl-C: stop the running loads, then unwind
                for cur in cursors.values():
                    cur.interrupt()
                raise
    finally:
        for cur in cursors.values():
            cur.close()
    if errors:
        first = next(t for t in found if t in errors)
        raise errors[first]
    return rows


def _scan(
    data_dir: Path,
    images: str | os.PathLike[str] | None,
    workers: int | None,
    progress: IngestProgress,
    result: IngestResult,
) -> dict[str, pd.DataFrame]:
    from catalog.images import find_image_roots, scan_images

    roots = find_image_roots(data_dir)
    wild, aligned = roots.wild, roots.aligned
    if images is not None:
        wild = Path(images)
        if not wild.is_dir():
            raise IngestError(f"--images {wild} is not a folder")
        if aligned is not None and wild.resolve() == aligned.resolve():
            aligned = None  # the user says this folder is the in-the-wild one
    result.image_root = wild.resolve() if wild else None
    result.aligned_root = aligned.resolve() if aligned else None
    scans: dict[str, pd.DataFrame] = {}
    for key, root, exclude in (("wild", wild, aligned), ("aligned", aligned, None)):
        if root is None:
            continue
        label = "aligned images" if key == "aligned" else "images"
        progress.step(f"scanning {label} in {root}")
        update = progress.scan(label, 0) if progress.scan else None
        scans[key] = scan_images(root, exclude=exclude, workers=workers, progress=update)
    return scans


def _create_tables(con: duckdb.DuckDBPyConnection, empty: list[str]) -> None:
    """Drop every ingest table; create those that no file will create."""
    for table in INGEST_TABLES:
        con.execute(f"DROP TABLE IF EXISTS {table}")
    for table in empty:
        con.execute(table_ddl(table))
    con.execute(IMAGE_TABLE_DDL.format(name="images"))
    con.execute(IMAGE_TABLE_DDL.format(name="images_aligned"))
    con.execute(PROBLEMS_DDL)
    con.execute(INFO_DDL)


def _load_images(con: duckdb.DuckDBPyConnection, scans: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Stage each scan as ``_scan_<key>`` (kept for the checks) and index it.

    A name found twice keeps its first path in sorted order; the checks report the rest.
    """
    rows = {"images": 0, "images_aligned": 0}
    for key, frame in scans.items():
        table = "images_aligned" if key == "aligned" else "images"
        con.register("_scan_frame", frame)
        con.execute(f"CREATE OR REPLACE TEMP TABLE _scan_{key} AS SELECT * FROM _scan_frame")
        con.unregister("_scan_frame")
        rows[table] = con.execute(
            f"INSERT INTO {table} SELECT image_id, path, file_size, width, height, error "
            f"FROM _scan_{key} WHERE image_id IS NOT NULL "  # NULL: a folder link, not walked
            "QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY path) = 1"
        ).fetchone()[0]
    return rows


def _rebuild_views(con: duckdb.DuckDBPyConnection, result: IngestResult) -> None:
    """Views on the new data; parameters and quotas survive a re-ingest.

    Quotas the new data cannot meet are dropped with a note rather than failing the
    ingest: the data are fine, the quota is what no longer fits.
    """
    from catalog.quotas import QuotaError, refresh

    apply_views(con, quotas=False)
    try:
        refresh(con)
    except QuotaError as exc:
        con.execute("DELETE FROM quotas")
        refresh(con)
        result.notes.append(f"quotas removed: {exc}")


def _record(
    con: duckdb.DuckDBPyConnection, result: IngestResult, found: dict[str, AnnotationFile]
) -> None:
    info = {
        "data_dir": str(result.data_dir),
        "image_root": str(result.image_root) if result.image_root else None,
        "aligned_root": str(result.aligned_root) if result.aligned_root else None,
        "ingested_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "catalog_version": __version__,
    }
    con.executemany("INSERT INTO catalog_info VALUES (?, ?)", list(info.items()))
    if found:
        con.executemany(
            "INSERT INTO ingested_files VALUES (?, ?, ?, ?)",
            [
                (table, str(f.path.resolve()), f.spec.layout, result.rows[table])
                for table, f in found.items()
            ],
        )
