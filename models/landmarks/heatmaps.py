"""Heatmaps -> landmark coordinates: argmax, quarter-pixel shift and DARK.

Coordinates are pixel-index ones throughout (:mod:`catalog.transforms`): the centre of
heatmap pixel (column i, row j) is the point (i, j). Decoders take a float tensor
(B, K, H, W) and return ``points`` (B, K, 2), (x, y) in heatmap pixels, and
``confidence`` (B, K), the heatmap's value at its argmax (the peak value). Everything
is batched: no Python loop runs over samples or landmarks.

Why sub-pixel decoding matters here: the reference workflow decoded by argmax alone,
so at 256 input / 64 heatmap every prediction sits on a 4-input-pixel grid
(docs/reference-workflow.md, step 2): up to 2 input pixels of error per axis before the network has
made any. The quarter shift halves the mean quantisation error; DARK removes nearly
all of it on Gaussian-shaped heatmaps.

Then :func:`heatmap_to_input` takes heatmap points to input pixels (the inverse of
:func:`catalog.transforms.input_to_heatmap`, built from the same matrix so the two
cannot drift apart) and :func:`input_to_original` through a sample's ``affine`` to the
in-the-wild image.
"""

from __future__ import annotations

import math
from typing import Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from catalog import transforms as T

__all__ = [
    "decode_argmax",
    "decode_subpixel",
    "heatmap_to_input",
    "input_to_original",
]

Points = TypeVar("Points", np.ndarray, torch.Tensor)

#: Floor before the logarithm in DARK, as in the authors' code (np.maximum(hm, 1e-10),
#: github.com/ilovepose/DarkPose, lib/core/inference.py): keeps log finite on zero and
#: negative heatmap values.
_LOG_FLOOR = 1e-10


def _check(heatmaps: torch.Tensor) -> None:
    if not isinstance(heatmaps, torch.Tensor) or heatmaps.ndim != 4:
        shape = tuple(getattr(heatmaps, "shape", ()))
        raise ValueError(f"heatmaps must be a (B, K, H, W) tensor, got shape {shape}")
    if heatmaps.shape[2] < 1 or heatmaps.shape[3] < 1:
        raise ValueError(f"heatmaps have an empty side: shape {tuple(heatmaps.shape)}")


def _out_dtype(heatmaps: torch.Tensor) -> torch.dtype:
    return heatmaps.dtype if heatmaps.is_floating_point() else torch.float32


def _argmax(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer column x, row y (B, K) of each map's maximum, and the maximum (B, K)."""
    b, k, _, w = heatmaps.shape
    confidence, index = heatmaps.reshape(b, k, -1).max(dim=-1)
    return index % w, index // w, confidence


def decode_argmax(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each map's maximum pixel: points (B, K, 2) (x, y) heatmap pixels, confidence (B, K).

    The points are whole numbers (the reference workflow's decoding). Ties go to the
    first maximum in row-major order, so an all-zero map gives (0, 0) with confidence 0.
    """
    _check(heatmaps)
    x, y, confidence = _argmax(heatmaps)
    return torch.stack([x, y], dim=-1).to(_out_dtype(heatmaps)), confidence


def decode_subpixel(
    heatmaps: torch.Tensor,
    method: Literal["quarter", "dark"] = "dark",
    sigma: float | None = 1.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel peaks: points (B, K, 2) (x, y) heatmap pixels, confidence (B, K).

    ``method``:

    - ``"quarter"``: the argmax moved by a quarter pixel towards the larger of its two
      neighbours, separately in x and in y (Newell et al. 2016, stacked hourglass,
      github.com/princeton-vl/pose-hg-train; kept by SimpleBaselines and HRNet's
      ``get_final_preds``). Along an axis where the argmax is on the map's edge, or the
      neighbours are equal, nothing moves. Halves the mean quantisation error.
    - ``"dark"``: DARK (Zhang et al. 2020, "Distribution-Aware Coordinate
      Representation for Human Pose Estimation", arXiv:1910.06278): smooth the map
      with a Gaussian of ``sigma`` heatmap pixels (the training targets' sigma; None
      skips smoothing), take the log (floored at 1e-10), and move from the argmax by
      one Newton step of the second-order Taylor expansion there, ``-H^-1 g``, with
      central finite differences for the gradient g and Hessian H. On a Gaussian
      the log is exactly quadratic, so the step lands on the true centre.

      Safeguards: the step is taken only where H is negative definite (a maximum),
      and is clamped to +-1 pixel per axis; along an axis where the argmax is on the
      map's edge the expansion is one-dimensional in the other axis. An all-zero or
      constant map therefore stays at its argmax; nothing here can produce NaN from
      finite input.

    ``confidence`` is the raw map's value at its argmax in both cases.
    """
    _check(heatmaps)
    if method == "quarter":
        return _decode_quarter(heatmaps)
    if method == "dark":
        return _decode_dark(heatmaps, sigma)
    raise ValueError(f"method {method!r}: use 'quarter' or 'dark'")


def _neighbourhood(maps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Values (B, K, 3, 3) of ``maps`` at rows y-1..y+1, columns x-1..x+1.

    Off-map neighbours repeat the edge pixel (replicate padding) so that the gather
    stays in bounds; callers ignore the axes where that happened.
    """
    b, k, h, w = maps.shape
    padded = F.pad(maps.reshape(b * k, 1, h, w), (1, 1, 1, 1), mode="replicate")
    padded = padded.reshape(b, k, (h + 2) * (w + 2))
    d = torch.arange(-1, 2, device=maps.device)
    rows = (y + 1)[..., None, None] + d[:, None]  # (B, K, 3, 1)
    cols = (x + 1)[..., None, None] + d[None, :]  # (B, K, 1, 3)
    index = (rows * (w + 2) + cols).reshape(b, k, 9)
    return padded.gather(-1, index).reshape(b, k, 3, 3)


def _decode_quarter(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _, _, h, w = heatmaps.shape
    x, y, confidence = _argmax(heatmaps)
    n = _neighbourhood(heatmaps, x, y)
    inside_x = (x > 0) & (x < w - 1)
    inside_y = (y > 0) & (y < h - 1)
    dx = torch.where(inside_x, torch.sign(n[..., 1, 2] - n[..., 1, 0]), 0)
    dy = torch.where(inside_y, torch.sign(n[..., 2, 1] - n[..., 0, 1]), 0)
    dtype = _out_dtype(heatmaps)
    points = torch.stack([x + 0.25 * dx.to(dtype), y + 0.25 * dy.to(dtype)], dim=-1)
    return points.to(dtype), confidence


def _gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing, zero outside the map (as DARK's reference code).

    The kernel reaches 3 sigma each side and is normalised. DARK's configs pick an
    OpenCV kernel size whose implied sigma equals the target sigma (11 for sigma 2);
    giving the sigma directly says the same without that indirection.
    """
    b, k, h, w = maps.shape
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=maps.dtype, device=maps.device)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    x = maps.reshape(b * k, 1, h, w)
    x = F.conv2d(x, g.reshape(1, 1, 1, -1), padding=(0, r))
    x = F.conv2d(x, g.reshape(1, 1, -1, 1), padding=(r, 0))
    return x.reshape(b, k, h, w)


def _decode_dark(heatmaps: torch.Tensor, sigma: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    _, _, h, w = heatmaps.shape
    dtype = _out_dtype(heatmaps)
    # float64: the log of a map that falls to 1e-3 of its peak within a few pixels
    # loses digits in float32 differences; the maps are small, the cost is nothing.
    maps = heatmaps.to(torch.float64)
    # Expand at the raw map's argmax, as the authors' code does (get_max_preds before
    # gaussian_blur); the smoothing only shapes the log used for the derivatives.
    x, y, confidence = _argmax(heatmaps)
    if sigma is not None and sigma > 0:
        maps = _gaussian_blur(maps, float(sigma))
    n = torch.log(maps.clamp_min(_LOG_FLOOR))
    n = _neighbourhood(n, x, y)  # n[..., 1 + dy, 1 + dx]
    inside_x = (x > 0) & (x < w - 1)
    inside_y = (y > 0) & (y < h - 1)
    gx = 0.5 * (n[..., 1, 2] - n[..., 1, 0])
    gy = 0.5 * (n[..., 2, 1] - n[..., 0, 1])
    hxx = n[..., 1, 2] - 2 * n[..., 1, 1] + n[..., 1, 0]
    hyy = n[..., 2, 1] - 2 * n[..., 1, 1] + n[..., 0, 1]
    hxy = 0.25 * (n[..., 2, 2] - n[..., 2, 0] - n[..., 0, 2] + n[..., 0, 0])
    # An axis on the edge has no central difference: drop its gradient and coupling
    # and give it a dummy curvature of -1, which leaves a 1-D step in the other axis
    # (or none at all).
    gx, hxx = torch.where(inside_x, gx, 0.0), torch.where(inside_x, hxx, -1.0)
    gy, hyy = torch.where(inside_y, gy, 0.0), torch.where(inside_y, hyy, -1.0)
    hxy = torch.where(inside_x & inside_y, hxy, 0.0)
    det = hxx * hyy - hxy**2
    maximum = (hxx < 0) & (hyy < 0) & (det > 1e-12)
    safe = torch.where(maximum, det, 1.0)
    # -H^-1 g with H^-1 = [[hyy, -hxy], [-hxy, hxx]] / det
    ox = torch.where(maximum, -(hyy * gx - hxy * gy) / safe, 0.0).clamp(-1.0, 1.0)
    oy = torch.where(maximum, -(hxx * gy - hxy * gx) / safe, 0.0).clamp(-1.0, 1.0)
    points = torch.stack([x + ox, y + oy], dim=-1)
    return points.to(dtype), confidence


# --- frames ---------------------------------------------------------------------------


def _apply(matrix: np.ndarray | torch.Tensor, points: Points) -> Points:
    """Points (..., K, 2) through affine matrices (..., 2 or 3, 3), broadcast over the
    leading axes; numpy in, numpy (float64) out; torch in, torch out (float64 maths,
    cast back to the points' floating dtype)."""
    if isinstance(points, torch.Tensor):
        dtype = points.dtype if points.is_floating_point() else torch.float32
        m = torch.as_tensor(matrix, device=points.device).to(torch.float64)
        p = points.to(torch.float64)
        out = p @ m[..., :2, :2].transpose(-1, -2) + m[..., None, :2, 2]
        return out.to(dtype)
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().cpu().numpy()
    return T.apply(matrix, points)


def heatmap_to_input(points: Points, heatmap_size: int, input_size: int) -> Points:
    """Heatmap-pixel points (..., 2) to input-pixel points: the exact inverse of
    :func:`catalog.transforms.input_to_heatmap` (outer edges onto outer edges, so
    heatmap pixel 0 -> input 1.5 and 63 -> 253.5 at 64 -> 256).

    numpy or torch in, the same out.
    """
    to_heatmap = T.box_to_square((0, 0, input_size, input_size), heatmap_size)
    return _apply(T.invert(to_heatmap), points)


def input_to_original(points: Points, affine: np.ndarray | torch.Tensor) -> Points:
    """Input-pixel points (B, K, 2) to in-the-wild pixels with each sample's ``affine``
    (B, 2, 3) (:class:`catalog.datasets.LandmarkDataset`'s ``affine``, input ->
    original); (K, 2) with one (2, 3) works too. Points come back in the sample's own
    landmark order: for a flipped sample that is the flipped order
    (:func:`catalog.transforms.flip_landmarks` restores the catalog's).
    """
    return _apply(affine, points)
