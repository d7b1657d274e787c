"""Train a small face detector on a snapshot's images and the catalog's face boxes.

The detection task of :mod:`models.harness` (the loop, the run and its metrics in the
catalog, checkpoints, resume, the time budget, the schedule and mixed precision): a
CenterNet-style model (:mod:`models.detection.centernet`) on letterboxed whole images
(:class:`catalog.detection.DetectionDataset`: random zoom, shift, small rotation,
flips, colour jitter, and 2 x 2 mosaics so that several faces share a picture).
Validation: the mean IoU of each image's top detection with its face box, in the
in-the-wild image's pixels (higher is better; it keeps ``best.pt``), and the recall
at IoU 0.5 of the detections above ``score_threshold``.

:func:`evaluate_detector` measures the same on the ``test`` split and writes it to
``metrics`` (split ``test``, the checkpoint's epoch); ``celebcat train detector``
prints it. :func:`load_detector` gives the trained model to
:class:`models.detection.detectors.TrainedDetector` (``--detector run:<run id>``).

The boxes follow the catalog's ``bboxes`` convention (CelebA's loose face box), so
the face pipeline shrinks and crops them as the ``face_boxes`` view does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from catalog import results
from catalog import transforms as T
from catalog.detection import DetectionDataset, map_boxes
from models import harness, store
from models.detection.boxes import MATCH_IOU, NMS_IOU, RECALL, iou, nms
from models.detection.centernet import (
    CenterNet,
    create_detector_model,
    decode,
    detection_loss,
    render_targets,
)
from models.detection.config import KIND, DetectorTrainConfig
from models.env import Env
from models.harness import Task

#: Augmentation of the detector's pictures: faces of many sizes and places, upright.
DETECTOR_AUGMENT = T.Augment(
    scale=0.3, rotate=10.0, shift=0.15, flip=0.5, brightness=0.3, contrast=0.3, saturation=0.3
)


@dataclass
class DetectorResult:
    run_id: str
    best_val_iou: float
    best_checkpoint: Path
    epochs_done: int


def predict_boxes(
    model: CenterNet,
    loader: Any,
    env: Env,
    score_threshold: float,
    top_k: int = 20,
) -> list[np.ndarray]:
    """Per image of ``loader`` (batches with ``image`` and ``affine``): its detections
    (K, 5) ``x_1, y_1, x_2, y_2, score`` in in-the-wild pixels, NMS'd, best first; the
    top detection is kept whatever its score (so every image has one), the others only
    above ``score_threshold``."""
    out: list[np.ndarray] = []
    with torch.no_grad():
        for batch in loader:
            with env.autocast():
                outputs = model(env.images(batch["image"]))
            dets = decode(outputs, model.config, top_k)
            affine = batch["affine"].double().numpy()
            for d, a in zip(dets, affine, strict=True):
                keep = d[(d[:, 4] >= score_threshold) | (np.arange(len(d)) == 0)]
                m = np.vstack([a, [0.0, 0.0, 1.0]])
                keep = keep.copy()
                keep[:, :4] = map_boxes(m, keep[:, :4])
                out.append(nms(keep, NMS_IOU))
    return out


def box_metrics(
    detections: list[np.ndarray], truth: np.ndarray, score_threshold: float
) -> dict[str, float]:
    """``iou``: mean IoU of each image's top detection with its true box; ``recall@iou=
    0.5``: the share of true boxes that a detection above ``score_threshold`` overlaps
    by IoU >= 0.5; ``detections_per_image``: mean count above the threshold."""
    tops, found, counts = [], [], []
    for dets, box in zip(detections, truth, strict=True):
        overlaps = iou(dets[:, :4], box[None])[:, 0] if len(dets) else np.zeros(0)
        tops.append(float(overlaps[0]) if len(overlaps) else 0.0)
        above = dets[:, 4] >= score_threshold
        found.append(bool((overlaps[above] >= MATCH_IOU).any()))
        counts.append(int(above.sum()))
    return {
        "iou": float(np.mean(tops)) if tops else float("nan"),
        RECALL: float(np.mean(found)) if found else float("nan"),
        "detections_per_image": float(np.mean(counts)) if counts else float("nan"),
    }


class DetectorTask(Task):
    """CenterNet on letterboxed images of a snapshot; validation mean IoU."""

    kind = KIND
    config_type = DetectorTrainConfig
    metric = "iou"
    higher_is_better = True
    config: DetectorTrainConfig

    def build(self, env: Env) -> dict[str, nn.Module]:
        config, self.env = self.config, env
        self.model = create_detector_model(config.model, input_size=config.input_size)
        self.train_ds = DetectionDataset(
            self.db,
            config.snapshot,
            "train",
            config.input_size,
            augment=DETECTOR_AUGMENT if config.augment else None,
            mosaic=config.mosaic if config.augment else 0.0,
            seed=config.seed,
        )
        try:
            self.val_ds = DetectionDataset(self.db, config.snapshot, "val", config.input_size)
        except ValueError as err:
            if "has no split" not in str(err):
                raise
            raise ValueError(
                f"Snapshot {config.snapshot!r} has no validation images, which training needs "
                "to keep the best checkpoint. Select with val_per_id >= 1 (e.g. `celebcat "
                f"select --split 18/4/3`) and create a new snapshot. ({err})"
            ) from err
        self.snapshot_hash = self.train_ds.snapshot_hash
        self.val_loader = DataLoader(
            self.val_ds,
            batch_size=config.batch_size,
            num_workers=config.num_workers,
            pin_memory=env.cuda,
        )
        return {"model": self.model}

    def train_loader(self, epoch: int, seed: int) -> DataLoader:
        self.train_ds.set_epoch(epoch)
        return DataLoader(
            self.train_ds,
            batch_size=self.config.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
            num_workers=self.config.num_workers,
            pin_memory=self.env.cuda,
            drop_last=len(self.train_ds) > self.config.batch_size,
        )

    def train_step(self, batch: dict[str, Any]) -> torch.Tensor:
        images = self.env.images(batch["image"])
        boxes = batch["boxes"].to(self.env.device, non_blocking=True)
        n_boxes = batch["n_boxes"].to(self.env.device, non_blocking=True)
        targets = render_targets(boxes, n_boxes, self.model.config)
        with self.env.autocast():
            outputs = self.model(images)
        return detection_loss(outputs, targets)

    def evaluate(self) -> dict[str, float]:
        dets = predict_boxes(self.model, self.val_loader, self.env, self.config.score_threshold)
        return box_metrics(dets, self.val_ds.boxes, self.config.score_threshold)


def train_detector(
    config: DetectorTrainConfig | None = None,
    db: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    on_batch: Callable[[int, int, int, float], None] | None = None,
) -> DetectorResult:
    """Train (or, with ``resume=`` a checkpoint or run folder, continue) a detector;
    ``progress`` after each epoch (``val_iou``, ``val_recall@iou=0.5``, ...),
    ``on_batch(epoch, done, total, mean loss so far)`` after each batch."""
    outcome = harness.train(DetectorTask, config, db, resume, progress, on_batch)
    return DetectorResult(
        outcome.run_id, outcome.best, outcome.best_checkpoint, outcome.epochs_done
    )


@dataclass
class DetectorEval:
    run_id: str
    epoch: int  # the checkpoint's epoch as training printed it (1 the first)
    split: str
    n_images: int
    metrics: dict[str, float]


def evaluate_detector(
    run_id_or_checkpoint: str | os.PathLike[str],
    db: str | os.PathLike[str] | None = None,
    *,
    split: str = "test",
    batch_size: int = 64,
    workers: int = 0,
    write: bool = True,
) -> DetectorEval:
    """The run's ``iou``, ``recall@iou=0.5`` and ``detections_per_image`` on ``split``
    of the snapshot it trained on, written to ``metrics`` (that split, the checkpoint's
    epoch) with ``write``."""
    loaded = store.load_run(run_id_or_checkpoint, KIND, db)
    data = DetectionDataset(db, loaded.config.snapshot, split, loaded.config.input_size)
    if data.snapshot_hash != loaded.snapshot_hash:
        raise ValueError(
            f"Snapshot {loaded.config.snapshot!r} was recreated since run {loaded.run_id} "
            f"trained on it (hash {data.snapshot_hash[:12]} != {loaded.snapshot_hash[:12]}): "
            f"its {split} split is not the run's."
        )
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers)
    env = Env(next(loaded.model.parameters()).device)
    dets = predict_boxes(loaded.model, loader, env, loaded.config.score_threshold)
    values = box_metrics(dets, data.boxes, loaded.config.score_threshold)
    if write:
        results.log_metrics(db, loaded.run_id, loaded.epoch + 1, split, values)
    return DetectorEval(loaded.run_id, loaded.epoch + 1, split, len(data), values)


__all__ = [
    "DETECTOR_AUGMENT",
    "KIND",
    "DetectorEval",
    "DetectorResult",
    "DetectorTask",
    "DetectorTrainConfig",
    "box_metrics",
    "evaluate_detector",
    "predict_boxes",
    "train_detector",
]
