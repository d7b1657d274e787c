"""A synthetic catalog with a trained, evaluated recognizer, for the pipeline's tests.

Built once per test process (the first test module that asks builds it; the others
reuse it): tests copy the catalog file before writing to it
(:func:`copy_catalog`). Torch runs on one thread while it trains (restored after).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import query, snapshot_catalog

_BUILT: dict[str, SimpleNamespace] = {}


def one_thread():  # noqa: ANN201 - a generator for pytest fixtures
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def trained_catalog(factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Snapshot ``h`` of 24 synthetic identities (6 held out: 3 query x 2 images, 3
    distractor x 3), a short CE recognizer on its face-box crops at 32 px, evaluated
    (so the run has open-set thresholds in ``metrics``). Returns ``db``, ``run_id``,
    ``root`` (the images' folder) and ``root_dir``."""
    if "recognizer" in _BUILT:
        return _BUILT["recognizer"]
    from catalog.selection import fitted_params, select
    from catalog.snapshots import create
    from models.recognition import evaluate as ev
    from models.recognition import train as tr

    root = factory.mktemp("pipeline")
    db = snapshot_catalog(root, ids=24, seed=11)
    params = fitted_params(db, images_per_id=10)
    select(
        db,
        **{
            **params,
            "holdout_ids": 6,
            "query_ids": 3,
            "query_images": 2,
            "distractor_ids": 3,
            "distractor_images": 3,
            "train_per_id": 6,
            "val_per_id": 2,
            "test_per_id": 2,
        },
    )
    create("h", db)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = tr.RecognizerTrainConfig(
            snapshot="h",
            source="bbox",
            size=32,
            embedding_dim=32,
            batch_size=16,
            epochs=8,
            lr=3e-3,
            loss="ce",
            out_dir=str(root / "ck"),
        )
        run = tr.train_recognizer(config, db)
        ev.evaluate_recognizer(run.run_id, db)
    finally:
        torch.set_num_threads(threads)
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
