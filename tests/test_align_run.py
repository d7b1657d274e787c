"""`celebcat align` as a library call: aligned crop caches FaceDataset reads, predictions."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import snapshot_catalog

from catalog import transforms as T
from catalog.cache import find_cache, store_crops
from catalog.datasets import FaceDataset
from catalog.db import connect
from catalog.formats import LANDMARK_COLUMNS
from catalog.snapshots import get
from models.align_run import align_snapshot, resolve_checkpoint
from models.alignment import ARCFACE_TEMPLATE_112, REFERENCE_TEMPLATE, template_points
from models.train_landmarks import LandmarkTrainConfig, train_landmarks


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_catalog(tmp_path_factory.mktemp("align"), ids=12, seed=7)


@pytest.fixture
def db(template_db: Path, tmp_path: Path) -> Path:
    path = tmp_path / "c.duckdb"
    shutil.copyfile(template_db, path)
    return path


def _truth(db: Path, ids: np.ndarray) -> np.ndarray:
    con = connect(db, read_only=True)
    try:
        sql = f"SELECT image_id, {', '.join(LANDMARK_COLUMNS)} FROM landmarks"
        rows = {r[0]: r[1:] for r in con.execute(sql).fetchall()}
    finally:
        con.close()
    return np.array([rows[i] for i in ids], dtype=np.float64).reshape(-1, 5, 2)


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
    assert result.n_predictions == 0 and result.cache.source == "aligned"
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
    config = LandmarkTrainConfig(snapshot="s", epochs=1, max_batches_per_epoch=2, batch_size=4,
                                 out_dir=str(tmp_path / "ckpt"), augment=False)  # fmt: skip
    run = train_landmarks(config, db)
    # a run id resolves to its best.pt under the recorded out_dir
    path, ckpt = resolve_checkpoint(run.run_id, db)
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
    assert len(FaceDataset(db, "s", "all", source="aligned", size=64)) == n


def test_bad_settings_are_refused(db: Path) -> None:
    with pytest.raises(ValueError, match="template"):
        align_snapshot(None, "s", db, template="nope", source="truth")
    with pytest.raises(ValueError, match="source"):
        align_snapshot(None, "s", db, source="guess")
    with pytest.raises(ValueError, match="needs a landmark run"):
        align_snapshot(None, "s", db, source="predicted")


def test_store_crops_checks_its_inputs(db: Path) -> None:
    con = connect(db, read_only=True)
    try:
        ids = [r[0] for r in con.execute(
            "SELECT image_id FROM snapshot_images WHERE snapshot = 's' ORDER BY 1"
        ).fetchall()]  # fmt: skip
    finally:
        con.close()
    crops = np.zeros((len(ids), 8, 8, 3), np.uint8)
    eye = np.repeat(np.eye(3)[None], len(ids), axis=0)
    with pytest.raises(ValueError, match="source"):
        store_crops("s", db, size=8, source="bbox", crops=crops, image_ids=ids, matrices=eye)
    with pytest.raises(ValueError, match="missing"):
        store_crops("s", db, size=8, source="aligned", crops=crops[1:], image_ids=ids[1:],
                    matrices=eye[1:])  # fmt: skip
    with pytest.raises(ValueError, match="crops must be"):
        store_crops("s", db, size=16, source="aligned", crops=crops, image_ids=ids,
                    matrices=eye)  # fmt: skip
    info = store_crops("s", db, size=8, source="aligned", crops=crops + 7, image_ids=ids,
                       matrices=eye)  # fmt: skip
    cache = _cache(db, 8)
    assert cache is not None and len(cache) == info.n_images == len(ids)
    crop, matrix = cache.crop(ids[0])
    assert (crop == 7).all() and np.allclose(matrix, np.eye(3))
    # storing again replaces the cache of the key
    store_crops("s", db, size=8, source="aligned", crops=crops + 9, image_ids=ids, matrices=eye)
    assert (_cache(db, 8).crop(ids[-1])[0] == 9).all()
