"""Crash safety, scripted: SIGKILL at chosen points, then the catalog is checked.

Each scenario runs one operation in a child process (``tests/_crash_child.py``) that
kills itself with SIGKILL at a chosen point: ingest (a file loaded, just before and
just after the final COMMIT), snapshot create (before and after its COMMIT), cache
build (a crop written, the file complete but not indexed), align (a crop written) and
a training run (mid-epoch, half-way through writing a checkpoint). After each kill:

* the catalog opens (read-only, then writable: a WAL left by the kill replays);
* its tables, views and snapshots hash exactly as before the operation, or exactly
  as after the same operation run uninterrupted (volatile columns aside: times,
  durations, the ingest's token);
* every checkpoint on disk loads (whole);
* running the operation again (training: ``resume=`` its run folder) reaches exactly
  the state, and the final metrics, of the uninterrupted run.

The uninterrupted references run in this process; the kills run four at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from _crash_child import TINY_MODEL, register_tiny_model
from conftest import one_torch_thread, query, snapshot_catalog

from catalog.cache import build_cache, find_cache
from catalog.db import connect
from catalog.ingest import ingest
from catalog.snapshots import create, get
from models import store

CHILD = Path(__file__).with_name("_crash_child.py")
ROOT = CHILD.parent.parent

#: Columns whose values differ between two runs of the same operation.
VOLATILE = {("snapshots", "created_at"), ("crop_caches", "seconds"), ("crop_caches", "created_at")}
#: Training: a tiny model (64 px crops), 2 epochs of 2 batches of 4, no augmentation.
TRAIN = dict(
    snapshot="s", model=TINY_MODEL, epochs=2, batch_size=4, max_batches_per_epoch=2, augment=False
)


def catalog_state(db: Path) -> dict[str, str]:
    """A hash per table (rows, sorted; volatile columns and the ingest's time and token
    left out) and per view (its SQL). Opens read-only, then writable (a WAL replays)."""
    connect(db).close()
    con = connect(db, read_only=True)
    try:
        state = {}
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY 1"
            ).fetchall()
        ]
        for table in tables:
            if table in ("runs", "metrics"):
                continue  # a training run's own: checked by its metrics
            cols = [
                f'"{c}"'
                for (c,) in con.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' "
                    "AND table_name = ? ORDER BY column_index",
                    [table],
                ).fetchall()
                if (table, c) not in VOLATILE
            ]
            where = (
                "WHERE key NOT IN ('ingest_id', 'ingested_at')" if table == "catalog_info" else ""
            )
            rows = con.execute(
                f'SELECT {", ".join(cols)} FROM "{table}" {where} ORDER BY ALL'
            ).fetchall()
            state[table] = hashlib.sha256(repr(rows).encode()).hexdigest()
        for name, sql in con.execute(
            "SELECT view_name, sql FROM duckdb_views() WHERE NOT internal ORDER BY 1"
        ).fetchall():
            state[f"view {name}"] = hashlib.sha256(sql.encode()).hexdigest()
        return state
    finally:
        con.close()


def cache_pixels(db: Path, size: int, source: str) -> bytes | None:
    """The crops of snapshot s's complete cache (None when there is none)."""
    con = connect(db, read_only=True)
    try:
        cache = find_cache(con, get(con, "s").hash, size, source, snapshot="s")
    finally:
        con.close()
    return None if cache is None else np.load(cache.path, mmap_mode="r").tobytes()


@dataclass
class Scenario:
    op: str
    point: str
    args: dict = field(default_factory=dict)
    db: Path = Path()
    returncode: int | None = None
    output: str = ""


def run_child(s: Scenario) -> Scenario:
    # one thread each: several processes share the cores, and a training run's numbers
    # are compared exactly with the reference's, computed with one thread too
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(CHILD), s.op, s.point, json.dumps({**s.args, "db": str(s.db)})],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    s.returncode, s.output = done.returncode, done.stdout + done.stderr
    return s


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_catalog(tmp_path_factory.mktemp("crash"), ids=4, seed=1)


def test_sigkill_at_any_point_leaves_the_old_or_the_new_catalog(
    template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_tiny_model(monkeypatch.setitem)
    with one_torch_thread():  # as the children (OMP_NUM_THREADS=1): the same numbers
        _kill_and_check(template, tmp_path)


def _kill_and_check(template: Path, tmp_path: Path) -> None:
    data = template.parent / "data"
    # ingest: the same images, one identity changed, so before and after differ
    changed = tmp_path / "changed"
    changed.mkdir()
    for f in data.glob("*.txt"):
        shutil.copy(f, changed / f.name)
    ident = changed / "identity_CelebA.txt"
    lines = ident.read_text().splitlines()
    first_id, first_identity = lines[0].split()
    lines[0] = f"{first_id} {int(first_identity) + 100000}"
    ident.write_text("\n".join(lines) + "\n")

    def copy(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        return Path(shutil.copy(template, folder / "c.duckdb"))

    ingest_args = {"data": str(changed), "images": str(data / "img_celeba")}
    scenarios = [
        *(Scenario("ingest", p, ingest_args) for p in ("load", "commit-before", "commit-after")),
        *(Scenario("snapshot", p, {"name": "t"}) for p in ("commit-before", "commit-after")),
        *(Scenario("cache", p, {"snapshot": "s", "size": 48}) for p in ("fill:5", "record")),
        Scenario("align", "fill:5", {"snapshot": "s", "size": 112}),
        *(
            Scenario("train", p, {"config": {**TRAIN, "out_dir": ""}})
            for p in ("batch:2:1", "save:1")  # the second epoch's first batch
        ),
    ]
    for k, s in enumerate(scenarios):
        s.db = copy(f"{k}-{s.op}-{s.point.replace(':', '_')}")
        if s.op == "train":
            s.args["config"]["out_dir"] = str(s.db.parent / "ckpt")
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(run_child, s) for s in scenarios]
        references = _references(template, tmp_path, ingest_args)
        for f in futures:
            f.result()

    before = catalog_state(template)
    for s in scenarios:
        what = f"{s.op} killed at {s.point}"
        assert s.returncode == -signal.SIGKILL, f"{what}: not killed\n{s.output}"
        state = catalog_state(s.db)  # opens, WAL replayed
        if s.op == "train":
            _check_training(s, references["train"], what)
            continue
        after = references[s.op]
        assert state in (before, after["state"]), f"{what}: neither before nor after"
        if s.op in ("cache", "align"):
            size, source = s.args["size"], after["source"]
            assert cache_pixels(s.db, size, source) in (None, after["pixels"]), what
        # the same operation again completes it, exactly as an uninterrupted run does
        _again(s)
        assert catalog_state(s.db) == after["state"], f"{what}, then run again"
        if s.op in ("cache", "align"):
            assert cache_pixels(s.db, s.args["size"], after["source"]) == after["pixels"]


def _references(template: Path, tmp_path: Path, ingest_args: dict) -> dict[str, dict]:
    """Each operation run uninterrupted on its own copy of the catalog: its final state."""
    out: dict[str, dict] = {}

    def copy(name: str) -> Path:
        folder = tmp_path / f"ref-{name}"
        folder.mkdir()
        return Path(shutil.copy(template, folder / "c.duckdb"))

    db = copy("ingest")
    ingest(ingest_args["data"], db, images=ingest_args["images"], workers=1)
    out["ingest"] = {"state": catalog_state(db)}
    db = copy("snapshot")
    create("t", db)
    out["snapshot"] = {"state": catalog_state(db)}
    db = copy("cache")
    build_cache("s", db, size=48, workers=1)
    out["cache"] = {
        "state": catalog_state(db),
        "source": "bbox",
        "pixels": cache_pixels(db, 48, "bbox"),
    }
    from models.alignment.snapshot import align_snapshot
    from models.landmarks import train as tl

    db = copy("align")
    info = align_snapshot(None, "s", db, size=112, source="truth", workers=1).cache
    out["align"] = {
        "state": catalog_state(db),
        "source": info.source,
        "pixels": cache_pixels(db, 112, info.source),
    }
    db = copy("train")
    config = tl.LandmarkTrainConfig(**TRAIN, out_dir=str(db.parent / "ckpt"))
    result = tl.train_landmarks(config, db)
    out["train"] = {"db": db, "run_id": result.run_id}
    return out


def _again(s: Scenario) -> None:
    if s.op == "ingest":
        ingest(s.args["data"], s.db, images=s.args["images"], workers=1)
    elif s.op == "snapshot":
        if not query(s.db, "SELECT count(*) FROM snapshots WHERE name = 't'")[0][0]:
            create("t", s.db)
    elif s.op == "cache":
        build_cache("s", s.db, size=48, workers=1)
    else:
        from models.alignment.snapshot import align_snapshot

        align_snapshot(None, "s", s.db, size=112, source="truth", workers=1)


def _check_training(s: Scenario, reference: dict, what: str) -> None:
    """Killed training: its checkpoints load; resumed, it ends with the uninterrupted
    run's metrics (every epoch) and weights."""
    import torch

    from catalog import results
    from models.landmarks import train as tl

    (run,) = results.list_runs(s.db)
    assert run.status == "died", what  # marked 'running' by a process that is gone
    run_dir = s.db.parent / "ckpt" / run.run_id
    for checkpoint in run_dir.glob("*.pt"):
        store.read_checkpoint(checkpoint, tl.KIND)  # whole: a CheckpointError otherwise
    resumed = tl.train_landmarks(db=s.db, resume=run_dir)
    assert resumed.epochs_done == TRAIN["epochs"], what
    assert results.get_run(s.db, run.run_id).status == "finished", what
    assert results.get_metrics(s.db, run.run_id) == results.get_metrics(
        reference["db"], reference["run_id"]
    ), what
    ref_dir = reference["db"].parent / "ckpt" / reference["run_id"]
    a = store.read_checkpoint(ref_dir, tl.KIND)["model"]
    b = store.read_checkpoint(run_dir, tl.KIND)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), what
