"""Crafted and damaged checkpoints: one clear line naming the file, never code run.

Each case goes through the three doors a checkpoint comes in by: ``train_landmarks
(resume=...)``, ``align_snapshot(run=...)`` and (for some) the CLI in a subprocess.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import celebcat_process, query, snapshot_catalog

from catalog import results
from models import checkpoints
from models.alignment.snapshot import align_snapshot
from models.checkpoints import CheckpointError, load_weights
from models.landmarks.train import KIND, LandmarkTrainConfig, train_landmarks
from models.registry import create_model
from models.store import read_checkpoint


class Payload:
    """Unpickled without weights_only, this would create the folder ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_catalog(tmp_path_factory.mktemp("ckpt"), ids=12, seed=3)


def good_state(db: Path) -> dict[str, Any]:
    """What train_landmarks writes after one epoch, without training."""
    config = LandmarkTrainConfig(snapshot="s", batch_size=4, max_batches_per_epoch=1)
    model = create_model(config.model)
    return {
        "model": model.state_dict(),
        "optimizer": torch.optim.AdamW(model.parameters()).state_dict(),
        "scaler": {},
        "epoch": 1,
        "best_val_nme": 0.5,
        "best_epoch": 0,
        "config": asdict(config),
        "run_id": "landmarks-20260101-000000-abcd",
        "snapshot": "s",
        "snapshot_hash": query(db, "SELECT hash FROM snapshots WHERE name = 's'")[0][0],
        "rng": {"torch": torch.get_rng_state(), "cuda": []},
    }


def _conv_key(state: dict[str, torch.Tensor]) -> str:
    return next(k for k, v in state.items() if v.ndim == 4)


def crafted(case: str, db: Path, folder: Path) -> tuple[Path, str]:
    """A file for ``case`` and (a regex of) what its error must say."""
    path = folder / f"{case}.pt"
    state = good_state(db)
    weights = state["model"]
    if case == "garbage":
        path.write_bytes(os.urandom(4096))
        return path, "not a readable checkpoint"
    if case == "empty":
        path.write_bytes(b"")
        return path, "the file is empty"
    if case == "code":
        torch.save({**state, "model": Payload(folder / "ran")}, path)
        return path, r"holds objects other than weights.*nothing in it was run.*mkdir"
    if case == "raw_pickle":
        path.write_bytes(pickle.dumps(Payload(folder / "ran")))
        return path, "not loaded|not a readable checkpoint"
    if case == "not_a_dict":
        torch.save([torch.zeros(3)], path)
        return path, "holds a list, not a checkpoint dict"
    if case == "no_run":
        torch.save({"model": weights}, path)
        return path, r"lacks config, run_id, epoch \(\+1 more\)"
    if case == "missing_keys":
        gone = list(weights)[:4]
        state["model"] = {k: v for k, v in weights.items() if k not in gone}
        return _save(path, state), rf"missing 4: {gone[0]}, {gone[1]}, {gone[2]} \(\+1 more\)"
    if case == "extra_keys":
        state["model"] = {**weights, "head.extra.weight": torch.zeros(2)}
        return _save(path, state), "unexpected 1: head.extra.weight"
    if case == "wrong_shapes":
        key = _conv_key(weights)
        state["model"] = {**weights, key: torch.zeros(1, 1, 1, 1)}
        shape = tuple(weights[key].shape)
        return _save(path, state), re.escape(
            f"wrong shape 1: {key} (1, 1, 1, 1) in the file, {shape} in the model"
        )
    if case == "not_weights":
        state["model"] = "weights"
        return _save(path, state), "has no .* weights"
    if case == "bad_config":
        state["config"] = {**state["config"], "epochs": 0, "colour": "red"}
        return _save(path, state), r"its config is not valid: unknown setting\(s\) colour"
    if case == "bad_run_id":  # the id becomes rows' keys and a folder: a plain word only
        state["run_id"] = "landmarks-has space"
        return _save(path, state), "records run id 'landmarks-has space', which is not a run id"
    if case == "other_kind":
        state["run_id"] = "recognition-20260101-000000-abcd"
        return _save(path, state), "is run recognition-.*'s, not a landmarks run's"
    raise AssertionError(case)


def _save(path: Path, state: dict[str, Any]) -> Path:
    torch.save(state, path)
    return path


FILE_CASES = [
    "garbage",
    "empty",
    "code",
    "raw_pickle",
    "not_a_dict",
    "no_run",
    "bad_config",
    "bad_run_id",
    "other_kind",
]
WEIGHT_CASES = ["missing_keys", "extra_keys", "wrong_shapes", "not_weights"]


def test_the_uncrafted_checkpoint_loads(db: Path, tmp_path: Path) -> None:
    path = _save(tmp_path / "good.pt", good_state(db))
    ckpt = read_checkpoint(path, KIND)
    assert ckpt.path == path and ckpt["config"]["model"] == "hourglass_small"
    load_weights(create_model("hourglass_small"), ckpt)
    # saved again (it remembers its file), it still loads weights_only
    torch.save(ckpt, tmp_path / "again.pt")
    assert read_checkpoint(tmp_path / "again.pt", KIND)["run_id"] == ckpt["run_id"]


@pytest.mark.parametrize("case", FILE_CASES + WEIGHT_CASES)
def test_resume_from_a_crafted_checkpoint_is_one_clear_error(
    case: str, db: Path, tmp_path: Path
) -> None:
    path, problem = crafted(case, db, tmp_path)
    with pytest.raises(CheckpointError, match=problem) as caught:
        train_landmarks(db=db, resume=path)
    message = str(caught.value)
    assert message.startswith(f"Checkpoint {path}: ") and "\n" not in message
    assert len(message) < 400
    assert not (tmp_path / "ran").exists()  # the payload never ran
    assert results.list_runs(db) == []  # nothing recorded, nothing reopened


@pytest.mark.parametrize("case", FILE_CASES + WEIGHT_CASES)
def test_aligning_with_a_crafted_checkpoint_is_one_clear_error(
    case: str, db: Path, tmp_path: Path
) -> None:
    path, problem = crafted(case, db, tmp_path)
    with pytest.raises(CheckpointError, match=problem) as caught:
        align_snapshot(path, "s", db, size=32)
    assert str(caught.value).startswith(f"Checkpoint {path}: ")
    assert "\n" not in str(caught.value) and not (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    "run_id", ["landmarks-/../../tmp/x", "landmarks-<script>x</script>", "landmarks-..", ""]
)
def test_a_run_id_read_from_a_checkpoint_is_checked_before_anything_is_written(
    run_id: str, db: Path, tmp_path: Path
) -> None:
    path = _save(tmp_path / "id.pt", {**good_state(db), "run_id": run_id})
    with pytest.raises(CheckpointError, match="which is not a run id"):
        align_snapshot(path, "s", db, size=32)
    tables = {r[0] for r in query(db, "SELECT table_name FROM duckdb_tables()")}
    for table in ("landmark_predictions", "metrics"):
        if table in tables:
            assert query(db, f"SELECT count(*) FROM {table} WHERE run_id = ?", [run_id]) == [(0,)]


def test_checkpoint_error_is_a_value_error() -> None:
    # the CLI prints ValueErrors as one line (a CatalogError base may come later)
    assert issubclass(CheckpointError, ValueError)
    assert str(CheckpointError("x.pt", "bad")) == "Checkpoint x.pt: bad"


def test_a_missing_checkpoint_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        checkpoints.load_checkpoint(tmp_path / "none.pt")
    with pytest.raises(FileNotFoundError, match="last.pt"):
        checkpoints.load_checkpoint(tmp_path)  # a run folder without last.pt


def test_a_torn_write_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "run" / "last.pt"
    checkpoints.save_checkpoint(path, {"epoch": 1})

    def torn(obj: Any, f: Any) -> None:
        Path(f).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(OSError, match="disk full"):
        checkpoints.save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}


@pytest.mark.parametrize(
    ("command", "case"), [("train", "empty"), ("align", "code"), ("align", "wrong_shapes")]
)
def test_the_cli_says_what_is_wrong_in_one_line(
    command: str, case: str, db: Path, tmp_path: Path
) -> None:
    path, problem = crafted(case, db, tmp_path)
    args = ["align", "--run", str(path), "--snapshot", "s"]
    if command == "train":
        args = ["train", "landmarks", "--snapshot", "s", "--resume", str(path)]
    result = celebcat_process(*args, "--db", str(db), columns=1000)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr and "Aborted" not in result.stderr
    assert lines[0].startswith(f"Error: Checkpoint {path}: ")
    assert re.search(problem, lines[0])
    assert not (tmp_path / "ran").exists()
