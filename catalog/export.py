"""``celebcat export``: write a snapshot's images and labels into a folder, resumably.

The reference workflow copied its 25,000 selected files in 78 minutes because it
searched the whole image tree once per file (design.md §2). Here the catalog already
knows every file's path (the ``images`` table, relative to ``catalog_info.image_root``),
so an export is one query and then plain file work in a pool.

Layout of ``OUT``::

    OUT/export.json              what this folder holds: snapshot name and hash, crop, size
    OUT/<split>/<image_id>       one file per snapshot image; <split> is train / val /
                                 test / query / distractor, or ``unused`` for selected
                                 images that no split took (split NULL in the snapshot)
    OUT/labels.csv               one row per image (see :func:`export_snapshot`); written
                                 last, so its presence means every image is in place

Resuming: every file is written under a hidden temporary name in its final folder
(``.<image_id>.<random>.part``) and renamed into place with ``os.replace``, which is
atomic on one file system. A final name therefore only ever holds a complete file,
and a second run skips the files that exist (and, when copying, have the source's
size) instead of redoing them. Temporaries that a killed run left behind are removed.
This protects against an interrupted *process* (Ctrl-C, kill, an exception); files
are not fsynced, so a power cut may still lose the last files written.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalog import files, snapshots, transforms
from catalog.db import connect
from catalog.errors import CatalogError
from catalog.formats import ATTRIBUTES, BBOX_COLUMNS, LANDMARK_COLUMNS, LANDMARK_POINTS

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

ProgressFn = Callable[[int, int], None]

#: Bumped when the layout of OUT changes, so an old export is not resumed as a new one.
EXPORT_FORMAT = 1
MANIFEST = "export.json"
LABELS = "labels.csv"
UNUSED_SPLIT = "unused"
_PART_SUFFIX = ".part"

#: JPEG quality of cropped images: high enough that a landmark model sees no blocking,
#: well below the file size of quality 100.
JPEG_QUALITY = 95

#: Columns of labels.csv, in order.
LABEL_COLUMNS: tuple[str, ...] = (
    "image_id", "file", "identity", "label", "split",
    *ATTRIBUTES, *BBOX_COLUMNS, *LANDMARK_COLUMNS,
)  # fmt: skip


class ExportError(CatalogError, RuntimeError):
    """The export cannot start or a file cannot be written; the message names the file."""


@dataclass(frozen=True)
class ExportResult:
    """What an export did. ``n_written + n_skipped == n_images`` after a complete run."""

    out: Path
    snapshot: str
    hash: str
    crop: bool
    size: int | None  # output side in pixels when cropped, None when copied
    n_images: int
    n_written: int  # files written by this run
    n_skipped: int  # files already in place from an earlier (interrupted) run
    seconds: float
    labels: Path


@dataclass(frozen=True)
class _Task:
    image_id: str
    src: str
    dst: str
    box: tuple[int, int, int, int] | None  # x_1, y_1, x_2 (excl.), y_2 (excl.); crop only


def export_snapshot(
    name: str,
    out: str | os.PathLike[str],
    db: str | os.PathLike[str] | None = None,
    *,
    crop: bool = False,
    size: int = 256,
    workers: int | None = None,
    progress: ProgressFn | None = None,
) -> ExportResult:
    """Write snapshot ``name``'s images and a ``labels.csv`` into ``out``.

    Files go to ``out/<split>/<image_id>`` (``unused`` for selected images without a
    split). By default each image is copied byte for byte. With ``crop=True`` each is
    cropped to the snapshot's face box (the CelebA box shrunk by ``box_shrink`` and
    clamped to the image: ``snapshot_images.x_1 .. y_2``) and resized to ``size`` x
    ``size`` pixels. The box is stretched to the square, so **aspect ratio is not
    preserved** (CelebA boxes are near square after the 5% shrink; the reference
    workflow resized the same way for its landmark model). Cropped images keep their
    file name and format (JPEG at quality 95, RGB); large JPEGs are decoded at a
    reduced scale (Pillow's draft mode) when the box still has ``size`` pixels or more
    at that scale. EXIF orientation is ignored, like everywhere in the catalog: all
    coordinates are in stored pixels.

    ``labels.csv`` has one row per image, sorted by ``image_id``: ``image_id``,
    ``file`` (path relative to ``out``), ``identity``, ``label`` (0..C-1, empty for
    held-out identities), ``split`` (empty when unused), the 40 attributes as 0/1, the
    CelebA box ``x_1, y_1, width, height`` and the five landmarks ``lefteye_x ..
    rightmouth_y`` (empty when the catalog has no in-the-wild landmarks).
    Coordinate frames:

    - copied: pixels of the in-the-wild image, unchanged integers from the catalog;
    - cropped: pixels of the exported ``size`` x ``size`` image, as floats (2 decimals).
      With the face box ``(bx_1, by_1, bx_2, by_2)`` and scales ``sx = size / (bx_2 -
      bx_1)``, ``sy = size / (by_2 - by_1)``: box edges map as ``x' = (x - bx_1) * sx``
      (so ``width' = width * sx``), and landmarks, being pixel indices whose centres
      sit at ``x + 0.5``, map as ``x' = (x + 0.5 - bx_1) * sx - 0.5``. The CelebA box
      is larger than the shrunk face box, so its edges fall slightly outside
      ``[0, size]``; landmarks may too, for faces that leave their box.

    An interrupted export is resumed by running the same call again: files already in
    place are skipped (see the module docstring). ``out`` must be empty, missing, or
    hold an export of the same snapshot (name and hash) with the same ``crop`` and
    ``size``; anything else is refused, before any file is written.

    ``workers``: threads (default: two per CPU, at most 8, for copying, which waits on
    the disk; one per CPU for cropping, where Pillow releases the GIL while decoding,
    resizing and encoding). Threads, not processes: ``bench/export.py`` times a process
    pool on the same crops, and on 2 cores the two were within the (large) noise of a
    shared machine, while threads give per-file progress and stop at once.
    ``progress(done, total)`` is called once with the files already in place, then
    as each file is written.

    Raises:
        SnapshotError: no snapshot ``name`` (the message lists the known ones).
        ExportError: ``out`` holds something else, a source image is missing or
            unreadable (naming image_id and path), the catalog has no image index, or
            (with ``crop``) an image has no usable face box.
        catalog.db.CatalogNotFoundError: no catalog at ``db``.
    """
    start = time.perf_counter()
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive whole number of pixels, got {size!r}")
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise ValueError(f"workers must be at least 1 (or None for the default), got {workers}")
    out = Path(out)

    con = connect(db, read_only=True)
    try:
        snap_hash, image_root, rows = _read_snapshot(con, name)
    finally:
        con.close()  # the file work below needs no catalog; do not hold it open
    manifest = {
        "format": EXPORT_FORMAT,
        "snapshot": name,
        "hash": snap_hash,
        "crop": crop,
        "size": size if crop else None,
        "n_images": len(rows),
    }
    tasks, sizes = _plan(rows, image_root, out, crop)

    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder: choose another output folder")
    out.mkdir(parents=True, exist_ok=True)
    busy = partial(ExportError, f"Another export is writing into {out}; wait for it to finish.")
    with files.locked(out, busy):  # checked under the lock: a concurrent run cannot slip in
        _check_out(out, manifest)
        files.remove_temporaries(out)  # of export.json / labels.csv, from a killed run
        _write_json(out / MANIFEST, manifest)
        todo = _pending(tasks, sizes, crop)
        n_skipped = len(tasks) - len(todo)
        if progress is not None:
            progress(n_skipped, len(tasks))
        cpus = os.cpu_count() or 1
        n_workers = workers or (cpus if crop else min(8, 2 * cpus))
        _run(todo, crop, size, n_workers, n_skipped, len(tasks), progress)
        labels = out / LABELS
        _write_labels(labels, _labels_frame(rows, crop, size))
    return ExportResult(
        out=out,
        snapshot=name,
        hash=snap_hash,
        crop=crop,
        size=size if crop else None,
        n_images=len(tasks),
        n_written=len(todo),
        n_skipped=n_skipped,
        seconds=time.perf_counter() - start,
        labels=labels,
    )


# --- reading the catalog -------------------------------------------------------------


def _read_snapshot(
    con: duckdb.DuckDBPyConnection, name: str
) -> tuple[str, Path, pd.DataFrame]:
    """The snapshot's hash, the image root, and one row per image with its annotations."""
    snap_hash = snapshots.get(con, name).hash  # unknown name: SnapshotError naming the known

    info = dict(con.execute("SELECT key, value FROM catalog_info").fetchall())
    if not info.get("image_root"):
        raise ExportError(
            "The catalog has no image index, so there is nothing to export. "
            "Ingest the data folder with its images (`celebcat ingest DIR`)."
        )
    image_root = Path(info["image_root"])

    attrs = ", ".join(f'a."{a}"::INTEGER AS "{a}"' for a in ATTRIBUTES)
    boxes = ", ".join(f"b.{c}" for c in BBOX_COLUMNS)
    marks = ", ".join(f"l.{c}" for c in LANDMARK_COLUMNS)
    rows = con.execute(
        "SELECT s.image_id, s.identity, s.label, s.split, "
        "s.x_1 AS face_x_1, s.y_1 AS face_y_1, s.x_2 AS face_x_2, s.y_2 AS face_y_2, "
        "i.path, i.error, "
        f"{attrs}, {boxes}, {marks} "
        "FROM snapshot_images AS s "
        "LEFT JOIN images AS i USING (image_id) "
        "LEFT JOIN attributes AS a USING (image_id) "
        "LEFT JOIN bboxes AS b USING (image_id) "
        "LEFT JOIN landmarks AS l USING (image_id) "
        "WHERE s.snapshot = ? ORDER BY s.image_id",
        [name],
    ).df()
    return snap_hash, image_root, rows


def _plan(
    rows: pd.DataFrame, image_root: Path, out: Path, crop: bool
) -> tuple[list[_Task], list[int]]:
    """One task per image, and each source's size; refuses missing or uncroppable images.

    Every source is checked before anything is written: an export is only useful
    complete, and a list of what is missing beats failing after an hour.
    """
    missing: list[str] = []
    no_path = rows.loc[rows["path"].isna(), "image_id"].tolist()
    if no_path:
        raise ExportError(
            f"{len(no_path)} snapshot images are not in the catalog's image index "
            f"(first: {', '.join(no_path[:5])}). Re-ingest with the images folder that "
            "holds them, or create the snapshot again."
        )
    if crop:
        bad = rows.loc[
            rows["face_x_1"].isna()
            | (rows["face_x_2"] <= rows["face_x_1"])
            | (rows["face_y_2"] <= rows["face_y_1"]),
            "image_id",
        ].tolist()
        if bad:
            raise ExportError(
                f"{len(bad)} images have no usable face box to crop (first: "
                f"{', '.join(bad[:5])}); see `celebcat check`, or export without --crop."
            )
        unreadable = rows.loc[rows["error"].notna(), ["image_id", "path", "error"]]
        if len(unreadable):
            first = unreadable.iloc[0]
            raise ExportError(
                f"{len(unreadable)} images could not be read at ingest, e.g. "
                f"{first['image_id']} ({image_root / first['path']}): {first['error']}. "
                "Replace them and re-ingest, or export without --crop."
            )
    tasks: list[_Task] = []
    sizes: list[int] = []
    splits = rows["split"].fillna(UNUSED_SPLIT).tolist()
    boxes = rows[["face_x_1", "face_y_1", "face_x_2", "face_y_2"]].to_numpy()
    for image_id, rel, split, box in zip(
        rows["image_id"].tolist(), rows["path"].tolist(), splits, boxes, strict=True
    ):
        src = image_root / rel
        try:
            sizes.append(os.stat(src).st_size)
        except FileNotFoundError:
            missing.append(f"{image_id} ({src})")
            continue
        tasks.append(
            _Task(
                image_id=image_id,
                src=str(src),
                dst=str(out / split / image_id),
                box=tuple(int(v) for v in box) if crop else None,  # type: ignore[arg-type]
            )
        )
    if missing:
        raise ExportError(
            f"{len(missing)} source images are missing: {'; '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}. Restore them, or re-ingest and create "
            "the snapshot again."
        )
    return tasks, sizes


# --- the output folder ---------------------------------------------------------------


def _check_out(out: Path, manifest: dict[str, Any]) -> None:
    """Refuse ``out`` unless it is empty or holds an export of the same snapshot and settings."""
    manifest_path = out / MANIFEST
    if not manifest_path.exists():
        if any(out.iterdir()):
            raise ExportError(
                f"{out} is not empty and holds no {MANIFEST}, so it is not an export to "
                "resume. Choose an empty or new folder."
            )
        return
    try:
        old = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExportError(f"{manifest_path} cannot be read ({e}); choose another folder") from e
    keys = ("format", "snapshot", "hash", "crop", "size")
    if any(old.get(k) != manifest[k] for k in keys):
        raise ExportError(
            f"{out} holds an export of {_describe(old)}, not of {_describe(manifest)}. "
            "Choose another folder, or delete this one to start over."
        )


def _describe(m: dict[str, Any]) -> str:
    how = f"cropped to {m.get('size')}x{m.get('size')}" if m.get("crop") else "copied"
    return f"snapshot {m.get('snapshot')!r} (hash {str(m.get('hash'))[:12]}, {how})"


def _pending(tasks: list[_Task], sizes: list[int], crop: bool) -> list[_Task]:
    """The tasks whose final file is not in place; removes temporaries of killed runs.

    Each output folder is listed once (not one stat per image). A copied file counts as
    done only with the source's size, a cheap guard against a source replaced since.
    """
    present: dict[str, int] = {}
    for folder in sorted({os.path.dirname(t.dst) for t in tasks}):
        os.makedirs(folder, exist_ok=True)
        files.remove_temporaries(folder)
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file():
                    present[entry.path] = entry.stat().st_size
    todo = []
    for task, src_size in zip(tasks, sizes, strict=True):
        have = present.get(task.dst)
        if have is None or (not crop and have != src_size):
            todo.append(task)
    return todo


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = files.temp_name(str(path))
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


# --- the file work -------------------------------------------------------------------


def _copy_one(task: _Task) -> None:
    tmp = files.temp_name(task.dst)
    try:
        shutil.copyfile(task.src, tmp)  # sendfile on Linux: no bytes pass through Python
        os.replace(tmp, task.dst)
    except BaseException as e:
        files.discard(tmp)
        if isinstance(e, OSError):
            raise ExportError(f"image {task.image_id}: copying {task.src}: {e}") from e
        raise


def _crop_one(task: _Task, size: int) -> None:
    """Crop ``task.box`` (in-the-wild pixels) out of the source and resize it to size x size."""
    from PIL import Image

    assert task.box is not None
    tmp = files.temp_name(task.dst)
    try:
        # The same crop the Datasets make (catalog.transforms): reduced decoding where
        # the box allows, then one resampling of the box onto size x size.
        image, decoded = transforms.open_for_crop(task.src, task.box, size)
        matrix = transforms.box_to_square(task.box, size) @ transforms.invert(decoded)
        face = Image.fromarray(transforms.warp(image, matrix, size))
        fmt = Image.registered_extensions().get(Path(task.dst).suffix.lower(), "JPEG")
        options = {"quality": JPEG_QUALITY} if fmt == "JPEG" else {}
        face.save(tmp, format=fmt, **options)
        os.replace(tmp, task.dst)
    except BaseException as e:
        files.discard(tmp)
        if isinstance(e, (OSError, ValueError, SyntaxError)):  # PIL's errors for bad files
            raise ExportError(f"image {task.image_id}: cropping {task.src}: {e}") from e
        raise


def _run(
    todo: list[_Task],
    crop: bool,
    size: int,
    workers: int,
    done: int,
    total: int,
    progress: ProgressFn | None,
) -> None:
    """Write the files with ``workers`` threads; call ``progress`` here, once per file."""
    count = [done]

    def one(task: _Task) -> None:
        _crop_one(task, size) if crop else _copy_one(task)

    def tick() -> None:
        count[0] += 1
        if progress is not None:
            progress(count[0], total)

    files.run_threads(todo, one, workers, tick, name="export")


# --- labels.csv ----------------------------------------------------------------------


def _labels_frame(rows: pd.DataFrame, crop: bool, size: int) -> pd.DataFrame:
    """labels.csv's rows: coordinates transformed into the exported frame when cropped."""
    labels = rows.copy()
    labels["file"] = labels["split"].fillna(UNUSED_SPLIT) + "/" + labels["image_id"]
    for col in ("identity", "label", *ATTRIBUTES, *BBOX_COLUMNS, *LANDMARK_COLUMNS):
        labels[col] = labels[col].astype("Int64")  # NULL stays an empty cell, not 1.0/nan
    if crop:
        fx1 = labels["face_x_1"].astype(float)
        fy1 = labels["face_y_1"].astype(float)
        sx = size / (labels["face_x_2"].astype(float) - fx1)
        sy = size / (labels["face_y_2"].astype(float) - fy1)
        # Box edges are continuous coordinates: they scale about the face box corner.
        labels["x_1"] = ((labels["x_1"] - fx1) * sx).round(2)
        labels["y_1"] = ((labels["y_1"] - fy1) * sy).round(2)
        labels["width"] = (labels["width"] * sx).round(2)
        labels["height"] = (labels["height"] * sy).round(2)
        # Landmarks are pixel indices: map the pixel's centre (+0.5), then back to an
        # index (-0.5): transforms.box_to_square, written out per column for speed.
        for point in LANDMARK_POINTS:
            x, y = f"{point}_x", f"{point}_y"
            labels[x] = ((labels[x] + 0.5 - fx1) * sx - 0.5).round(2)
            labels[y] = ((labels[y] + 0.5 - fy1) * sy - 0.5).round(2)
    return labels[list(LABEL_COLUMNS)]


def _write_labels(path: Path, labels: pd.DataFrame) -> None:
    tmp = files.temp_name(str(path))
    try:
        labels.to_csv(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        files.discard(tmp)
        raise


__all__ = ["LABEL_COLUMNS", "ExportError", "ExportResult", "export_snapshot"]
