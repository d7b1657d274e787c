"""The identity probe: can a linear model tell the synthetic people apart by colour?

A logistic regression on flattened 16x16 RGB thumbnails of the face-box crops, fitted
on a snapshot's train split and scored on its test split (the same identities, other
images). At that size a face's geometry (eye spacing, nose and mouth shape) is a pixel
or two, so what the probe can use is colour and layout: skin, hair, background,
clothes. Photographs of one person vary in all of those, so a high score means the
synthetic data gives identity away where real data would not, and a recogniser's
figures on it would flatter the recogniser.

:func:`probe_synthetic` runs the whole path (synthesise, ingest, select, snapshot,
``FaceDataset`` crops): the issue's measurement, ``bench/identity_probe.py``.
:func:`probe_population` draws only the images it needs from a population in memory,
a few seconds instead of minutes, for tests and quick comparisons of styles.

scikit-learn is needed here only, and imported here only.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from catalog.synth.population import Population

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
    x_train, y_train = thumbnails(db, snapshot, "train", size)
    x_test, y_test = thumbnails(db, snapshot, "test", size)
    return _fit_and_score(x_train, y_train, x_test, y_test)


def _fit_and_score(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> ProbeResult:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(x_train.astype(np.float32), y_train)
    top1 = float((model.predict(x_test.astype(np.float32)) == y_test).mean())
    classes = len(np.unique(y_train))
    return ProbeResult(top1, 1.0 / classes, classes, len(y_train), len(y_test))


def probe_population(
    pop: Population,
    images_per_id: int = 12,
    test_per_id: int = 3,
    size: int = PROBE_SIZE,
    min_box: int = 100,
    seed: int = 0,
) -> ProbeResult:
    """The probe on a population in memory, without files or a catalog.

    Mirrors the catalog's selection: images that are not Blurry and whose face box
    is at least ``min_box`` pixels on both sides; every identity with
    ``images_per_id`` of them, ``test_per_id`` drawn for the test. Only those images
    are rendered; each face box is resized to ``size`` (stretched, as the Datasets do).
    """
    from PIL import Image

    from catalog.formats import ATTRIBUTES
    from catalog.synth.faces import render_face

    rng = np.random.default_rng(seed)
    box = pop.layout.bbox
    clean = (box[:, 2] >= min_box) & (box[:, 3] >= min_box)
    clean &= pop.attributes[:, ATTRIBUTES.index("Blurry")] < 0
    picks: list[np.ndarray] = []
    for k in range(pop.ids):
        mine = np.flatnonzero(clean & (pop.identity == k))
        if len(mine) >= images_per_id:
            picks.append(rng.permutation(mine)[:images_per_id])
    if len(picks) < 2:
        raise ValueError(
            f"only {len(picks)} identities have {images_per_id} clean images; "
            "use more identities or fewer images per identity"
        )

    def thumbs(index: np.ndarray) -> np.ndarray:
        out = []
        for i in index:
            face = render_face(*pop.face(int(i)), layout=pop.layout.row(int(i)))
            x, y, w, h = face.bbox
            crop = face.image.resize(
                (size, size), Image.Resampling.BILINEAR, box=(x, y, x + w, y + h)
            )
            out.append(np.asarray(crop).reshape(-1))
        return np.stack(out)

    train = np.concatenate([p[test_per_id:] for p in picks])
    test = np.concatenate([p[:test_per_id] for p in picks])
    y_train = np.repeat(np.arange(len(picks)), images_per_id - test_per_id)
    y_test = np.repeat(np.arange(len(picks)), test_per_id)
    return _fit_and_score(thumbs(train), y_train, thumbs(test), y_test)


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
