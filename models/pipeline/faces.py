"""The face pipeline: detect -> crop -> landmarks -> align -> embed, on any photo.

Step 4 of the reference workflow as one object::

    pipe = FacePipeline("haar", None, "recognition-20261201-...", db="celeba.duckdb")
    out = pipe.run(["photo.jpg"])
    for face in out.faces: face.box, face.landmarks, face.embedding

Each stage makes its crops with the functions training made them with, or
recognition degrades:

1. **detect** (:mod:`models.detection.detectors`): boxes in the catalog's ``bboxes``
   convention;
2. **crop**: each box shrunk, rounded and clamped as the ``face_boxes`` view does
   (``box_shrink`` of the recognizer's snapshot, else the default of
   :data:`catalog.views.PARAMS`; :func:`catalog.transforms.shrink_boxes`), then cut
   out as :class:`catalog.datasets.FaceDataset` cuts a face box
   (:func:`catalog.transforms.box_to_square`, :func:`~catalog.transforms.warp`; a
   large image shrunk first as :func:`~catalog.transforms.open_for_crop` shrinks it);
3. **landmarks**: the landmark run's hourglass on the crop at its input size,
   decoded as the run decodes (DARK by default; :func:`models.landmarks.predict.
   predict_landmarks`, which ``celebcat align`` uses) into the image's pixels;
4. **align**: the similarity onto the template the recognizer's crops were aligned
   with (:func:`models.alignment.similarity.alignment_matrices`), warped as ``celebcat align``
   warps (a face whose points collapse aligned from its box, as there);
5. **embed**: the recognizer, L2-normalised embeddings.

Which alignment: a recognizer trained on ``source="bbox"`` skips 3-4 (crops of the
box at its size). One trained on ``aligned/<template>/<landmark run>`` names both; for
plain ``aligned`` (the newest alignment when it trained) the pipeline reads the crop
source its embeddings were stored with (``embeddings.source``), else the newest
aligned crop cache of its snapshot at its size, and uses that template and landmark
run unless told otherwise (:func:`crop_plan`).

Batched over faces and images (``batch_size`` crops per forward pass), on the CPU or
CUDA (``device``), every stage timed (:attr:`PipelineOutput.timings`).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from catalog import transforms as T
from catalog.crop_source import BBOX, DETECTOR, CropSource
from catalog.db import connect
from catalog.errors import CatalogError
from catalog.views import PARAM_NAMES
from models import store
from models.alignment.similarity import (
    TEMPLATES,
    alignment_matrices,
    decode_region,
    with_box_fallback,
)
from models.detection.detectors import Detector
from models.landmarks.predict import LandmarkModel
from models.recognition.recognizer import Recognizer

__all__ = [
    "STAGES",
    "CropPlan",
    "Face",
    "FacePipeline",
    "LoadedImage",
    "PipelineError",
    "PipelineOutput",
    "TruthAlignmentError",
    "crop_plan",
    "load_image",
]

#: The timed stages, in order (``total`` is their sum plus the bookkeeping between).
STAGES = ("decode", "detect", "landmarks", "align", "embed")


class PipelineError(CatalogError, ValueError):
    """Input the pipeline cannot use (not an image, a recognizer whose crops cannot be
    reproduced, ...); the message is one line saying what to do."""


class TruthAlignmentError(PipelineError):
    """A recognizer trained on crops aligned with the catalog's true landmarks, which a
    photo does not have (a snapshot's images do: their stored crops can be used)."""


# --- images ---------------------------------------------------------------------------------

#: A photo with more pixels than this is decoded reduced (by a whole factor; JPEG by
#: libjpeg itself) to at most this many: a 12000 x 12000 photo took 2.3 GB and 10 s
#: decoded whole, for faces that need a few hundred pixels each.
MAX_PHOTO_PIXELS = 25_000_000


@dataclass
class LoadedImage:
    """A decoded photo: RGB uint8 pixels; ``path`` where the crops may decode the file
    again as training did (JPEG at reduced scale), None for pixels given directly or
    a photo turned by its EXIF orientation."""

    name: str
    pixels: np.ndarray  # (H, W, 3) uint8
    path: str | None = None
    jpeg: bool = False
    pil: Image.Image | None = field(default=None, repr=False)
    #: The photo's pixels per pixel of ``pixels``: above 1 for a photo decoded reduced
    #: (:data:`MAX_PHOTO_PIXELS`); faces are reported in the photo's own pixels.
    scale: float = 1.0

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    def for_crop(self, box: Sequence[float], size: int) -> tuple[Any, np.ndarray]:
        """The image to cut ``box`` from at ``size`` and the matrix from this image's
        pixels to its: what :func:`catalog.transforms.open_for_crop` gives for the file,
        without decoding it again unless libjpeg's reduced-scale decoding would be used
        (the box twice ``size`` or more), which only the file can give."""
        x1, y1, x2, y2 = box
        if self.path is not None and self.jpeg and min(x2 - x1, y2 - y1) >= 2 * size:
            return T.open_for_crop(self.path, box, size)
        return T.reduce_for_crop(self.pil if self.pil is not None else self.pixels, box, size)


def load_image(
    source: str | os.PathLike[str] | np.ndarray | Image.Image, name: str | None = None
) -> LoadedImage:
    """A photo from a file (any format PIL reads, any size; turned upright by its EXIF
    orientation), a PIL image or an RGB uint8 array. PipelineError, one line, where a
    file is missing or not an image."""
    if isinstance(source, np.ndarray):
        pixels = source
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise PipelineError(
                f"{name or 'image'}: expected an RGB uint8 (H, W, 3) array, got "
                f"{pixels.dtype} {pixels.shape}"
            )
        return LoadedImage(name or "image", np.ascontiguousarray(pixels))
    if isinstance(source, Image.Image):
        rgb = source.convert("RGB")
        return LoadedImage(name or "image", np.asarray(rgb), pil=rgb)
    path = Path(source)
    name = name or path.name
    if not path.exists():
        raise PipelineError(f"{path}: no such file")
    if path.is_dir():
        raise PipelineError(f"{path}: a folder, not an image")
    if not path.is_file():  # a FIFO or a device would block or never end
        raise PipelineError(f"{path}: not a regular file (a pipe, a device?), not an image")
    try:
        with warnings.catch_warnings():
            # a large photo is decoded reduced below, so Pillow's warning is not for us
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened:
            fmt, full = opened.format, opened.size
            factor = math.ceil(math.sqrt(full[0] * full[1] / MAX_PHOTO_PIXELS))
            if factor > 1 and fmt == "JPEG":  # libjpeg decodes at 1/2, 1/4 or 1/8 itself
                opened.draft("RGB", (math.ceil(full[0] / factor), math.ceil(full[1] / factor)))
            turned = opened.getexif().get(0x0112, 1) not in (None, 1)
            image = ImageOps.exif_transpose(opened) if turned else opened
            rgb = image.convert("RGB")
            left = math.ceil(math.sqrt(rgb.width * rgb.height / MAX_PHOTO_PIXELS))
            if left > 1:  # other formats, or what draft left too large
                rgb = rgb.reduce(left)
    except Image.DecompressionBombError as err:
        raise PipelineError(f"{path}: too large to decode safely ({err})") from None
    except T.BAD_IMAGE_ERRORS as err:  # not an image, or a damaged one
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise PipelineError(f"{path}: not an image PIL can read ({reason})") from None
    scale = max(full) / max(rgb.size)
    if scale > 1:  # the crops come from these pixels, not from the file again
        return LoadedImage(name, np.asarray(rgb), None, False, rgb, scale)
    return LoadedImage(name, np.asarray(rgb), None if turned else str(path), fmt == "JPEG", rgb)


# --- which crops -------------------------------------------------------------------------


@dataclass(frozen=True)
class CropPlan:
    """How a recognizer's crops are made: ``kind`` bbox or aligned, at ``size``; for
    aligned, the ``template`` and the ``landmark_run`` predicting the points;
    ``box_shrink`` for the face boxes; ``why``: where the alignment was read from."""

    kind: str
    size: int
    box_shrink: float
    template: str | None = None
    landmark_run: str | None = None
    why: str = ""

    @property
    def source(self) -> CropSource:
        """The crop source, as the crop caches and the embeddings table name it."""
        if self.kind == BBOX:
            return CropSource(BBOX)
        assert self.template is not None
        return CropSource.aligned(self.template, self.landmark_run)


def _parse_source(text: str) -> CropSource | None:
    """The crop source ``text`` names, or None for a variant that names no alignment."""
    try:
        return CropSource.parse(text)
    except ValueError:
        return None


def _stored_sources(
    db: str | os.PathLike[str] | None, run_id: str, snapshot: str, size: int
) -> tuple[list[str], str | None, dict[str, Any]]:
    """(the run's embedding sources, the newest aligned crop cache of its snapshot at
    ``size``, the snapshot's parameters)."""
    from catalog import snapshots
    from catalog.cache import find_cache
    from catalog.results import has_table

    con = connect(db, read_only=True)
    try:
        sources = (
            [
                r[0]
                for r in con.execute(
                    "SELECT DISTINCT source FROM embeddings WHERE run_id = ? ORDER BY 1", [run_id]
                ).fetchall()
            ]
            if has_table(con, "embeddings")
            else []
        )
        cache, params = None, {}
        try:
            snap = snapshots.get(con, snapshot)
            params = snap.params
            found = find_cache(con, snap.hash, size, "aligned", snapshot=snapshot)
            cache = found.source if found is not None else None
        except snapshots.SnapshotError:
            pass  # dropped since: nothing to learn from it
    finally:
        con.close()
    return sources, cache, params


def crop_plan(
    recognizer: Recognizer,
    db: str | os.PathLike[str] | None = None,
    landmark_run: str | None = None,
    template: str | None = None,
) -> CropPlan:
    """The crops ``recognizer`` was trained on (module docstring); ``landmark_run`` and
    ``template`` override what the catalog records. PipelineError where an aligned
    recognizer's alignment cannot be found or was made from the catalog's true
    landmarks, which a photo has none of."""
    config, recipe = recognizer.config, recognizer.recipe
    sources, cache, params = _stored_sources(db, recognizer.run_id, config.snapshot, recipe.size)
    shrink = float(params.get("box_shrink", PARAM_NAMES["box_shrink"].default))
    if recipe.source.kind == BBOX:
        return CropPlan(
            BBOX, recipe.size, shrink, template, landmark_run, "trained on face-box crops"
        )
    found: CropSource | None = None
    if recipe.source.pinned:
        found, why = recipe.source, f"the run's source {recipe.source}"
    else:
        aligned = [s for s in map(_parse_source, sources) if s is not None and s.pinned]
        newest = _parse_source(cache) if cache is not None else None
        if len(aligned) == 1:
            found, why = aligned[0], f"its embeddings' source {aligned[0]}"
        elif newest is not None:
            found, why = newest, f"the newest aligned crops of {config.snapshot} ({newest})"
        else:
            why = ""
    tmpl = template or (found.template if found else None)
    run = landmark_run or (found.run if found else None)
    if tmpl is None or run is None:
        raise PipelineError(
            f"Recognizer {recognizer.run_id} was trained on aligned crops, but the catalog "
            "does not record which alignment (no embeddings of it, no aligned crops of its "
            "snapshot): pass the landmark run and template (--landmarks RUN --template T)."
        )
    if found is not None and found.from_truth and landmark_run is None:
        raise TruthAlignmentError(
            f"Recognizer {recognizer.run_id} was trained on crops aligned with the catalog's "
            "true landmarks, which a photo does not have: pass a landmark run to predict "
            "them (--landmarks RUN)."
        )
    if tmpl not in TEMPLATES:
        raise PipelineError(f"template {tmpl!r}: use one of {', '.join(TEMPLATES)}")
    if landmark_run or template:
        why += (
            " (overridden: "
            + ", ".join(
                x
                for x in (
                    f"landmarks {landmark_run}" if landmark_run else "",
                    f"template {template}" if template else "",
                )
                if x
            )
            + ")"
        )
    return CropPlan(recipe.source.kind, recipe.size, shrink, tmpl, run, why)


# --- the pipeline ---------------------------------------------------------------------------


@dataclass
class Face:
    """One detected face: ``image`` indexes the run's inputs."""

    image: int
    box: np.ndarray  # (4,) float32 x_1, y_1, x_2, y_2: the detector's, bboxes convention
    score: float
    crop_box: np.ndarray  # (4,) float64: the box cropped (shrunk, rounded, clamped)
    landmarks: np.ndarray | None  # (5, 2) float64 image pixels; None without a landmark run
    embedding: np.ndarray  # (D,) float32, L2-normalised
    crop: np.ndarray | None = field(default=None, repr=False)  # (S, S, 3) uint8 with keep_crops


@dataclass
class PipelineOutput:
    images: list[LoadedImage | None]  # per input; None where skipped
    faces: list[Face]  # in input order, each image's best first
    timings: dict[str, float]  # seconds per stage (STAGES) and "total"
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (input index, why)
    #: this thread's CPU seconds per stage and "total" (see _Timer)
    cpu_timings: dict[str, float] = field(default_factory=dict)

    @property
    def embeddings(self) -> np.ndarray:
        """(N faces, D) float32."""
        if not self.faces:
            return np.zeros((0, 0), np.float32)
        return np.stack([f.embedding for f in self.faces])

    def faces_of(self, image: int) -> list[Face]:
        return [f for f in self.faces if f.image == image]


class _Timer:
    """Wall time per stage, and this thread's CPU time (with torch and OpenCV on one
    thread, the cost on one core whatever else the machine runs)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.cpu = dict.fromkeys(STAGES, 0.0)

    def stage(self, name: str) -> _Stage:
        return _Stage(self, name)


class _Stage:
    def __init__(self, timer: _Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.start, self.cpu = time.perf_counter(), time.thread_time()

    def __exit__(self, *exc: Any) -> None:
        self.timer.seconds[self.name] += time.perf_counter() - self.start
        self.timer.cpu[self.name] += time.thread_time() - self.cpu


class FacePipeline:
    """detector -> landmarks -> alignment -> embedding (module docstring).

    ``detector``: a :class:`models.detection.detectors.Detector` or a spec (``haar``,
    ``catalog``, ``run:<id>``, ``onnx:<path>``). ``landmark_run``: a landmark run id or
    checkpoint, or None for the one the recognizer's crops record (:func:`crop_plan`).
    ``recognizer_run``: a recognition run id or checkpoint, or a loaded
    :class:`models.recognition.recognizer.Recognizer`. ``device``: cpu, cuda or auto.
    Every model comes from :mod:`models.store`.
    """

    def __init__(
        self,
        detector: str | Detector,
        landmark_run: str | os.PathLike[str] | None,
        recognizer_run: str | os.PathLike[str] | Recognizer,
        db: str | os.PathLike[str] | None = None,
        *,
        template: str | None = None,
        device: str = "cpu",
        batch_size: int = 64,
    ) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.db, self.batch_size = db, batch_size
        if isinstance(recognizer_run, Recognizer):
            self.recognizer = recognizer_run
            self.recognizer.model.to(self.device).eval()
        else:  # a trained or a pretrained run (models.pretrained), on the device
            self.recognizer = store.load_recognizer(recognizer_run, db, self.device)
        self.plan = crop_plan(
            self.recognizer, db, None if landmark_run is None else str(landmark_run), template
        )
        self.landmarks: LandmarkModel | None = None
        run = self.plan.landmark_run
        if run is not None and run != DETECTOR:  # detector: the detector's own points
            self.landmarks = store.load_landmarks(run, db, self.device)
        self.detector = store.load_detector(detector, db, str(self.device))

    @property
    def run_id(self) -> str:
        return self.recognizer.run_id

    def run(
        self,
        images: Sequence[Any],
        names: Sequence[str] | None = None,
        *,
        chunk: int = 32,
        keep_crops: bool = False,
        skip_bad: bool = False,
    ) -> PipelineOutput:
        """Every face of ``images`` (paths, PIL images, RGB uint8 arrays or
        :class:`LoadedImage`; ``names`` for the catalog detector where arrays are
        given), ``chunk`` images at a time. An input that is not an image raises
        PipelineError, or with ``skip_bad`` is listed in ``skipped`` (its entry in
        ``images`` None)."""
        timer = _Timer()
        start, cpu_start = time.perf_counter(), time.thread_time()
        loaded: list[LoadedImage | None] = []
        skipped: list[tuple[int, str]] = []
        faces: list[Face] = []
        for first in range(0, len(images), chunk):
            batch: list[LoadedImage] = []
            where: list[int] = []
            with timer.stage("decode"):
                for k, src in enumerate(images[first : first + chunk], start=first):
                    try:
                        image = (
                            src
                            if isinstance(src, LoadedImage)
                            else load_image(src, None if names is None else names[k])
                        )
                    except PipelineError as err:
                        if not skip_bad:
                            raise
                        loaded.append(None)
                        skipped.append((k, str(err)))
                        continue
                    loaded.append(image)
                    batch.append(image)
                    where.append(k)
            if batch:
                faces.extend(self._faces(batch, where, timer, keep_crops))
        timings = {**timer.seconds, "total": time.perf_counter() - start}
        cpu = {**timer.cpu, "total": time.thread_time() - cpu_start}
        return PipelineOutput(loaded, faces, timings, skipped, cpu)

    def _faces(
        self, batch: list[LoadedImage], where: list[int], timer: _Timer, keep_crops: bool
    ) -> list[Face]:
        with timer.stage("detect"):
            dets = self.detector.detect([im.pixels for im in batch], [im.name for im in batch])
        owner = [k for k, d in enumerate(dets) for _ in range(len(d))]
        if not owner:
            return []
        boxes = np.concatenate([d for d in dets if len(d)])
        crop_boxes = np.concatenate(
            [
                T.shrink_boxes(d[:, :4], self.plan.box_shrink, im.width, im.height)
                for im, d in zip(batch, dets, strict=True)
                if len(d)
            ]
        )
        points = None
        if self.landmarks is not None:
            with timer.stage("landmarks"):
                points = self._landmarks(batch, owner, crop_boxes)
        elif self.plan.landmark_run == DETECTOR:
            if boxes.shape[1] < 15:
                raise PipelineError(
                    f"The crops are aligned on the detector's five points (landmarks "
                    f"{DETECTOR}), but detector {self.detector.spec} gives none: use a "
                    "detector with landmarks, or a landmark run (--landmarks RUN)."
                )
            points = boxes[:, 5:15].reshape(-1, 5, 2).astype(np.float64)
        with timer.stage("align"):
            crops = self._recognizer_crops(batch, owner, crop_boxes, points)
        with timer.stage("embed"):
            embeddings = self.recognizer.embed(crops, self.batch_size)
        scales = [batch[k].scale for k in owner]
        return [
            Face(
                where[owner[i]],
                boxes[i, :4] * scales[i],  # the photo's own pixels
                float(boxes[i, 4]),
                crop_boxes[i] * scales[i],
                None if points is None else points[i] * scales[i],
                embeddings[i],
                crops[i] if keep_crops else None,
            )
            for i in range(len(owner))
        ]

    def _recognizer_crops(
        self,
        batch: list[LoadedImage],
        owner: list[int],
        crop_boxes: np.ndarray,
        points: np.ndarray | None,
    ) -> np.ndarray:
        size = self.plan.size
        crops = np.empty((len(owner), size, size, 3), np.uint8)
        if self.plan.kind == BBOX:
            for i, (k, box) in enumerate(zip(owner, crop_boxes, strict=True)):
                crops[i] = _box_crop(batch[k], box, size)
            return crops
        assert points is not None and self.plan.template is not None
        template = TEMPLATES[self.plan.template]
        fixed, _ = with_box_fallback(points, crop_boxes, template)
        matrices = alignment_matrices(fixed, template, size)
        for i, (k, matrix) in enumerate(zip(owner, matrices, strict=True)):
            # as celebcat align warps: the region the crop covers decides the decoding
            source, to_source = batch[k].for_crop(decode_region(matrix, size), size)
            crops[i] = T.warp(source, matrix @ T.invert(to_source), size)
        return crops

    def _landmarks(
        self, batch: list[LoadedImage], owner: list[int], crop_boxes: np.ndarray
    ) -> np.ndarray:
        """Each face's five points in its image's pixels, predicted on its box crop
        as ``celebcat align`` predicts them."""
        assert self.landmarks is not None
        size = self.landmarks.input_size
        crops = np.stack(
            [_box_crop(batch[k], box, size) for k, box in zip(owner, crop_boxes, strict=True)]
        )
        to_original = np.stack([T.invert(T.box_to_square(b, size))[:2] for b in crop_boxes])
        return self.landmarks.predict(crops, to_original, self.batch_size)


def _box_crop(image: LoadedImage, box: np.ndarray, size: int) -> np.ndarray:
    """A face box onto ``size`` x ``size``, as FaceDataset crops it (no augmentation)."""
    source, to_source = image.for_crop(box, size)
    return T.warp(source, T.box_to_square(box, size) @ T.invert(to_source), size)
