"""Contact sheets: one identity's images side by side, for a person to judge by eye.

A recogniser should see the same face under different hair, light, pose and
expression; a sheet of one identity's photos shows whether the generator does that.
The images are drawn from the population (the same pixels as the JPEGs, before
encoding), each cut around its face box with room for the hair, and, where the
identity has look-alikes in the hard style, a last row shows one photo of each.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from catalog.synth.faces import render_face
from catalog.synth.population import Population

#: How much of the image around the face box a cell shows (box side times this).
_CONTEXT = 1.7
_LABEL_H = 14


def _cell(pop: Population, i: int, size: int) -> Image.Image:
    face = render_face(*pop.face(i), layout=pop.layout.row(i))
    x, y, w, h = face.bbox
    side = _CONTEXT * max(w, h)
    cx, cy = x + w / 2.0, y + h / 2.0
    box = tuple(round(v) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
    # Outside the image the crop is black, as a cropping tool would show it.
    return face.image.crop(box).resize((size, size), Image.Resampling.BILINEAR)


def default_identity(pop: Population) -> int:
    """The identity with the most images, preferring one with look-alikes."""
    counts = pop.counts.astype(np.float64)
    if pop.family is not None:
        relatives = np.bincount(pop.family)[pop.family] > 1
        counts = counts + 0.5 * relatives
    return int(np.argmax(counts))


def contact_sheet(
    pop: Population,
    identity: int | None = None,
    cell: int = 144,
    columns: int = 6,
    max_images: int = 24,
) -> Image.Image:
    """A grid of up to ``max_images`` images of ``identity`` (0-based; default:
    :func:`default_identity`), ``cell`` pixels each, then a row of its look-alikes."""
    if identity is None:
        identity = default_identity(pop)
    if not 0 <= identity < pop.ids:
        raise ValueError(f"identity must be in 0..{pop.ids - 1}, got {identity}")
    own = np.flatnonzero(pop.identity == identity)[:max_images]
    rows: list[tuple[str, list[tuple[str, int]]]] = []
    for start in range(0, len(own), columns):
        part = own[start : start + columns]
        rows.append(("", [(f"{i + 1:06d}.jpg", int(i)) for i in part]))
    title = (
        f"identity {identity + 1}: {len(own)} of its {pop.counts[identity]} images "
        f"(style {pop.style})"
    )
    if pop.family is not None:
        kin = np.flatnonzero(pop.family == pop.family[identity])
        kin = kin[kin != identity][:columns]
        if len(kin):
            first = [int(np.flatnonzero(pop.identity == k)[0]) for k in kin]
            cells = [(f"look-alike {k + 1}", i) for k, i in zip(kin, first, strict=True)]
            rows.append(("look-alikes (other identities of its family):", cells))
    width = columns * cell
    heights = [_LABEL_H + (_LABEL_H if head else 0) + cell for head, _ in rows]
    sheet = Image.new("RGB", (width, _LABEL_H + 4 + sum(heights)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 2), title, fill=(0, 0, 0))
    y = _LABEL_H + 4
    for head, cells in rows:
        if head:
            draw.text((4, y + 1), head, fill=(0, 0, 0))
            y += _LABEL_H
        for col, (label, i) in enumerate(cells):
            sheet.paste(_cell(pop, i, cell), (col * cell, y))
            draw.text((col * cell + 3, y + cell + 1), label, fill=(60, 60, 60))
        y += cell + _LABEL_H
    return sheet


def write_contact_sheet(
    path: str | os.PathLike[str], pop: Population, identity: int | None = None, **kwargs: int
) -> Path:
    """Save :func:`contact_sheet` as ``path`` (PNG; folders are created). Returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(pop, identity, **kwargs).save(path, "PNG")
    return path
