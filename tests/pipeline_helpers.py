"""A synthetic catalog with a trained, evaluated recognizer, for the pipeline's tests.

Built once per test process (the first test module that asks builds it; the others
reuse it): tests copy the catalog file before writing to it
(:func:`copy_catalog`). Torch runs on one thread while it trains (restored after).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import holdout_snapshot, one_torch_thread, query, snapshot_catalog

_BUILT: dict[str, SimpleNamespace] = {}


def train_small_recognizer(db: Path, out_dir: Path) -> Any:
    """A short CE recognizer (8 epochs, 32-d embeddings) on the 32 px face-box crops of
    snapshot ``h`` (:func:`conftest.holdout_snapshot`), torch on one thread; the
    :class:`models.recognition.train` result (``run_id``)."""
    from models.recognition import train as tr

    config = tr.RecognizerTrainConfig(
        snapshot="h",
        source="bbox",
        size=32,
        embedding_dim=32,
        batch_size=16,
        epochs=8,
        lr=3e-3,
        loss="ce",
        out_dir=str(out_dir),
    )
    with one_torch_thread():
        return tr.train_recognizer(config, db)


def trained_catalog(factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Snapshot ``h`` of 24 synthetic identities (6 held out: 3 query x 2 images, 3
    distractor x 3), a short CE recognizer on its face-box crops at 32 px, evaluated
    (so the run has open-set thresholds in ``metrics``). Returns ``db``, ``run_id``,
    ``root`` (the images' folder) and ``root_dir``."""
    if "recognizer" in _BUILT:
        return _BUILT["recognizer"]
    from models.recognition import evaluate as ev

    root = factory.mktemp("pipeline")
    db = snapshot_catalog(root, ids=24, seed=11)
    holdout_snapshot(db, images_per_id=10, train_per_id=6)
    run = train_small_recognizer(db, root / "ck")
    with one_torch_thread():
        ev.evaluate_recognizer(run.run_id, db)
    image_root = query(db, "SELECT value FROM catalog_info WHERE key = 'image_root'")[0][0]
    built = SimpleNamespace(db=db, run_id=run.run_id, images=Path(image_root), root=root)
    _BUILT["recognizer"] = built
    return built


def copy_catalog(built: SimpleNamespace, folder: Path) -> Path:
    """A copy of the built catalog to write to (checkpoints stay where they are)."""
    return Path(shutil.copy(built.db, folder / "c.duckdb"))


def split_images(db: Path, split: str, snapshot: str = "h") -> list[tuple[str, int, str]]:
    """(image_id, identity, path relative to the image root) of a snapshot split."""
    return [
        tuple(r)
        for r in query(
            db,
            "SELECT s.image_id, s.identity, i.path FROM snapshot_images s JOIN images i "
            "USING (image_id) WHERE s.snapshot = ? AND s.split = ? ORDER BY 1",
            [snapshot, split],
        )
    ]
