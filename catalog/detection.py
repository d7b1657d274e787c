"""A torch Dataset for face detection: whole images, letterboxed, with their face boxes.

The detector trainer (``celebcat train detector``) learns from the catalog's
``bboxes`` table: the face box CelebA gives each image (``x_1, y_1, width, height``,
not the snapshot's shrunk box), so a detector's boxes follow the catalog's
convention and the pipeline crops them as the ``face_boxes`` view does
(:func:`catalog.transforms.shrink_boxes`).

Each sample is one image placed on a ``size`` x ``size`` square, scaled to fit and
centred (letterboxed, black around it), through one matrix as every crop here
(:mod:`catalog.transforms`), so the boxes move with the pixels exactly. With
``augment``: a random zoom, shift, small rotation and flip about the square
(:func:`catalog.transforms.augment_matrix`) and colour jitter; with ``mosaic`` > 0,
that share of the samples are instead 2 x 2 mosaics of four images at half the
side, so the model also sees several (and smaller) faces in one picture, while
CelebA gives one face per image.

Samples: ``image`` uint8 (3, S, S); ``boxes`` float32 (``max_faces``, 4) ``x_1, y_1,
x_2, y_2`` in input pixels (exclusive ends, as the catalog's), zero rows after the
first ``n_boxes``; ``n_boxes`` int64; ``affine`` float32 (2, 3), input pixels ->
in-the-wild pixels (meaningful for single images, i.e. without mosaic); ``image_id``.
Reproducible as the other Datasets: sample ``index`` of epoch ``e`` draws from
``default_rng([seed, e, index])``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from catalog import snapshots
from catalog import transforms as T
from catalog.db import connect, has_table

if TYPE_CHECKING:
    import duckdb

__all__ = ["DetectionDataset", "letterbox_matrix", "map_boxes"]

#: A box that keeps less than this share of its area on the canvas is dropped from the
#: targets (its visible part stays in the picture).
MIN_VISIBLE = 0.5
#: ... as is one whose visible side is below this many input pixels.
MIN_SIDE = 4.0


def letterbox_matrix(width: int, height: int, size: int) -> np.ndarray:
    """The matrix placing a ``width`` x ``height`` image on a ``size`` square: scaled
    so its longer side fits, centred (the square about the image's centre onto the
    output, :func:`catalog.transforms.box_to_square`)."""
    side = max(width, height)
    x0, y0 = (width - side) / 2, (height - side) / 2
    return T.box_to_square((x0, y0, x0 + side, y0 + side), size)


def map_boxes(matrix: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Boxes (N, 4) ``x_1, y_1, x_2, y_2`` (exclusive ends) through an affine matrix:
    the axis-aligned envelope of the mapped outer edges (the corners at ``x_1 - 0.5``
    ... ``x_2 - 0.5`` in pixel-index coordinates). Exact for scales and flips; a
    rotation gives the envelope, a little larger."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not len(b):
        return b.copy()
    x1, y1, x2, y2 = (b[:, k] - 0.5 for k in range(4))
    corners = np.stack(
        [
            np.stack([x1, y1], 1),
            np.stack([x2, y1], 1),
            np.stack([x1, y2], 1),
            np.stack([x2, y2], 1),
        ],
        axis=1,
    )
    mapped = T.apply(np.broadcast_to(matrix, (len(b), 3, 3)), corners)
    lo, hi = mapped.min(axis=1), mapped.max(axis=1)
    return np.concatenate([lo + 0.5, hi + 0.5], axis=1)


def _raw_boxes(con: duckdb.DuckDBPyConnection, snapshot: str) -> dict[str, tuple]:
    """The ``bboxes`` rows of ``snapshot``'s images: {image_id: (x_1, y_1, x_2, y_2)}."""
    if not has_table(con, "bboxes"):
        return {}
    rows = con.execute(
        "SELECT b.image_id, b.x_1, b.y_1, b.x_1 + b.width, b.y_1 + b.height FROM bboxes b "
        "JOIN snapshot_images s USING (image_id) WHERE s.snapshot = ?",
        [snapshot],
    ).fetchall()
    return {r[0]: r[1:] for r in rows}


class DetectionDataset(Dataset):
    """Letterboxed images of one snapshot split and their face boxes (module docstring).

    ``catalog``: a catalog path (None: the default) or an open connection (left open).
    Images that cannot be read are refused, naming them, or with ``skip_bad`` left out
    (``skipped``), as for the other Datasets (:func:`catalog.snapshots.read_images`).
    """

    def __init__(
        self,
        catalog: str | os.PathLike[str] | duckdb.DuckDBPyConnection | None,
        snapshot: str,
        split: str,
        size: int = 128,
        augment: T.Augment | None = None,
        mosaic: float = 0.0,
        seed: int = 0,
        max_faces: int = 4,
        skip_bad: bool = False,
    ) -> None:
        if not 0.0 <= mosaic <= 1.0:
            raise ValueError(f"mosaic must be a share in [0, 1], got {mosaic}")
        if size < 16:
            raise ValueError(f"size must be at least 16 pixels, got {size}")
        if max_faces < 4 and mosaic > 0:
            raise ValueError(f"a mosaic holds four faces: max_faces must be >= 4, got {max_faces}")
        own = catalog is None or isinstance(catalog, str | os.PathLike)
        con = connect(catalog, read_only=True) if own else catalog  # type: ignore[arg-type]
        try:
            rows = snapshots.read_images(con, snapshot, split, boxes=True, skip_bad=skip_bad)
            raw = _raw_boxes(con, snapshot)
        finally:
            if own:
                con.close()
        lacking = [i for i in rows.image_id if i not in raw]
        if lacking:
            raise ValueError(
                f"{len(lacking)} of the {len(rows)} images of snapshot {snapshot!r} (split "
                f"{split}) have no row in the bboxes table (first: {', '.join(lacking[:3])}); "
                "ingest a list_bbox_celeba file that covers them."
            )
        self.snapshot, self.snapshot_hash, self.split = snapshot, rows.hash, split
        self.size, self.augment, self.mosaic, self.seed = size, augment, mosaic, seed
        self.max_faces = max_faces
        self.skipped = rows.skipped
        self.image_ids = rows.image_id
        self.paths = rows.path
        self.widths, self.heights = rows.width, rows.height
        #: (N, 4) float64: the catalog's face box of each image, in-the-wild pixels.
        self.boxes = np.array([raw[i] for i in rows.image_id], dtype=np.float64).reshape(-1, 4)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.image_ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _place(self, index: int, size: int, place: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image ``index`` letterboxed at ``size`` then through ``place`` onto the canvas:
        (canvas uint8 (S, S, 3), matrix original -> canvas)."""
        w, h = int(self.widths[index]), int(self.heights[index])
        side = max(w, h)
        x0, y0 = (w - side) / 2, (h - side) / 2
        source, to_source = T.open_for_crop(
            str(self.paths[index]), (x0, y0, x0 + side, y0 + side), size
        )
        matrix = place @ letterbox_matrix(w, h, size)
        return T.warp(source, matrix @ T.invert(to_source), self.size), matrix

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.size
        rng = np.random.default_rng([self.seed, self.epoch, index])
        aug = self.augment
        if aug is not None and self.mosaic and rng.random() < self.mosaic:
            others = rng.choice(len(self), 3, replace=len(self) < 4)
            half = s // 2
            canvas = np.zeros((s, s, 3), np.uint8)
            boxes = []
            for k, i in enumerate([index, *others.tolist()]):
                place = T.translate((k % 2) * half, (k // 2) * half)
                part, matrix = self._place(int(i), half, place)
                np.maximum(canvas, part, out=canvas)
                boxes.append(map_boxes(matrix, self.boxes[i]))
            image, boxes, matrix = canvas, np.concatenate(boxes), np.eye(3)
        else:
            extra = np.eye(3)
            if aug is not None:
                extra, _ = T.augment_matrix(s, aug, rng)
            image, matrix = self._place(index, s, extra)
            boxes = map_boxes(matrix, self.boxes[index])
        if aug is not None:
            image = T.jitter_colour_uint8(image, aug, rng)
        boxes = _visible(boxes, s)[: self.max_faces]
        out = np.zeros((self.max_faces, 4), np.float32)
        out[: len(boxes)] = boxes
        return {
            "image": T.to_uint8_tensor(image),
            "boxes": torch.from_numpy(out),
            "n_boxes": torch.tensor(len(boxes), dtype=torch.int64),
            "affine": torch.from_numpy(T.invert(matrix)[:2].astype(np.float32)),
            "image_id": str(self.image_ids[index]),
        }


def _visible(boxes: np.ndarray, size: int) -> np.ndarray:
    """Boxes clipped to the canvas, without those mostly off it or too small."""
    clipped = np.clip(boxes, 0, size)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    sides = clipped[:, 2:] - clipped[:, :2]
    keep = (np.prod(np.maximum(sides, 0), axis=1) >= MIN_VISIBLE * area) & (
        sides.min(axis=1) >= MIN_SIDE
    )
    return clipped[keep]
