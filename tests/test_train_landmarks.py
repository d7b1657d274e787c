"""models.landmarks.train: a tiny CPU run learns, lands in the catalog, resumes exactly."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import query, snapshot_catalog

from catalog import results, snapshots
from catalog.selection import fitted_params, select
from models import harness, store
from models.landmarks import train as tl
from models.registry import create_model

#: hourglass_small (128 px crops), 3 batches of 8 per epoch, no augmentation noise.
TINY = dict(snapshot="s", epochs=2, batch_size=8, max_batches_per_epoch=3, augment=False)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = snapshot_catalog(tmp_path_factory.mktemp("train"), ids=12, seed=3)
    _, splits = snapshots.show("s", db)
    assert splits["val"][0] > 0 and splits["train"][0] >= 24, splits
    return db


@pytest.fixture(scope="module")
def straight(template: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One uninterrupted 2-epoch run, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("straight")
    db = Path(shutil.copy(template, root / "c.duckdb"))
    config = tl.LandmarkTrainConfig(**TINY, out_dir=str(root / "ckpt"))
    epochs: list[dict] = []
    batches: list[tuple] = []
    result = tl.train_landmarks(
        config, db, progress=epochs.append, on_batch=lambda *a: batches.append(a)
    )
    return SimpleNamespace(db=db, config=config, result=result, epochs=epochs, batches=batches)


def test_tiny_run_learns_and_lands_in_the_catalog(straight: SimpleNamespace):
    result, db = straight.result, straight.db
    assert result.epochs_done == 2
    assert straight.epochs[1]["train_loss"] < straight.epochs[0]["train_loss"]
    # a progress call per batch: (epoch, done, total, running mean loss); the last of an
    # epoch is that epoch's train loss
    assert [b[:3] for b in straight.batches] == [(e, k, 3) for e in (1, 2) for k in (1, 2, 3)]
    assert straight.batches[2][3] == pytest.approx(straight.epochs[0]["train_loss"])

    run = results.get_run(db, result.run_id)
    assert run.status == "finished" and run.kind == "landmarks"
    assert run.snapshot_hash == query(db, "SELECT hash FROM snapshots WHERE name = 's'")[0][0]
    assert run.config["max_batches_per_epoch"] == 3
    metrics = results.get_metrics(db, result.run_id)
    assert set(metrics) == {
        (e, s, n)
        for e in (1, 2)  # as training prints them
        for s, n in [("train", "loss"), ("val", "nme"), ("val", "nme_argmax")]
    }
    assert result.best_val_nme == min(metrics[e, "val", "nme"] for e in (1, 2))
    assert all(v > 0 and v == v for v in metrics.values())  # positive, not NaN

    ckpt = store.read_checkpoint(result.best_checkpoint, tl.KIND)
    assert ckpt["run_id"] == result.run_id and ckpt["snapshot_hash"] == run.snapshot_hash
    assert ckpt["config"] == run.config
    model = create_model(ckpt["config"]["model"])
    model.load_state_dict(ckpt["model"])
    assert store.read_checkpoint(result.best_checkpoint.parent, tl.KIND)["epoch"] == 2  # last.pt
    assert not list(result.best_checkpoint.parent.glob("*.tmp"))


def test_resume_equals_uninterrupted(straight: SimpleNamespace, db: Path, tmp_path: Path):
    def stop_after_first_epoch(epoch: dict) -> None:
        if epoch["epoch"] == 1:
            raise KeyboardInterrupt

    config = tl.LandmarkTrainConfig(**TINY, out_dir=str(tmp_path / "ckpt"))
    with pytest.raises(KeyboardInterrupt):
        tl.train_landmarks(config, db, progress=stop_after_first_epoch)
    (run,) = results.list_runs(db)
    assert run.status == "interrupted"

    resumed = tl.train_landmarks(db=db, resume=tmp_path / "ckpt" / run.run_id)
    assert resumed.run_id == run.run_id and resumed.epochs_done == 2
    assert results.get_run(db, run.run_id).status == "finished"
    assert results.get_metrics(db, run.run_id) == results.get_metrics(
        straight.db, straight.result.run_id
    )
    a = store.read_checkpoint(straight.result.best_checkpoint.parent, tl.KIND)["model"]
    b = store.read_checkpoint(resumed.best_checkpoint.parent, tl.KIND)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    with pytest.raises(ValueError, match="different lr"):
        tl.train_landmarks(
            tl.LandmarkTrainConfig(**{**TINY, "lr": 0.1}), db, resume=resumed.best_checkpoint.parent
        )


def test_unknown_snapshot_is_a_clear_error(db: Path, tmp_path: Path):
    config = tl.LandmarkTrainConfig(**{**TINY, "snapshot": "nope"}, out_dir=str(tmp_path))
    with pytest.raises(snapshots.SnapshotError, match="No snapshot 'nope'. Known: s"):
        tl.train_landmarks(config, db)
    assert results.list_runs(db) == []


def test_a_failing_run_is_marked_failed(db: Path, tmp_path: Path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(tl, "heatmap_loss", broken)
    config = tl.LandmarkTrainConfig(**TINY, out_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="boom"):
        tl.train_landmarks(config, db)
    (run,) = results.list_runs(db)
    assert run.status == "failed" and run.ended_at is not None


def test_a_snapshot_without_val_split_is_refused(db: Path, tmp_path: Path):
    select(db, **{**fitted_params(db, images_per_id=10), "train_per_id": 8, "val_per_id": 0})
    snapshots.create("noval", db)
    config = tl.LandmarkTrainConfig(**{**TINY, "snapshot": "noval"}, out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="'noval' has no validation images.*val_per_id >= 1"):
        tl.train_landmarks(config, db)
    assert results.list_runs(db) == []


@pytest.mark.parametrize(("budget_s", "epochs"), [(50, 1), (70, 2)])
def test_the_time_budget_stops_before_an_epoch_that_would_overrun(
    db: Path, tmp_path: Path, monkeypatch, budget_s: int, epochs: int
):
    # A fake clock that advances 20 s per reading: the budget starts at 0, epoch k
    # runs from 40k + 20 to 40k + 40 (20 s long). After epoch 0 (ends at 40) another
    # 20 s epoch would end past a 50 s budget but within 70 s. The old rule (stop once
    # past the budget) ran 2 epochs in both cases.
    clock = iter(range(0, 10_000, 20))
    monkeypatch.setattr(tl, "_clock", lambda: float(next(clock)))
    config = tl.LandmarkTrainConfig(
        **{**TINY, "epochs": 5, "max_minutes": budget_s / 60}, out_dir=str(tmp_path)
    )
    assert tl.train_landmarks(config, db).epochs_done == epochs


def test_cosine_schedule_decays_to_a_hundredth_and_constant_stays() -> None:
    config = tl.LandmarkTrainConfig(epochs=11, lr=1e-3)
    lrs = [harness.epoch_lr(config, e) for e in range(11)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-5)
    assert lrs[5] == pytest.approx((1e-3 + 1e-5) / 2)  # halfway down at mid-run
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    constant = tl.LandmarkTrainConfig(epochs=11, lr=1e-3, schedule="constant")
    assert {harness.epoch_lr(constant, e) for e in range(11)} == {1e-3}


def test_the_optimizer_follows_the_schedule(db: Path, tmp_path: Path, monkeypatch):
    seen: list[float] = []
    step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    config = tl.LandmarkTrainConfig(**{**TINY, "epochs": 3}, out_dir=str(tmp_path))
    tl.train_landmarks(config, db)
    # 3 batches per epoch, in order: epoch 0's rate three times, then epoch 1's, ...
    expected = [harness.epoch_lr(config, e) for e in range(3) for _ in range(3)]
    assert seen == pytest.approx(expected) and expected[0] > expected[3] > expected[6]
    with pytest.raises(ValueError, match="schedule must be one of"):
        tl.train_landmarks(tl.LandmarkTrainConfig(**TINY, schedule="step"), db)


@pytest.mark.parametrize(
    "bad", [{"epochs": 0}, {"batch_size": 0}, {"max_batches_per_epoch": 0}, {"max_minutes": 0}]
)
def test_settings_that_would_train_nothing_are_refused(db: Path, bad: dict) -> None:
    with pytest.raises(ValueError, match=f"{next(iter(bad))} must be"):
        tl.train_landmarks(tl.LandmarkTrainConfig(**{**TINY, **bad}), db)
    assert query(db, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'runs'")[0][0] == 0


def test_a_checkpoint_from_before_schedules_resumes_at_a_constant_rate(db: Path, tmp_path: Path):
    config = tl.LandmarkTrainConfig(**{**TINY, "schedule": "constant"}, out_dir=str(tmp_path))
    run = tl.train_landmarks(config, db)
    last = run.best_checkpoint.parent / "last.pt"
    ckpt = torch.load(last, weights_only=False)
    del ckpt["config"]["schedule"]  # as runs saved before the field existed
    torch.save(ckpt, last)
    resumed = tl.train_landmarks(
        tl.LandmarkTrainConfig(
            **{**TINY, "schedule": "constant", "epochs": 3}, out_dir=str(tmp_path)
        ),
        db,
        resume=last,
    )
    assert resumed.epochs_done == 3
    with pytest.raises(ValueError, match="different schedule"):
        tl.train_landmarks(
            tl.LandmarkTrainConfig(**{**TINY, "epochs": 3}, out_dir=str(tmp_path)), db, resume=last
        )
