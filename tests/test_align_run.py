"""`celebcat align` as a library call: aligned crop caches FaceDataset reads, predictions."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import query, snapshot_catalog, snapshot_ids

from catalog import transforms as T
from catalog.cache import drop_cache, find_cache, list_caches, store_crops
from catalog.datasets import FaceDataset
from catalog.db import connect
from catalog.formats import LANDMARK_COLUMNS
from catalog.reports import landmark_report
from catalog.selection import fitted_params, select
from catalog.snapshots import create, get
from models import store
from models.alignment.similarity import ARCFACE_TEMPLATE_112, REFERENCE_TEMPLATE, template_points
from models.alignment.snapshot import align_snapshot, alignment_report
from models.landmarks.train import LandmarkTrainConfig, train_landmarks


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_catalog(tmp_path_factory.mktemp("align"), ids=12, seed=7)


def _truth(db: Path, ids: np.ndarray) -> np.ndarray:
    con = connect(db, read_only=True)
    try:
        sql = f"SELECT image_id, {', '.join(LANDMARK_COLUMNS)} FROM landmarks"
        rows = {r[0]: r[1:] for r in con.execute(sql).fetchall()}
    finally:
        con.close()
    return np.array([rows[i] for i in ids], dtype=np.float64).reshape(-1, 5, 2)


def get_snapshot_hash(db: Path, name: str) -> str:
    return query(db, "SELECT hash FROM snapshots WHERE name = ?", [name])[0][0]


def _cache(db: Path, size: int):  # noqa: ANN202
    con = connect(db, read_only=True)
    try:
        return find_cache(con, get(con, "s").hash, size, "aligned", snapshot="s")
    finally:
        con.close()


def test_truth_alignment_feeds_the_aligned_face_dataset(db: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No aligned crops"):
        FaceDataset(db, "s", "train", source="aligned", size=112)
    result = align_snapshot(None, "s", db, size=112, template="arcface", source="truth")
    assert result.n_predictions == 0 and result.cache.source == "aligned/arcface/truth"
    assert result.n_box_fallback == 0 and result.test_metrics == {}
    data = FaceDataset(db, "s", "train", source="aligned", size=112)
    assert len(data) > 0
    sample = data[0]
    assert tuple(sample["image"].shape) == (3, 112, 112)
    assert float(sample["image"].std()) > 0.05  # a face, not a black square

    cache = _cache(db, 112)
    assert cache is not None and len(cache) == result.n_images
    ids = cache.image_ids
    truth = _truth(db, ids)
    arc = template_points(ARCFACE_TEMPLATE_112, 112)
    errors = []
    for image_id, points in zip(ids, truth, strict=True):
        crop, matrix = cache.crop(str(image_id))
        mapped = T.apply(matrix, points)
        errors.append(np.linalg.norm(mapped[:2] - arc[:2], axis=1))
        # the pixels follow the matrix: the pupils (drawn dark) are dark in the crop
        for x, y in np.rint(mapped[:2]).astype(int):
            assert crop[y, x].mean() < 80, (image_id, x, y, crop[y, x])
    errors = np.array(errors)
    # tests/test_alignment.py: synthetic faces land a mean 1.6-1.8 px from ArcFace's eyes
    assert errors.mean() < 2.0 and errors.max() < 7.0


def test_aligned_crops_go_stale_when_an_image_file_changes(db: Path) -> None:
    result = align_snapshot(None, "s", db, size=32, template="arcface", source="truth")
    assert (
        query(
            db,
            "SELECT count(file_size) FROM crop_cache_rows WHERE source = ?",
            [result.cache.source],
        )[0][0]
        == result.n_images
    )
    assert len(FaceDataset(db, "s", "train", source="aligned", size=32)) > 0
    con = connect(db)
    try:  # what a re-ingest records after the file was replaced by one of another size
        con.execute(
            "UPDATE images SET file_size = file_size + 1 WHERE image_id = "
            "(SELECT min(image_id) FROM snapshot_images WHERE snapshot = 's')"
        )
    finally:
        con.close()
    with pytest.raises(FileNotFoundError, match="No aligned crops"):
        FaceDataset(db, "s", "train", source="aligned", size=32)


def test_alignment_report_measures_the_true_eyes_against_the_template(db: Path) -> None:
    align_snapshot(None, "s", db, size=112, template="arcface", source="truth")
    align_snapshot(None, "s", db, size=64, template="reference", source="truth")
    report = alignment_report(db, "s")
    assert [r[:2] for r in report.rows] == [
        ("aligned/arcface/truth", 112),
        ("aligned/reference/truth", 64),
    ]
    ((source, size, n, mean, p95, worst, within),) = alignment_report(db, "s", 112).rows
    cache = _cache(db, 112)
    truth = _truth(db, cache.image_ids)
    arc = template_points(ARCFACE_TEMPLATE_112, 112)
    errors = np.array(
        [
            np.linalg.norm(T.apply(m, p)[:2] - arc[:2], axis=1)
            for m, p in zip(cache.matrices, truth, strict=True)
        ]
    )
    assert n == len(truth) and mean == pytest.approx(errors.mean())
    assert worst == pytest.approx(errors.max()) and within == pytest.approx((errors <= 2).mean())
    assert mean < 2.0 and mean <= p95 <= worst


def test_truth_alignment_matches_the_template_at_another_size(db: Path) -> None:
    align_snapshot(None, "s", db, size=64, template="reference", source="truth")
    cache = _cache(db, 64)
    assert cache is not None
    ids = cache.image_ids
    truth = _truth(db, ids)
    ref = template_points(REFERENCE_TEMPLATE, 64)
    mapped = np.array([T.apply(cache.crop(str(i))[1], p) for i, p in zip(ids, truth, strict=True)])
    # the eye midpoint sits on the template's eye midpoint (the fit is centred there)
    centre = mapped[:, :2].mean(axis=1) - ref[:2].mean(axis=0)
    assert np.abs(centre[:, 0]).max() < 2.0
    assert _cache(db, 112) is None  # another size, another cache


def test_predicted_alignment_writes_one_prediction_per_image(db: Path, tmp_path: Path) -> None:
    config = LandmarkTrainConfig(
        snapshot="s",
        epochs=1,
        max_batches_per_epoch=2,
        batch_size=4,
        out_dir=str(tmp_path / "ckpt"),
        augment=False,
    )
    run = train_landmarks(config, db)
    # a run id resolves to its best.pt under the recorded out_dir
    path = store.checkpoint_path(run.run_id, db, "landmarks")
    ckpt = store.read_checkpoint(path, "landmarks")
    assert path == run.best_checkpoint and ckpt["run_id"] == run.run_id
    result = align_snapshot(run.run_id, "s", db, size=64, source="predicted", batch_size=8)
    assert result.run_id == run.run_id and result.n_predictions == result.n_images
    con = connect(db, read_only=True)
    try:
        n, finite, images = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE isfinite(nme)), "
            "(SELECT count(*) FROM snapshot_images WHERE snapshot = 's') "
            "FROM landmark_predictions WHERE run_id = ?",
            [run.run_id],
        ).fetchone()
    finally:
        con.close()
    assert n == images == finite == result.n_images
    assert result.mean_nme is not None and np.isfinite(result.mean_nme)
    data = FaceDataset(db, "s", "all", source="aligned", size=64)
    assert len(data) == n and data.cache.source == f"aligned/reference/{run.run_id}"
    # the test split's figures land in metrics, at the checkpoint's epoch, and agree with
    # the per-image predictions (report's test NME)
    metrics = dict(
        query(
            db,
            "SELECT name, value FROM metrics WHERE run_id = ? AND split = 'test' AND epoch = ?",
            [run.run_id, ckpt["epoch"]],  # epochs done: the metrics table's number
        )
    )
    assert set(metrics) == {"nme", "nme_argmax", "failure_rate", "ced_auc"}
    assert metrics == result.test_metrics
    ((test_nme, *_),) = landmark_report(db, run.run_id, split="test").rows
    assert metrics["nme"] == pytest.approx(test_nme)
    assert 0 <= metrics["failure_rate"] <= 1 and 0 <= metrics["ced_auc"] <= 1
    # another snapshot's "test" images are not this run's test: no test figures from it
    select(db, **{**fitted_params(db, images_per_id=10), "seed": 99})
    create("other", db)
    assert get_snapshot_hash(db, "other") != ckpt["snapshot_hash"]
    other = align_snapshot(run.run_id, "other", db, size=64, batch_size=8)
    assert other.test_metrics == {} and other.n_predictions == other.n_images
    assert (
        query(db, "SELECT count(*) FROM metrics WHERE run_id = ? AND split = 'test'", [run.run_id])[
            0
        ][0]
        == 4
    )


def test_alignments_of_one_size_coexist_and_the_newest_is_read(db: Path) -> None:
    align_snapshot(None, "s", db, size=48, template="arcface", source="truth")
    align_snapshot(None, "s", db, size=48, template="reference", source="truth")
    sources = {c.source for c in list_caches(db) if c.size == 48}
    assert sources == {"aligned/arcface/truth", "aligned/reference/truth"}
    newest = FaceDataset(db, "s", "train", source="aligned", size=48)
    pinned = FaceDataset(db, "s", "train", source="aligned/arcface/truth", size=48)
    assert newest.cache.source == "aligned/reference/truth"
    assert pinned.cache.source == "aligned/arcface/truth"
    assert not np.array_equal(newest[0]["image"], pinned[0]["image"])  # another template
    with pytest.raises(FileNotFoundError, match="aligned/arcface/landmarks-x"):
        FaceDataset(db, "s", "train", source="aligned/arcface/landmarks-x", size=48)
    with pytest.raises(ValueError, match="source 'bbox/x'"):
        FaceDataset(db, "s", "train", source="bbox/x", size=48)
    # drop one alignment by name, then every alignment by kind
    assert [c.source for c in drop_cache("s", db, size=48, source="aligned/arcface/truth")] == [
        "aligned/arcface/truth"
    ]
    assert FaceDataset(db, "s", "train", source="aligned", size=48).cache.source == (
        "aligned/reference/truth"
    )
    assert [c.source for c in drop_cache("s", db, source="aligned")] == ["aligned/reference/truth"]
    assert not list_caches(db)


def test_collapsed_predictions_are_aligned_from_the_face_box(db: Path, monkeypatch) -> None:
    import models.alignment.snapshot as align_run

    images = align_run._snapshot_images(db, "s")
    collapsed = np.repeat(images.boxes[:, None, :2] + 20.0, 5, axis=1)  # one point per face
    collapsed[1::2] = images.truth[1::2]  # every other face is fine

    def fake_predict(landmarks, db, snapshot, ids, batch_size, progress, skip_bad=False):  # noqa: ANN001, ANN202
        return collapsed, collapsed

    monkeypatch.setattr(align_run, "_predict", fake_predict)
    loaded = SimpleNamespace(
        run_id="landmarks-r", config=LandmarkTrainConfig(), epoch=0, snapshot_hash="", input_size=64
    )
    monkeypatch.setattr(store, "load_landmarks", lambda run, db, device: loaded)
    result = align_run.align_snapshot("landmarks-r", "s", db, size=32, template="reference")
    assert result.n_box_fallback == (len(images.ids) + 1) // 2
    # the fallback lays the template over the box, so the box fills the crop: centred
    # across, and about the crop's area (exactly, were the box square)
    cache = FaceDataset(db, "s", "all", source="aligned/reference/landmarks-r", size=32).cache
    x1, y1, x2, y2 = images.boxes[0]
    corners = T.apply(cache.crop(images.ids[0])[1], np.array([[x1, y1], [x2, y2]]) - 0.5)
    (left, top), (right, bottom) = corners
    assert (left + right) / 2 == pytest.approx(15.5, abs=0.05)
    assert (right - left) * (bottom - top) == pytest.approx(32 * 32, rel=0.2)
    # the collapsed predictions are still what the catalog records (with a large NME)
    assert (
        query(db, "SELECT max(nme) FROM landmark_predictions WHERE run_id = 'landmarks-r'")[0][0]
        > 0.3
    )


def test_bad_settings_are_refused(db: Path) -> None:
    with pytest.raises(ValueError, match="template"):
        align_snapshot(None, "s", db, template="nope", source="truth")
    with pytest.raises(ValueError, match="source"):
        align_snapshot(None, "s", db, source="guess")
    with pytest.raises(ValueError, match="needs a landmark run"):
        align_snapshot(None, "s", db, source="predicted")


def test_store_crops_checks_its_inputs(db: Path) -> None:
    ids = snapshot_ids(db)
    crops = np.zeros((len(ids), 8, 8, 3), np.uint8)
    eye = np.repeat(np.eye(3)[None], len(ids), axis=0)
    with pytest.raises(ValueError, match="source"):
        store_crops("s", db, size=8, source="bbox", crops=crops, image_ids=ids, matrices=eye)
    with pytest.raises(ValueError, match="missing"):
        store_crops(
            "s", db, size=8, source="aligned", crops=crops[1:], image_ids=ids[1:], matrices=eye[1:]
        )
    with pytest.raises(ValueError, match="crops must be"):
        store_crops("s", db, size=16, source="aligned", crops=crops, image_ids=ids, matrices=eye)
    info = store_crops(
        "s", db, size=8, source="aligned", crops=crops + 7, image_ids=ids, matrices=eye
    )
    cache = _cache(db, 8)
    assert cache is not None and len(cache) == info.n_images == len(ids)
    crop, matrix = cache.crop(ids[0])
    assert (crop == 7).all() and np.allclose(matrix, np.eye(3))
    # storing again replaces the cache of the key
    store_crops("s", db, size=8, source="aligned", crops=crops + 9, image_ids=ids, matrices=eye)
    assert (_cache(db, 8).crop(ids[-1])[0] == 9).all()


def test_store_crops_streams_and_a_failed_fill_keeps_the_previous_cache(db: Path) -> None:
    ids = snapshot_ids(db)
    eye = np.repeat(np.eye(3)[None], len(ids), axis=0)

    def fill(array: np.ndarray) -> None:
        assert isinstance(array, np.memmap)  # the file itself, not an array in memory
        for k in range(len(array)):
            array[k] = k % 256

    store_crops("s", db, size=8, source="aligned/x/y", crops=fill, image_ids=ids, matrices=eye)
    assert (_cache(db, 8).crop(ids[3])[0] == 3).all()

    def broken(array: np.ndarray) -> None:
        array[0] = 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        store_crops(
            "s", db, size=8, source="aligned/x/y", crops=broken, image_ids=ids, matrices=eye
        )
    # the previous cache of the key is intact, and no half-written file is left
    assert (_cache(db, 8).crop(ids[3])[0] == 3).all()
    snap_hash = query(db, "SELECT hash FROM snapshots WHERE name = 's'")[0][0]
    assert [p.name for p in (db.parent / "c.crops").iterdir()] == [
        f"s-{snap_hash[:12]}-aligned+x+y-8.npy"
    ]
    with pytest.raises(ValueError, match="variant"):
        store_crops("s", db, size=8, source="aligned/../x", crops=fill, image_ids=ids, matrices=eye)
