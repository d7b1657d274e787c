"""models.harness: the training loop, with a tiny fake task on random numbers.

The catalog holds the runs and metrics (a snapshot without images is enough: the
fake task never reads one), so every test checks what lands there too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import query, snapshot_catalog
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from catalog import results
from models import harness
from models.checkpoints import load_checkpoint
from models.config import TrainConfig
from models.env import Env
from models.harness import Task


@dataclass
class FakeConfig(TrainConfig):
    snapshot: str = "s"
    epochs: int = 3
    batch_size: int = 8
    lr: float = 0.05
    hidden: int = 4


class Fake(Task):
    """Regression of y = x . w on 32 random samples, a dropout model (so the RNG state
    matters on resume) and a second module with parameters (as a loss head has)."""

    kind = "fake"
    config_type = FakeConfig
    metric = "mse"
    higher_is_better = False
    script: list[float] | None = None  # evaluate's metric per epoch, in place of the mse
    fail_at: int | None = None  # train_step raises in this epoch

    def build(self, env: Env) -> dict[str, nn.Module]:
        self.env = env
        self.model = nn.Sequential(
            nn.Linear(3, self.config.hidden), nn.Dropout(0.3), nn.Linear(self.config.hidden, 1)
        )
        self.head = nn.Linear(1, 1)  # trained too: a loss module with parameters
        g = torch.Generator().manual_seed(123)  # the data: fixed, not from the seed
        x = torch.randn(32, 3, generator=g)
        self.data = TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5]]))
        self.snapshot_hash = snapshot_hash(self.db)
        self.epoch = -1
        return {"model": self.model, "loss": self.head}

    def train_loader(self, epoch: int, seed: int) -> DataLoader:
        self.epoch = epoch
        return DataLoader(
            self.data,
            batch_size=self.config.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        )

    def train_step(self, batch: list[torch.Tensor]) -> torch.Tensor:
        if self.epoch == self.fail_at:
            raise RuntimeError("boom")
        x, y = (t.to(self.env.device) for t in batch)
        with self.env.autocast():
            out = self.head(self.model(x))
        return nn.functional.mse_loss(out.float(), y)

    def evaluate(self) -> dict[str, float]:
        x, y = self.data.tensors
        mse = nn.functional.mse_loss(self.head(self.model(x)), y).item()
        if self.script is not None:
            return {"mse": self.script[self.epoch], "true_mse": mse}
        return {"mse": mse}


def snapshot_hash(db: Path) -> str:
    return query(db, "SELECT hash FROM snapshots WHERE name = 's'")[0][0]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_catalog(tmp_path_factory.mktemp("harness"), ids=6, seed=1, images=False)


def _config(tmp_path: Path, **changed) -> FakeConfig:  # noqa: ANN003
    return FakeConfig(out_dir=str(tmp_path / "ckpt"), **changed)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(path)
    return {f"{m}.{k}": v for m in ("model", "loss") for k, v in ckpt[m].items()}


def test_a_run_trains_logs_and_checkpoints(db: Path, tmp_path: Path) -> None:
    epochs, batches = [], []
    out = harness.train(
        Fake, _config(tmp_path), db, progress=epochs.append, on_batch=lambda *a: batches.append(a)
    )
    assert out.epochs_done == 3 and out.metric == "mse"
    run = results.get_run(db, out.run_id)
    assert run.kind == "fake" and run.status == "finished" and run.config["hidden"] == 4
    metrics = results.get_metrics(db, out.run_id)
    assert set(metrics) == {
        (e, s, n) for e in (1, 2, 3) for s, n in [("train", "loss"), ("val", "mse")]
    }  # epochs numbered as training prints them: 1 for the first
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert metrics[3, "val", "mse"] < metrics[1, "val", "mse"]
    assert out.best == min(metrics[e, "val", "mse"] for e in (1, 2, 3))
    # 32 samples, batches of 8: 4 per epoch, each with the running mean loss
    assert [b[:3] for b in batches] == [(e, k, 4) for e in (1, 2, 3) for k in (1, 2, 3, 4)]
    assert batches[3][3] == pytest.approx(epochs[0]["train_loss"])
    assert set(epochs[0]) == {"run_id", "epoch", "lr", "train_loss", "val_mse", "best_val_mse"}
    last = load_checkpoint(out.best_checkpoint.parent / "last.pt")
    assert last["epoch"] == 3 and last["run_id"] == out.run_id and last["config"] == run.config
    assert last["snapshot_hash"] == run.snapshot_hash and set(last["loss"]) == {"weight", "bias"}
    assert not list(out.best_checkpoint.parent.glob("*.tmp"))


@pytest.mark.parametrize(("higher", "best_epoch"), [(False, 3), (True, 0)])
def test_the_best_checkpoint_follows_the_metric_either_way(
    db: Path, tmp_path: Path, monkeypatch, higher: bool, best_epoch: int
) -> None:
    monkeypatch.setattr(Fake, "script", [3.0, 1.0, 2.0, 0.5])
    monkeypatch.setattr(Fake, "higher_is_better", higher)
    out = harness.train(Fake, _config(tmp_path, epochs=4), db)
    assert out.best_epoch == best_epoch and out.best == [3.0, 1.0, 2.0, 0.5][best_epoch]
    best = load_checkpoint(out.best_checkpoint)
    assert best["epoch"] == best_epoch + 1 and best["best_val_mse"] == out.best
    assert load_checkpoint(out.best_checkpoint.parent)["best_epoch"] == best_epoch
    # every validation metric is logged, not only the one that picks best.pt
    assert (1, "val", "true_mse") in results.get_metrics(db, out.run_id)


@pytest.mark.parametrize(("budget_s", "epochs"), [(50, 1), (70, 2)])
def test_no_epoch_starts_that_would_overrun_the_budget(
    db: Path, tmp_path: Path, budget_s: int, epochs: int
) -> None:
    # each clock reading advances 20 s: epoch k runs from 40k + 20 to 40k + 40
    clock = iter(range(0, 10_000, 20))
    config = _config(tmp_path, epochs=5, max_minutes=budget_s / 60)
    out = harness.train(Fake, config, db, clock=lambda: float(next(clock)))
    assert out.epochs_done == epochs
    assert results.get_run(db, out.run_id).status == "finished"


def test_the_optimizer_follows_the_schedule(db: Path, tmp_path: Path) -> None:
    cosine = _config(tmp_path, epochs=5, lr=0.1)
    lrs = [harness.epoch_lr(cosine, e) for e in range(5)]
    assert lrs[0] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.001)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    constant = _config(tmp_path, epochs=5, schedule="constant")
    assert {harness.epoch_lr(constant, e) for e in range(5)} == {constant.lr}
    seen: list[float] = []
    harness.train(Fake, cosine, db, progress=lambda e: seen.append(e["lr"]))
    assert seen == pytest.approx(lrs)
    ckpt = load_checkpoint(next(Path(cosine.out_dir).glob("*/last.pt")))
    assert [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == pytest.approx([lrs[-1]])


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
    db: Path, tmp_path: Path
) -> None:
    straight = harness.train(Fake, _config(tmp_path / "a", epochs=4), db)

    def stop_after_second_epoch(epoch: dict) -> None:
        if epoch["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        harness.train(Fake, _config(tmp_path / "b", epochs=4), db, progress=stop_after_second_epoch)
    (run,) = [r for r in results.list_runs(db) if r.run_id != straight.run_id]
    assert run.status == "interrupted" and run.ended_at is not None
    run_dir = tmp_path / "b" / "ckpt" / run.run_id
    resumed = harness.train(Fake, None, db, resume=run_dir)
    assert resumed.run_id == run.run_id and resumed.epochs_done == 4
    assert results.get_run(db, run.run_id).status == "finished"
    a, b = _weights(straight.best_checkpoint.parent), _weights(run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert results.get_metrics(db, run.run_id) == results.get_metrics(db, straight.run_id)


def test_a_failing_run_is_marked_failed(db: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Fake, "fail_at", 1)
    with pytest.raises(RuntimeError, match="boom"):
        harness.train(Fake, _config(tmp_path), db)
    (run,) = results.list_runs(db)
    assert run.status == "failed" and run.ended_at is not None
    # epoch 0 was done and saved: the run can continue from it
    ckpt = load_checkpoint(tmp_path / "ckpt" / run.run_id)
    assert ckpt["epoch"] == 1


def test_resume_changes_only_what_it_may(db: Path, tmp_path: Path) -> None:
    out = harness.train(Fake, _config(tmp_path, epochs=1), db)
    saved = load_checkpoint(out.best_checkpoint)["config"]
    more = FakeConfig.resumed(saved, epochs=3, num_workers=0, lr=saved["lr"])  # same lr: fine
    assert more.epochs == 3 and more.hidden == 4
    with pytest.raises(
        ValueError,
        match=r"different lr, hidden \(the run's lr 0.05, given "
        r"0.1; hidden 4, given 8\); only device, epochs",
    ):
        FakeConfig.resumed(saved, lr=0.1, hidden=8)
    with pytest.raises(ValueError, match="unknown setting.*colour"):
        FakeConfig.resumed(saved, colour="red")
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        FakeConfig.resumed(saved, epochs=0)
    with pytest.raises(ValueError, match="different hidden"):
        harness.train(Fake, _config(tmp_path, epochs=2, hidden=8), db, resume=out.best_checkpoint)
    # fields saved before they existed: the schedule of old runs was constant
    old = {k: v for k, v in saved.items() if k != "schedule"}
    assert FakeConfig.from_saved(old).schedule == "constant"
    assert results.get_run(db, out.run_id).status == "finished"  # refusals touch nothing


def test_resume_refuses_another_snapshot(db: Path, tmp_path: Path) -> None:
    out = harness.train(Fake, _config(tmp_path, epochs=1), db)

    class Other(Fake):  # as if the snapshot's name now meant other images
        def build(self, env: Env) -> dict[str, nn.Module]:
            modules = super().build(env)
            self.snapshot_hash = "0" * 64
            return modules

    with pytest.raises(ValueError, match="is not the one run .* trained on"):
        harness.train(Other, _config(tmp_path, epochs=2), db, resume=out.best_checkpoint)


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": 0},
        {"batch_size": 0},
        {"max_batches_per_epoch": 0},
        {"max_minutes": 0},
        {"lr": 0},
        {"schedule": "step"},
        {"num_workers": -1},
        {"device": "gpu"},
    ],
)
def test_configs_that_would_fail_later_are_refused_when_made(bad: dict) -> None:
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        FakeConfig(**bad)


def test_the_writer_is_the_one_place_that_writes(db: Path, tmp_path: Path) -> None:
    writer = harness.Writer(db, enabled=False)  # a rank other than 0, some day
    assert writer.start_run("fake", {}, "s") == ""
    writer.log_metrics("x", 0, "val", {"mse": 1.0})
    writer.save_checkpoint(tmp_path / "x" / "last.pt", {"a": 1})
    assert not (tmp_path / "x").exists()
    assert query(db, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'runs'")[0][0] == 0


def test_max_batches_cuts_epochs_short(db: Path, tmp_path: Path) -> None:
    batches: list[tuple] = []
    harness.train(
        Fake,
        _config(tmp_path, epochs=2, max_batches_per_epoch=2),
        db,
        on_batch=lambda *a: batches.append(a[:3]),
    )
    assert batches == [(1, 1, 2), (1, 2, 2), (2, 1, 2), (2, 2, 2)]
