"""Image and landmark transforms: the only place geometry and colour changes live.

Coordinates. Points are in *pixel-index* coordinates: the centre of pixel ``(i, j)``
(column i, row j) is the point ``(i, j)``, as CelebA's integer landmarks are. A box
``(x_1, y_1, x_2, y_2)`` with exclusive ``x_2, y_2`` covers pixel centres
``x_1 .. x_2 - 1``; its outer edges are at ``x_1 - 0.5`` and ``x_2 - 0.5``.

Geometry is one 3x3 affine matrix per sample, mapping original image points to
output points. The crop, the resize, the augmentation (scale, rotation, shift) and
the flip are multiplied together and applied once, to the pixels (one resampling)
and to the landmarks alike, so the points stay exactly on the features. The inverse
(output -> original) travels with every sample, so predictions map back to the
in-the-wild image.

PIL resamples in *continuous* coordinates (pixel centres at +0.5);
:func:`pil_affine` converts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance

#: After a horizontal flip the subject's left eye is on the viewer's right: landmark
#: k of the flipped image is landmark FLIP_ORDER[k] of the original
#: (lefteye <-> righteye, nose, leftmouth <-> rightmouth).
FLIP_ORDER: tuple[int, ...] = (1, 0, 2, 4, 3)

#: ImageNet statistics, the usual normalisation for RGB networks trained from scratch too.
MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


# --- matrices -------------------------------------------------------------------------


def translate(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def scale(sx: float, sy: float | None = None) -> np.ndarray:
    return np.diag([sx, sx if sy is None else sy, 1.0])


def rotate(degrees: float) -> np.ndarray:
    """Rotation by ``degrees`` (counter-clockwise as seen on screen, y pointing down)."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def box_to_square(box: Sequence[float], size: int) -> np.ndarray:
    """Matrix taking a box ``(x_1, y_1, x_2, y_2)`` (exclusive ends) onto ``size`` x ``size``.

    The box's outer edges land on the output's outer edges (``-0.5`` and
    ``size - 0.5``); width and height are scaled independently, as the reference
    workflow resized its crops.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    sx, sy = size / max(x2 - x1, 1e-6), size / max(y2 - y1, 1e-6)
    return translate(-0.5, -0.5) @ scale(sx, sy) @ translate(0.5 - x1, 0.5 - y1)


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (N, 2) through a 3x3 (or 2x3) affine matrix."""
    points = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return points @ m[:2, :2].T + m[:2, 2]


def invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 3x3 affine matrix."""
    return np.linalg.inv(np.asarray(matrix, dtype=np.float64))


# --- augmentation -----------------------------------------------------------------------


@dataclass(frozen=True)
class Augment:
    """Random geometry and colour; all ranges are symmetric about "no change".

    ``scale`` is a relative zoom range, ``rotate`` degrees, ``shift`` a share of the
    output side, ``flip`` the probability of a horizontal flip. The colour factors
    are ranges around 1 (0.2 -> uniform in [0.8, 1.2]).
    """

    scale: float = 0.1
    rotate: float = 15.0
    shift: float = 0.05
    flip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2


NO_AUGMENT = Augment(0, 0, 0, 0, 0, 0, 0)


def augment_matrix(size: int, aug: Augment, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """A random matrix acting on ``size`` x ``size`` output points, and whether it flips.

    Zoom and rotation are about the output's centre, then the shift; a flip mirrors
    about the vertical centre line.
    """
    c = (size - 1) / 2
    zoom = 1.0 + rng.uniform(-aug.scale, aug.scale)
    angle = rng.uniform(-aug.rotate, aug.rotate)
    dx, dy = rng.uniform(-aug.shift, aug.shift, size=2) * size
    flipped = bool(rng.random() < aug.flip)
    m = translate(c + dx, c + dy) @ rotate(angle) @ scale(zoom) @ translate(-c, -c)
    if flipped:
        m = translate(c, 0) @ scale(-1.0, 1.0) @ translate(-c, 0) @ m
    return m, flipped


def flip_landmarks(points: np.ndarray) -> np.ndarray:
    """Reorder mirrored landmarks so index 0 is again the viewer's left eye, etc."""
    return np.asarray(points)[list(FLIP_ORDER)]


def jitter_colour(image: Image.Image, aug: Augment, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast and saturation, each by a random factor near 1."""
    for amount, enhancer in (
        (aug.brightness, ImageEnhance.Brightness),
        (aug.contrast, ImageEnhance.Contrast),
        (aug.saturation, ImageEnhance.Color),
    ):
        if amount:
            image = enhancer(image).enhance(1.0 + rng.uniform(-amount, amount))
    return image


# --- pixels ---------------------------------------------------------------------------


def pil_affine(matrix: np.ndarray) -> tuple[float, ...]:
    """PIL's AFFINE data for a source -> output matrix in pixel-index coordinates.

    PIL wants output -> source, in continuous coordinates (centres at +0.5).
    """
    cont = translate(0.5, 0.5) @ np.asarray(matrix, dtype=np.float64) @ translate(-0.5, -0.5)
    inv = np.linalg.inv(cont)
    return tuple(float(v) for v in inv[:2].reshape(-1))


def warp(
    image: Image.Image, matrix: np.ndarray, size: int, resample: int = Image.BILINEAR
) -> Image.Image:
    """The ``size`` x ``size`` output of ``matrix`` (source -> output); outside is black."""
    return image.transform((size, size), Image.AFFINE, pil_affine(matrix), resample=resample)


def open_for_crop(
    path: str, box: Sequence[float], size: int
) -> tuple[Image.Image, np.ndarray]:
    """Open an image at the smallest scale that still gives the box ``size`` pixels.

    A large JPEG is decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself (Pillow's
    draft mode), much faster than a full decode; any other format, or what is still
    twice too large, is shrunk by an integer factor with a box filter
    (``Image.reduce``), which also keeps the later bilinear warp from aliasing.
    Returns the RGB image and the matrix from original pixel coordinates to its own.
    """
    image = Image.open(path)
    x1, y1, x2, y2 = box
    side = max(min(x2 - x1, y2 - y1), 1)
    full = image.size
    if image.format == "JPEG":
        k = 1
        while k < 8 and side / (2 * k) >= size:
            k *= 2
        if k > 1:
            image.draft("RGB", (math.ceil(full[0] / k), math.ceil(full[1] / k)))
    image = image.convert("RGB")
    # Both reductions are by whole factors: decoded pixel i covers original pixels
    # [f*i, f*(i+1)) exactly (only the last, partial block differs), so the scale is
    # 1/f, not the ratio of the rounded-up sizes.
    factor = max(1, round(full[0] / image.size[0]))
    left = int(side / factor // size)
    if left >= 2:
        image = image.reduce(left)
        factor *= left
    # A scale by 1/f in continuous coordinates is one about -0.5 in pixel-index ones.
    m = translate(-0.5, -0.5) @ scale(1 / factor) @ translate(0.5, 0.5)
    return image, m


def to_tensor(image: Image.Image, mean: Sequence[float] = MEAN, std: Sequence[float] = STD):
    """(3, H, W) float32 tensor, normalised per channel (torch imported here only)."""
    import torch

    array = np.asarray(image, dtype=np.float32) / 255.0
    array = (array - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def gaussian_heatmaps(points: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """(N, size, size) float32 Gaussians with peak 1 at each point (heatmap pixels).

    Points outside the map give an all-zero (or partial) map, which is the usual
    target for a landmark that left the crop.
    """
    grid = np.arange(size, dtype=np.float32)
    pts = np.asarray(points, dtype=np.float32)
    gx = np.exp(-((grid[None, :] - pts[:, :1]) ** 2) / (2 * sigma**2))  # (N, W)
    gy = np.exp(-((grid[None, :] - pts[:, 1:]) ** 2) / (2 * sigma**2))  # (N, H)
    return (gy[:, :, None] * gx[:, None, :]).astype(np.float32)


def input_to_heatmap(points: np.ndarray, input_size: int, heatmap_size: int) -> np.ndarray:
    """Input-pixel points to heatmap-pixel points (edges onto edges)."""
    return apply(box_to_square((0, 0, input_size, input_size), heatmap_size), points)
