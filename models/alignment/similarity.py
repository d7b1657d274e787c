"""Face alignment: a similarity transform of five landmarks onto a template, then one warp.

Coordinates are pixel-index ones (:mod:`catalog.transforms`): the centre of pixel
(column i, row j) is the point (i, j); matrices are 3x3 affine, source -> output. The
warp is :func:`catalog.transforms.warp` (OpenCV's warpAffine, same convention), so the
matrix returned with an aligned crop maps the image's landmarks exactly onto where
they are in the crop.

The transform has 4 degrees of freedom (rotation, uniform scale, translation), no
shear and no reflection, as the reference workflow's alignment step (docs/reference-workflow.md,
step 2b) and the usual ArcFace preprocessing: a face keeps its proportions and only
its pose in the image plane is normalised. It is the least-squares fit of Umeyama
(1991), so five noisy points pull it gently, and yaw or an unusual face shape leaves
the points near, not on, the template.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from catalog import transforms as T

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "DLIB_TEMPLATE_150",
    "MIN_SPREAD_PX",
    "REFERENCE_TEMPLATE",
    "TEMPLATES",
    "Template",
    "align_face",
    "alignment_matrices",
    "alignment_matrix",
    "decode_region",
    "template_points",
    "umeyama",
    "umeyama_batch",
    "with_box_fallback",
]


# --- Umeyama ----------------------------------------------------------------------------


def umeyama_batch(src: np.ndarray, dst: np.ndarray, allow_reflection: bool = False) -> np.ndarray:
    """Least-squares similarity transforms (B, 3, 3) taking ``src`` (B, N, 2) onto ``dst``
    (B, N, 2), or onto one (N, 2) shared by all, such as a template.

    Each minimises ``sum_n |dst_n - (c R src_n + t)|^2`` over a rotation R, a scale
    c > 0 and a translation t, in closed form (S. Umeyama, "Least-squares estimation of
    transformation parameters between two point patterns", IEEE TPAMI 13(4), 1991,
    eqs. 38-42): from the SVD ``U D V^T`` of the cross-covariance of the centred
    points, ``R = U S V^T`` with ``S = diag(1, det(U) det(V))``, which forbids a
    reflection (a mirrored face must not be "aligned" by flipping it back);
    ``c = trace(D S) / var(src)``, ``t = mean(dst) - c R mean(src)``.
    ``allow_reflection=True`` takes S = I: the best orthogonal R, a reflection where
    that fits better.

    The points' frames are whatever the caller's are (typically image pixels ->
    output pixels, both pixel-index). Raises ValueError for non-finite points, fewer
    than two points, or samples whose src or dst points all coincide (no rotation or
    scale can be found; the message names the samples).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 3 or src.shape[-1] != 2:
        raise ValueError(f"src must be (B, N, 2), got {src.shape}")
    if dst.shape not in (src.shape, src.shape[1:]):
        raise ValueError(f"dst must be {src.shape} or {src.shape[1:]}, got {dst.shape}")
    if src.shape[1] < 2:
        raise ValueError(f"a similarity needs at least 2 point pairs, got {src.shape[1]}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("src and dst must be finite (a NaN or inf landmark?)")
    dst = np.broadcast_to(dst, src.shape)
    n = src.shape[1]
    mu_s, mu_d = src.mean(axis=1), dst.mean(axis=1)  # (B, 2)
    sc, dc = src - mu_s[:, None], dst - mu_d[:, None]
    var_s = (sc**2).sum(axis=(1, 2)) / n
    var_d = (dc**2).sum(axis=(1, 2)) / n
    for name, var, pts in (("src", var_s, src), ("dst", var_d, dst)):
        # Relative to the coordinates' magnitude: the mean of equal floats can be off by
        # an ulp, which leaves a variance of ~1e-30, not 0.
        scale = np.maximum(1.0, np.abs(pts).max(axis=(1, 2)))
        bad = np.flatnonzero(np.sqrt(var) <= 1e-12 * scale)
        if bad.size:
            raise ValueError(
                f"{name} points all coincide in sample(s) {bad[:5].tolist()}: a similarity "
                "transform needs at least two distinct points on each side"
            )
    cov = np.einsum("bni,bnj->bij", dc, sc) / n  # (B, 2, 2): dst x src
    u, d, vt = np.linalg.svd(cov)
    s = np.ones_like(d)
    if not allow_reflection:
        s[:, -1] = np.where(np.linalg.det(u) * np.linalg.det(vt) < 0, -1.0, 1.0)
    rot = u @ (s[:, :, None] * vt)
    c = (d * s).sum(axis=1) / var_s
    t = mu_d - c[:, None] * np.einsum("bij,bj->bi", rot, mu_s)
    m = np.zeros((src.shape[0], 3, 3))
    m[:, :2, :2] = c[:, None, None] * rot
    m[:, :2, 2] = t
    m[:, 2, 2] = 1.0
    return m


def umeyama(src: np.ndarray, dst: np.ndarray, allow_reflection: bool = False) -> np.ndarray:
    """The 3x3 least-squares similarity taking ``src`` (N, 2) onto ``dst`` (N, 2).

    See :func:`umeyama_batch` for the method, the reflection rule and the errors.
    """
    src = np.asarray(src, dtype=np.float64)
    if src.ndim != 2:
        raise ValueError(f"src must be (N, 2), got {src.shape}; umeyama_batch takes batches")
    return umeyama_batch(src[None], np.asarray(dst, dtype=np.float64), allow_reflection)[0]


# --- templates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """Where the five landmarks (CelebA order: lefteye, righteye, nose, leftmouth,
    rightmouth; "left" = the viewer's left) go in the aligned output.

    ``side`` None: ``points`` are fractions of the output side in continuous
    coordinates (0 = the outer edge of the first pixel, 1 = the far edge of the last),
    so they fit any output size. ``side`` an int: ``points`` are pixel-index
    coordinates in a ``side`` x ``side`` output.
    """

    name: str
    points: tuple[tuple[float, float], ...]
    side: int | None = None


#: The reference workflow's template (docs/reference-workflow.md, step 2b), fractions of the output
#: side; it aligned at 256 and centre-cropped to 224 (``align_face(..., size=256,
#: crop=224)``). Read as fractions of the edge-to-edge side, as box_to_square does, so
#: the eyes at 0.30 / 0.70 are symmetric about the image centre (127.5 at 256); reading
#: them as ``fraction * size`` instead would move everything by half a pixel.
REFERENCE_TEMPLATE = Template(
    "reference",
    ((0.30, 0.35), (0.70, 0.35), (0.50, 0.52), (0.35, 0.75), (0.65, 0.75)),
)

#: The 112 x 112 five-point template of ArcFace / InsightFace (``arcface_dst`` in
#: insightface/python-package/insightface/utils/face_align.py), in pixels. InsightFace
#: fits a similarity to it and warps with cv2.warpAffine, which puts pixel centres at
#: integer coordinates, so these are pixel-index coordinates, our convention, as they
#: stand. Its order is the subject's right eye first, i.e. the viewer's left: CelebA's.
ARCFACE_TEMPLATE_112 = Template(
    "arcface",
    (
        (38.2946, 51.6963),
        (73.5318, 51.5014),
        (56.0252, 71.7366),
        (41.5493, 92.3655),
        (70.7299, 92.2041),
    ),
    side=112,
)


#: Where dlib's face chip (``get_face_chip(image, shape_5, 150, padding=0.25)``, the
#: crop dlib's recognizer was trained on) puts CelebA's five points, in pixels of its
#: 150 x 150 chip: the medians over the nine faces of the face_recognition test photos
#: and scikit-image's astronaut, CelebA's points taken from dlib's 68-point predictor.
#: Aligned on it, the recognizer's descriptors are within 0.10-0.26 (Euclidean, raw) of
#: those of dlib's own chips of the same faces; same person 0.24-0.43, others 0.81-0.88
#: (docs/pretrained.md).
DLIB_TEMPLATE_150 = Template(
    "dlib",
    ((47.0, 46.1), (100.1, 46.3), (74.8, 75.1), (47.5, 104.0), (101.1, 105.6)),
    side=150,
)


def template_points(template: Template | np.ndarray, size: int) -> np.ndarray:
    """The template's five points (5, 2) in pixel-index coordinates of a ``size`` x
    ``size`` output.

    A pixel template is rescaled edge to edge (``(p + 0.5) * size / side - 0.5``), so at
    its own side it is returned unchanged. (InsightFace scales by ``size / 112`` alone,
    half an output pixel apart at 224.) A (5, 2) array is taken as output pixels
    already and returned as float64.
    """
    if not isinstance(template, Template):
        points = np.asarray(template, dtype=np.float64)
        if points.shape != (5, 2):
            raise ValueError(f"a template array must be (5, 2) output pixels, got {points.shape}")
        return points
    points = np.asarray(template.points, dtype=np.float64)
    if template.side is None:
        return points * size - 0.5
    return (points + 0.5) * (size / template.side) - 0.5


def alignment_matrix(
    points: np.ndarray, template: Template | np.ndarray = REFERENCE_TEMPLATE, size: int = 256
) -> np.ndarray:
    """3x3 matrix taking image pixels to the aligned ``size`` x ``size`` output: the
    least-squares similarity of ``points`` (5, 2), the landmarks in image pixels, onto
    the template's points (:func:`template_points`).
    """
    return umeyama(points, template_points(template, size))


def alignment_matrices(
    points: np.ndarray, template: Template | np.ndarray = REFERENCE_TEMPLATE, size: int = 256
) -> np.ndarray:
    """:func:`alignment_matrix` for a batch: landmarks (B, 5, 2) -> matrices (B, 3, 3)."""
    return umeyama_batch(points, template_points(template, size))


#: The templates by name, as ``celebcat align --template`` and crop sources name them.
TEMPLATES: dict[str, Template] = {
    "reference": REFERENCE_TEMPLATE,
    "arcface": ARCFACE_TEMPLATE_112,
    "dlib": DLIB_TEMPLATE_150,
}


def decode_region(matrix: np.ndarray, size: int) -> tuple[float, float, float, float]:
    """A box (0, 0, side, side) whose side is the extent of the original image that a
    ``size`` crop through ``matrix`` (original -> aligned) covers: what decides how far
    a JPEG can be decoded reduced (:func:`catalog.transforms.open_for_crop`) and still
    give the face ``size`` pixels."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))  # output px per original px
    side = size / max(scale, 1e-12)
    return (0, 0, side, side)


#: Predicted points spread less than this (pixels, RMS about their mean) admit no
#: meaningful similarity: a collapsed prediction, not a face.
MIN_SPREAD_PX = 1.0


def with_box_fallback(
    points: np.ndarray, boxes: np.ndarray, template: Template | np.ndarray
) -> tuple[np.ndarray, int]:
    """``points`` with each collapsed face's replaced by the template's points laid
    over its face box (x_1, y_1, x_2, y_2); and how many were replaced."""
    spread = np.sqrt(((points - points.mean(axis=1, keepdims=True)) ** 2).sum(-1).mean(-1))
    bad = ~(spread >= MIN_SPREAD_PX)  # NaN too
    if not bad.any():
        return points, 0
    unit = (template_points(template, 1000) + 0.5) / 1000  # fractions of the side
    x1, y1, x2, y2 = (boxes[bad, k][:, None] for k in range(4))
    points = points.copy()
    points[bad, :, 0] = x1 + unit[None, :, 0] * (x2 - x1) - 0.5
    points[bad, :, 1] = y1 + unit[None, :, 1] * (y2 - y1) - 0.5
    return points, int(bad.sum())


def align_face(
    image: Image.Image | np.ndarray,
    points: np.ndarray,
    template: Template | np.ndarray = REFERENCE_TEMPLATE,
    size: int = 256,
    crop: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp a face so its landmarks sit on the template.

    ``image``: PIL image or uint8 (H, W, 3) array; ``points`` (5, 2) its landmarks in
    its pixels (CelebA order). The template is laid out at ``size``; ``crop`` then keeps
    the centred ``crop`` x ``crop`` square (the reference: size 256, crop 224), in the
    same single resampling.

    Returns the uint8 (S, S, 3) aligned image, S = ``crop`` or ``size``, black outside
    the source, and the 3x3 matrix from image pixels to its pixels (so
    ``transforms.apply(matrix, points)`` gives the landmarks in the aligned image).
    """
    matrix = alignment_matrix(points, template, size)
    out = size
    if crop is not None:
        if not 0 < crop <= size:
            raise ValueError(f"crop must be in 1..{size}, got {crop}")
        # Output pixel i of the crop is pixel i + (size - crop) / 2 of the full square.
        off = (size - crop) / 2
        matrix, out = T.translate(-off, -off) @ matrix, crop
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
    source = np.asarray(image)
    if source.dtype != np.uint8 or source.ndim != 3 or source.shape[2] != 3:
        raise ValueError(
            f"image must be a PIL image or a uint8 (H, W, 3) array, got {source.dtype} "
            f"{source.shape}"
        )
    return T.warp(source, matrix, out), matrix
