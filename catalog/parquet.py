"""A snapshot as one Parquet file, for Spark, Ray or any engine beyond one machine.

``celebcat snapshot export NAME OUT.parquet`` writes the frozen selection: one row per
image of the snapshot, by image id, with what a job elsewhere needs to read it::

    image_id, identity, split, label,     -- split NULL: selected, in no split;
                                          -- label NULL: held out (query/distractor)
    x_1, y_1, x_2, y_2,                   -- the snapshot's face box (exclusive ends)
    path, width, height,                  -- the in-the-wild file (absolute), its size
    lefteye_x ... rightmouth_y            -- the catalog's landmarks, in-the-wild pixels

With ``--embeddings RUN`` (``--predictions RUN``) the rows are the snapshot's images
that run embedded (predicted landmarks for), with ``image_id, identity, split,
label`` and the run's ``source, embedding`` (``lefteye_x ... rightmouth_y, nme,
normaliser``): the ``embeddings`` and ``landmark_predictions`` tables, framed by the
snapshot they belong to.

The file's key-value metadata (the Parquet footer) says what it is: ``table``
(snapshot | embeddings | predictions), ``snapshot``, ``snapshot_hash``,
``snapshot_params`` and ``snapshot_quotas`` (JSON), ``snapshot_created_at``,
``n_images`` (the snapshot's; the file's own row count is Parquet's), for a run's
table ``run_id``, ``run_kind`` and ``run_snapshot_hash`` (the snapshot the run
trained on), and ``code_version``, ``exported_at``. Read it with DuckDB's
``parquet_kv_metadata('OUT.parquet')`` or pyarrow's
``pq.read_metadata('OUT.parquet').metadata``; a job checks ``snapshot_hash`` against
the run it reproduces.

DuckDB's ``COPY ... (FORMAT parquet)`` writes the file, streaming (memory stays
bounded, whatever the snapshot's size), zstd-compressed, under a temporary name in
the destination folder, renamed onto ``OUT`` when complete: ``OUT`` is whole or absent.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from catalog import files, snapshots
from catalog.db import DbArg, connect, has_table
from catalog.errors import CatalogError
from catalog.formats import LANDMARK_COLUMNS

if TYPE_CHECKING:
    import duckdb

#: What a file holds: the snapshot's rows, or a run's results for them.
TABLES = ("snapshot", "embeddings", "predictions")


class ParquetExportError(CatalogError, ValueError):
    """Nothing to export, or an export asked for the wrong way."""


@dataclass(frozen=True)
class ParquetExport:
    path: Path
    table: str
    snapshot: str
    snapshot_hash: str
    rows: int
    bytes: int
    seconds: float
    metadata: dict[str, str]


def _snapshot_query(con: duckdb.DuckDBPyConnection) -> tuple[str, list[object]]:
    """The snapshot's rows (parameter: its name) with files and landmarks, where known."""
    root_row = (
        con.execute("SELECT value FROM catalog_info WHERE key = 'image_root'").fetchone()
        if has_table(con, "catalog_info")
        else None
    )
    root = (root_row[0] or "") if root_row else ""
    if has_table(con, "images") and root:
        files_sql = (
            "CASE WHEN i.path IS NULL THEN NULL ELSE ? || i.path END AS path, i.width, i.height"
        )
        join_images, params = "LEFT JOIN images AS i USING (image_id) ", [os.path.join(root, "")]
    else:  # annotations only: no files to name
        files_sql = "NULL::VARCHAR AS path, NULL::INTEGER AS width, NULL::INTEGER AS height"
        join_images, params = "", []
    if has_table(con, "landmarks"):
        marks = ", ".join(f"l.{c}" for c in LANDMARK_COLUMNS)
        join_marks = "LEFT JOIN landmarks AS l USING (image_id) "
    else:
        marks = ", ".join(f"NULL::DOUBLE AS {c}" for c in LANDMARK_COLUMNS)
        join_marks = ""
    sql = (
        "SELECT s.image_id, s.identity, s.split, s.label, s.x_1, s.y_1, s.x_2, s.y_2, "
        f"{files_sql}, {marks} FROM snapshot_images AS s {join_images}{join_marks}"
        "WHERE s.snapshot = ? ORDER BY s.image_id"
    )
    return sql, params


def _run_query(table: str) -> str:
    """A run's results for the snapshot's images (parameters: run id, snapshot name)."""
    if table == "embeddings":
        return (
            "SELECT s.image_id, s.identity, s.split, s.label, e.source, e.embedding "
            "FROM snapshot_images AS s JOIN embeddings AS e "
            "ON e.image_id = s.image_id AND e.run_id = ? "
            "WHERE s.snapshot = ? ORDER BY s.image_id"
        )
    marks = ", ".join(f"p.{c}" for c in LANDMARK_COLUMNS)
    return (
        f"SELECT s.image_id, s.identity, s.split, s.label, {marks}, p.nme, p.normaliser "
        "FROM snapshot_images AS s JOIN landmark_predictions AS p "
        "ON p.image_id = s.image_id AND p.run_id = ? "
        "WHERE s.snapshot = ? ORDER BY s.image_id"
    )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def export_parquet(
    snapshot: str,
    out: str | os.PathLike[str],
    db: DbArg = None,
    *,
    embeddings: str | None = None,
    predictions: str | None = None,
) -> ParquetExport:
    """Write ``snapshot`` (or, with ``embeddings=`` / ``predictions=`` a run id, that
    run's results for the snapshot's images) to the Parquet file ``out``, replacing it
    (see the module docstring). Raises SnapshotError for an unknown snapshot, RunError
    for an unknown run, ParquetExportError when there is nothing to write."""
    from catalog import results

    start = time.perf_counter()
    if embeddings is not None and predictions is not None:
        raise ParquetExportError("Export embeddings or predictions, not both: one table a file.")
    run_id = embeddings if embeddings is not None else predictions
    table = (
        "embeddings"
        if embeddings is not None
        else ("predictions" if predictions is not None else "snapshot")
    )
    out = Path(out)
    if out.is_dir():
        raise ParquetExportError(f"{out} is a folder; name the .parquet file to write.")
    con = connect(db, read_only=True)
    try:
        snap = snapshots.get(con, snapshot)  # SnapshotError naming the known ones
        meta = {
            "table": table,
            "snapshot": snap.name,
            "snapshot_hash": snap.hash,
            "snapshot_params": json.dumps(snap.params, sort_keys=True),
            "snapshot_quotas": json.dumps(snap.quotas, sort_keys=True),
            "snapshot_created_at": str(snap.created_at),
            "n_images": str(snap.n_images),
        }
        if run_id is None:
            sql, params = _snapshot_query(con)
            params = [*params, snapshot]
        else:
            run = results.get_run(db, run_id)  # RunError for an unknown id
            wanted = {"embeddings": "recognition", "predictions": "landmarks"}[table]
            if run.kind != wanted:
                raise ParquetExportError(
                    f"Run {run_id} is a {run.kind} run; {table} come from {wanted} runs."
                )
            source = "embeddings" if table == "embeddings" else "landmark_predictions"
            n = (
                con.execute(
                    f"SELECT count(*) FROM snapshot_images AS s JOIN {source} AS r "
                    "ON r.image_id = s.image_id AND r.run_id = ? WHERE s.snapshot = ?",
                    [run_id, snapshot],
                ).fetchone()[0]
                if has_table(con, source)
                else 0
            )
            if n == 0:
                how = (
                    f"celebcat embed --run {run_id} --snapshot {snapshot}"
                    if table == "embeddings"
                    else f"celebcat align --run {run_id} --snapshot {snapshot}"
                )
                raise ParquetExportError(
                    f"Run {run_id} has no {table} for the images of snapshot {snapshot!r}; "
                    f"make them first (`{how}`)."
                )
            sql, params = _run_query(table), [run_id, snapshot]
            meta.update(run_id=run.run_id, run_kind=run.kind, run_snapshot_hash=run.snapshot_hash)
        meta["code_version"] = results.code_version()
        meta["exported_at"] = (
            datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")
        )
        kv = ", ".join(f'"{key}": {_literal(value)}' for key, value in meta.items())
        out.parent.mkdir(parents=True, exist_ok=True)
        temp = files.temp_name(out)
        try:
            rows = con.execute(
                f"COPY ({sql}) TO {_literal(temp)} "
                f"(FORMAT parquet, COMPRESSION zstd, KV_METADATA {{{kv}}})",
                params,
            ).fetchone()[0]
            os.replace(temp, out)
        except BaseException:
            files.discard(temp)
            raise
    finally:
        con.close()
    return ParquetExport(
        out,
        table,
        snap.name,
        snap.hash,
        int(rows),
        out.stat().st_size,
        time.perf_counter() - start,
        meta,
    )


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The key-value metadata of a Parquet file (what :func:`export_parquet` wrote)."""
    import duckdb

    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT key, value FROM parquet_kv_metadata(?)", [os.fspath(path)]
        ).fetchall()
    finally:
        con.close()
    return {bytes(k).decode(): bytes(v).decode() for k, v in rows}


__all__ = ["TABLES", "ParquetExport", "ParquetExportError", "export_parquet", "read_metadata"]
