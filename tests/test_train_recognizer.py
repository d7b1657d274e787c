"""models.recognition.train: tiny CPU runs of every loss learn, land in the catalog, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import query, snapshot_catalog

from catalog import results
from models import store
from models.recognition import train as tr

#: face_cpu at 32 px, bbox crops, a 32-d embedding: seconds per epoch on a CPU.
TINY = dict(
    snapshot="s",
    source="bbox",
    size=32,
    embedding_dim=32,
    batch_size=16,
    epochs=3,
    lr=3e-3,
    augment=False,
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_catalog(tmp_path_factory.mktemp("recog"), ids=16, seed=5)


#: torch on one thread for every test (conftest.one_thread): small convs, threads only contend
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("loss", ["ce", "arcface", "cosface", "triplet"])
def test_every_loss_trains_and_lands_in_the_catalog(db: Path, tmp_path: Path, loss: str):
    epochs: list[dict] = []
    config = tr.RecognizerTrainConfig(**TINY, loss=loss, out_dir=str(tmp_path / "ck"))
    result = tr.train_recognizer(config, db, progress=epochs.append)
    assert result.epochs_done == 3 and result.best_checkpoint.exists()
    assert result.metric == ("auc" if loss == "triplet" else "top1")
    losses = [e["train_loss"] for e in epochs]
    assert losses[-1] < losses[0], losses
    run = results.get_run(db, result.run_id)
    assert (run.kind, run.status, run.config["loss"]) == ("recognition", "finished", loss)
    names = {
        r[0]
        for r in query(
            db,
            "SELECT DISTINCT name FROM metrics WHERE run_id = ? AND split = 'val'",
            [result.run_id],
        )
    }
    assert names == ({"auc"} if loss == "triplet" else {"auc", "top1"})
    best = max(e[f"val_{result.metric}"] for e in epochs)
    assert result.best == pytest.approx(best)
    ckpt = store.read_checkpoint(result.best_checkpoint, tr.KIND)
    assert "loss" in ckpt and ckpt["config"]["loss"] == loss


def test_classifier_beats_chance_on_seen_identities(db: Path, tmp_path: Path):
    """Validation images are new images of the training identities: a few epochs of CE
    must rank well above chance (1/C)."""
    config = tr.RecognizerTrainConfig(
        **{**TINY, "epochs": 6}, loss="ce", out_dir=str(tmp_path / "ck")
    )
    result = tr.train_recognizer(config, db)
    n_classes = query(db, "SELECT count(*) FROM snapshot_labels WHERE snapshot = 's'")[0][0]
    assert result.best > 3 / n_classes, (result.best, n_classes)


@pytest.mark.parametrize("loss,mining", [("arcface", "batch-hard"), ("triplet", "random")])
def test_resume_matches_an_uninterrupted_run(db: Path, tmp_path: Path, loss: str, mining: str):
    """Two epochs, then a resume to three, end with the weights of three in a row (a
    constant rate: a cosine schedule is shaped by the epoch count, which extends)."""
    tiny = {**TINY, "schedule": "constant", "augment": True, "loss": loss, "mining": mining}
    straight = tr.train_recognizer(
        tr.RecognizerTrainConfig(**tiny, out_dir=str(tmp_path / "a")), db
    )
    first = tr.train_recognizer(
        tr.RecognizerTrainConfig(**{**tiny, "epochs": 2}, out_dir=str(tmp_path / "b")), db
    )
    resumed = tr.train_recognizer(
        tr.RecognizerTrainConfig(**tiny, out_dir=str(tmp_path / "b")),
        db,
        resume=first.best_checkpoint.parent,
    )
    assert resumed.run_id == first.run_id and resumed.epochs_done == 3
    a = store.read_checkpoint(straight.best_checkpoint.parent / "last.pt", tr.KIND)
    b = store.read_checkpoint(resumed.best_checkpoint.parent / "last.pt", tr.KIND)
    for key in ("model", "loss"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), (key, name)


def test_triplet_batches_hold_p_identities_of_k_images(db: Path):
    config = tr.RecognizerTrainConfig(**TINY, loss="triplet", pk_images=4)
    task = tr.RecognizerTask(config, db)
    task.build(tr.Env.create("cpu"))
    loader = task.train_loader(0, seed=1)
    batches = list(loader)
    assert len(batches) == len(loader) >= 1
    for batch in batches:
        labels = batch["label"]
        assert len(labels) == 16
        assert sorted(torch.bincount(labels).tolist())[-4:] == [4, 4, 4, 4]
    # an epoch covers about the training split
    n_train = len(task.train_ds)
    assert abs(len(batches) * 16 - n_train) <= 16 * len(batches) // 2 + 16


def test_settings_are_checked_before_anything_runs(db: Path):
    with pytest.raises(ValueError, match="loss 'softmax'"):
        tr.RecognizerTrainConfig(loss="softmax")
    with pytest.raises(ValueError, match="backbone 'hourglass_small'"):
        tr.RecognizerTrainConfig(backbone="hourglass_small")
    with pytest.raises(ValueError, match="multiple of 16"):
        tr.RecognizerTrainConfig(size=100)
    with pytest.raises(ValueError, match="K >= 2"):
        tr.RecognizerTrainConfig(loss="triplet", pk_images=1)
    before = (
        query(db, "SELECT count(*) FROM runs")[0][0]
        if query(db, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'runs'")[0][0]
        else 0
    )
    with pytest.raises(FileNotFoundError, match="align"):  # no alignment yet
        tr.train_recognizer(tr.RecognizerTrainConfig(**{**TINY, "source": "aligned"}), db)
    after = (
        query(db, "SELECT count(*) FROM runs")[0][0]
        if query(db, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'runs'")[0][0]
        else 0
    )
    assert after == before  # no run recorded for a run that could not start
