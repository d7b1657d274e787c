"""Training results in the catalog: runs, per-epoch metrics, predicted landmarks.

A run records what a model was trained on (the snapshot and its hash), how (the
final config, as JSON), with which code (package version and git commit) and how it
ended. Metrics are keyed by (run, epoch, split, name) and written as upserts, so an
epoch repeated after a resume overwrites its own numbers instead of failing.

Every function opens and closes its own connection: nothing is held open during
training, so ``celebcat sql`` can read a catalog while a run writes to it between
epochs. Error analysis is then SQL, e.g. the worst images of a run:

    select p.image_id, p.nme from landmark_predictions p
    where run_id = '...' order by nme desc limit 20

Embeddings are rows too, so nearest neighbours are SQL (cosine, since they are stored
L2-normalised):

    select b.image_id, list_cosine_similarity(a.embedding, b.embedding) as cosine
    from embeddings a join embeddings b using (run_id)
    where a.run_id = '...' and a.image_id = '000123.jpg' and b.image_id <> a.image_id
    order by cosine desc limit 5

This module owns the ``runs``, ``metrics``, ``landmark_predictions`` and
``embeddings`` tables.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import catalog
from catalog import snapshots
from catalog.db import DbArg, connect, has_table, register_frame, transaction
from catalog.errors import CatalogError
from catalog.formats import LANDMARK_COLUMNS
from catalog.names import check_run_id, suggest

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

#: How NME is normalised in the catalog: by the distance between the two true eye
#: centres (models.landmarks.metrics.nme's "inter_ocular"); stored with every prediction.
NME_NORMALISER = "inter_ocular"

RESULTS_DDL = f"""
CREATE TABLE IF NOT EXISTS runs (
    run_id        VARCHAR PRIMARY KEY,   -- '<kind>-YYYYmmdd-HHMMSS-<4 hex>'
    kind          VARCHAR NOT NULL,      -- landmarks, recognition, ...
    config        JSON NOT NULL,         -- the final training config
    snapshot      VARCHAR NOT NULL,
    snapshot_hash VARCHAR NOT NULL,      -- what the model saw, even if the name is reused
    code_version  VARCHAR NOT NULL,      -- package version, '+g<commit>' where known
    started_at    TIMESTAMP NOT NULL,    -- UTC
    ended_at      TIMESTAMP,             -- UTC; NULL while running
    status        VARCHAR NOT NULL,      -- running | finished | failed | interrupted
    host          VARCHAR,               -- where the training process runs
    pid           INTEGER,               -- its process id there
    proc_start    VARCHAR                -- its start time (tells a reused pid apart)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id VARCHAR NOT NULL,
    epoch  INTEGER NOT NULL,   -- as training prints it: 1 the first; 0 no epoch (pretrained)
    split  VARCHAR NOT NULL,
    name   VARCHAR NOT NULL,
    value  DOUBLE,
    PRIMARY KEY (run_id, epoch, split, name)
);
CREATE TABLE IF NOT EXISTS landmark_predictions (
    run_id   VARCHAR NOT NULL,
    image_id VARCHAR NOT NULL,
    {", ".join(f"{c} DOUBLE" for c in LANDMARK_COLUMNS)},  -- in-the-wild pixels
    nme      DOUBLE,                 -- NULL where the image has no true landmarks
    normaliser VARCHAR NOT NULL DEFAULT '{NME_NORMALISER}',  -- what nme is divided by
    PRIMARY KEY (run_id, image_id)
);
CREATE TABLE IF NOT EXISTS results_info (  -- what the results tables' layout is
    key   VARCHAR PRIMARY KEY,
    value VARCHAR
);
CREATE TABLE IF NOT EXISTS embeddings (
    run_id    VARCHAR NOT NULL,
    image_id  VARCHAR NOT NULL,
    source    VARCHAR NOT NULL,   -- the crops embedded: 'bbox' or 'aligned/<template>/<run>'
    embedding FLOAT[] NOT NULL,   -- L2-normalised; its length is the run's embedding size
    PRIMARY KEY (run_id, image_id)
);
"""

STATUSES = ("running", "finished", "failed", "interrupted")
#: Shown (never stored) for a 'running' run whose process is gone: killed, or its
#: machine rebooted, before it could record how it ended.
DIED = "died"


class RunError(CatalogError, ValueError):
    """Unknown run, or a status that is not one of STATUSES."""


@dataclass(frozen=True)
class Run:
    run_id: str
    kind: str
    config: dict[str, Any]
    snapshot: str
    snapshot_hash: str
    code_version: str
    started_at: datetime
    ended_at: datetime | None
    status: str  # as stored, except 'died' for a 'running' run whose process is gone
    host: str | None = None
    pid: int | None = None


#: results_info key: metrics.epoch counts from 1 (catalogs before it stored 0 first).
EPOCHS_FROM_ONE = "metrics_epochs_from_one"


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(RESULTS_DDL)
    _number_epochs_from_one(con)
    # catalogs made before the column existed: their NME was inter-ocular too
    con.execute(
        "ALTER TABLE landmark_predictions ADD COLUMN IF NOT EXISTS normaliser VARCHAR "
        f"DEFAULT '{NME_NORMALISER}'"
    )
    for column, kind in (("host", "VARCHAR"), ("pid", "INTEGER"), ("proc_start", "VARCHAR")):
        con.execute(f"ALTER TABLE runs ADD COLUMN IF NOT EXISTS {column} {kind}")


def _number_epochs_from_one(con: duckdb.DuckDBPyConnection) -> None:
    """A catalog written before epochs counted from 1 in ``metrics``: its trained runs'
    rows move up by one, once (``results_info`` remembers), so every epoch reads as
    training printed it; a pretrained run's figures (epoch 0, no epoch trained) stay.
    Runs inside the caller's transaction (every writer here holds one), so the move
    and its record commit together."""
    done = con.execute("SELECT 1 FROM results_info WHERE key = ?", [EPOCHS_FROM_ONE]).fetchone()
    if done:
        return
    con.execute(
        "UPDATE metrics SET epoch = epoch + 1 WHERE run_id IN (SELECT run_id FROM runs "
        "WHERE json_extract(config, '$.pretrained') IS NULL)"
    )
    con.execute("INSERT INTO results_info VALUES (?, 'true')", [EPOCHS_FROM_ONE])


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux /proc), with the
    boot id: together with the pid they name one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    # field 22 (starttime), counted after the ')' that ends the command name
    return f"{boot}:{stat.rsplit(')', 1)[1].split()[19]}"


def _process_alive(pid: int, proc_start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        pass
    return proc_start is None or _proc_start(pid) in (None, proc_start)


def _has_runs(con: duckdb.DuckDBPyConnection) -> bool:
    return has_table(con, "runs")


def _no_run(con: duckdb.DuckDBPyConnection, run_id: str) -> RunError:
    """RunError for an unknown ``run_id``, with the runs it may have meant (run ids are
    long: a unique one that starts with what was typed is the likely one)."""
    known = (
        [r[0] for r in con.execute("SELECT run_id FROM runs ORDER BY started_at DESC").fetchall()]
        if _has_runs(con)
        else []
    )
    near = suggest(run_id, known)
    return RunError(f'No run {run_id!r}{near} (see `celebcat sql "select * from runs"`).')


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@cache
def code_version() -> str:
    """``catalog.__version__``, plus ``+g<short commit>`` when this is a git checkout and
    git answers within a second (``+dirty`` if tracked files changed)."""
    version = catalog.__version__
    root = Path(catalog.__file__).resolve().parent.parent
    try:
        commit = _git(root, "rev-parse", "--short", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{commit}{'.dirty' if dirty else ''}" if commit else version


def _git(root: Path, *args: str) -> str:
    """git's stripped output in ``root``; raises OSError or SubprocessError when git is
    missing, fails or takes over a second (a slow git must not hold up a run)."""
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, timeout=1, check=True
    ).stdout.strip()


def start_run(db: DbArg, kind: str, config: Mapping[str, Any], snapshot: str) -> str:
    """Record a new run (status 'running') and return its id.

    Raises SnapshotError for an unknown snapshot, before anything is written.
    """
    run_id = f"{kind}-{_now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    con = connect(db)
    try:
        snap_hash = snapshots.get(con, snapshot).hash
        with transaction(con):
            ensure_tables(con)
            con.execute(
                "INSERT INTO runs BY NAME SELECT ? AS run_id, ? AS kind, ? AS config, "
                "? AS snapshot, ? AS snapshot_hash, ? AS code_version, ? AS started_at, "
                "'running' AS status",
                [
                    run_id,
                    kind,
                    json.dumps(dict(config), default=str),
                    snapshot,
                    snap_hash,
                    code_version(),
                    _now(),
                ],
            )
            _claim(con, run_id)
    finally:
        con.close()
    return run_id


def register_runs(db: DbArg, runs: Sequence[tuple[str, str, Mapping[str, Any]]]) -> None:
    """Record finished runs that were not trained here (pretrained models: ``(run_id,
    kind, config)``), in one transaction, replacing earlier records of the same ids
    (their predictions and embeddings are kept). No snapshot: ``snapshot`` and
    ``snapshot_hash`` are empty."""
    con = connect(db)
    try:
        with transaction(con):
            ensure_tables(con)
            now = _now()
            for run_id, kind, config in runs:
                check_run_id(run_id)
                con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
                con.execute(
                    "INSERT INTO runs BY NAME SELECT ? AS run_id, ? AS kind, ? AS config, "
                    "'' AS snapshot, '' AS snapshot_hash, ? AS code_version, ? AS started_at, "
                    "? AS ended_at, 'finished' AS status",
                    [run_id, kind, json.dumps(dict(config), default=str), code_version(), now, now],
                )
    finally:
        con.close()


def _claim(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """Record this process as the one running ``run_id`` (so a crash shows as 'died')."""
    pid = os.getpid()
    con.execute(
        "UPDATE runs SET host = ?, pid = ?, proc_start = ? WHERE run_id = ?",
        [socket.gethostname(), pid, _proc_start(pid), run_id],
    )


def _set_status(db: DbArg, run_id: str, status: str) -> None:
    if status not in STATUSES:
        raise RunError(f"status {status!r}: use one of {', '.join(STATUSES)}")
    con = connect(db)
    try:
        with transaction(con):
            ensure_tables(con)
            found = con.execute(
                "UPDATE runs SET status = ?, ended_at = ? WHERE run_id = ? RETURNING run_id",
                [status, None if status == "running" else _now(), run_id],
            ).fetchall()
            if not found:
                raise _no_run(con, run_id)
            if status == "running":
                _claim(con, run_id)
    finally:
        con.close()


def finish_run(db: DbArg, run_id: str, status: str = "finished") -> None:
    """End a run: status 'finished', 'failed' or 'interrupted', and its end time."""
    if status == "running":
        raise RunError("finish_run needs an end status; use reopen_run to resume a run")
    _set_status(db, run_id, status)


def reopen_run(db: DbArg, run_id: str) -> None:
    """Mark a run 'running' again (a resumed training run keeps its id)."""
    _set_status(db, run_id, "running")


def log_metrics(
    db: DbArg,
    run_id: str,
    epoch: int,
    split: str,
    values: Mapping[str, float],
) -> None:
    """Write (or overwrite) one epoch's metrics of one split. ``epoch`` as training
    prints it: 1 for the first; 0 for a model no epoch trained (a pretrained run)."""
    check_run_id(run_id)  # every write under a run id: a plain word
    con = connect(db)
    try:
        with transaction(con):
            ensure_tables(con)
            con.executemany(
                "INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?)",
                [[run_id, int(epoch), split, name, float(v)] for name, v in values.items()],
            )
    finally:
        con.close()


def write_landmark_predictions(
    db: DbArg,
    run_id: str,
    predictions: pd.DataFrame | Mapping[str, Any],
    normaliser: str = NME_NORMALISER,
) -> int:
    """Write (or overwrite) a run's predicted landmarks; returns the number of rows.
    ``normaliser`` names what ``nme`` was divided by (stored with every row).

    ``predictions`` is a DataFrame with ``image_id``, the ten ``lefteye_x ...
    rightmouth_y`` columns and optionally ``nme``, or a mapping ``{"image_id": (N,),
    "landmarks": (N, 5, 2), "nme": (N,) (optional)}``; in-the-wild pixels.
    """
    import numpy as np
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        frame = predictions.copy()
    else:
        points = np.asarray(predictions["landmarks"], dtype=np.float64).reshape(-1, 10)
        frame = pd.DataFrame(points, columns=list(LANDMARK_COLUMNS))
        frame.insert(0, "image_id", [str(i) for i in predictions["image_id"]])
        if predictions.get("nme") is not None:
            frame["nme"] = np.asarray(predictions["nme"], dtype=np.float64)
    missing = [c for c in ("image_id", *LANDMARK_COLUMNS) if c not in frame.columns]
    if missing:
        raise ValueError(f"predictions lack column(s) {', '.join(missing)}")
    if "nme" not in frame.columns:
        frame["nme"] = np.nan
    frame = frame[["image_id", *LANDMARK_COLUMNS, "nme"]]
    frame.insert(0, "run_id", run_id)
    frame["normaliser"] = normaliser
    check_run_id(run_id)  # every write under a run id: a plain word
    con = connect(db)
    try:
        with transaction(con):
            ensure_tables(con)
            register_frame(con, "new_predictions", frame)
            con.execute(
                "INSERT OR REPLACE INTO landmark_predictions BY NAME SELECT * FROM new_predictions"
            )
            con.unregister("new_predictions")
    finally:
        con.close()
    return len(frame)


_RUN_COLUMNS = (
    "run_id, kind, config, snapshot, snapshot_hash, code_version, started_at, ended_at, "
    "status, host, pid, proc_start"
)


def write_embeddings(
    db: str | os.PathLike[str] | None,
    run_id: str,
    image_ids: Sequence[str],
    vectors: Any,
    source: str,
) -> int:
    """Write (or overwrite) a run's embeddings, L2-normalised here; returns the row count.

    ``vectors`` is an (N, d) float array in ``image_ids`` order. One column of variable
    length holds every run's vectors, so runs of different sizes share the table (a
    fixed ``FLOAT[d]`` would tie the catalog to the first run's d).
    """
    import numpy as np
    import pandas as pd

    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or len(matrix) != len(image_ids):
        raise ValueError(f"embeddings must be ({len(image_ids)}, d), got {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"run {run_id}: embeddings hold NaN or infinite values")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix = matrix / np.maximum(norms, 1e-12)
    frame = pd.DataFrame(
        {
            "run_id": run_id,
            "image_id": [str(i) for i in image_ids],
            "source": source,
            "embedding": list(matrix),
        }
    )
    check_run_id(run_id)  # every write under a run id: a plain word
    con = connect(db)
    try:
        with transaction(con):
            ensure_tables(con)
            register_frame(con, "new_embeddings", frame)
            con.execute(
                "INSERT OR REPLACE INTO embeddings BY NAME "
                "SELECT run_id, image_id, source, embedding::FLOAT[] AS embedding "
                "FROM new_embeddings"
            )
            con.unregister("new_embeddings")
    finally:
        con.close()
    return len(frame)


def read_embeddings(
    db: str | os.PathLike[str] | None, run_id: str, image_ids: Sequence[str] | None = None
) -> tuple[list[str], Any]:
    """A run's embeddings: (image ids, (N, d) float32 array), ordered by image id, or in
    ``image_ids`` order where given (an id without an embedding raises ValueError)."""
    import numpy as np

    con = connect(db, read_only=True)
    try:
        if not has_table(con, "embeddings"):
            rows: list = []
        else:
            rows = con.execute(
                "SELECT image_id, embedding FROM embeddings WHERE run_id = ? ORDER BY image_id",
                [run_id],
            ).fetchall()
    finally:
        con.close()
    found = {i: e for i, e in rows}
    ids = list(found) if image_ids is None else [str(i) for i in image_ids]
    missing = [i for i in ids if i not in found]
    if missing:
        raise ValueError(
            f"run {run_id} has no embeddings for {len(missing)} image(s), e.g. {missing[0]}; "
            f"run `celebcat embed --run {run_id} --snapshot ...` first"
        )
    if not ids:
        return [], np.zeros((0, 0), dtype=np.float32)
    return ids, np.asarray([found[i] for i in ids], dtype=np.float32)


def _run(row: tuple) -> Run:
    run_id, kind, config, snapshot, snap_hash, version, started, ended, status = row[:9]
    host, pid, proc_start = row[9:]
    if (
        status == "running"
        and pid is not None
        and host == socket.gethostname()
        and not _process_alive(pid, proc_start)
    ):
        status = DIED
    return Run(
        run_id,
        kind,
        json.loads(config),
        snapshot,
        snap_hash,
        version,
        started,
        ended,
        status,
        host,
        pid,
    )


def _has_run_columns(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM duckdb_columns() "
            "WHERE table_name = 'runs' AND column_name = 'pid'"
        ).fetchone()[0]
    )


def _select_runs(con: duckdb.DuckDBPyConnection) -> str:
    """The SELECT list for runs, on read-only catalogs made before host/pid existed too."""
    if _has_run_columns(con):
        return _RUN_COLUMNS
    return _RUN_COLUMNS.replace("host, pid, proc_start", "NULL, NULL, NULL")


def get_run(db: DbArg, run_id: str) -> Run:
    con = connect(db, read_only=True)
    try:
        row = None
        if _has_runs(con):
            row = con.execute(
                f"SELECT {_select_runs(con)} FROM runs WHERE run_id = ?", [run_id]
            ).fetchone()
        if row is None:
            raise _no_run(con, run_id)
    finally:
        con.close()
    return _run(row)


def list_runs(db: DbArg = None, kind: str | None = None) -> list[Run]:
    """All runs (of ``kind`` if given), oldest first."""
    con = connect(db, read_only=True)
    try:
        if not _has_runs(con):
            return []
        rows = con.execute(
            f"SELECT {_select_runs(con)} FROM runs WHERE ? IS NULL OR kind = ? "
            "ORDER BY started_at, run_id",
            [kind, kind],
        ).fetchall()
    finally:
        con.close()
    return [_run(r) for r in rows]


def get_metrics(db: DbArg, run_id: str) -> dict[tuple[int, str, str], float]:
    """A run's metrics as {(epoch, split, name): value}."""
    con = connect(db, read_only=True)
    try:
        if not _has_runs(con):
            return {}
        rows = con.execute(
            "SELECT epoch, split, name, value FROM metrics WHERE run_id = ? ORDER BY ALL",
            [run_id],
        ).fetchall()
    finally:
        con.close()
    return {(e, s, n): v for e, s, n, v in rows}
