"""A snapshot as one Parquet file, for Spark, Ray or any engine beyond one machine.

``celebcat export --snapshot NAME OUT.parquet`` writes the frozen selection: one row per image
of the snapshot, by image id, with the columns of :mod:`catalog.frames` (the table
``snapshot_frame`` gives a notebook): image id, ``path`` relative to the image root,
split, label, identity, the snapshot's face box ``face_left .. face_bottom``, CelebA's
box ``x_1, y_1, width, height`` as the ``bboxes`` table has it, the image size, the
five landmarks and the 40 attributes (BOOLEAN). The image root is in the metadata
(``image_root``): ``image_root / path`` is the file.

With ``--embeddings RUN`` (``--predictions RUN``) the rows are the snapshot's images
that run embedded (predicted landmarks for), with ``image_id, identity, split,
label`` and the run's ``source, embedding`` (``lefteye_x ... rightmouth_y, nme,
normaliser``): the ``embeddings`` and ``landmark_predictions`` tables, framed by the
snapshot they belong to.

The file's key-value metadata (the Parquet footer) says what it is: ``table``
(snapshot | embeddings | predictions), ``snapshot``, ``snapshot_hash``,
``snapshot_params`` and ``snapshot_quotas`` (JSON), ``snapshot_created_at``,
``n_images`` (the snapshot's; the file's own row count is Parquet's), ``image_root``
(the snapshot table), for a run's
table ``run_id``, ``run_kind`` and ``run_snapshot_hash`` (the snapshot the run
trained on), and ``code_version``, ``exported_at``. Read it with DuckDB's
``parquet_kv_metadata('OUT.parquet')`` or pyarrow's
``pq.read_metadata('OUT.parquet').metadata``; a job checks ``snapshot_hash`` against
the run it reproduces.

DuckDB's ``COPY ... (FORMAT parquet)`` writes the file, streaming (memory stays
bounded, whatever the snapshot's size), zstd-compressed, under a temporary name in
the destination folder, renamed onto ``OUT`` when complete: ``OUT`` is whole or absent.
A name not ending in ``.parquet`` is refused (the suffix is what other tools go by).

pandas reads the file with pyarrow, which the package installs; so do polars and
Hugging Face ``datasets.Dataset.from_parquet`` (the suite reads it with each).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from catalog import files, frames, snapshots
from catalog.db import DbArg, connect, has_table
from catalog.errors import CatalogError
from catalog.formats import LANDMARK_COLUMNS

if TYPE_CHECKING:
    pass

SUFFIX = ".parquet"
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
    if out.suffix.lower() != SUFFIX:
        raise ParquetExportError(
            f"{out}: a Parquet file's name ends in {SUFFIX} (got {out.suffix or 'no suffix'!r})."
        )
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
            sql, params = frames.snapshot_query(con, snapshot, relative_paths=True)
            meta["image_root"] = frames.image_root(con)
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
