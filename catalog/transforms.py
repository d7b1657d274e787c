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

Pixels are resampled by OpenCV, which shares the pixel-index convention; PIL
(continuous coordinates, centres at +0.5) is only used to decode, and
:func:`pil_affine` converts for anyone who wants PIL's own transform.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

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
    """Points (N, 2) through a 3x3 (or 2x3) affine matrix; or a batch: points
    (B, N, 2) through matrices (B, 3, 3) (or (B, 2, 3)), one per sample."""
    points = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return points @ np.swapaxes(m[..., :2, :2], -1, -2) + m[..., None, :2, 2]


def invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 3x3 affine matrix (last row 0 0 1), in closed form: twice as fast
    as np.linalg.inv, and a data loader inverts two per sample."""
    m = np.asarray(matrix, dtype=np.float64)
    (a, b, tx), (c, d, ty) = m[0], m[1]
    det = a * d - b * c
    if det == 0 or not math.isfinite(det):
        raise np.linalg.LinAlgError(f"singular affine matrix {m[:2].tolist()}")
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    return np.array(
        [[ia, ib, -(ia * tx + ib * ty)], [ic, id_, -(ic * tx + id_ * ty)], [0.0, 0.0, 1.0]]
    )


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


def colour_matrix(
    image: Image.Image | np.ndarray, aug: Augment, rng: np.random.Generator
) -> np.ndarray:
    """The random 3x4 colour matrix of :func:`jitter_colour` for ``image``, on values in
    [0, 1]: brightness, contrast and saturation, each by a random factor near 1 (the
    same blends as PIL's ImageEnhance: towards black, towards the mean grey, towards
    the pixel's grey), multiplied into one matrix. Draws from ``rng`` in a fixed
    order, so the float and uint8 paths of a sample get the same jitter.
    """
    import cv2

    a, b = np.eye(3), np.zeros(3)
    if aug.brightness:
        a *= 1.0 + rng.uniform(-aug.brightness, aug.brightness)
    if aug.contrast:
        c = 1.0 + rng.uniform(-aug.contrast, aug.contrast)
        # cv2.sumElems: 2 us for a 256 px crop, where cv2.mean takes 70 us and numpy's
        # mean over the pixel axis of an (H*W, 3) array 700 us
        array = np.asarray(image)
        unit = (1 / 255 if array.dtype == np.uint8 else 1.0) / (array.shape[0] * array.shape[1])
        grey_mean = float(_GREY @ (a @ (np.asarray(cv2.sumElems(array)[:3]) * unit) + b))
        a, b = c * a, c * b + (1.0 - c) * grey_mean
    if aug.saturation:
        s = 1.0 + rng.uniform(-aug.saturation, aug.saturation)
        towards_grey = s * np.eye(3) + (1.0 - s) * np.outer(np.ones(3), _GREY)
        a, b = towards_grey @ a, towards_grey @ b
    return np.hstack([a, b[:, None]])


def jitter_colour(
    image: Image.Image | np.ndarray, aug: Augment, rng: np.random.Generator
) -> np.ndarray:
    """Brightness, contrast and saturation jitter (:func:`colour_matrix`) in a single
    pass (cv2.transform) on a float32 (H, W, 3) array in [0, 1], which it returns,
    clipped once.
    """
    import cv2

    x = as_float(image)
    x = cv2.transform(x, colour_matrix(x, aug, rng).astype(np.float32))
    return np.clip(x, 0.0, 1.0, out=x)


def jitter_colour_uint8(image: np.ndarray, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    """:func:`jitter_colour` on uint8 (H, W, 3), returning uint8: the same draws and
    matrix, applied in one saturating pass (so clipped, and rounded to whole levels;
    OpenCV's 8-bit transform uses fixed-point coefficients: within one level of the
    float result)."""
    import cv2

    matrix = colour_matrix(image, aug, rng)
    matrix[:, 3] *= 255.0  # offsets in levels
    return cv2.transform(np.asarray(image), matrix.astype(np.float32))


_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma, as PIL's "L"


def as_float(image: Image.Image | np.ndarray) -> np.ndarray:
    """float32 (H, W, 3) in [0, 1] from a uint8 image; float arrays pass through."""
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array.astype(np.float32) * np.float32(1 / 255)
    return array.astype(np.float32, copy=False)


# --- pixels ---------------------------------------------------------------------------


def pil_affine(matrix: np.ndarray) -> tuple[float, ...]:
    """PIL's AFFINE data for a source -> output matrix in pixel-index coordinates.

    PIL wants output -> source, in continuous coordinates (centres at +0.5).
    """
    cont = translate(0.5, 0.5) @ np.asarray(matrix, dtype=np.float64) @ translate(-0.5, -0.5)
    inv = np.linalg.inv(cont)
    return tuple(float(v) for v in inv[:2].reshape(-1))


def check_crops(crops: np.ndarray, size: int, model: str) -> None:
    """ValueError unless ``crops`` is a uint8 RGB batch (N, size, size, 3): what every
    model's ``predict`` / ``embed`` takes; ``model`` names it in the message."""
    if crops.ndim != 4 or crops.shape[1:] != (size, size, 3) or crops.dtype != np.uint8:
        raise ValueError(
            f"{model} takes uint8 crops (N, {size}, {size}, 3), got "
            f"{crops.dtype} {tuple(crops.shape)}"
        )


def warp(image: Image.Image | np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The uint8 (size, size, 3) output of ``matrix`` (source -> output); outside is black.

    Bilinear, with OpenCV: its warpAffine measured 0.14 ms against PIL's 1.1 ms for
    a 256 px output here, which decides a data loader's speed. OpenCV takes pixel
    centres at integer coordinates, our convention, so the matrix goes in as it is.
    """
    import cv2

    source = np.asarray(image)
    return cv2.warpAffine(
        source,
        np.asarray(matrix, dtype=np.float64)[:2],
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


#: What Pillow raises for a file that is not a usable image: not one at all
#: (UnidentifiedImageError, an OSError), damaged (OSError, SyntaxError, ValueError,
#: EOFError), or a header claiming more pixels than Pillow's decompression-bomb limit
#: (DecompressionBombError, which is none of those). Every ``--skip-bad`` catches these.
BAD_IMAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    Image.DecompressionBombError,
)


def open_for_crop(path: str, box: Sequence[float], size: int) -> tuple[Image.Image, np.ndarray]:
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


def _normaliser(mean: Sequence[float], std: Sequence[float], unit: float) -> np.ndarray:
    """(3, 2) float64 per-channel (scale, offset): ``x * unit`` -> ``(x * unit - mean) / std``."""
    inv_std = 1 / np.asarray(std, np.float64)
    return np.stack([unit * inv_std, -np.asarray(mean, np.float64) * inv_std], axis=1)


def _channels_first(array: np.ndarray) -> np.ndarray:
    """(3, H, W) contiguous copy of an (H, W, 3) image: cv2.split straight into the
    planes (6 us at 256 px, where numpy's transposing copy takes 48 us)."""
    import cv2

    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(
            f"expected an RGB image (H, W, 3), got shape {array.shape}; convert it first "
            "(PIL: image.convert('RGB'))"
        )
    planes = np.empty((3, *array.shape[:2]), dtype=array.dtype)
    cv2.split(np.ascontiguousarray(array), list(planes))
    return planes


def to_tensor(
    image: Image.Image | np.ndarray,
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
):  # noqa: ANN201 - torch is imported lazily
    """(3, H, W) float32 tensor, normalised per channel (torch imported here only).

    ``image`` is uint8 (H, W, 3) or float32 in [0, 1] (what jitter_colour returns).
    Each channel plane is scaled and shifted in one pass (cv2.addWeighted into the
    output): about 50 us at 256 px, where numpy broadcasting over a last axis of 3
    runs 30x slower.
    """
    import cv2
    import torch

    array = np.asarray(image)
    norm = _normaliser(mean, std, 1 / 255 if array.dtype == np.uint8 else 1.0)
    planes = _channels_first(array)
    out = np.empty(planes.shape, dtype=np.float32)
    for c, (gain, offset) in enumerate(norm):
        cv2.addWeighted(
            planes[c], float(gain), planes[c], 0.0, float(offset), dst=out[c], dtype=cv2.CV_32F
        )
    return torch.from_numpy(out)


def to_uint8_tensor(image: Image.Image | np.ndarray):  # noqa: ANN201 - torch imported lazily
    """(3, H, W) uint8 tensor of a uint8 (H, W, 3) image, not normalised: a quarter of
    the bytes of :func:`to_tensor`'s, for :func:`normalize_batch` on the device."""
    import torch

    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"to_uint8_tensor takes a uint8 image, got {array.dtype}")
    return torch.from_numpy(_channels_first(array))


def normalize_batch(images: Any, mean: Sequence[float] = MEAN, std: Sequence[float] = STD):  # noqa: ANN201 - torch is imported lazily
    """float32 normalised images from uint8 ones, (B, 3, H, W) or (3, H, W), on their
    device: what :func:`to_tensor` gives per sample, for batches of
    ``image_dtype="uint8"`` Datasets (equal to it within float rounding)."""
    import torch

    if images.dtype != torch.uint8:
        raise ValueError(f"normalize_batch takes uint8 images, got {images.dtype}")
    norm = torch.as_tensor(
        _normaliser(mean, std, 1 / 255), dtype=torch.float32, device=images.device
    )
    shape = (3, 1, 1)
    return torch.addcmul(norm[:, 1].view(shape), images.to(torch.float32), norm[:, 0].view(shape))


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


# --- decoded images and detected boxes (the face pipeline) -------------------------------


def reduce_for_crop(
    image: Image.Image | np.ndarray, box: Sequence[float], size: int
) -> tuple[Image.Image | np.ndarray, np.ndarray]:
    """:func:`open_for_crop` for an image already decoded (a photo given as pixels):
    where the box is still twice ``size`` or more, the image shrunk by that whole
    factor with a box filter (``Image.reduce``, as :func:`open_for_crop` shrinks), so
    the bilinear warp after it does not alias. Returns the image (unchanged where no
    reduction is due) and the matrix from its original pixel coordinates to its own.
    """
    x1, y1, x2, y2 = box
    side = max(min(x2 - x1, y2 - y1), 1)
    factor = int(side // size)
    if factor < 2:
        return image, np.eye(3)
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    return pil.reduce(factor), translate(-0.5, -0.5) @ scale(1 / factor) @ translate(0.5, 0.5)


def shrink_boxes(boxes: np.ndarray, shrink: float, width: int, height: int) -> np.ndarray:
    """The crop boxes of raw face boxes (N, 4) ``x_1, y_1, x_2, y_2`` (exclusive ends) in
    one image of ``width`` x ``height``: each shrunk by ``shrink`` (a share of its side)
    about its centre, rounded to whole pixels and clamped to the image: what the
    ``face_boxes`` view (``sql/face_boxes.sql``) computes for a snapshot, in the same
    order of operations, so a detected face is cropped as a catalog face is. Rounding
    is half away from zero, as DuckDB's ``round``. Returns (N, 4) float64.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    raw = np.stack(
        [
            b[:, 0] + w * shrink / 2,
            b[:, 1] + h * shrink / 2,
            b[:, 0] + w * (1 - shrink / 2),
            b[:, 1] + h * (1 - shrink / 2),
        ],
        axis=1,
    )
    rounded = np.sign(raw) * np.floor(np.abs(raw) + 0.5)
    rounded[:, :2] = np.maximum(rounded[:, :2], 0)
    rounded[:, 2] = np.minimum(rounded[:, 2], width)
    rounded[:, 3] = np.minimum(rounded[:, 3], height)
    return rounded
