"""models.recognition.evaluate: embeddings in the catalog, every protocol in `metrics`, plots."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import holdout_snapshot, query, snapshot_catalog
from pipeline_helpers import copy_catalog, train_small_recognizer

from catalog import results
from catalog.selection import fitted_params, select
from catalog.snapshots import create
from models import store
from models.recognition import evaluate as ev


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A catalog whose snapshot holds held-out query/distractor identities, and a short
    CE run on it. The easy synth style: a few dozen steps of a tiny CE model separate its
    people, which the default style's are made hard not to be (a test of the plumbing,
    not of the population)."""
    root = tmp_path_factory.mktemp("recog_eval")
    db = snapshot_catalog(root, ids=24, seed=11, style="easy")
    params = holdout_snapshot(db, images_per_id=10, train_per_id=6)
    assert int(params["n_ids"]) >= 12
    run = train_small_recognizer(db, root / "ck")
    return SimpleNamespace(db=db, run=run, root=root)


@pytest.fixture
def db(trained: SimpleNamespace, tmp_path: Path) -> Path:
    return copy_catalog(trained, tmp_path)


def test_evaluation_writes_every_protocol(trained: SimpleNamespace, db: Path, tmp_path: Path):
    out = ev.evaluate_recognizer(
        trained.run.run_id, db, by=["Eyeglasses"], plots=tmp_path / "plots"
    )
    test, open_set = out.metrics["test"], out.metrics["open_set"]
    for name in (
        "top1",
        "top5",
        "top1_centre",
        "verif_auc",
        "verif_eer",
        "verif_tpr@fpr=0.1",
        "triplet_acc",
    ):
        assert 0 <= test[name] <= 1, name
    assert test["top5"] >= test["top1"]
    for name in (
        "auc",
        "tpr@fpr=0.5",
        "tpr@fpr=0.05",
        "threshold@fpr=0.01",
        "tpir@fpir=0.1",
        "rank1",
    ):
        assert name in open_set, name
    # TPR falls as the FPR tightens, thresholds rise
    tprs = [open_set[f"tpr@fpr={f}"] for f in ("0.5", "0.2", "0.1", "0.05", "0.01", "0.001")]
    assert tprs == sorted(tprs, reverse=True)
    assert open_set["threshold@fpr=0.01"] >= open_set["threshold@fpr=0.5"]
    # the catalog holds them, at the checkpoint's epoch
    stored = {
        (s, n): v
        for s, n, v in query(
            db,
            "SELECT split, name, value FROM metrics WHERE run_id = ? AND split <> 'train' "
            "AND split <> 'val'",
            [trained.run.run_id],
        )
    }
    assert stored[("test", "top1")] == pytest.approx(test["top1"])
    assert stored[("open_set", "threshold@fpr=0.01")] == pytest.approx(
        open_set["threshold@fpr=0.01"]
    )
    groups = {s for s, _ in stored if s.startswith("test:")}
    assert groups <= {"test:Eyeglasses=True", "test:Eyeglasses=False"} and groups
    assert all(p.exists() and p.stat().st_size > 1000 for p in out.plots)
    assert len(out.plots) == 3


def test_embeddings_land_and_sql_finds_the_same_identity(trained: SimpleNamespace, db: Path):
    recognizer = store.load_recognizer(trained.run.run_id, db)
    embedded = ev.embed_snapshot(recognizer, db=db)
    n = query(db, "SELECT count(*) FROM snapshot_images WHERE snapshot = 'h' AND split IS NOT NULL")
    assert len(embedded.image_id) == n[0][0]
    ids, vectors = results.read_embeddings(db, trained.run.run_id)
    assert ids == sorted(ids) and len(ids) == n[0][0]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=1e-5)
    # nearest neighbour of every training image, in SQL: mostly its own identity
    rows = query(
        db,
        """
        with train as (
            select e.image_id, e.embedding, s.identity from embeddings e
            join snapshot_images s on s.snapshot = 'h' and s.image_id = e.image_id
            where e.run_id = ? and s.split = 'train'
        ), ranked as (
            select a.identity as a_id, b.identity as b_id, row_number() over (
                partition by a.image_id
                order by list_cosine_similarity(a.embedding, b.embedding) desc) as r
            from train a join train b on a.image_id <> b.image_id
        )
        select avg((a_id = b_id)::int), count(distinct a_id) from ranked where r = 1
    """,
        [trained.run.run_id],
    )
    same, identities = rows[0]
    assert same > 5 / identities, (same, identities)


def test_a_recreated_snapshot_is_refused(trained: SimpleNamespace, db: Path):
    select(db, **{**fitted_params(db, images_per_id=10), "seed": 99})
    from catalog.snapshots import drop

    drop("h", db)
    create("h", db)
    with pytest.raises(ValueError, match="recreated"):
        ev.evaluate_recognizer(trained.run.run_id, db)


def test_an_unknown_attribute_is_named(trained: SimpleNamespace, db: Path):
    with pytest.raises(ValueError, match="Unknown attribute.*Glasses"):
        ev.evaluate_recognizer(trained.run.run_id, db, by=["Glasses"])


def test_report_compare_puts_runs_and_the_reference_side_by_side(
    trained: SimpleNamespace, db: Path
):
    from catalog.reports import compare_runs

    run_id = trained.run.run_id
    before = compare_runs(db, [run_id])
    assert "test top1" not in before.columns  # not evaluated yet: no test figures
    out = ev.evaluate_recognizer(run_id, db)
    table = compare_runs(db, [run_id], reference=True)
    row = dict(zip(table.columns, table.rows[0], strict=True))
    assert (row["run"], row["kind"], row["loss"], row["epochs"]) == (run_id, "recognition", "ce", 8)
    assert row["test top1"] == pytest.approx(out.metrics["test"]["top1"])
    assert row["open_set tpr@fpr=0.05"] == pytest.approx(out.metrics["open_set"]["tpr@fpr=0.05"])
    assert row["best val"].startswith("top1 ")
    names = [r[0] for r in table.rows]
    assert "reference: ArcFace" in names
    arcface = dict(zip(table.columns, table.rows[names.index("reference: ArcFace")], strict=True))
    assert arcface["test top1"] == 0.93 and arcface["open_set tpr@fpr=0.05"] == 0.81


def test_the_recognition_commands(trained: SimpleNamespace, db: Path, tmp_path: Path):
    """train recognizer -> embed -> eval recognizer -> report compare, through the CLI."""
    import json

    from typer.testing import CliRunner

    import cli

    runner = CliRunner(env={"COLUMNS": "200"})

    def run(*args: str) -> str:
        result = runner.invoke(cli.app, [*args, "--db", str(db)])
        assert result.exit_code == 0, result.output
        return result.stdout  # progress bars go to stderr

    out = run(
        "train",
        "recognizer",
        "--snapshot",
        "h",
        "--source",
        "bbox",
        "--size",
        "32",
        "--embedding-dim",
        "16",
        "--epochs",
        "1",
        "--max-batches",
        "2",
        "--batch-size",
        "8",
        "--loss",
        "cosface",
        "--out",
        str(tmp_path / "ck"),
    )
    assert "celebcat eval recognizer --run recognition-" in out
    run_id = results.list_runs(db, "recognition")[-1].run_id
    assert results.get_run(db, run_id).config["loss"] == "cosface"
    summary = json.loads(run("embed", "--run", run_id, "--json"))
    assert summary["dim"] == 16 and summary["images"] > 0
    rows = json.loads(run("eval", "recognizer", "--run", run_id, "--json"))
    assert {(r["split"], r["metric"]) for r in rows} >= {("test", "top1"), ("open_set", "auc")}
    table = json.loads(
        run("report", "compare", "--run", run_id, "--run", trained.run.run_id, "--json")
    )
    assert [r["run"] for r in table] == [run_id, trained.run.run_id]
    # a choice outside the enum is refused before any work
    bad = runner.invoke(
        cli.app, ["train", "recognizer", "--snapshot", "h", "--loss", "soft", "--db", str(db)]
    )
    assert bad.exit_code == 2 and "soft" in bad.output
