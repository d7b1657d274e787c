"""Train a stacked hourglass on a snapshot's five landmarks.

The landmark task of the training harness (:mod:`models.harness`, which owns the
loop, the run and metrics in the catalog, checkpoints, resume, the time budget, the
schedule and mixed precision): the model, face-box crops with heatmap targets, the
heatmap loss over every stack, and validation NME, the metric that keeps ``best.pt``
(lower is better).

Validation NME is measured in the in-the-wild image's pixels
(:func:`models.landmarks.predict.predict_landmarks`, which ``celebcat align`` uses too),
both with the sub-pixel decoding (``config.decode``) and argmax, logged as ``nme`` and
``nme_argmax``, so the gain of sub-pixel decoding is visible per epoch.

Reproducible on CPU: the model is initialised from ``seed``, the shuffle of epoch e
from (seed, e), the augmentation of sample i from (seed, e, i) (LandmarkDataset), so a
run resumed from ``last.pt`` ends with the same weights as one never interrupted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from catalog import transforms as T
from catalog.datasets import DatasetError, LandmarkDataset
from models import distributed, harness
from models.env import Env
from models.harness import Task
from models.landmarks.config import KIND, LandmarkTrainConfig
from models.landmarks.hourglass import heatmap_loss
from models.landmarks.metrics import nme
from models.landmarks.predict import predict_landmarks
from models.registry import create_model


@dataclass
class TrainResult:
    run_id: str
    best_val_nme: float
    best_checkpoint: Path
    epochs_done: int


_clock = time.monotonic  # the time budget's clock (a test replaces it)


class LandmarkTask(Task):
    """Stacked hourglass on face-box crops: heatmap loss, validation NME."""

    kind = KIND
    config_type = LandmarkTrainConfig
    metric = "nme"
    higher_is_better = False
    config: LandmarkTrainConfig

    def build(self, env: Env) -> dict[str, nn.Module]:
        config, self.env = self.config, env
        # model first: its input size decides the crops'
        self.model = create_model(config.model)
        input_size, heatmap_size = self.model.config.input_size, self.model.config.heatmap_size
        # data (an unknown snapshot or missing split fails here, before a run is recorded)
        self.train_ds = LandmarkDataset(
            self.db,
            config.snapshot,
            "train",
            input_size,
            heatmap_size,
            config.sigma,
            augment=T.Augment() if config.augment else None,
            seed=config.seed,
            image_dtype="uint8",
        )
        try:
            self.val_ds = LandmarkDataset(
                self.db,
                config.snapshot,
                "val",
                input_size,
                heatmap_size,
                config.sigma,
                image_dtype="uint8",
            )
        except DatasetError:
            raise  # images or landmarks missing: its own message says what to do
        except ValueError as err:  # no 'val' split at all
            raise ValueError(
                f"Snapshot {config.snapshot!r} has no validation images, which training needs "
                "to measure NME and keep the best checkpoint. Select with val_per_id >= 1 "
                f"(e.g. `celebcat select --split 18/4/3`) and create a new snapshot. ({err})"
            ) from err
        self.snapshot_hash = self.train_ds.snapshot_hash
        self.val_loader = DataLoader(
            distributed.shard(self.val_ds),
            batch_size=config.batch_size,
            shuffle=False,
            num_workers=config.num_workers,
            pin_memory=env.cuda,
        )  # under torchrun: this rank's share; evaluate gathers)
        return {"model": self.model}

    def train_loader(self, epoch: int, seed: int) -> DataLoader:
        self.train_ds.set_epoch(epoch)  # before the iterator (and its workers) exist
        return distributed.shuffled_loader(
            self.train_ds,
            self.config.batch_size,
            seed,
            epoch,
            num_workers=self.config.num_workers,
            pin_memory=self.env.cuda,
        )

    def train_step(self, batch: dict[str, Any]) -> torch.Tensor:
        images = self.env.images(batch["image"])
        targets = batch["heatmaps"].to(self.env.device, non_blocking=True)
        with self.env.autocast():
            outputs = self.model(images)
        return heatmap_loss(outputs, targets)  # every stack (intermediate supervision)

    def evaluate(self) -> dict[str, float]:
        """NME in original pixels, sub-pixel and argmax, against the catalog's points."""
        points, points_argmax = predict_landmarks(
            self.model,
            self.val_loader,
            self.env.device,
            self.config.decode,
            self.config.sigma,
            amp_dtype=self.env.amp_dtype,
            memory_format=self.env.memory_format,
        )
        points, points_argmax = distributed.gather_rows(points, points_argmax)
        truth, norm = self.val_ds.landmarks, self.config.normaliser
        return {
            "nme": float(nme(points, truth, norm).mean()),
            "nme_argmax": float(nme(points_argmax, truth, norm).mean()),
        }


def train_landmarks(
    config: LandmarkTrainConfig | None = None,
    db: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    on_batch: Callable[[int, int, int, float], None] | None = None,
) -> TrainResult:
    """Train (or, with ``resume=`` a checkpoint or run folder, continue) a landmark model.

    ``progress`` is called after each epoch with that epoch's numbers (``run_id``,
    ``epoch``, ``train_loss``, ``val_nme``, ``val_nme_argmax``, ``best_val_nme``),
    ``on_batch(epoch, done, total, mean loss so far)`` after each training batch.
    Ctrl-C marks the run 'interrupted', any error 'failed'; resume from
    ``out_dir/<run_id>/last.pt`` (only :attr:`LandmarkTrainConfig.RESUMABLE` settings may change).
    """
    outcome = harness.train(LandmarkTask, config, db, resume, progress, on_batch, clock=_clock)
    return TrainResult(outcome.run_id, outcome.best, outcome.best_checkpoint, outcome.epochs_done)


__all__ = [
    "KIND",
    "LandmarkTask",
    "LandmarkTrainConfig",
    "TrainResult",
    "train_landmarks",
]
