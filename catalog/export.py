"""``celebcat export``: write a snapshot's images and labels into a folder, resumably.

The reference workflow copied its 25,000 selected files in 78 minutes because it
searched the whole image tree once per file (docs/reference-workflow.md, step 1). Here
the catalog already knows every file's path (the ``images`` table, relative to
``catalog_info.image_root``), so an export is one query and then plain file work in a
pool.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from catalog import files, snapshots, transforms
from catalog.db import connect
from catalog.errors import CatalogError
from catalog.formats import ATTRIBUTES, BBOX_COLUMNS, LANDMARK_COLUMNS, LANDMARK_POINTS
from catalog.snapshots import BadImage

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

#: What labels.csv's coordinates are, written into export.json ("coordinates").
COORDINATES = {
    False: "pixels of the in-the-wild image, as the catalog has them",
    True: (
        "pixels of the exported SIZE x SIZE crop of the snapshot's face box (CelebA's box "
        "shrunk by box_shrink, clamped to the image). CelebA's own box (x_1, y_1, width, "
        "height) is larger than that face box, so x_1 and y_1 are usually negative and "
        "x_1 + width, y_1 + height past SIZE: the box reaches beyond the crop. Landmarks "
        "outside [0, SIZE) belong to faces that leave their box."
    ),
}

#: Columns of labels.csv, in order.
LABEL_COLUMNS: tuple[str, ...] = (
    "image_id",
    "file",
    "identity",
    "label",
    "split",
    *ATTRIBUTES,
    *BBOX_COLUMNS,
    *LANDMARK_COLUMNS,
)


class ExportError(CatalogError, RuntimeError):
    """The export cannot start or a file cannot be written; the message names the file."""


class _ImageError(snapshots.SnapshotImageError, ExportError):
    """Images of the snapshot cannot be read: an ExportError and a SnapshotImageError."""


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
    #: Images of the snapshot left out (``skip_bad``): which and why; also in export.json.
    skipped: tuple[BadImage, ...] = ()
    #: Rows of labels.csv with a coordinate outside the exported crop (``crop`` only):
    #: CelebA's box is larger than the face box the crop is cut to (see COORDINATES).
    outside: int = 0


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
    skip_bad: bool = False,
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

    Every image is checked before anything is written
    (:func:`catalog.snapshots.read_images`): an image the catalog's checks marked
    unusable (unreadable, truncated, ...) is never copied, a link out of the image
    root is never followed, and a file missing on disk is named. ``skip_bad``: export
    without those images, and without any that fails to decode when cropped, instead
    of refusing; ``export.json`` (``skipped``) and ``ExportResult.skipped`` say which
    and why, and labels.csv has no row for them.

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
        ExportError: ``out`` holds something else, the catalog has no image index,
            (with ``crop``) an image has no usable face box, or (without ``skip_bad``)
            a source image cannot be read (naming image_id, path and why; also a
            :class:`~catalog.snapshots.SnapshotImageError`).
        catalog.db.CatalogNotFoundError: no catalog at ``db``.
    """
    start = time.perf_counter()
    files.check_size(size)
    files.check_workers(workers)
    out = Path(out)

    con = connect(db, read_only=True)
    try:
        images = snapshots.read_images(con, name, boxes=crop, skip_bad=skip_bad, error=_ImageError)
        rows = _labels_rows(con, images)
    finally:
        con.close()  # the file work below needs no catalog; do not hold it open
    if not len(images):
        raise _ImageError(
            f"None of the images of snapshot {name!r} can be read: nothing to export.",
            images.skipped,
        )
    skipped = list(images.skipped)
    manifest = {
        "format": EXPORT_FORMAT,
        "snapshot": name,
        "hash": images.hash,
        "crop": crop,
        "size": size if crop else None,
        "n_images": len(images),
        "skipped": [b.as_dict() for b in skipped],
        "coordinates": COORDINATES[crop].replace("SIZE", str(size)),
    }
    tasks, sizes = _plan(images, out, crop)

    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder: choose another output folder")
    with _writing(out):
        out.mkdir(parents=True, exist_ok=True)
    busy = partial(ExportError, f"Another export is writing into {out}; wait for it to finish.")
    # checked under the lock: a concurrent run cannot slip in
    with files.locked(out, busy), _writing(out):
        _check_out(out, manifest)
        files.remove_temporaries(out)  # of export.json / labels.csv, from a killed run
        _write_json(out / MANIFEST, manifest)
        todo = _pending(tasks, sizes, crop)
        n_skipped = len(tasks) - len(todo)
        if progress is not None:
            progress(n_skipped, len(tasks))
        cpus = os.cpu_count() or 1
        n_workers = workers or (cpus if crop else min(8, 2 * cpus))
        failed: list[BadImage] = []
        _run(
            todo,
            crop,
            size,
            n_workers,
            n_skipped,
            len(tasks),
            progress,
            failed if skip_bad else None,
        )
        if failed:
            skipped = sorted([*skipped, *failed], key=lambda b: b.image_id)
            manifest["skipped"] = [b.as_dict() for b in skipped]
            manifest["n_images"] = len(tasks) - len(failed)
            _write_json(out / MANIFEST, manifest)
        _remove_outputs(out, [b.image_id for b in skipped])  # of an earlier, complete run
        gone = {b.image_id for b in failed}
        labels = out / LABELS
        frame = _labels_frame(rows[~rows["image_id"].isin(gone)], crop, size)
        _write_labels(labels, frame)
    return ExportResult(
        out=out,
        snapshot=name,
        hash=images.hash,
        crop=crop,
        size=size if crop else None,
        n_images=len(tasks) - len(failed),
        n_written=len(todo) - len(failed),
        n_skipped=n_skipped,
        seconds=time.perf_counter() - start,
        labels=labels,
        skipped=tuple(skipped),
        outside=_outside(frame, size) if crop else 0,
    )


def _outside(labels: pd.DataFrame, size: int) -> int:
    """Rows with a box edge or landmark outside the ``size`` x ``size`` crop."""

    def column(name: str) -> np.ndarray:
        return labels[name].to_numpy(dtype=float, na_value=np.nan)

    edges = [column("x_1"), column("y_1")]
    edges += [edges[0] + column("width"), edges[1] + column("height")]
    edges += [column(f"{p}_{axis}") for p in LANDMARK_POINTS for axis in "xy"]
    values = np.stack(edges, axis=1)
    with np.errstate(invalid="ignore"):
        return int(((values < 0) | (values > size)).any(axis=1).sum())


def _labels_rows(con: duckdb.DuckDBPyConnection, images: snapshots.SnapshotImages) -> pd.DataFrame:
    """One row per image to export, by image_id: the snapshot's identity, label, split
    and face box (from ``images``), and the image's annotations for labels.csv."""
    import pandas as pd

    attrs = ", ".join(f'a."{a}"::INTEGER AS "{a}"' for a in ATTRIBUTES)
    boxes = ", ".join(f"b.{c}" for c in BBOX_COLUMNS)
    marks = ", ".join(f"l.{c}" for c in LANDMARK_COLUMNS)
    notes = con.execute(
        f"SELECT s.image_id, {attrs}, {boxes}, {marks} FROM snapshot_images AS s "
        "LEFT JOIN attributes AS a USING (image_id) "
        "LEFT JOIN bboxes AS b USING (image_id) "
        "LEFT JOIN landmarks AS l USING (image_id) "
        "WHERE s.snapshot = ? ORDER BY s.image_id",
        [images.snapshot],
    ).df()
    face = images.box
    frame = pd.DataFrame(
        {
            "image_id": images.image_id.astype(object),
            "identity": images.identity,
            "label": pd.array(np.where(images.label >= 0, images.label, 0), dtype="Int64"),
            "split": pd.Series(images.split, dtype=object),
            **{f"face_{c}": face[:, k] for k, c in enumerate(("x_1", "y_1", "x_2", "y_2"))},
            "src": images.path.astype(object),
        }
    )
    frame.loc[images.label < 0, "label"] = pd.NA
    frame.loc[frame["split"] == UNUSED_SPLIT, "split"] = None
    return frame.merge(notes, on="image_id", how="left", validate="one_to_one")


def _plan(images: snapshots.SnapshotImages, out: Path, crop: bool) -> tuple[list[_Task], list[int]]:
    """One task per image, and each source's size (one stat each, for resuming)."""
    tasks: list[_Task] = []
    sizes: list[int] = []
    missing: list[str] = []
    for image_id, src, split, box in zip(
        images.image_id.tolist(),
        images.path.tolist(),
        images.split.tolist(),
        images.box,
        strict=True,
    ):
        try:
            sizes.append(os.stat(src).st_size)
        except FileNotFoundError:  # removed since read_images looked
            missing.append(f"{image_id} ({src})")
            continue
        tasks.append(
            _Task(
                image_id=image_id,
                src=src,
                dst=str(out / split / image_id),
                box=tuple(int(v) for v in box) if crop else None,  # type: ignore[arg-type]
            )
        )
    if missing:
        raise ExportError(
            f"{len(missing)} source images went missing while the export started: "
            f"{'; '.join(missing[:5])}. Restore them, or go on without them (--skip-bad)."
        )
    return tasks, sizes


def _remove_outputs(out: Path, image_ids: list[str]) -> None:
    """Delete what an earlier run exported for images this one leaves out."""
    if not image_ids:
        return
    for folder in (p for p in out.iterdir() if p.is_dir()):
        for image_id in image_ids:
            files.discard(folder / image_id)


# --- the output folder ---------------------------------------------------------------


def _check_out(out: Path, manifest: dict[str, Any]) -> None:
    """Refuse ``out`` unless it is empty or holds an export of the same snapshot and settings.

    A temporary (``.<name>.<random>.part``) does not count: a run that failed writing
    its first file (a full disk) or was killed leaves one, and its retry must go on.
    """
    manifest_path = out / MANIFEST
    if not manifest_path.exists():
        if any(not files.is_temporary(p.name) for p in out.iterdir()):
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
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        files.discard(tmp)
        raise


@contextmanager
def _writing(out: Path) -> Iterator[None]:
    """Turn an OSError of writing into ``out`` (full disk, read-only, no permission) into
    an ExportError that says so; a retry once the cause is fixed resumes the export."""
    try:
        yield
    except OSError as e:
        raise ExportError(
            f"Export: {files.write_problem(e, out)} (files already written are kept and skipped)."
        ) from e


# --- the file work -------------------------------------------------------------------


def _copy_one(task: _Task) -> None:
    """Copy the source as it is, once its header says it is an image: one that is empty,
    not an image, cut short (no end marker) or larger than Pillow decodes is the
    source's fault (skipped with ``skip_bad``), not copied on as if it were a face."""
    from PIL import Image

    from catalog.imagesize import read_headers

    (_, width, height, problem), *_ = read_headers([task.src])
    if problem is None and width and height and width * height > 2 * Image.MAX_IMAGE_PIXELS:
        problem = f"{width} x {height} pixels, more than Pillow decodes (a decompression bomb?)"
    if problem is not None:
        raise _SourceError(task, "unreadable_image", f"{task.src}: {problem}")
    tmp = files.temp_name(task.dst)
    try:
        shutil.copyfile(task.src, tmp)  # sendfile on Linux: no bytes pass through Python
        os.replace(tmp, task.dst)
    except BaseException as e:
        files.discard(tmp)
        # A full disk is never the source's fault, though sendfile's error names it.
        if (
            isinstance(e, OSError) and not files.is_write_error(e, tmp) and e.filename == task.src
        ):  # the source's fault
            raise _SourceError(task, "unreadable_image", f"copying {task.src}: {e}") from e
        raise


def _crop_one(task: _Task, size: int) -> None:
    """Crop ``task.box`` (in-the-wild pixels) out of the source and resize it to size x size."""
    from PIL import Image

    assert task.box is not None
    try:
        # The same crop the Datasets make (catalog.transforms): reduced decoding where
        # the box allows, then one resampling of the box onto size x size.
        image, decoded = transforms.open_for_crop(task.src, task.box, size)
        matrix = transforms.box_to_square(task.box, size) @ transforms.invert(decoded)
        face = Image.fromarray(transforms.warp(image, matrix, size))
    except transforms.BAD_IMAGE_ERRORS as e:
        raise _SourceError(task, "image_decode_error", f"cropping {task.src}: {e}") from e
    fmt = Image.registered_extensions().get(Path(task.dst).suffix.lower(), "JPEG")
    options = {"quality": JPEG_QUALITY} if fmt == "JPEG" else {}
    tmp = files.temp_name(task.dst)
    try:  # an error from here on is the destination's (full, read-only), never the source's
        face.save(tmp, format=fmt, **options)
        os.replace(tmp, task.dst)
    except BaseException:
        files.discard(tmp)
        raise


class _SourceError(Exception):
    """A source image that could not be read; ``bad`` says which and why."""

    def __init__(self, task: _Task, reason: str, detail: str) -> None:
        super().__init__(f"image {task.image_id}: {detail}.")
        self.bad = BadImage(task.image_id, task.src, reason, detail)


def _run(
    todo: list[_Task],
    crop: bool,
    size: int,
    workers: int,
    done: int,
    total: int,
    progress: ProgressFn | None,
    failed: list[BadImage] | None = None,
) -> None:
    """Write the files with ``workers`` threads; call ``progress`` here, once per file.

    A source image that cannot be decoded (or, copying, read) raises, naming it; with
    ``failed`` (a list) it is appended to it instead and nothing is written for it.
    """
    count = [done]

    def one(task: _Task) -> None:
        try:
            _crop_one(task, size) if crop else _copy_one(task)
        except _SourceError as e:
            if failed is None:
                raise _ImageError(f"{e} {snapshots.DECODE_ADVICE}", [e.bad]) from e
            failed.append(e.bad)  # list.append is atomic: threads may share the list

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
