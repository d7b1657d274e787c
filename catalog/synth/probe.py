"""The identity probe: can a linear model tell the synthetic people apart by colour?

A logistic regression on flattened 16x16 RGB thumbnails of the face-box crops, fitted
on a snapshot's train split and scored on its test split (the same identities, other
images). At that size a face's geometry (eye spacing, nose and mouth shape) is a pixel
or two, so what the probe can use is colour and layout: skin, hair, background,
clothes. Photographs of one person vary in all of those, so a high score means the
synthetic data gives identity away where real data would not, and a recogniser's
figures on it would flatter the recogniser.

scikit-learn is needed here only, and imported here only.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The thumbnail side the issue's figures were measured at.
PROBE_SIZE = 16


@dataclass(frozen=True)
class ProbeResult:
    """Top-1 accuracy of the probe on the test split, and what chance would score."""

    top1: float
    chance: float
    classes: int
    train_images: int
    test_images: int

    def __str__(self) -> str:
        return (
            f"identity probe: top-1 {self.top1:.3f} on {self.test_images} test images of "
            f"{self.classes} identities (chance {self.chance:.3f}; "
            f"{self.train_images} train images)"
        )


def thumbnails(
    db: str | os.PathLike[str], snapshot: str, split: str, size: int = PROBE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Flattened uint8 face-box thumbnails (N, size * size * 3) and labels (N,)."""
    from catalog.datasets import FaceDataset

    ds = FaceDataset(db, snapshot, split, size=size, image_dtype="uint8")
    x = np.stack([np.asarray(ds[i]["image"]).reshape(-1) for i in range(len(ds))])
    return x, np.asarray(ds.labels)


def identity_probe(
    db: str | os.PathLike[str], snapshot: str, size: int = PROBE_SIZE
) -> ProbeResult:
    """Fit the probe on ``snapshot``'s train split and score it on its test split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y_train = thumbnails(db, snapshot, "train", size)
    x_test, y_test = thumbnails(db, snapshot, "test", size)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(x_train.astype(np.float32), y_train)
    top1 = float((model.predict(x_test.astype(np.float32)) == y_test).mean())
    classes = len(np.unique(y_train))
    return ProbeResult(top1, 1.0 / classes, classes, len(y_train), len(y_test))


def probe_synthetic(
    ids: int,
    seed: int = 0,
    style: str | None = None,
    images_per_id: int = 20,
    workdir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> ProbeResult:
    """Synthesise ``ids`` identities, ingest, select ``images_per_id`` clean images per
    identity (the fitted parameters of small catalogs), freeze a snapshot and probe it.

    ``style`` None is the generator's default. Files go to a temporary folder unless
    ``workdir`` is given (it must be new or empty).
    """
    from catalog.ingest import ingest
    from catalog.selection import fitted_params, select
    from catalog.snapshots import create
    from catalog.synth import synthesize

    with tempfile.TemporaryDirectory(prefix="identity-probe-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        style_kw = {} if style is None else {"style": style}
        synthesize(root / "data", ids=ids, seed=seed, workers=workers, **style_kw)
        db = root / "probe.duckdb"
        ingest(root / "data", db, workers=workers or 2)
        select(db, **fitted_params(db, images_per_id=images_per_id))
        create("probe", db)
        return identity_probe(db, "probe")
