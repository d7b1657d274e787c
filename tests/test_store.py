"""models.store: one way to name and load any trained model, one interface per task."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import snapshot_catalog

from catalog import transforms as T
from catalog.crop_source import CropSource
from catalog.results import RunError
from models import store
from models.checkpoints import CheckpointError
from models.detection.detectors import TrainedDetector
from models.env import Env
from models.landmarks.predict import LandmarkModel
from models.recognition.recognizer import Recognizer, embed_batches


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny run of every kind (one short epoch each) on one synthetic snapshot."""
    from models.detection.train import DetectorTrainConfig, train_detector
    from models.landmarks.train import LandmarkTrainConfig, train_landmarks
    from models.recognition.train import RecognizerTrainConfig, train_recognizer

    root = tmp_path_factory.mktemp("store")
    db = snapshot_catalog(root, ids=6, seed=3)
    common = dict(snapshot="s", epochs=1, max_batches_per_epoch=1, out_dir=str(root / "ck"))
    torch.manual_seed(0)
    landmarks = train_landmarks(LandmarkTrainConfig(batch_size=4, **common), db)
    recognizer = train_recognizer(
        RecognizerTrainConfig(
            source="bbox", size=32, embedding_dim=16, batch_size=8, loss="ce", **common
        ),
        db,
    )
    detector = train_detector(DetectorTrainConfig(batch_size=4, input_size=64, **common), db)
    return SimpleNamespace(
        db=db,
        root=root,
        landmarks=landmarks.run_id,
        recognizer=recognizer.run_id,
        detector=detector.run_id,
        landmarks_best=landmarks.best_checkpoint,
    )


def test_a_run_is_named_by_id_folder_or_checkpoint(runs: SimpleNamespace) -> None:
    folder = runs.landmarks_best.parent
    assert store.checkpoint_path(runs.landmarks, runs.db, "landmarks") == runs.landmarks_best
    assert store.checkpoint_path(folder, runs.db, "landmarks") == folder / "best.pt"
    (folder / "best.pt").rename(folder / "kept.pt")
    try:  # a folder without best.pt means its last.pt
        assert store.checkpoint_path(folder, runs.db, "landmarks") == folder / "last.pt"
    finally:
        (folder / "kept.pt").rename(folder / "best.pt")
    by_id = store.load_landmarks(runs.landmarks, runs.db)
    by_folder = store.load_landmarks(folder, runs.db)
    by_file = store.load_landmarks(runs.landmarks_best)  # a file needs no catalog
    assert by_id.run_id == by_folder.run_id == by_file.run_id == runs.landmarks
    assert by_id.checkpoint == runs.landmarks_best


def test_wrong_names_are_one_clear_error(runs: SimpleNamespace) -> None:
    with pytest.raises(RunError):
        store.load_landmarks("landmarks-no-such-run", runs.db)
    with pytest.raises(ValueError, match="is a recognition run, not a landmarks run"):
        store.load_landmarks(runs.recognizer, runs.db)
    with pytest.raises(CheckpointError, match="not a recognition run's"):
        store.load_recognizer(runs.landmarks_best)
    with pytest.raises(ValueError, match="Unknown kind of run 'faces'"):
        store.load_run(runs.landmarks, "faces", runs.db)
    with pytest.raises(FileNotFoundError):
        store.read_checkpoint(runs.root / "nothing.pt", "landmarks")


def test_landmarks_predict_five_points_per_crop(runs: SimpleNamespace) -> None:
    model = store.load_landmarks(runs.landmarks, runs.db)
    assert isinstance(model, LandmarkModel) and not model.model.training
    size = model.input_size
    crops = np.random.default_rng(0).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    points = model.predict(crops, batch_size=2)
    assert points.shape == (3, 5, 2) and np.isfinite(points).all()
    # through each crop's crop -> original matrix: here a shift of (10, -4) pixels
    shift = np.tile(np.array([[1.0, 0, 10], [0, 1, -4]]), (3, 1, 1))
    assert np.allclose(model.predict(crops, shift), points + [10, -4])
    with pytest.raises(ValueError, match="takes uint8 crops"):
        model.predict(crops[:, :-1])


def test_recognizer_embeds_unit_vectors_as_its_evaluation_does(runs: SimpleNamespace) -> None:
    recognizer = store.load_recognizer(runs.recognizer, runs.db)
    assert isinstance(recognizer, Recognizer)
    assert recognizer.recipe.source == CropSource("bbox") and recognizer.recipe.size == 32
    assert (recognizer.recipe.mean, recognizer.recipe.std) == (T.MEAN, T.STD)
    crops = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    emb = recognizer.embed(crops, batch_size=2)
    assert emb.shape == (5, 16) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    batch = {"image": torch.from_numpy(crops.transpose(0, 3, 1, 2).copy()), "label": torch.zeros(5)}
    raw, _, logits = embed_batches(recognizer.model, [batch], Env(torch.device("cpu")))
    assert np.allclose(emb, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    assert logits is None
    with pytest.raises(ValueError, match="takes uint8 crops"):
        recognizer.embed(crops.astype(np.float32))


def test_detector_specs_and_runs_load_through_the_store(runs: SimpleNamespace) -> None:
    detector = store.load_detector(f"run:{runs.detector}?top=3", runs.db)
    assert isinstance(detector, TrainedDetector) and detector.top == 3
    assert store.load_detector(detector) is detector  # a loaded one passes through
    image = np.random.default_rng(2).integers(0, 256, (80, 60, 3), dtype=np.uint8)
    (found,) = detector.detect([image])
    assert found.ndim == 2 and found.shape[1] == 5 and len(found) <= 3
    with pytest.raises(ValueError, match="is a detector run, not a landmarks run"):
        store.load_landmarks(runs.detector, runs.db)


def test_loading_needs_no_trainer(runs: SimpleNamespace) -> None:
    """A fresh process loads and uses every kind of run without importing a trainer."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from models import store\n"
        f"store.load_landmarks({str(runs.landmarks)!r}, {str(runs.db)!r})\n"
        f"store.load_recognizer({str(runs.recognizer)!r}, {str(runs.db)!r})\n"
        f"store.load_detector('run:{runs.detector}', {str(runs.db)!r})\n"
        "bad = [m for m in sys.modules if m == 'models.harness' or m.endswith('.train')]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == ""
