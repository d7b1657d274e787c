"""``celebcat ingest``: annotation files and image folders into the catalog, atomically.

Order of work:

1. find the annotation files and image roots under the data folder;
2. scan the image roots (headers only, in parallel) *before* touching the catalog,
   since that is the slow part and needs no transaction;
3. then one of two paths, by whether the catalog file exists.

**A first ingest** (no catalog file, nor its WAL) has nothing to protect. The whole
catalog is built in a temporary file beside it (:func:`_temp_path`): each
annotation file loaded straight into its table, several at once, each on its own
cursor; then one transaction loads the image index, runs the cross-file checks,
records what was loaded and creates the views. The loads' commits do not sync the
file (:func:`_without_fsync`); the final transaction's COMMIT and the CHECKPOINT after
it do, before the file is closed and hard-linked to the catalog's name (which refuses
to replace a catalog another process created meanwhile: this ingest then takes the
second path). Any failure or Ctrl-C removes the temporary file, so the catalog is
absent as before, or whole; the one a killed run leaves is removed by the next ingest
into that catalog.

**A re-ingest** into an existing catalog must lose nothing if it fails:

a. load each annotation file into its table in an in-memory database attached to
   the catalog's connection (:data:`STAGE`), several files at once, each in its own
   transaction on its own cursor: DuckDB runs one statement on barely more than one
   core here, so files in parallel are what use both cores;
b. in one transaction: drop the old tables, copy the staged ones in, load the image
   index, run the cross-file checks, record what was loaded (with a token unique to
   this run), rebuild the views; commit.

Nothing is written to the catalog file before that transaction, so a bad file, an
error or Ctrl-C before it leave the file byte for byte as it was; one inside it rolls
back. A process killed at any point leaves the previous catalog or the complete new
one. Ctrl-C during the COMMIT is reported after it (DuckDB finishes the statement), so
the token is read back to say which of the two the catalog is (:class:`IngestInterrupted`).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from catalog import __version__
from catalog.annotations import (
    AnnotationError,
    AnnotationFile,
    create_table,
    find_annotation_files,
    load_annotation,
    table_ddl,
)
from catalog.db import (
    DbArg,
    connect,
    has_table,
    is_interrupt,
    register_frame,
    resolve_db,
    transaction,
)
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
    *ANNOTATION_TABLES,
    "images",
    "images_aligned",
    "problems",
    "catalog_info",
    "ingested_files",
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


class IngestInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped an ingest. ``committed`` says which catalog it left: the new one,
    complete (the interrupt came during or after the final commit), or the previous one
    as it was (``None`` where that could not be read back). The message says it in
    words; the CLI prints it."""

    def __init__(self, db: Path, committed: bool | None, existed: bool) -> None:
        self.db, self.committed = db, committed
        if committed:
            message = f"Interrupted after the commit: the new catalog {db} is complete."
        elif committed is None:
            message = (
                f"Interrupted during the commit, and whether it went through could "
                f"not be read back: look with `celebcat tables --db {db}`, or ingest "
                "again."
            )
        elif existed:
            message = f"Interrupted: nothing changed; the catalog {db} was left as it was."
        else:
            message = f"Interrupted: nothing changed; no catalog was created at {db}."
        super().__init__(message)


def ingest(
    data_dir: str | os.PathLike[str],
    db: DbArg = None,
    *,
    images: str | os.PathLike[str] | None = None,
    scan_images: bool = True,
    workers: int | None = None,
    progress: IngestProgress | None = None,
    allow_empty: bool = False,
) -> IngestResult:
    """Load every CelebA file under ``data_dir`` into the catalog ``db``, replacing its data.

    ``images`` overrides the in-the-wild image root found under ``data_dir``;
    ``scan_images=False`` skips the image index (annotations only). Raises
    :class:`~catalog.annotations.AnnotationError` (file, line, problem) on bad input,
    after rolling back: the catalog file is then byte for byte as before the call (and a
    catalog this call would have created is not left behind). An annotation file with
    no rows (a header alone) is refused the same way unless ``allow_empty``: it would
    replace a table of the catalog with an empty one.

    Ctrl-C raises :class:`IngestInterrupted` (a KeyboardInterrupt), which says whether
    the new catalog was committed (complete) or the previous one left as it was.
    """
    progress = progress or IngestProgress()
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise IngestError(f"{data_dir} is not a folder. Pass the folder holding the CelebA files.")
    path = resolve_db(db)
    state = _State(existed=path.exists())
    try:
        result = _ingest(data_dir, path, images, scan_images, workers, progress, allow_empty, state)
    except BaseException as exc:
        if is_interrupt(exc):
            raise IngestInterrupted(path, state.committed, state.existed) from exc
        if state.committed is False:
            if isinstance(exc, CatalogError) or not _is_write_failure(exc):
                raise
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            kept = (
                f"the catalog {path} is as it was before this ingest"
                if state.existed
                else "no catalog was created"
            )
            raise IngestError(f"Ingest could not write the catalog ({reason}); {kept}.") from exc
        done = (
            "is complete (committed)"
            if state.committed
            else "may or may not hold the new data (it could not be read back)"
        )
        raise IngestError(f"The catalog {path} {done}, but then: {exc}") from exc
    return result


def _say_if_the_selection_cannot_be_met(
    con: duckdb.DuckDBPyConnection, result: IngestResult
) -> None:
    """A fresh catalog keeps the selection parameters in force (the reference's
    defaults on a first ingest): where they ask for more than this data holds, a note
    says so now, not when ``snapshot create`` fails. Run on the ingest's connection
    just after its COMMIT (not in the transaction, which an error would abort; nor on
    a connection of its own, which cost 0.02-0.04 s more)."""
    import duckdb

    from catalog.selection import FIT_HINT, problems_with
    from catalog.views import get_params

    try:
        eligible = con.execute("SELECT count(*) FROM eligible_identities").fetchone()[0]
        found = problems_with(get_params(con), eligible)
    except (CatalogError, duckdb.Error):
        return
    if found:
        result.notes.append(
            f"the selection in force cannot be met on this catalog: {found[0]}"
            + (f" (and {len(found) - 1} more)" if len(found) > 1 else "")
            + f" {FIT_HINT}"
        )


def _is_write_failure(exc: BaseException) -> bool:
    """DuckDB or the file system failing to write the catalog (a full disk, a read-only
    folder): the transaction was rolled back, so the one line says what survived."""
    import duckdb

    return isinstance(
        exc,
        (OSError, duckdb.IOException, duckdb.TransactionException, duckdb.OutOfMemoryException),
    )


@dataclass
class _State:
    #: Whether the new data is in the catalog: False until the COMMIT went through,
    #: None when that could not be read back after an error.
    committed: bool | None = False
    #: Whether a catalog was there to re-ingest into (what a failure leaves).
    existed: bool = False


#: The in-memory database each file loads into (attached to the catalog's connection),
#: so that nothing reaches the catalog file before the final transaction.
STAGE = "_celebcat_ingest_stage"


def _ingest(
    data_dir: Path,
    path: Path,
    images: str | os.PathLike[str] | None,
    scan_images: bool,
    workers: int | None,
    progress: IngestProgress,
    allow_empty: bool,
    state: _State,
) -> IngestResult:
    found, notes = find_annotation_files(data_dir)
    result = IngestResult(db=path, data_dir=data_dir.resolve(), notes=notes)
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
    token = uuid.uuid4().hex  # recorded with the new data: tells whether the COMMIT went in
    _remove_stale_temps(path)
    args = (path, found, scans, workers, progress, allow_empty, result, token, state)
    notes = list(result.notes)
    if not (_fresh_target(path) and _ingest_fresh(*args)):
        # A re-ingest; or another process created the catalog while this one built
        # it (rare): then a re-ingest into that, from the start.
        result.rows, result.problems, result.notes = {}, {}, notes
        state.existed = path.exists()
        _ingest_staged(*args)
    result.load_seconds = time.perf_counter() - t0
    return result


def _fill(
    con: duckdb.DuckDBPyConnection,
    found: dict[str, AnnotationFile],
    scans: dict[str, pd.DataFrame],
    progress: IngestProgress,
    result: IngestResult,
    token: str,
) -> None:
    """Inside the final transaction, the annotation tables in place: the image index,
    the cross-file checks, the record of this run, the views."""
    result.rows.update(_load_images(con, scans))
    progress.step("checking across files")
    result.problems = run_checks(con, set(scans))
    _record(con, result, found, token)
    _rebuild_views(con, result)
    result.rows = {  # in table order, whatever order the parallel loads finished in
        t: result.rows.get(t, 0) for t in (*ANNOTATION_TABLES, "images", "images_aligned")
    }


def _ingest_staged(
    path: Path,
    found: dict[str, AnnotationFile],
    scans: dict[str, pd.DataFrame],
    workers: int | None,
    progress: IngestProgress,
    allow_empty: bool,
    result: IngestResult,
    token: str,
    state: _State,
) -> None:
    """Re-ingest into an existing catalog: every file staged in memory, then one
    transaction replaces the tables (the module's docstring)."""
    existed = path.exists()
    con = connect(path)
    try:
        try:
            con.execute(f"ATTACH ':memory:' AS {STAGE}")
            progress.step(f"loading {len(found)} annotation files")
            result.rows.update(_load_files(con, found, workers, STAGE))
            if not allow_empty:
                _refuse_empty(found, result.rows)
            con.execute("BEGIN TRANSACTION")
            _drop_shadows(con)  # left in the catalog by a killed run of an older version
            _drop_tables(con)
            _create_tables(con, empty=[t for t in ANNOTATION_TABLES if t not in found])
            for table in found:  # typed and compressed as loaded (create_table)
                create_table(con, table, nullable=True)
                con.execute(f"INSERT INTO {table} SELECT * FROM {STAGE}.{table}")
            _fill(con, found, scans, progress, result, token)
            con.execute("COMMIT")
            state.committed = True
            _say_if_the_selection_cannot_be_met(con, result)
        except BaseException:
            # Also on Ctrl-C: nothing of this run may reach the catalog, unless the
            # COMMIT went through (DuckDB reports a Ctrl-C during it after the fact).
            state.committed = _committed(con, token)
            raise
    finally:
        try:
            con.close()  # checkpoints: a Ctrl-C may land here too, after the COMMIT
        finally:
            if state.committed is False and not existed:  # leave no empty catalog behind
                for leftover in (path, _wal(path)):
                    leftover.unlink(missing_ok=True)


def _wal(path: Path) -> Path:
    """The write-ahead log DuckDB keeps beside a database file."""
    return path.with_name(path.name + ".wal")


def _temp_path(path: Path, token: str) -> Path:
    """Where a first ingest builds the catalog ``path``: beside it (a rename stays on
    one file system), hidden, named after the process (:func:`_remove_stale_temps`)
    and the run."""
    return path.with_name(f".{path.name}.ingest-{os.getpid()}-{token[:12]}.tmp")


def _fresh_target(path: Path) -> bool:
    """Whether ``path`` names no catalog at all (nor the WAL of one), so that a first
    ingest has nothing to protect and may build the catalog whole elsewhere."""
    return not path.exists() and not _wal(path).exists()


def _remove_stale_temps(path: Path) -> None:
    """Remove the temporary catalogs that killed first ingests into ``path`` left (those
    of processes no longer running; a live one may be another ingest at work)."""
    prefix = f".{path.name}.ingest-"
    try:
        names = [n for n in os.listdir(path.parent) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        pid = name[len(prefix) :].split("-", 1)[0]
        if not pid.isdigit() or not name.endswith((".tmp", ".tmp.wal")):
            continue
        if int(pid) == os.getpid() or _running(int(pid)):
            continue  # this process's or a live one's: maybe an ingest at work
        try:
            (path.parent / name).unlink()
        except OSError:
            pass


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


def _ingest_fresh(
    path: Path,
    found: dict[str, AnnotationFile],
    scans: dict[str, pd.DataFrame],
    workers: int | None,
    progress: IngestProgress,
    allow_empty: bool,
    result: IngestResult,
    token: str,
    state: _State,
) -> bool:
    """First ingest into ``path``: build the whole catalog in a temporary file beside
    it, each annotation file loaded straight into its table (no staged copy), then
    hard-link it into place, which refuses to replace a file. Any failure, Ctrl-C
    included, removes the temporary file: ``path`` is then absent as before, or whole.

    Returns False, having changed nothing, when a catalog appeared at ``path`` while
    this one was built (another process's ingest): the caller then re-ingests into it.
    """
    tmp = _temp_path(path, token)
    path.parent.mkdir(parents=True, exist_ok=True)
    publishing = False
    try:
        con = connect(tmp)
        try:
            unsynced = _without_fsync(con)
            progress.step(f"loading {len(found)} annotation files")
            # One DuckDB thread per load while the files load in parallel: less CPU in
            # all than two each (about 1.8 s against 1.95 s for full-size CelebA on 2
            # cores), and the tables come out as compact as the staged copies (with
            # two, 8 of the file's 64 blocks were left free).
            if _parallel_loads(found, workers) > 1:
                con.execute("SET threads = 1")
            result.rows.update(_load_files(con, found, workers, None))
            con.execute("RESET threads")
            if not allow_empty:
                _refuse_empty(found, result.rows)
            if unsynced:
                # DuckDB syncs again from here: the final COMMIT and CHECKPOINT sync the
                # whole file (the loads' blocks with it) before it is linked into place
                con.execute("RESET fsync_mode")
            con.execute("BEGIN TRANSACTION")
            _create_tables(con, empty=[t for t in ANNOTATION_TABLES if t not in found])
            _fill(con, found, scans, progress, result, token)
            con.execute("COMMIT")
            _say_if_the_selection_cannot_be_met(con, result)
            con.execute("CHECKPOINT")  # all in the file, synced: nothing left in its WAL
        finally:
            con.close()
        if _wal(tmp).exists():
            raise OSError(f"DuckDB left a write-ahead log beside {tmp}")
        publishing = True
        if not _publish(tmp, path):
            return False
        state.committed = True
    except BaseException:
        # a Ctrl-C landing just after the link: the catalog is the new one all the same
        state.committed = publishing and (
            _same_file(tmp, path) or (path.exists() and not tmp.exists())
        )
        raise
    finally:
        for leftover in (tmp, _wal(tmp)):
            leftover.unlink(missing_ok=True)
    return True


def _without_fsync(con: duckdb.DuckDBPyConnection) -> bool:
    """Turn DuckDB's fsync off while the loads fill a first ingest's temporary file:
    each load's COMMIT would sync the file (about 7 ms each), where one sync before the
    file is published is all a crash needs (a temporary file is never opened again).
    False where DuckDB has no such setting (1.3 has none): it syncs each COMMIT then."""
    import duckdb

    try:
        con.execute("SET fsync_mode = 'NONE'")
    except duckdb.CatalogException:
        return False
    return True


def _publish(tmp: Path, path: Path) -> bool:
    """Put the complete catalog ``tmp`` at ``path``; False (and ``path`` untouched)
    when a file is already there. A hard link refuses to replace one; where the file
    system has none, a rename replaces, after one last look."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError:
        if path.exists():
            return False
        os.replace(tmp, path)
    return True


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _committed(con: duckdb.DuckDBPyConnection, token: str) -> bool | None:
    """After an error: roll back what is open and say whether the catalog holds this
    run's data (``token`` in catalog_info), None if that cannot be read."""
    try:
        con.execute("ROLLBACK")
    except Exception:  # noqa: BLE001 - no transaction open (committed, or never begun)
        pass
    try:
        if not has_table(con, "catalog_info"):
            return False
        row = con.execute("SELECT value FROM catalog_info WHERE key = 'ingest_id'").fetchone()
    except Exception:  # noqa: BLE001 - the connection is unusable: cannot tell
        return None
    return row is not None and row[0] == token


def _refuse_empty(found: dict[str, AnnotationFile], rows: dict[str, int]) -> None:
    """AnnotationError for the first file that loaded no rows (only its header)."""
    for table, f in found.items():
        if rows.get(table):
            continue
        declares = " (line 1 declares 0 rows)" if f.spec.count_line else ""
        raise AnnotationError(
            f.path,
            1 if f.spec.count_line else None,
            f"the file has no rows{declares}: loading it would replace the catalog's "
            f"{table} with an empty table. Pass --allow-empty to load it anyway.",
        )


SHADOW_PREFIX = "_ingest_"


def _drop_shadows(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the shadow tables an older version's killed ingest left in the catalog."""
    names = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
        "AND database_name = current_database() AND starts_with(table_name, ?)",
        [SHADOW_PREFIX],
    ).fetchall()
    for (name,) in names:
        con.execute(f'DROP TABLE IF EXISTS "{name}"')


def _parallel_loads(found: dict[str, AnnotationFile], workers: int | None) -> int:
    """How many files :func:`_load_files` loads at once."""
    return max(1, min(workers or os.cpu_count() or 1, len(found), 4))


def _load_files(
    con: duckdb.DuckDBPyConnection,
    found: dict[str, AnnotationFile],
    workers: int | None,
    schema: str | None,
) -> dict[str, int]:
    """Load every file into its table, in parallel; return rows per table. ``schema``:
    the database the tables go to (the in-memory :data:`STAGE`), None for ``con``'s own.

    Each file gets its own cursor (connection) and transaction. On any error the
    other loads are interrupted, and the error of the first failing file (in file
    order, so the message does not depend on timing) is raised.
    """
    from concurrent.futures import CancelledError, ThreadPoolExecutor

    n_threads = _parallel_loads(found, workers)
    cursors: dict[str, duckdb.DuckDBPyConnection] = {}

    def load(table: str) -> int:
        with transaction(cursors[table]) as cur:
            return load_annotation(cur, found[table], f"{schema}.{table}" if schema else table)

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


def _drop_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Drop every ingest table (a re-ingest replaces them all)."""
    for table in INGEST_TABLES:
        con.execute(f"DROP TABLE IF EXISTS {table}")


def _create_tables(con: duckdb.DuckDBPyConnection, empty: list[str]) -> None:
    """Create the ingest tables that no file creates."""
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
        register_frame(con, "_scan_frame", frame)
        # typed here: a text column that is all None (no image has a problem) would
        # otherwise be read as INTEGER by duckdb 1.x, and `problem = 'image_truncated'`
        # in the checks would fail to convert
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _scan_{key} AS SELECT image_id::VARCHAR AS image_id, "
            "path::VARCHAR AS path, file_size::BIGINT AS file_size, width::INTEGER AS width, "
            "height::INTEGER AS height, error::VARCHAR AS error, problem::VARCHAR AS problem "
            "FROM _scan_frame"
        )
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
    con: duckdb.DuckDBPyConnection,
    result: IngestResult,
    found: dict[str, AnnotationFile],
    token: str,
) -> None:
    info = {
        "ingest_id": token,  # unique per ingest: read back after an interrupted COMMIT
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
