"""Landmark predictions in the in-the-wild image's pixels: one function for training's
validation and for ``celebcat align``.

NME is measured in original pixels: the crops stretch the face box onto a square
non-uniformly (transforms.box_to_square), so distances in input pixels would weigh x
and y differently. Both the sub-pixel decoding (the run's ``decode``) and argmax are
decoded from the same heatmaps, so the gain of sub-pixel decoding is visible.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from catalog import transforms as T
from models.landmarks.heatmaps import (
    decode_argmax,
    decode_subpixel,
    heatmap_to_input,
    input_to_original,
)


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


__all__ = ["predict_landmarks"]
