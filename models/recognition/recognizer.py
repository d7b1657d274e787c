"""A loaded recognizer: the one inference interface every recognition model offers.

:class:`Recognizer` is what :func:`models.store.load_recognizer` returns: the backbone
(and, for a trained run, its loss, whose classifier gives closed-set scores), the
:class:`CropRecipe` its crops must follow, and :meth:`Recognizer.embed`, aligned
crops in, L2-normalised embeddings out. Everything that embeds (``celebcat embed``,
``eval recognizer``, the pipeline, galleries, identify) goes through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from catalog import transforms as T
from catalog.crop_source import CropSource
from models.checkpoints import Checkpoint, load_weights, run_fields
from models.env import Env
from models.recognition.config import RecognizerTrainConfig
from models.recognition.losses import TRIPLET, make_loss
from models.recognition.metrics import l2_normalize
from models.registry import create_model


@dataclass(frozen=True)
class CropRecipe:
    """How a recognizer's input crops are made: cut from ``source`` (the face box, or an
    alignment onto a template: :class:`catalog.crop_source.CropSource`) at ``size`` x
    ``size``, RGB, then normalised per channel as ``(x / 255 - mean) / std``."""

    source: CropSource
    size: int
    mean: tuple[float, float, float] = T.MEAN
    std: tuple[float, float, float] = T.STD


def embed_batches(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    env: Env,
    head: Callable[[torch.Tensor], torch.Tensor | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Embeddings (N, D) float32, labels (N,) int64 and, where ``head`` gives them,
    class scores (N, C) of every batch of ``loader`` (uint8 ``image`` and ``label``;
    model in eval mode, no grad). Training's validation and snapshot embedding share it."""
    chunks, labels, scores = [], [], []
    with torch.no_grad():
        for batch in loader:
            with env.autocast():
                out = model(env.images(batch["image"]))
            out = out.float()
            chunks.append(out.cpu())
            labels.append(batch["label"])
            logits = head(out) if head is not None else None
            if logits is not None:
                scores.append(logits.float().cpu())
    emb = torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), np.float32)
    lab = torch.cat(labels).numpy() if labels else np.zeros(0, np.int64)
    return emb, lab, (torch.cat(scores).numpy() if scores else None)


@dataclass
class Recognizer:
    """A recognition model ready to embed (eval mode, on ``device``)."""

    run_id: str
    config: RecognizerTrainConfig
    model: nn.Module
    loss: nn.Module
    epoch: int  # 0-based epoch of the checkpoint's weights
    checkpoint: Path
    snapshot_hash: str

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, device: str | torch.device = "cpu") -> Recognizer:
        """The backbone and loss of a recognition run's checkpoint (its config complete,
        as :func:`models.store.read_checkpoint` gives it)."""
        config = RecognizerTrainConfig.from_saved(ckpt["config"])
        model = create_model(
            config.backbone,
            input_size=config.size,
            embedding_dim=config.embedding_dim,
            dropout=config.dropout,
        )
        load_weights(model, ckpt, "model")
        n_classes = int(ckpt["num_classes"]) if config.loss != TRIPLET else None
        loss = make_loss(
            config.loss,
            n_classes,
            config.embedding_dim,
            mining=config.mining,
            margin=config.margin,
            scale=config.scale,
            label_smoothing=config.label_smoothing,
        )
        load_weights(loss, ckpt, "loss")
        model.to(device).eval()
        loss.to(device).eval()
        return cls(config=config, model=model, loss=loss, **run_fields(ckpt))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def recipe(self) -> CropRecipe:
        """The crops it was trained on (an unpinned ``aligned`` source: the newest
        alignment of its snapshot at its size, see :func:`models.pipeline.faces.crop_plan`)."""
        return CropRecipe(CropSource.parse(self.config.source), self.config.size)

    @property
    def classifier(self) -> Callable[[torch.Tensor], torch.Tensor | None] | None:
        """Class scores from embeddings (the classifier losses), else None."""
        return self.loss.logits if self.config.loss != TRIPLET else None

    def embed(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """L2-normalised embeddings (N, D) float32 of uint8 RGB crops (N, S, S, 3) made
        by :attr:`recipe`."""
        T.check_crops(crops, self.config.size, f"Recognizer {self.run_id}")
        device, out = self.device, []
        with torch.no_grad():
            for start in range(0, len(crops), batch_size):
                part = np.ascontiguousarray(crops[start : start + batch_size].transpose(0, 3, 1, 2))
                images = T.normalize_batch(torch.from_numpy(part).to(device), *self._norm())
                out.append(self.model(images).float().cpu().numpy())
        dim = self.config.embedding_dim
        emb = np.concatenate(out) if out else np.zeros((0, dim), np.float32)
        return l2_normalize(emb)

    def _norm(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        recipe = self.recipe
        return recipe.mean, recipe.std


__all__ = ["CropRecipe", "Recognizer", "embed_batches"]
