"""``celebcat align``: landmarks -> similarity onto a template -> aligned crop cache.

For every image of a snapshot: five landmarks in in-the-wild pixels (predicted by a
landmark run, or the catalog's true ones as a control), the least-squares similarity
(:func:`models.alignment.similarity.alignment_matrices`) onto the template laid out at ``size``,
and the original image warped with it (decoded at reduced scale where that still
gives ``size`` pixels, the decode matrix composed in: one resampling), on worker
threads, straight into the memory-mapped cache file (no crop array in memory). The
crops are stored as the snapshot's crop cache of source
``aligned/<template>/<run id | truth>`` (:func:`catalog.cache.store_crops`) with the
matrices original -> aligned crop, which ``FaceDataset(source="aligned")`` reads
(the newest alignment at that size, or the one it names). Aligning again with the
same run, template and size replaces that cache; other alignments stay.

With ``source="predicted"`` the predictions (and, where the catalog has true
landmarks, their NME) are written to ``landmark_predictions`` under the run's id, and
when the snapshot is the one the run trained on, its test split's NME (sub-pixel and
argmax decoding of the same heatmaps), failure rate and CED AUC to ``metrics`` (split
``test``, the checkpoint's epoch).

A face whose predicted points (nearly) coincide, as an untrained model can give, has
no similarity to the template; it is aligned from its face box instead (the
template's points laid over the box) and counted in ``AlignResult.n_box_fallback``.

Under torchrun (:mod:`models.distributed`) every rank predicts and warps a contiguous
share of the images; rank 0 checks the files once, gathers the predictions and the
crops (a chunk at a time) and makes the single write of each (predictions, metrics,
the cache), so the catalog ends as after one process. Every rank returns the result.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from catalog import files, results, snapshots
from catalog import transforms as T
from catalog.cache import CacheInfo, find_cache, list_caches, store_crops
from catalog.ced import ced_auc, failure_rate
from catalog.crop_source import ALIGNED, CropSource, source_kind
from catalog.datasets import FaceDataset
from catalog.db import connect
from catalog.info import QueryResult
from models import distributed, store
from models.alignment.similarity import (
    TEMPLATES,
    alignment_matrices,
    decode_region,
    template_points,
    with_box_fallback,
)
from models.landmarks.metrics import nme
from models.landmarks.predict import LandmarkModel

SOURCES = ("predicted", "truth")

#: progress(stage, done, total); stage "predict" or "align".
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class AlignResult:
    snapshot: str
    source: str  # predicted | truth
    template: str
    size: int
    run_id: str | None  # the landmark run (source="predicted")
    n_images: int
    n_predictions: int  # rows written to landmark_predictions (0 for "truth")
    mean_nme: float | None  # over images with true landmarks (predicted only)
    test_metrics: dict[str, float]  # the test split's nme, nme_argmax, failure_rate, ced_auc
    n_box_fallback: int  # faces aligned from their box: predicted points coincided
    cache: CacheInfo
    seconds: float
    #: Images of the snapshot left out (``skip_bad``), which and why; also in the cache's
    #: index (``cache.skipped``).
    skipped: tuple[snapshots.BadImage, ...] = ()


@dataclass(frozen=True)
class _Images:
    ids: list[str]  # sorted
    paths: list[str]  # absolute
    truth: np.ndarray  # (N, 5, 2) in-the-wild pixels, NaN where absent
    boxes: np.ndarray  # (N, 4) x_1, y_1, x_2, y_2 (exclusive), the snapshot's face boxes
    splits: list[str | None]
    hash: str  # the snapshot's
    skipped: tuple[snapshots.BadImage, ...] = ()  # left out (skip_bad)


def _snapshot_images(
    db: str | os.PathLike[str] | None, snapshot: str, skip_bad: bool = False, files: bool = True
) -> _Images:
    """The snapshot's images, their files, true landmarks, face boxes and splits.

    ``files``: check that every image can be read (:func:`catalog.snapshots.read_images`;
    SnapshotImageError naming those that cannot, or with ``skip_bad`` leave them out).
    """
    images = snapshots.read_images(
        db, snapshot, landmarks=True, boxes=False, files=files, skip_bad=skip_bad
    )
    assert images.landmarks is not None
    return _Images(
        ids=images.image_id.tolist(),
        paths=images.path.tolist(),
        truth=images.landmarks,
        boxes=images.box,
        splits=[None if s == snapshots.UNUSED else s for s in images.split.tolist()],
        hash=images.hash,
        skipped=images.skipped,
    )


def _predict(
    landmarks: LandmarkModel,
    db: str | os.PathLike[str] | None,
    snapshot: str,
    ids: list[str],
    batch_size: int,
    progress: ProgressFn | None,
    skip_bad: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted landmarks (N, 5, 2) in in-the-wild pixels, in ``ids`` order: decoded
    as the run was (sub-pixel), and by argmax alone, from the same heatmaps, on the
    model's device (uint8 batches normalised there). Under torchrun each rank predicts
    its share, and every rank gets all of them."""
    data = FaceDataset(
        db,
        snapshot,
        "all",
        source="bbox",
        size=landmarks.input_size,
        image_dtype="uint8",
        skip_bad=skip_bad,
    )
    # the images to align: those the file checks kept (a crop cache may still hold a
    # file deleted since; it is left out as the warp cannot read it)
    position = {str(i): k for k, i in enumerate(data.image_ids)}
    missing = [i for i in ids if i not in position]
    if missing:
        raise snapshots.SnapshotImageError(
            f"{len(missing)} image(s) to align have no face crop to predict from, e.g. "
            f"{missing[0]}: rerun with --skip-bad",
            (),
        )
    rows = [position[i] for i in ids]
    # No augmentation: each sample's matrix is its box stretched onto the square.
    size = landmarks.input_size
    to_original = np.stack([T.invert(T.box_to_square(b, size))[:2] for b in data.boxes[rows]])
    lo, hi = distributed.shard_bounds(len(ids))  # all of them in one process
    if progress is not None:
        progress("predict", 0, hi - lo)
    share = _Decoded(Subset(data, rows[lo:hi]), skip_bad)
    points = landmarks.predict_batches(
        DataLoader(share, batch_size=batch_size, shuffle=False),
        to_original=to_original[lo:hi],
        progress=None if progress is None else lambda done: progress("predict", done, hi - lo),
    )
    for k in share.bad:  # no points where no image: the warp then skips them too
        for p in points:
            p[k] = np.nan
    return distributed.gather_rows(*points)


class _Decoded(torch.utils.data.Dataset):
    """A share of a FaceDataset whose images that fail to decode (changed since the
    snapshot) are, with ``skip_bad``, a black crop recorded in ``bad`` (positions in
    the share); without, the Dataset's one-line error. Read in this process."""

    def __init__(self, data: Any, skip_bad: bool) -> None:
        self.data, self.skip_bad, self.bad = data, skip_bad, set()

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, k: int) -> dict[str, Any]:
        try:
            return self.data[k]
        except snapshots.SnapshotImageError:
            if not self.skip_bad:
                raise
            self.bad.add(k)
            faces, row = self.data.dataset, self.data.indices[k]
            return {
                "image": torch.zeros((3, faces.size, faces.size), dtype=torch.uint8),
                "label": torch.tensor(-1, dtype=torch.int64),
                "image_id": str(faces.image_ids[row]),
            }


def _warp_one(src: str, matrix: np.ndarray, size: int) -> np.ndarray:
    """uint8 (size, size, 3): the image at ``src`` through ``matrix`` (original ->
    aligned), decoded at the smallest scale that keeps ``size`` pixels for the face."""
    image, m_decode = T.open_for_crop(src, decode_region(matrix, size), size)
    return T.warp(image, matrix @ T.invert(m_decode), size)


def align_snapshot(
    run_id_or_checkpoint: str | os.PathLike[str] | None,
    snapshot: str,
    db: str | os.PathLike[str] | None = None,
    *,
    size: int = 112,
    template: str = "reference",
    source: str = "predicted",
    batch_size: int = 32,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    skip_bad: bool = False,
    device: str = "auto",
) -> AlignResult:
    """Align every image of ``snapshot`` onto ``template`` at ``size`` and store the
    crops as an aligned crop cache of it (see the module docstring).

    ``run_id_or_checkpoint``: a landmark run id, run folder or checkpoint file (for
    ``source="predicted"``; ignored, may be None, for ``source="truth"``).
    ``workers``: threads decoding and warping (default one per CPU; under torchrun the
    node's CPUs over its processes).

    Every image is checked before anything is decoded
    (:func:`catalog.snapshots.read_images`). ``skip_bad``: align without the images that
    cannot be read (marked unusable by the catalog's checks, missing on disk, or
    failing to decode) instead of refusing; ``AlignResult.skipped`` and the cache's
    index say which and why. With a landmark run the predictions come from
    ``FaceDataset(source="bbox")``, which reads a face-box crop cache of the model's
    input size where there is one: build that with ``skip_bad`` too.

    Raises ValueError for unknown settings or an image without landmarks under
    ``source="truth"``; SnapshotImageError (a ValueError) naming images that cannot
    be read; SnapshotError / RunError / FileNotFoundError for what cannot be found.

    Under torchrun every rank calls this and does a share (module docstring);
    ``progress`` is called on rank 0 only (its own share of the predictions, every
    rank's crops).
    """
    with distributed.session():
        return _align(
            run_id_or_checkpoint,
            snapshot,
            db,
            size=size,
            template=template,
            source=source,
            batch_size=batch_size,
            workers=workers,
            progress=progress if distributed.is_main() else None,
            skip_bad=skip_bad,
            device=device,
        )


def _align(
    run_id_or_checkpoint: str | os.PathLike[str] | None,
    snapshot: str,
    db: str | os.PathLike[str] | None,
    *,
    size: int,
    template: str,
    source: str,
    batch_size: int,
    workers: int | None,
    progress: ProgressFn | None,
    skip_bad: bool,
    device: str,
) -> AlignResult:
    start = time.perf_counter()
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {', '.join(TEMPLATES)}, got {template!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive whole number of pixels, got {size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1 (or None for the default), got {workers}")
    landmarks = None
    if source == "predicted":
        if run_id_or_checkpoint is None:
            raise ValueError("source='predicted' needs a landmark run id or checkpoint")
        # ``auto``: on CUDA when there is one (under torchrun, this rank's GPU); weights
        # that do not fit the run's model raise CheckpointError naming the file
        landmarks = store.load_landmarks(run_id_or_checkpoint, db, distributed.device(device))
    # every file checked once (rank 0), the answer (or the error) on every rank
    images = distributed.on_main(lambda: _snapshot_images(db, snapshot, skip_bad))
    ids, truth = images.ids, images.truth

    run_id, n_pred, mean_nme, test_metrics = None, 0, None, {}
    if landmarks is not None:
        run_id = landmarks.run_id
        normaliser = landmarks.config.normaliser
        points, points_argmax = _predict(
            landmarks, db, snapshot, ids, batch_size, progress, skip_bad
        )
        errors = np.full(len(ids), np.nan)
        # (no points: an image that failed to decode, skipped with skip_bad)
        predicted = np.isfinite(points).all(axis=(1, 2))
        known = np.isfinite(truth).all(axis=(1, 2)) & predicted
        if known.any():
            errors[known] = nme(points[known], truth[known], normaliser)
            mean_nme = float(errors[known].mean())
        # The run's test figures only from the snapshot it trained on: another
        # snapshot's "test" images may be the run's training images.
        test = known & (np.array(images.splits, dtype=object) == "test")
        if test.any() and images.hash == landmarks.snapshot_hash:
            test_metrics = {
                "nme": float(errors[test].mean()),
                "nme_argmax": float(nme(points_argmax[test], truth[test], normaliser).mean()),
                "failure_rate": failure_rate(errors[test]),
                "ced_auc": ced_auc(errors[test]),
            }

        def write() -> int:  # rank 0's, once
            kept = {
                "image_id": [i for i, ok in zip(ids, predicted, strict=True) if ok],
                "landmarks": points[predicted],
                "nme": errors[predicted],
            }
            n = results.write_landmark_predictions(db, run_id, kept, normaliser)
            if test_metrics:
                results.log_metrics(db, run_id, landmarks.epoch + 1, "test", test_metrics)
            return n

        n_pred = distributed.on_main(write)
    else:
        missing = [i for i, t in zip(ids, truth, strict=True) if not np.isfinite(t).all()]
        if missing:
            raise ValueError(
                f"{len(missing)} images of snapshot {snapshot!r} have no true landmarks "
                f"(first: {', '.join(missing[:3])}); align them with source='predicted'."
            )
        points = truth

    points, n_fallback = with_box_fallback(points, images.boxes, TEMPLATES[template])
    matrices = alignment_matrices(points, TEMPLATES[template], size)
    paths = images.paths

    skipped = list(images.skipped)  # store_crops reads it once the crops are filled
    threads = workers or distributed.cpus()  # torchrun: the node's CPUs shared out

    def warp_into(
        dest: np.ndarray,
        indices: range,
        bad: list[snapshots.BadImage],
        tick: Callable[[], None] | None = None,
    ) -> None:
        """Crops of images ``indices`` into ``dest`` (its row 0 is image indices[0]);
        the images that fail to decode to ``bad`` (skip_bad) or raised."""

        def one(k: int) -> None:
            try:
                dest[k - indices.start] = _warp_one(paths[k], matrices[k], size)
            except T.BAD_IMAGE_ERRORS as e:
                b = snapshots.BadImage(ids[k], paths[k], "image_decode_error", str(e))
                if not skip_bad:
                    raise snapshots.SnapshotImageError(
                        f"image {ids[k]}: aligning {paths[k]}: {e}. Nothing was written. "
                        + snapshots.DECODE_ADVICE,
                        [b],
                    ) from e
                bad.append(b)  # list.append is atomic: threads may share the list

        files.run_threads(indices, one, threads, tick, name="align")

    def warp_share(indices: range) -> tuple[np.ndarray, list[snapshots.BadImage]]:
        """torchrun: a chunk of this rank's share, for rank 0 to place."""
        out, bad = np.zeros((len(indices), size, size, 3), np.uint8), []
        warp_into(out, indices, bad)
        return out, bad

    def fill(array: np.ndarray) -> None:
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            if progress is not None:
                progress("align", done[0], len(ids))

        advance(0)
        if not distributed.active():  # straight into the memory-mapped file
            warp_into(array, range(len(ids)), skipped, lambda: advance(1))
            return

        def place(indices: range, part: tuple[np.ndarray, list]) -> None:  # rank 0
            array[indices.start : indices.stop] = part[0]
            skipped.extend(part[1])
            advance(len(indices))

        distributed.gather_chunks(len(ids), warp_share, place)

    variant = str(CropSource.aligned(template, run_id))
    if distributed.is_main():
        info = store_crops(
            snapshot,
            db,
            size=size,
            source=variant,
            crops=fill,
            image_ids=ids,
            matrices=matrices,
            skipped=skipped,
        )
        result = AlignResult(
            snapshot,
            source,
            template,
            size,
            run_id,
            info.n_images,
            n_pred,
            mean_nme,
            test_metrics,
            n_fallback,
            info,
            time.perf_counter() - start,
            info.skipped,
        )
    else:  # the other ranks warp their shares for rank 0's fill
        distributed.gather_chunks(len(ids), warp_share, None)
        result = None
    return distributed.broadcast(result)


def _template_of(source: str) -> str | None:
    """The template an aligned crop cache's source names (None for another variant)."""
    try:
        return CropSource.parse(source).template
    except ValueError:
        return None


def alignment_report(
    db: str | os.PathLike[str] | None, snapshot: str, size: int | None = None
) -> QueryResult:
    """How close each alignment of ``snapshot`` puts the *true* eye centres to the
    template's: one row per aligned crop cache (``size``: of that size only), oldest
    first, with the eye error in output pixels (mean, 95th percentile, max, share
    within 2 px) over the images with true landmarks.

    With ``aligned/<t>/truth`` this measures the template against the faces; with a
    landmark run it adds the run's error (about NME x the template's eye distance).
    """
    con = connect(db, read_only=True)
    try:
        snap = snapshots.get(con, snapshot)
        caches = [
            c
            for c in list_caches(db)
            if c.hash == snap.hash
            and source_kind(c.source) == ALIGNED
            and (size is None or c.size == size)
        ]
        found = [find_cache(con, snap.hash, c.size, c.source, snapshot=snapshot) for c in caches]
    finally:
        con.close()
    images = _snapshot_images(db, snapshot, files=False)  # the true landmarks only
    truth = dict(zip(images.ids, images.truth, strict=True))
    rows = []
    for info, cache in zip(caches, found, strict=True):
        template = TEMPLATES.get(_template_of(info.source) or "")
        if cache is None or template is None:
            continue  # incomplete, or stored by something other than celebcat align
        points = np.stack([truth[str(i)] for i in cache.image_ids])
        known = np.isfinite(points).all(axis=(1, 2))
        if not known.any():
            continue
        eyes = T.apply(cache.matrices[known], points[known, :2])
        error = np.linalg.norm(eyes - template_points(template, info.size)[:2], axis=2).ravel()
        rows.append(
            (
                info.source,
                info.size,
                int(known.sum()),
                float(error.mean()),
                float(np.percentile(error, 95)),
                float(error.max()),
                float((error <= 2.0).mean()),
            )
        )
    columns = [
        "source",
        "size",
        "images",
        "eye_error_mean_px",
        "eye_error_p95_px",
        "eye_error_max_px",
        "within_2px",
    ]
    return QueryResult(columns, rows)


__all__ = ["TEMPLATES", "AlignResult", "align_snapshot", "alignment_report"]
