"""Train a face recognizer on a snapshot: a backbone and a loss, on the shared harness.

The recognition task of :mod:`models.harness` (which owns the loop, the run and its
metrics in the catalog, checkpoints, resume, the time budget, the schedule and mixed
precision): a registered backbone (:mod:`models.recognition.backbones`) making L2-normalisable
embeddings, and one of the losses of :mod:`models.recognition.losses`:

- ``ce``, ``arcface``, ``cosface``: classifiers over the snapshot's training
  identities; batches shuffled; validation top-1 (the classifier's logits on the
  ``val`` split, whose identities are the training ones) picks ``best.pt``;
- ``triplet``: P identities x K images per batch (:class:`catalog.datasets.PKSampler`),
  random or batch-hard triplets; validation verification AUC over all pairs of the
  ``val`` split picks ``best.pt``.

Every loss also logs the validation AUC, so runs of different losses compare on one
number per epoch. Crops come from the snapshot: ``source="aligned"`` (the newest
alignment at ``size``, from ``celebcat align``; the reference trained on aligned
crops) or ``"bbox"`` (the face box), augmented by :class:`catalog.transforms.Augment`
with :data:`RECOGNITION_AUGMENT` (flips, small zoom, shift and rotation, colour
jitter: aligned faces are upright already, so the landmark trainer's 15 degrees would
undo the alignment).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from catalog import transforms as T
from catalog.datasets import FaceDataset, PKSampler
from models import distributed, harness
from models.env import Env
from models.harness import Task
from models.recognition.config import KIND, RecognizerTrainConfig
from models.recognition.losses import TRIPLET, RandomTripletMiner, make_loss
from models.recognition.metrics import pair_scores, roc_auc, topk_accuracy
from models.recognition.recognizer import embed_batches
from models.registry import create_model

#: Augmentation for recognition crops: upright faces, so little rotation.
RECOGNITION_AUGMENT = T.Augment(
    scale=0.1, rotate=5.0, shift=0.05, flip=0.5, brightness=0.2, contrast=0.2, saturation=0.2
)


@dataclass
class RecognizerResult:
    run_id: str
    metric: str  # top1 for the classifier losses, auc for triplet
    best: float
    best_checkpoint: Path
    epochs_done: int


class _PKEpoch:
    """One training epoch of PK batches covering about as many images as the training
    split holds: PKSampler visits each identity once per round, so an epoch chains
    ``rounds`` rounds (each seeded from the epoch's seed and its round number)."""

    def __init__(
        self,
        dataset: FaceDataset,
        sampler: PKSampler,
        rounds: int,
        seed: int,
        num_workers: int,
        pin_memory: bool,
    ) -> None:
        self.dataset, self.sampler, self.rounds, self.seed = dataset, sampler, rounds, seed
        self.num_workers, self.pin_memory = num_workers, pin_memory

    def __len__(self) -> int:
        return self.rounds * len(self.sampler)

    def __iter__(self) -> Iterator[Any]:
        for r in range(self.rounds):
            self.sampler.seed = int(np.random.SeedSequence([self.seed, r]).generate_state(1)[0])
            loader = DataLoader(
                self.dataset,
                batch_sampler=self.sampler,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
            )
            yield from loader


class RecognizerTask(Task):
    """A backbone and a recognition loss on a snapshot's face crops."""

    kind = KIND
    config_type = RecognizerTrainConfig
    metric = "top1"
    higher_is_better = True
    config: RecognizerTrainConfig

    def __init__(self, config: RecognizerTrainConfig, db: str | os.PathLike[str] | None) -> None:
        super().__init__(config, db)
        # a triplet model has no classifier: the best checkpoint is the best val AUC
        self.metric = "auc" if config.loss == TRIPLET else "top1"

    def build(self, env: Env) -> dict[str, nn.Module]:
        config, self.env = self.config, env
        self.model = create_model(
            config.backbone,
            input_size=config.size,
            embedding_dim=config.embedding_dim,
            dropout=config.dropout,
        )
        augment = RECOGNITION_AUGMENT if config.augment else None
        self.train_ds = FaceDataset(
            self.db,
            config.snapshot,
            "train",
            config.source,
            config.size,
            augment,
            config.seed,
            image_dtype="uint8",
        )
        try:
            self.val_ds = FaceDataset(
                self.db, config.snapshot, "val", config.source, config.size, image_dtype="uint8"
            )
        except FileNotFoundError:
            raise
        except ValueError as err:
            raise ValueError(
                f"Snapshot {config.snapshot!r} has no validation images, which training "
                "needs to keep the best checkpoint. Select with val_per_id >= 1 (e.g. "
                f"`celebcat select --split 18/4/3`) and create a new snapshot. ({err})"
            ) from err
        if self.train_ds.snapshot_hash != self.val_ds.snapshot_hash:  # pragma: no cover
            raise ValueError("the snapshot changed while it was read")
        self.snapshot_hash = self.train_ds.snapshot_hash
        self.loss = make_loss(
            config.loss,
            self.train_ds.num_classes,
            config.embedding_dim,
            mining=config.mining,
            margin=config.margin,
            scale=config.scale,
            label_smoothing=config.label_smoothing,
            seed=config.seed,
        )
        self.val_loader = DataLoader(
            distributed.shard(self.val_ds),  # gathered in evaluate
            batch_size=config.batch_size,
            num_workers=config.num_workers,
            pin_memory=env.cuda,
        )
        return {"model": self.model, "loss": self.loss}

    def train_loader(self, epoch: int, seed: int) -> Any:
        config = self.config
        self.train_ds.set_epoch(epoch)  # before the iterator (and its workers) exist
        if config.loss == TRIPLET:
            miner = self.loss.miner
            if isinstance(miner, RandomTripletMiner):  # its draws restart from the epoch's
                miner.seed = seed  # seed, so a resumed run draws what it would have
                miner.reset()
            k = config.pk_images
            p = config.batch_size // k
            # under torchrun each rank takes every world_size-th batch of each round, so
            # the ranks together still cover the rounds one process would
            sampler = PKSampler(
                self.train_ds.labels,
                p,
                k,
                seed=seed,
                rank=distributed.rank(),
                num_replicas=distributed.world_size(),
            )
            identities = len(sampler.groups)
            rounds = max(1, round(len(self.train_ds) / (identities * k)))
            return _PKEpoch(self.train_ds, sampler, rounds, seed, config.num_workers, self.env.cuda)
        return distributed.shuffled_loader(
            self.train_ds,
            config.batch_size,
            seed,
            epoch,
            num_workers=config.num_workers,
            pin_memory=self.env.cuda,
        )

    def extra_state(self) -> dict[str, Any]:
        # the classifier's size, so the loss module can be rebuilt to load its weights
        return {"num_classes": int(self.train_ds.num_classes)}

    def train_step(self, batch: dict[str, Any]) -> torch.Tensor:
        images = self.env.images(batch["image"])
        labels = batch["label"].to(self.env.device, non_blocking=True)
        with self.env.autocast():
            embeddings = self.model(images)
        return self.loss(embeddings, labels)  # float32, autocast off inside

    def evaluate(self) -> dict[str, float]:
        """Validation top-1 (classifier losses) and all-pairs verification AUC."""
        embeddings, labels, logits = distributed.gather_rows(
            *embed_batches(self.model, self.val_loader, self.env, self.loss.logits)
        )
        same, different = pair_scores(embeddings, labels)
        values = {"auc": roc_auc(same, different) if len(same) and len(different) else math.nan}
        if logits is not None:
            values["top1"] = topk_accuracy(logits, labels, ks=(1,))[1]
        return values


def train_recognizer(
    config: RecognizerTrainConfig | None = None,
    db: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    on_batch: Callable[[int, int, int, float], None] | None = None,
) -> RecognizerResult:
    """Train (or, with ``resume=`` a checkpoint or run folder, continue) a recognizer.

    ``progress`` is called after each epoch (``run_id``, ``epoch``, ``train_loss``,
    ``val_auc``, ``val_top1`` for the classifier losses, ``best_val_<metric>``),
    ``on_batch(epoch, done, total, mean loss so far)`` after each batch.
    """
    outcome = harness.train(RecognizerTask, config, db, resume, progress, on_batch)
    return RecognizerResult(
        outcome.run_id, outcome.metric, outcome.best, outcome.best_checkpoint, outcome.epochs_done
    )


__all__ = [
    "KIND",
    "RECOGNITION_AUGMENT",
    "RecognizerResult",
    "RecognizerTask",
    "RecognizerTrainConfig",
    "train_recognizer",
]
