"""Face geometry shared by the annotation writer and the renderer.

The annotation files and the pixels must agree exactly, so the five landmarks, the face
box and the alignment transform are computed here, once, vectorised over many images
(``annotations_only`` runs never touch pixels), and the renderer draws the features
at the integer landmarks this module returns.

Frames used here:

* **face frame**: x to the viewer's right, y down, origin at the head centre, lengths
  in units of the head height (skull top to chin = 1). The head is an ellipsoid with
  half-axes ``a = face_w / 2`` (across), ``b = 0.5`` (up-down) and ``DEPTH_RATIO * a``
  (toward the camera). Turning the head (yaw) moves a point on the face surface
  sideways by ``z * sin(yaw)`` and nodding (pitch) moves it down by ``z * sin(pitch)``;
  points with more depth (the nose tip) move more, and the far side is compressed.
  The silhouette is drawn unchanged, which is exact for a sphere and close enough here.
* **image frame**: pixels of the in-the-wild image, x right, y down, integer values
  are pixel centres (CelebA's convention). ``image = centre + face_h * R(roll) @ (x', y')``
  where ``(x', y')`` is the turned point (:func:`turn`).
* **aligned frame**: pixels of the 178x218 aligned image (``formats.ALIGNED_SIZE``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from catalog import transforms

#: Where the similarity transform puts the five landmarks in the aligned frame
#: (lefteye, righteye, nose, leftmouth, rightmouth), x then y. These are close to the
#: mean landmarks of the official img_align_celeba images.
ALIGNED_TEMPLATE: np.ndarray = np.array(
    [[69.0, 111.0], [108.0, 111.0], [88.0, 135.0], [72.0, 152.0], [105.0, 152.0]]
)

#: Half the head height in face-frame units (the frame's unit is the head height).
HEAD_B = 0.5
#: Head depth as a share of its half-width; < 1 keeps turned faces from collapsing
#: both eyes onto one side at the largest yaw we draw (about 35 degrees).
DEPTH_RATIO = 0.75
#: Smiling raises the mouth corners by this much (face units) and widens the mouth.
SMILE_LIFT = 0.028
SMILE_WIDEN = 1.10
#: An open mouth pulls the corners in a little.
OPEN_NARROW = 0.95
#: Minimum gap, in pixels, between a landmark and the box edge, so that rounding can
#: never put a landmark on or outside the box.
LANDMARK_BOX_MARGIN_PX = 3.0


def surface_depth(x: np.ndarray, y: np.ndarray, half_w: np.ndarray) -> np.ndarray:
    """Depth (toward the camera, face units) of the head surface at face-frame (x, y).

    Points outside the head ellipse get depth 0: they lie on the silhouette and do not
    move when the head turns.
    """
    u = 1.0 - (x / half_w) ** 2 - (y / HEAD_B) ** 2
    return DEPTH_RATIO * half_w * np.sqrt(np.clip(u, 0.0, None))


def turn(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, yaw: tuple[Any, Any], pitch: tuple[Any, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Face-frame (x, y) after turning (yaw) and nodding (pitch) the head, orthographic.

    ``yaw`` and ``pitch`` are (cos, sin) pairs. Small-angle form: each rotation moves a
    point by its depth ``z`` times the sine, which is all a 2-D drawing can show.
    """
    return x * yaw[0] + z * yaw[1], y * pitch[0] + z * pitch[1]


def mouth_corners(
    mouth_hw: np.ndarray, mouth_y: np.ndarray, smiling: np.ndarray, mouth_open: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Half-width and height (face frame) of the mouth corners for an expression."""
    hw = mouth_hw * np.where(smiling, SMILE_WIDEN, 1.0) * np.where(mouth_open, OPEN_NARROW, 1.0)
    y = mouth_y - np.where(smiling, SMILE_LIFT, 0.0)
    return hw, y


def landmark_points(
    face_w: np.ndarray,
    eye_y: np.ndarray,
    eye_dx: np.ndarray,
    nose_len: np.ndarray,
    nose_z: np.ndarray,
    mouth_drop: np.ndarray,
    mouth_hw: np.ndarray,
    smiling: np.ndarray,
    mouth_open: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The five landmarks of K faces in the face frame, before yaw.

    Returns ``x, y, z``, each (K, 5), in CelebA's order (lefteye, righteye, nose,
    leftmouth, rightmouth); ``z`` is the depth used by :func:`turn` (the nose tip
    stands ``nose_z`` in front of the head surface).
    """
    a = face_w / 2.0
    m_hw, m_y = mouth_corners(mouth_hw, eye_y + mouth_drop, smiling, mouth_open)
    nose_y = eye_y + nose_len
    zero = np.zeros_like(a)
    x = np.stack([-eye_dx, eye_dx, zero, -m_hw, m_hw], axis=1)
    y = np.stack([eye_y, eye_y, nose_y, m_y, m_y], axis=1)
    z = surface_depth(x, y, a[:, None])
    z[:, 2] += nose_z
    return x, y, z


def relative_layout(
    traits_cols: dict[str, np.ndarray],
    roll: np.ndarray,
    yaw: np.ndarray,
    pitch: np.ndarray,
    face_h: np.ndarray,
    box_jitter: np.ndarray,
    smiling: np.ndarray,
    mouth_open: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks and face box of N faces relative to the head centre, in pixels.

    ``traits_cols`` holds per-image arrays (N,) of the FaceTraits fields used here.
    ``box_jitter`` (N, 4) scales the box's left, top, right and bottom extents, as
    CelebA's hand-made boxes are not tight. Returns ``rel_landmarks`` (N, 5, 2) and
    ``rel_box`` (N, 4) as (x0, y0, x1, y1); add the head centre in image pixels to get
    the image frame.
    """
    face_w = traits_cols["face_w"]
    x, y, z = landmark_points(
        face_w,
        traits_cols["eye_y"],
        traits_cols["eye_dx"],
        traits_cols["nose_len"],
        traits_cols["nose_z"],
        traits_cols["mouth_drop"],
        traits_cols["mouth_hw"],
        smiling,
        mouth_open,
    )
    cr, sr = np.cos(roll)[:, None], np.sin(roll)[:, None]
    xp, yp = turn(
        x,
        y,
        z,
        (np.cos(yaw)[:, None], np.sin(yaw)[:, None]),
        (np.cos(pitch)[:, None], np.sin(pitch)[:, None]),
    )
    s = face_h[:, None]
    rel = np.stack([s * (cr * xp - sr * yp), s * (sr * xp + cr * yp)], axis=2)

    # Axis-aligned extent of the rotated head ellipse: forehead to chin, cheek to cheek.
    a = face_w / 2.0
    c, si = np.cos(roll), np.sin(roll)
    hx = face_h * np.sqrt((a * c) ** 2 + (HEAD_B * si) ** 2)
    hy = face_h * np.sqrt((a * si) ** 2 + (HEAD_B * c) ** 2)
    box = np.stack(
        [
            -hx * box_jitter[:, 0],
            -hy * box_jitter[:, 1],
            hx * box_jitter[:, 2],
            hy * box_jitter[:, 3],
        ],
        axis=1,
    )
    # Never let the jitter cut a landmark out of the box.
    m = LANDMARK_BOX_MARGIN_PX
    box[:, 0] = np.minimum(box[:, 0], rel[:, :, 0].min(axis=1) - m)
    box[:, 1] = np.minimum(box[:, 1], rel[:, :, 1].min(axis=1) - m)
    box[:, 2] = np.maximum(box[:, 2], rel[:, :, 0].max(axis=1) + m)
    box[:, 3] = np.maximum(box[:, 3], rel[:, :, 1].max(axis=1) + m)
    return rel, box


def place(
    rel_landmarks: np.ndarray, rel_box: np.ndarray, cx: np.ndarray, cy: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Integer landmarks (N, 5, 2) and boxes (N, 4) ``x_1, y_1, width, height``, image frame.

    The box is widened outward to whole pixels (floor of the near edges, ceil of the far
    ones), so a head centre chosen with ``cx + x0 >= 0`` and ``cx + x1 <= width`` keeps
    the box inside the image.
    """
    centre = np.stack([cx, cy], axis=1)[:, None, :]
    landmarks = np.rint(rel_landmarks + centre).astype(np.int64)
    x1 = np.floor(cx + rel_box[:, 0])
    y1 = np.floor(cy + rel_box[:, 1])
    x2 = np.ceil(cx + rel_box[:, 2])
    y2 = np.ceil(cy + rel_box[:, 3])
    bbox = np.stack([x1, y1, x2 - x1, y2 - y1], axis=1).astype(np.int64)
    return landmarks, bbox


def similarity_to_template(landmarks: np.ndarray) -> np.ndarray:
    """Least-squares similarity transforms (N, 2, 3) from landmarks onto the template.

    ``landmarks`` (N, 5, 2) are in the image frame; the result maps an image-frame
    point p to the aligned frame as ``M[:, :2] @ p + M[:, 2]`` (rotation, uniform scale
    and translation: 4 degrees of freedom, as in the reference alignment step).
    """
    p = landmarks.astype(np.float64)
    q = ALIGNED_TEMPLATE[None]
    pm, qm = p.mean(axis=1, keepdims=True), q.mean(axis=1, keepdims=True)
    p0, q0 = p - pm, q - qm
    den = (p0**2).sum(axis=(1, 2))
    a = (p0[..., 0] * q0[..., 0] + p0[..., 1] * q0[..., 1]).sum(axis=1) / den
    b = (p0[..., 0] * q0[..., 1] - p0[..., 1] * q0[..., 0]).sum(axis=1) / den
    rot = np.stack([np.stack([a, -b], axis=1), np.stack([b, a], axis=1)], axis=1)
    t = qm[:, 0, :] - np.einsum("nij,nj->ni", rot, pm[:, 0, :])
    return np.concatenate([rot, t[:, :, None]], axis=2)


def aligned_landmarks(matrix: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Landmarks in the aligned frame, rounded to integers like the official file."""
    return np.rint(transforms.apply(matrix, landmarks.astype(np.float64))).astype(np.int64)
