"""A snapshot as one COCO keypoints JSON, for detection and keypoint tools.

``export_coco(db, NAME, OUT.json)`` writes the frozen selection (all of it, or one
split's images) in the layout ``pycocotools.coco.COCO`` loads, one face an image::

    info         description, version (the hash's first 16 digits), year, contributor,
                 date_created (UTC), snapshot, snapshot_hash, snapshot_created_at,
                 split, code_version, image_root, image_id_scheme
    licenses     one entry: CelebA's terms (non-commercial research purposes only)
    images       id, file_name, width, height, license
                 + celeba_image_id, identity, split, label
    annotations  id, image_id, category_id 1, bbox, area, iscrowd 0,
                 keypoints, num_keypoints + identity, split, label, celeba_bbox
    categories   [{id 1, name "face", keypoints (5 names), skeleton}]

COCO tools ignore the keys they do not know (the ``+`` ones), so a selection keeps its
identities, splits and labels in the one file a detector or keypoint trainer reads.
``split`` is train / val / test / query / distractor, or ``unused`` (selected, in no
split); ``label`` the snapshot's class (null for held-out identities).

Ids. A COCO image id is CelebA's number (``000042.jpg`` -> 42) when every image of the
snapshot is named ``<digits>.<extension>`` with distinct numbers (``image_id_scheme``
``celeba_number``): the same image has the same id in every snapshot and split.
Otherwise it is the image's 1-based position in the whole snapshot's ``image_id``
order (``snapshot_position``), the same in every split's file of the snapshot. The
annotation id is the image id (one face an image).

Files. ``file_name`` is the image's path relative to the catalog's in-the-wild image
root (where ``celebcat ingest`` found the images; ``info.image_root``), or, with
``relative_to``, relative to that folder (``..`` where an image is outside it). Width
and height are the file's, from the image index. A catalog ingested without images
has none to name: the export is refused, as everything that reads image files is.

Geometry (pixels of the in-the-wild image).

- The catalog's points are *pixel-index* coordinates (``catalog/transforms.py``: the
  centre of pixel (i, j) is the point (i, j)). COCO keypoints are pixel indices too:
  integers in [0, W-1] x [0, H-1] in COCO's own files, which is why detectron2 adds 0.5
  when it reads COCO keypoints and subtracts it when it writes them
  (``detectron2/data/datasets/coco.py``). So the points are written as they are.
- COCO's ``bbox`` is ``[x, y, width, height]`` in continuous coordinates: (0, 0) is the
  top-left corner of the top-left pixel, pixel i spans [i, i + 1). The snapshot's
  face box ``x_1, y_1, x_2, y_2`` (the ``face_boxes`` view: CelebA's box shrunk by
  ``box_shrink``, clamped to the image; exclusive ends) covers pixels ``x_1 .. x_2 - 1``,
  i.e. [x_1, x_2) continuously: ``bbox = [x_1, y_1, x_2 - x_1, y_2 - y_1]``, exactly,
  no half-pixel shift; ``area = w * h``. ``celeba_bbox`` is CelebA's own
  ``x_1, y_1, width, height`` (the ``bboxes`` table, null where absent), which reads the
  same way.

Keypoints. ``left_eye, right_eye, nose, left_mouth, right_mouth`` are CelebA's
``lefteye ... rightmouth`` in CelebA's order, where "left" is the *viewer's* left
(the subject's right eye comes first), as in CelebA and the 5-point face sets of
RetinaFace / InsightFace. COCO's *person* keypoints mean the subject's left: a tool
that maps these names onto those must swap left and right (the flip pairs are
(1, 2) and (4, 5) either way). The category says so in ``left_means``. Each point is
``x, y, 2`` (labelled, visible); an image without landmarks gets ``0, 0, 0`` five
times and ``num_keypoints`` 0, COCO's "not labelled". As in the Parquet export, the
points and ``celeba_bbox`` are the catalog's current ``landmarks`` and ``bboxes`` (a
snapshot freezes its images, splits and face boxes, not the annotation tables).

The file is written under a temporary name in the destination folder and renamed
onto ``OUT`` when complete: ``OUT`` is whole or absent (``catalog/files.py``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from catalog import files, snapshots
from catalog.db import DbArg, connect, has_table
from catalog.errors import CatalogError

if TYPE_CHECKING:
    import duckdb

#: The COCO names of CelebA's five points, in CelebA's order ("left": the viewer's).
KEYPOINT_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
#: Eyes, eyes to the nose, nose to the mouth corners, the mouth (1-based, as COCO's).
SKELETON: tuple[tuple[int, int], ...] = ((1, 2), (1, 3), (2, 3), (3, 4), (3, 5), (4, 5))
#: The one category.
CATEGORY: dict[str, Any] = {
    "id": 1,
    "name": "face",
    "supercategory": "face",
    "keypoints": list(KEYPOINT_NAMES),
    "skeleton": [list(pair) for pair in SKELETON],
    "left_means": "the viewer's left, as CelebA's lefteye (COCO's person keypoints: the "
    "subject's left)",
}
#: CelebA's terms, as its site states them.
LICENSE: dict[str, Any] = {
    "id": 1,
    "name": "CelebA Dataset Agreement: non-commercial research purposes only",
    "url": "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
}

_CELEBA_NAME = re.compile(r"(\d+)\.[A-Za-z0-9]+")


class CocoExportError(CatalogError, ValueError):
    """A COCO export asked for the wrong way (not a ``.json`` name), or a snapshot whose
    images cannot be described (no file, no size); or writing it failed."""


@dataclass(frozen=True)
class CocoExport:
    path: Path
    snapshot: str
    snapshot_hash: str
    split: str  # "all" or the split written
    n_images: int
    n_annotations: int


def _image_numbers(image_ids: np.ndarray) -> tuple[list[int], str]:
    """The COCO image ids of a whole snapshot's images (in image_id order), and how."""
    numbers: list[int] = []
    for image_id in image_ids:
        match = _CELEBA_NAME.fullmatch(str(image_id))
        if match is None:
            break
        numbers.append(int(match.group(1)))
    whole = len(numbers) == len(image_ids) > 0 and len(set(numbers)) == len(numbers)
    if whole and min(numbers) > 0:
        return numbers, "celeba_number"
    return list(range(1, len(image_ids) + 1)), "snapshot_position"


def _celeba_boxes(con: duckdb.DuckDBPyConnection, snapshot: str) -> dict[str, list[float]]:
    """CelebA's own boxes (``x_1, y_1, width, height``) of the snapshot's images."""
    if not has_table(con, "bboxes"):
        return {}
    rows = con.execute(
        "SELECT s.image_id, b.x_1, b.y_1, b.width, b.height FROM snapshot_images AS s "
        "JOIN bboxes AS b USING (image_id) WHERE s.snapshot = ?",
        [snapshot],
    ).fetchall()
    return {r[0]: [float(v) for v in r[1:]] for r in rows}


def _now() -> str:
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")


def export_coco(
    con_or_db: duckdb.DuckDBPyConnection | DbArg,
    snapshot: str,
    out: str | os.PathLike[str],
    *,
    split: str | None = None,
    relative_to: str | os.PathLike[str] | None = None,
) -> CocoExport:
    """Write ``snapshot`` (``split``: one split's images; None or ``"all"``: every one,
    ``"unused"``: the selected images no split took) to the COCO keypoints JSON ``out``,
    replacing it (see the module docstring for the layout and conventions).

    ``con_or_db``: an open connection (used and left open) or a catalog path (None: the
    default catalog), opened read-only and closed before this returns.
    ``relative_to``: the folder ``file_name`` is relative to (default: the catalog's
    image root).

    Raises CocoExportError for an ``out`` not named ``.json`` (or a folder), an image
    without a file or size, or a failed write; SnapshotError for an unknown snapshot or
    split (naming the known ones), SnapshotImageError for a catalog without images.
    """
    from catalog import results

    out = Path(out)
    if out.suffix.lower() != ".json":
        raise CocoExportError(
            f"{out}: a COCO export is one JSON file; name it with .json (e.g. "
            f"{out.with_suffix('.json').name})."
        )
    if out.is_dir():
        raise CocoExportError(f"{out} is a folder; name the .json file to write.")
    own = con_or_db is None or isinstance(con_or_db, str | os.PathLike)
    con = connect(con_or_db, read_only=True) if own else con_or_db  # type: ignore[arg-type]
    try:
        snap = snapshots.get(con, snapshot)  # SnapshotError naming the known ones
        # The whole snapshot numbers the images (the same id in every split's file);
        # a second read with the split checks it (SnapshotError naming the splits).
        every = snapshots.read_images(con, snapshot, landmarks=True, files=False)
        numbers, scheme = _image_numbers(every.image_id)
        number = dict(zip(every.image_id.tolist(), numbers, strict=True))
        split = snapshots.ALL if split is None else split
        rows = (
            every
            if split == snapshots.ALL
            else snapshots.read_images(con, snapshot, split, landmarks=True, files=False)
        )
        celeba_boxes = _celeba_boxes(con, snapshot)
    finally:
        if own:
            con.close()

    lacking = [
        str(i)
        for i, p, w, h in zip(rows.image_id, rows.path, rows.width, rows.height, strict=True)
        if not p or w < 1 or h < 1
    ]
    if lacking:
        raise CocoExportError(
            f"{len(lacking)} images of snapshot {snapshot!r} have no file or size in the "
            f"image index (first: {', '.join(lacking[:5])}); COCO names each image's file. "
            "Ingest the data folder with its images (`celebcat ingest DIR`) and create a "
            "new snapshot."
        )
    root = rows.image_root if relative_to is None else os.path.abspath(relative_to)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    assert rows.landmarks is not None  # read with landmarks=True
    for k, image_id in enumerate(rows.image_id.tolist()):
        coco_id = number[image_id]
        file_name = Path(os.path.relpath(rows.path[k], root)).as_posix()
        label = int(rows.label[k])
        extra = {
            "identity": int(rows.identity[k]),
            "split": str(rows.split[k]),
            "label": label if label >= 0 else None,
        }
        images.append(
            {
                "id": coco_id,
                "file_name": file_name,
                "width": int(rows.width[k]),
                "height": int(rows.height[k]),
                "license": LICENSE["id"],
                "celeba_image_id": image_id,
                **extra,
            }
        )
        # Exclusive ends in pixel-index coordinates are COCO's continuous [x_1, x_2).
        x_1, y_1, x_2, y_2 = (float(v) for v in rows.box[k])
        w, h = x_2 - x_1, y_2 - y_1
        points = rows.landmarks[k]
        labelled = bool(np.isfinite(points).all())
        # COCO keypoints are pixel indices, as the catalog's: no shift (module docstring).
        keypoints = (
            [v for x, y in points.tolist() for v in (float(x), float(y), 2)]
            if labelled
            else [0] * (3 * len(KEYPOINT_NAMES))
        )
        annotations.append(
            {
                "id": coco_id,
                "image_id": coco_id,
                "category_id": CATEGORY["id"],
                "bbox": [x_1, y_1, w, h],
                "area": w * h,
                "iscrowd": 0,
                "keypoints": keypoints,
                "num_keypoints": len(KEYPOINT_NAMES) if labelled else 0,
                **extra,
                "celeba_bbox": celeba_boxes.get(image_id),
            }
        )
    created = _now()
    document = {
        "info": {
            "description": f"celeba-catalog snapshot {snap.name}"
            + ("" if split == snapshots.ALL else f", split {split}"),
            "version": snap.hash[:16],
            "year": int(created[:4]),
            "contributor": "celeba-catalog",
            "date_created": created,
            "snapshot": snap.name,
            "snapshot_hash": snap.hash,
            "snapshot_created_at": str(snap.created_at),
            "split": split,
            "code_version": results.code_version(),
            "image_root": Path(root).as_posix(),
            "image_id_scheme": scheme,
        },
        "licenses": [LICENSE],
        "images": images,
        "annotations": annotations,
        "categories": [CATEGORY],
    }
    _write_json(document, out)
    return CocoExport(out, snap.name, snap.hash, split, len(images), len(annotations))


def _write_json(document: dict[str, Any], out: Path) -> None:
    """``document`` as ``out``, whole or not at all; a write error says what to do."""
    temp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        temp = files.temp_name(out)
        with open(temp, "w", encoding="utf-8") as f:
            json.dump(document, f, allow_nan=False, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, out)
    except BaseException as e:
        if temp is not None:
            files.discard(temp)
        if isinstance(e, OSError):
            raise CocoExportError(f"COCO export: {files.write_problem(e, out.parent)}.") from e
        raise


__all__ = ["CATEGORY", "KEYPOINT_NAMES", "SKELETON", "CocoExport", "CocoExportError", "export_coco"]
