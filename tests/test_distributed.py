"""Beyond one process: training, ``align`` and ``embed`` under torchrun, 2 CPU processes
(gloo) on a tiny snapshot: one run row, metrics written once, checkpoints that resume
in one process, and the same rows as one process would write.

One torchrun launch (start-up dominates): tests/distributed_worker.py runs the
``train landmarks``, ``train recognizer`` and ``embed`` commands and align; the tests
then check the catalog and checkpoints it left against one process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import duckdb
import numpy as np
import pytest
import torch
from conftest import query, snapshot_catalog
from torch.utils.data import DataLoader

from catalog import results
from catalog.datasets import LandmarkDataset, PKSampler
from models import distributed, store
from models.checkpoints import load_weights
from models.landmarks import train as tl
from models.landmarks.metrics import nme
from models.landmarks.predict import predict_landmarks
from models.recognition import train as tr
from models.registry import create_model

ROOT = Path(__file__).resolve().parent.parent


#: torch on one thread for every test (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def torchrun(*args: str, cwd: Path) -> str:
    """``torchrun --standalone --nproc_per_node=2 ARGS`` (a free port of its own); its
    output, or a failure showing it."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "CELEBCAT_DB")
    }
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", COLUMNS="200")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            *args,
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    return done.stdout


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("distributed")
    template = snapshot_catalog(root / "template", ids=6, seed=3)
    work = root / "two"
    work.mkdir()
    db = Path(shutil.copy(template, work / "c.duckdb"))
    printed = torchrun(str(ROOT / "tests" / "distributed_worker.py"), str(db), str(work), cwd=work)
    ranks = [json.loads((work / f"rank{r}.json").read_text()) for r in (0, 1)]
    return SimpleNamespace(
        root=root,
        work=work,
        db=db,
        printed=printed,
        ranks=ranks,
        landmark_run=ranks[0]["landmarks"],
    )


def metric_keys(db: Path, run_id: str) -> list[tuple]:
    """A run's training metrics (not align's test figures)."""
    return query(
        db,
        "SELECT epoch, split, name FROM metrics WHERE run_id = ? "
        "AND split IN ('train', 'val') ORDER BY ALL",
        [run_id],
    )


def test_landmarks_under_torchrun_make_one_run_written_once(two: SimpleNamespace) -> None:
    runs = [r for r in results.list_runs(two.db) if r.kind == "landmarks"]
    assert [r.run_id for r in runs] == [two.landmark_run]
    run = runs[0]
    assert run.status == "finished" and run.config["world_size"] == 2
    assert metric_keys(two.db, run.run_id) == [
        (e, s, n)
        for e in (1, 2)  # as training prints them
        for s, n in (("train", "loss"), ("val", "nme"), ("val", "nme_argmax"))
    ]
    for run_id in (run.run_id, two.ranks[0]["arcface"], two.ranks[0]["triplet"]):
        assert two.printed.count(f"run {run_id}:") == 1  # rank 0 reports, alone


def test_validation_gathered_from_both_ranks_is_one_process_nme(two: SimpleNamespace) -> None:
    """Each rank measured half the val split; rank 0's figure is the whole split's, with
    the weights (and BatchNorm statistics) of the checkpoint it wrote."""
    ckpt = store.read_checkpoint(two.work / "ck" / two.landmark_run / "last.pt", tl.KIND)
    assert not any(k.startswith("module.") for k in ckpt["model"])  # no DDP prefix
    model = create_model(ckpt["config"]["model"])
    load_weights(model, ckpt, "model")
    model.eval()
    size = model.config.input_size
    val = LandmarkDataset(two.db, "s", "val", size, model.config.heatmap_size, image_dtype="uint8")
    points, _ = predict_landmarks(model, DataLoader(val, batch_size=4), torch.device("cpu"))
    logged = results.get_metrics(two.db, two.landmark_run)[(2, "val", "nme")]  # last.pt: epoch 2
    assert float(nme(points, val.landmarks).mean()) == pytest.approx(logged, rel=1e-5)


def test_two_process_checkpoint_resumes_in_one_process(two: SimpleNamespace) -> None:
    db = Path(shutil.copy(two.db, two.root / "resume.duckdb"))
    last = two.work / "ck" / two.landmark_run / "last.pt"
    config = tl.LandmarkTrainConfig.resumed(
        store.read_checkpoint(last, tl.KIND)["config"], epochs=3, out_dir=str(two.root / "ck1")
    )
    result = tl.train_landmarks(config, db, resume=last)
    assert (result.run_id, result.epochs_done) == (two.landmark_run, 3)
    assert results.get_run(db, result.run_id).status == "finished"
    assert (3, "val", "nme") in results.get_metrics(db, result.run_id)
    resumed = store.read_checkpoint(two.root / "ck1" / result.run_id / "last.pt", tl.KIND)
    assert resumed["config"]["world_size"] == 1 and resumed["epoch"] == 3


def test_recognizer_under_torchrun(two: SimpleNamespace, tmp_path: Path) -> None:
    rank0, rank1 = two.ranks
    assert {k: v for k, v in rank0.items() if k != "rank"} == {
        k: v for k, v in rank1.items() if k != "rank"
    }  # every rank returned the same
    runs = {r.run_id: r for r in results.list_runs(two.db) if r.kind == "recognition"}
    assert sorted(runs) == sorted([rank0["arcface"], rank0["triplet"]])  # one row a run
    for loss, names in (("arcface", ("auc", "top1")), ("triplet", ("auc",))):
        run = runs[rank0[loss]]
        assert (run.status, run.config["loss"], run.config["world_size"]) == ("finished", loss, 2)
        assert metric_keys(two.db, run.run_id) == sorted(
            [(e, "train", "loss") for e in (1, 2)] + [(e, "val", n) for e in (1, 2) for n in names]
        )
    # ArcFace's class weights were trained under DDP with the backbone: the checkpoint
    # holds both without a prefix and resumes in one process
    folder = two.work / "ck" / rank0["arcface"]
    ckpt = store.read_checkpoint(folder / "last.pt", tr.KIND)
    assert "loss" in ckpt and not any(k.startswith("module.") for k in ckpt["loss"])
    db = Path(shutil.copy(two.db, tmp_path / "c.duckdb"))
    config = tr.RecognizerTrainConfig.resumed(
        ckpt["config"], epochs=3, out_dir=str(tmp_path / "ck")
    )
    result = tr.train_recognizer(config, db, resume=folder / "last.pt")
    assert (result.run_id, result.epochs_done) == (rank0["arcface"], 3)


def test_embed_and_align_write_what_one_process_writes(two: SimpleNamespace) -> None:
    from models.alignment import snapshot as align_run
    from models.recognition import evaluate as recognition_eval

    rank0 = two.ranks[0]
    assert rank0["aligned"][0] == rank0["aligned"][1] > 0
    assert two.printed.count(" embeddings (16-d, crops bbox) of snapshot s") == 1
    assert two.printed.count("verif_tpr@fpr=0.001") == 1  # eval: rank 0's table alone
    # embed: the rows rank 0 wrote are one process's embeddings
    recognizer = store.load_recognizer(two.work / "ck" / rank0["arcface"], two.db)
    one = recognition_eval.embed_snapshot(recognizer, db=two.db, batch_size=8, write=False)
    ids, vectors = results.read_embeddings(two.db, rank0["arcface"])
    assert ids == list(one.image_id)
    np.testing.assert_allclose(vectors, one.embeddings, atol=1e-5)
    # align: the same predictions, metrics and crops as one process
    (two.root / "one").mkdir()  # a folder of its own: the crops go next to the catalog
    db = Path(shutil.copy(two.db, two.root / "one" / "c.duckdb"))
    con = duckdb.connect(str(db))  # what one process writes, not what the copy holds
    con.execute("DELETE FROM landmark_predictions; DELETE FROM metrics WHERE split = 'test'")
    con.close()
    mine = align_run.align_snapshot(
        two.work / "ck" / two.landmark_run, "s", db, size=32, batch_size=8, workers=1
    )
    sql = "SELECT * FROM landmark_predictions ORDER BY image_id"
    assert query(db, sql) == query(two.db, sql)
    sql = (
        f"SELECT * FROM metrics WHERE split = 'test' AND run_id = '{two.landmark_run}' ORDER BY ALL"
    )
    assert query(db, sql) == query(two.db, sql) != []
    (theirs,) = (two.work / "c.crops").glob("*.npy")
    assert np.array_equal(np.load(mine.cache.path), np.load(theirs))


def test_pk_batches_are_split_between_ranks() -> None:
    labels = np.repeat(np.arange(9), 5)
    whole = list(PKSampler(labels, 2, 3, seed=4))  # 4 batches
    parts = [PKSampler(labels, 2, 3, seed=4, rank=r, num_replicas=3) for r in range(3)]
    assert [len(p) for p in parts] == [1, 1, 1]  # the 4th batch would not go round
    assert [b for p in parts for b in p] == whole[:3]  # rank r: batch r, r + 3, ...
    with pytest.raises(ValueError, match="rank"):
        PKSampler(labels, 2, 3, rank=2, num_replicas=2)


def test_one_process_helpers_do_what_one_process_would() -> None:
    assert not distributed.active() and distributed.world_size() == 1
    assert [distributed.shard_bounds(10, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]
    a = np.arange(6).reshape(3, 2)
    assert distributed.gather_rows(a, None)[0] is a
    assert distributed.on_main(lambda: 7) == 7 and distributed.broadcast("x") == "x"
    seen: list[tuple[int, int]] = []
    distributed.gather_chunks(
        5, lambda idx: list(idx), lambda idx, got: seen.append((idx.start, len(got))), chunk=2
    )
    assert seen == [(0, 2), (2, 2), (4, 1)]
    with distributed.session():  # no torchrun: no process group
        assert not distributed.active()
