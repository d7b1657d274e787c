"""A synthetic group photo: several people of a catalog in one picture, and who is where.

``celebcat demo`` identifies the faces of such a photo against a gallery; the truth
returned here (each face's identity, box and landmarks in the photo) is what the
answer is checked against. The photo is composed from the catalog's own in-the-wild
images, so it works on any synthetic catalog, whatever the renderer draws:

- :func:`pick_images`: one clean image (the ``clean_images`` view) per requested
  identity, seeded (``md5(seed, image_id)``, as the selection views sample), never one
  of ``exclude`` (e.g. the gallery's images, so that a known person is recognised from
  a photo the gallery does not hold);
- :func:`compose`: each image's face cut out with its surroundings (hair, shoulders,
  background) as a square portrait in which the face box takes ``face_share`` of the
  side, the portraits laid out in rows on one canvas with a little seeded jitter in
  size and place, like the tiles of the 2 x 2 mosaics the trained detector learns
  from (:class:`catalog.detection.DetectionDataset`).

Boxes follow the catalog's ``bboxes`` convention (``x_1, y_1, x_2, y_2`` with
exclusive ends, pixels of the photo), landmarks its pixel-index convention.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from catalog import transforms as T
from catalog.db import connect
from catalog.errors import CatalogError

__all__ = [
    "GroupError",
    "GroupFace",
    "GroupPhoto",
    "Portrait",
    "compose",
    "group_photo",
    "pick_images",
]


class GroupError(CatalogError, ValueError):
    """A group photo cannot be made as asked (an identity without a usable image, ...)."""


@dataclass(frozen=True)
class Portrait:
    """One face to place: its image file, face box (``x_1, y_1, width, height``, the
    catalog's) and five landmarks (5, 2) in that image's pixels, and who it is."""

    identity: int
    image_id: str
    path: str
    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    role: str = ""


@dataclass(frozen=True)
class GroupFace:
    """A face of the photo: who (``identity``, the ``image_id`` it was cut from, the
    caller's ``role``), where (``box`` x_1, y_1, x_2, y_2 and ``landmarks`` (5, 2), in
    the photo's pixels)."""

    identity: int
    image_id: str
    role: str
    box: tuple[float, float, float, float]
    landmarks: np.ndarray = field(repr=False)


@dataclass
class GroupPhoto:
    image: Image.Image  # RGB
    faces: list[GroupFace]

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.image.save(path)
        return path


def pick_images(
    db: str | os.PathLike[str] | None,
    identities: Sequence[int],
    *,
    exclude: Collection[str] = (),
    roles: Sequence[str] | None = None,
    seed: int = 0,
) -> list[Portrait]:
    """One clean image of each identity (in order), never one of ``exclude``;
    :class:`GroupError` naming an identity that has none."""
    if roles is not None and len(roles) != len(identities):
        raise GroupError(f"{len(roles)} roles for {len(identities)} identities")
    con = connect(db, read_only=True)
    try:
        root = con.execute("SELECT value FROM catalog_info WHERE key = 'image_root'").fetchone()
        if root is None or not root[0]:
            raise GroupError(
                "The catalog has no image index (ingested without images): a "
                "group photo needs the image files."
            )
        con.execute("CREATE TEMP TABLE _group_exclude (image_id VARCHAR)")
        if exclude:
            con.executemany("INSERT INTO _group_exclude VALUES (?)", [[i] for i in exclude])
        rows = con.execute(
            "SELECT c.identity, c.image_id, i.path, c.x_1, c.y_1, c.width, c.height, "
            "l.lefteye_x, l.lefteye_y, l.righteye_x, l.righteye_y, l.nose_x, l.nose_y, "
            "l.leftmouth_x, l.leftmouth_y, l.rightmouth_x, l.rightmouth_y "
            "FROM clean_images c JOIN images i USING (image_id) "
            "JOIN landmarks l USING (image_id) "
            "WHERE list_contains(?, c.identity) AND i.error IS NULL "
            "AND c.image_id NOT IN (SELECT image_id FROM _group_exclude) "
            "QUALIFY row_number() OVER (PARTITION BY c.identity "
            "ORDER BY md5(? || ':' || c.image_id)) = 1",
            [[int(i) for i in identities], str(seed)],
        ).fetchall()
    finally:
        con.close()
    found = {r[0]: r for r in rows}
    missing = [int(i) for i in identities if int(i) not in found]
    if missing:
        raise GroupError(
            f"No clean image left (outside the {len(exclude)} excluded) for identit"
            f"{'y' if len(missing) == 1 else 'ies'} {', '.join(map(str, missing))}"
        )
    out = []
    for k, identity in enumerate(identities):
        r = found[int(identity)]
        out.append(
            Portrait(
                int(r[0]),
                str(r[1]),
                str(Path(root[0]) / r[2]),
                (float(r[3]), float(r[4]), float(r[5]), float(r[6])),
                np.asarray(r[7:17], np.float64).reshape(5, 2),
                roles[k] if roles is not None else "",
            )
        )
    return out


def compose(
    portraits: Sequence[Portrait],
    *,
    columns: int = 3,
    tile: int = 160,
    face_share: float = 0.5,
    gap: int = 8,
    jitter: float = 0.1,
    seed: int = 0,
) -> GroupPhoto:
    """The portraits in rows of ``columns`` on one canvas, each a ``tile``-pixel
    square (scaled by up to +-``jitter``, moved by up to ``gap`` pixels) in which its
    face box's longer side takes ``face_share``; the truth of every face."""
    if not portraits:
        raise GroupError("A group photo needs at least one face")
    if columns < 1 or tile < 32 or not 0 < face_share <= 1 or gap < 0 or not 0 <= jitter < 0.5:
        raise GroupError(
            f"columns {columns}, tile {tile}, face_share {face_share}, gap {gap}, "
            f"jitter {jitter}: out of range"
        )
    rng = np.random.default_rng([seed, len(portraits)])
    rows = math.ceil(len(portraits) / columns)
    step = tile + 2 * gap
    width, height = columns * step, rows * step
    # a soft vertical gradient, a studio backdrop
    top, bottom = rng.uniform(90, 200, 3), rng.uniform(30, 120, 3)
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    canvas = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (height, width, 3))
    canvas = np.ascontiguousarray(canvas.round().astype(np.uint8))
    faces = []
    for k, p in enumerate(portraits):
        row, col = divmod(k, columns)
        side = int(round(tile * (1 + rng.uniform(-jitter, jitter))))
        x0 = col * step + gap + (tile - side) // 2 + int(rng.integers(-gap, gap + 1))
        y0 = row * step + gap + (tile - side) // 2 + int(rng.integers(-gap, gap + 1))
        x0 = min(max(x0, 0), width - side)
        y0 = min(max(y0, 0), height - side)
        bx, by, bw, bh = p.box
        region = max(bw, bh) / face_share  # the square cut around the face
        cx, cy = bx + bw / 2, by + bh / 2
        region_box = (cx - region / 2, cy - region / 2, cx + region / 2, cy + region / 2)
        with Image.open(p.path) as opened:
            source, to_source = T.reduce_for_crop(opened.convert("RGB"), region_box, side)
        to_tile = T.box_to_square(region_box, side)  # image pixels -> tile pixels
        pixels = T.warp(source, to_tile @ T.invert(to_source), side)
        # outside the image: its edge colours, not black (T.warp pads with zeros)
        inside = (
            T.warp(
                np.full(np.asarray(source).shape[:2], 255, np.uint8),
                to_tile @ T.invert(to_source),
                side,
            )
            > 127
        )
        if not inside.all():
            pixels[~inside] = (
                np.median(pixels[inside], axis=0).astype(np.uint8) if inside.any() else 127
            )
        canvas[y0 : y0 + side, x0 : x0 + side] = pixels
        to_photo = T.translate(x0, y0) @ to_tile
        # box edges (exclusive ends) are half a pixel outside the pixels they bound
        corners = T.apply(to_photo, np.array([[bx, by], [bx + bw, by + bh]]) - 0.5) + 0.5
        box = tuple(float(v) for v in corners.reshape(-1))
        faces.append(
            GroupFace(
                p.identity,
                p.image_id,
                p.role,
                box,  # type: ignore[arg-type]
                T.apply(to_photo, p.landmarks),
            )
        )
    return GroupPhoto(Image.fromarray(canvas), faces)


def group_photo(
    db: str | os.PathLike[str] | None,
    identities: Sequence[int],
    *,
    roles: Sequence[str] | None = None,
    exclude: Collection[str] = (),
    seed: int = 0,
    columns: int = 3,
    tile: int = 160,
    face_share: float = 0.5,
) -> GroupPhoto:
    """:func:`pick_images` then :func:`compose`: the identities in this order, left to
    right and top to bottom."""
    portraits = pick_images(db, identities, exclude=exclude, roles=roles, seed=seed)
    return compose(portraits, columns=columns, tile=tile, face_share=face_share, seed=seed)
