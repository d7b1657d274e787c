"""Landmark predictions in the in-the-wild image's pixels: one function for training's
validation and for ``celebcat align``, and :class:`LandmarkModel`, a loaded landmark
run (what :func:`models.store.load_landmarks` returns) that the pipeline and
``celebcat align`` predict with.

NME is measured in original pixels: the crops stretch the face box onto a square
non-uniformly (transforms.box_to_square), so distances in input pixels would weigh x
and y differently. Both the sub-pixel decoding (the run's ``decode``) and argmax are
decoded from the same heatmaps, so the gain of sub-pixel decoding is visible.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from catalog import transforms as T
from models.checkpoints import Checkpoint, load_weights, run_fields
from models.landmarks.config import LandmarkTrainConfig
from models.landmarks.heatmaps import (
    decode_argmax,
    decode_subpixel,
    heatmap_to_input,
    input_to_original,
)
from models.registry import create_model


def predict_landmarks(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    device: torch.device,
    decode: str = "dark",
    sigma: float | None = 1.5,
    *,
    to_original: np.ndarray | None = None,
    amp_dtype: torch.dtype | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, K, 2) float64 in in-the-wild pixels, in the loader's order: decoded
    with ``decode`` (:func:`models.landmarks.heatmaps.decode_subpixel`, ``sigma`` heatmap
    pixels), and by argmax alone, from the same heatmaps.

    ``model`` (in eval mode; it has ``config.input_size`` and ``config.heatmap_size``)
    takes the loader's uint8 ``image`` batches, normalised on ``device``. Each
    batch's input -> original matrices are its ``affine`` (LandmarkDataset), else
    the rows of ``to_original`` (N, 2, 3) in loader order. ``amp_dtype``: autocast
    the forward pass (CUDA); ``progress(done)`` after each batch.
    """
    input_size, heatmap_size = model.config.input_size, model.config.heatmap_size
    out: list[np.ndarray] = []
    out_argmax: list[np.ndarray] = []
    done = 0
    with torch.no_grad():
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True, memory_format=memory_format)
            images = T.normalize_batch(images).contiguous(memory_format=memory_format)
            autocast = (
                torch.autocast(device.type, dtype=amp_dtype)
                if amp_dtype is not None
                else contextlib.nullcontext()
            )
            with autocast:
                heatmaps = model(images)[-1].float().cpu()
            n = len(heatmaps)
            if "affine" in batch:
                affine = batch["affine"].double().numpy()
            elif to_original is not None:
                affine = to_original[done : done + n]
            else:
                raise ValueError("predict_landmarks needs batches with 'affine' or to_original")
            points = decode_subpixel(heatmaps, decode, sigma)[0]  # type: ignore[arg-type]
            for dest, decoded in ((out, points), (out_argmax, decode_argmax(heatmaps)[0])):
                decoded = heatmap_to_input(decoded.double(), heatmap_size, input_size)
                dest.append(input_to_original(decoded.numpy(), affine))
            done += n
            if progress is not None:
                progress(done)
    empty = np.empty((0, 5, 2))
    return (
        np.concatenate(out) if out else empty,
        np.concatenate(out_argmax) if out_argmax else empty,
    )


@dataclass
class LandmarkModel:
    """A landmark run's hourglass in eval mode on ``device``, predicting as its training
    validated: the run's decoding (``decode``, ``sigma``)."""

    run_id: str
    config: LandmarkTrainConfig
    model: nn.Module
    epoch: int  # 0-based epoch of the checkpoint's weights
    checkpoint: Path
    snapshot_hash: str
    device: torch.device

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, device: str | torch.device = "cpu") -> LandmarkModel:
        """The model of a landmark run's checkpoint (its config complete, as
        :func:`models.store.read_checkpoint` gives it)."""
        config = LandmarkTrainConfig.from_saved(ckpt["config"])
        model = create_model(config.model)
        load_weights(model, ckpt, "model")
        device = torch.device(device)
        model.to(device).eval()
        return cls(config=config, model=model, device=device, **run_fields(ckpt))

    @property
    def input_size(self) -> int:
        """The side of the square crops it takes."""
        return int(self.model.config.input_size)

    def predict_batches(
        self,
        batches: Iterable[dict[str, Any]],
        to_original: np.ndarray | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:func:`predict_landmarks` with this run's model and decoding: points (N, 5,
        2) decoded sub-pixel and by argmax, in original pixels."""
        return predict_landmarks(
            self.model,
            batches,
            self.device,
            self.config.decode,
            self.config.sigma,
            to_original=to_original,
            progress=progress,
        )

    def predict(
        self,
        crops: np.ndarray,
        to_original: np.ndarray | None = None,
        batch_size: int = 64,
    ) -> np.ndarray:
        """Points (N, 5, 2) float64 of uint8 RGB crops (N, S, S, 3), S =
        :attr:`input_size`: in crop pixels, or through ``to_original`` (N, 2, 3), each
        crop's crop -> original matrix, in original pixels."""
        T.check_crops(crops, self.input_size, f"Landmark run {self.run_id}")
        if to_original is None:
            to_original = np.broadcast_to(np.eye(3)[:2], (len(crops), 2, 3))

        def batches() -> Iterator[dict[str, torch.Tensor]]:
            for start in range(0, len(crops), batch_size):
                part = crops[start : start + batch_size].transpose(0, 3, 1, 2)
                yield {"image": torch.from_numpy(np.ascontiguousarray(part))}

        return self.predict_batches(batches(), to_original)[0]


__all__ = ["LandmarkModel", "predict_landmarks"]
