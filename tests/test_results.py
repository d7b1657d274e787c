"""catalog.results: runs, metrics and landmark predictions round trip through the catalog."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import query, snapshot_catalog

from catalog import results, snapshots
from catalog.db import connect


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalog with snapshot 's' (annotations only: runs need no pixels)."""
    return snapshot_catalog(tmp_path_factory.mktemp("results"), ids=12, seed=3, images=False)


def test_run_round_trip(db: Path):
    run_id = results.start_run(db, "landmarks", {"lr": 1e-3, "out_dir": Path("x")}, "s")
    assert re.fullmatch(r"landmarks-\d{8}-\d{6}-[0-9a-f]{4}", run_id)
    run = results.get_run(db, run_id)
    snap_hash = query(db, "SELECT hash FROM snapshots WHERE name = 's'")[0][0]
    assert (run.kind, run.snapshot, run.snapshot_hash, run.status) == (
        "landmarks",
        "s",
        snap_hash,
        "running",
    )
    assert run.config == {"lr": 1e-3, "out_dir": "x"}
    assert run.code_version.startswith("0.") and run.ended_at is None

    results.log_metrics(db, run_id, 0, "train", {"loss": 2.0})
    results.log_metrics(db, run_id, 0, "val", {"nme": 0.5, "nme_argmax": 0.6})
    results.log_metrics(db, run_id, 0, "train", {"loss": 1.5})  # upsert, no duplicate key
    assert results.get_metrics(db, run_id) == {
        (0, "train", "loss"): 1.5,
        (0, "val", "nme"): 0.5,
        (0, "val", "nme_argmax"): 0.6,
    }

    results.finish_run(db, run_id, "interrupted")
    results.reopen_run(db, run_id)
    assert results.get_run(db, run_id).status == "running"
    results.finish_run(db, run_id)
    run = results.get_run(db, run_id)
    assert run.status == "finished" and run.ended_at >= run.started_at
    assert [r.run_id for r in results.list_runs(db)] == [run_id]
    assert results.list_runs(db, kind="recognition") == []


def test_errors_are_clear(db: Path):
    assert results.list_runs(db) == []  # no runs table yet: empty, not an error
    with pytest.raises(snapshots.SnapshotError, match="No snapshot 'nope'"):
        results.start_run(db, "landmarks", {}, "nope")
    assert results.list_runs(db) == []
    with pytest.raises(results.RunError, match="No run 'x'"):
        results.get_run(db, "x")
    run_id = results.start_run(db, "landmarks", {}, "s")
    with pytest.raises(results.RunError, match="No run 'x'"):
        results.finish_run(db, "x", "failed")
    with pytest.raises(results.RunError, match="status 'done'"):
        results.finish_run(db, run_id, "done")


def test_landmark_predictions(db: Path):
    run_id = results.start_run(db, "landmarks", {}, "s")
    points = np.arange(20, dtype=float).reshape(2, 5, 2)
    n = results.write_landmark_predictions(
        db,
        run_id,
        {"image_id": ["000001.jpg", "000002.jpg"], "landmarks": points, "nme": [0.1, 0.2]},
    )
    assert n == 2
    rows = query(db, "SELECT * FROM landmark_predictions ORDER BY image_id")
    assert rows[1] == (run_id, "000002.jpg", *range(10, 20), 0.2, "inter_ocular")
    # A DataFrame overwrites by (run_id, image_id); nme may be left out.
    import pandas as pd

    frame = pd.DataFrame(
        {"image_id": ["000001.jpg"], **{c: [1.0] for c in results.LANDMARK_COLUMNS}}
    )
    results.write_landmark_predictions(db, run_id, frame)
    rows = query(db, "SELECT lefteye_x, nme FROM landmark_predictions ORDER BY image_id")
    assert rows[0] == (1.0, None) and rows[1] == (10.0, 0.2)
    with pytest.raises(ValueError, match="lack column"):
        results.write_landmark_predictions(db, run_id, frame.drop(columns="nose_x"))


def test_predictions_table_of_an_older_catalog_gains_the_normaliser(db: Path):
    con = connect(db)
    try:  # the table as catalogs made before the column had it
        con.execute(
            "CREATE TABLE landmark_predictions (run_id VARCHAR, image_id VARCHAR, "
            + ", ".join(f"{c} DOUBLE" for c in results.LANDMARK_COLUMNS)
            + ", nme DOUBLE, PRIMARY KEY (run_id, image_id))"
        )
        con.execute(
            "INSERT INTO landmark_predictions VALUES ('old', '000001.jpg', " + "0, " * 10 + "0.5)"
        )
    finally:
        con.close()
    run_id = results.start_run(db, "landmarks", {}, "s")
    results.write_landmark_predictions(
        db, run_id, {"image_id": ["000002.jpg"], "landmarks": np.zeros((1, 5, 2)), "nme": [0.1]}
    )
    assert query(db, "SELECT run_id, nme, normaliser FROM landmark_predictions ORDER BY 1") == [
        (run_id, 0.1, "inter_ocular"),
        ("old", 0.5, "inter_ocular"),
    ]


def test_embeddings_round_trip_and_sql_neighbours(db: Path):
    run_id = results.start_run(db, "recognition", {}, "s")
    ids = query(db, "SELECT image_id FROM snapshot_images WHERE snapshot = 's' ORDER BY 1")
    ids = [i for (i,) in ids][:6]
    # two tight clusters: images 0-2 near e0, images 3-5 near e1 (unnormalised on purpose)
    vectors = np.array(
        [[3, 0.1, 0], [2, 0, 0.1], [4, 0.2, 0.1], [0, 5, 0], [0.1, 2, 0], [0, 3, 0.2]],
        dtype=np.float64,
    )
    assert results.write_embeddings(db, run_id, ids, vectors, source="bbox") == 6
    got_ids, got = results.read_embeddings(db, run_id)
    assert got_ids == sorted(ids) and got.shape == (6, 3) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, rtol=1e-6)
    _, ordered = results.read_embeddings(db, run_id, ids[::-1])
    np.testing.assert_allclose(ordered[0], vectors[5] / np.linalg.norm(vectors[5]), rtol=1e-6)
    near = query(
        db,
        """
        select b.image_id from embeddings a join embeddings b using (run_id)
        where a.run_id = ? and a.image_id = ? and b.image_id <> a.image_id
        order by list_cosine_similarity(a.embedding, b.embedding) desc limit 2
    """,
        [run_id, ids[0]],
    )
    assert sorted(r[0] for r in near) == sorted(ids[1:3])
    results.write_embeddings(db, run_id, ids[:1], [[0, 0, 1]], source="bbox")  # overwrite
    assert len(results.read_embeddings(db, run_id)[0]) == 6
    with pytest.raises(ValueError, match="no embeddings for 1 image"):
        results.read_embeddings(db, run_id, [*ids, "nope.jpg"])
    with pytest.raises(ValueError, match="NaN"):
        results.write_embeddings(db, run_id, ids[:1], [[np.nan, 0, 1]], source="bbox")


def test_a_catalog_from_before_counts_its_epochs_from_one_after_its_next_write(db: Path):
    """Metrics written when epochs counted from 0 move up by one at the next write, once;
    a pretrained run's figures (epoch 0: no epoch trained) stay where they are."""
    trained = results.start_run(db, "landmarks", {"lr": 1e-3}, "s")
    results.register_runs(
        db, [("recognition-dlib-x", "recognition", {"pretrained": {"source": "dlib"}})]
    )
    results.log_metrics(db, trained, 1, "val", {"nme": 0.5})
    results.log_metrics(db, "recognition-dlib-x", 0, "test", {"top1": 0.9})
    con = connect(db)  # as an older version left it: 0 first, no record of the change
    try:
        con.execute("UPDATE metrics SET epoch = 0 WHERE run_id = ?", [trained])
        con.execute("DELETE FROM results_info")
    finally:
        con.close()
    results.finish_run(db, trained)  # any write
    assert results.get_metrics(db, trained) == {(1, "val", "nme"): 0.5}
    assert results.get_metrics(db, "recognition-dlib-x") == {(0, "test", "top1"): 0.9}
    results.finish_run(db, trained)  # once only
    assert results.get_metrics(db, trained) == {(1, "val", "nme"): 0.5}
