"""Face detectors behind one small interface: the pipeline's first stage.

Every detector takes RGB uint8 images (H, W, 3) and gives, per image, an (K, 5)
float32 array of ``x_1, y_1, x_2, y_2, score``, best first: boxes in the image's
pixels with exclusive ends, in the convention of the catalog's ``bboxes`` table
(CelebA's face box: brow-line-and-hair to chin, ear to ear), so that the pipeline
shrinks and crops every detector's boxes alike, as the ``face_boxes`` view crops a
snapshot's (:func:`catalog.transforms.shrink_boxes`). Scores are comparable within
one detector only.

``models.store.load_detector(spec)`` builds one from a short spec (``--detector`` on
the CLI; :func:`parse_spec` reads it):

- ``catalog``: the catalog's own face boxes, looked up by image id (the file name);
  for CelebA-format images and the evaluation path. An image not in the catalog is
  an error, not "no face".
- ``haar``: OpenCV 4.x's shipped frontal-face Haar cascade
  (``haarcascade_frontalface_default.xml``, Viola and Jones 2001, Lienhart's
  extended features), offline, nothing downloaded. Its square box around brows,
  eyes and mouth is mapped onto the CelebA convention by :data:`HAAR_TO_CELEBA`.
  Known weaknesses: it finds upright frontal faces only: profiles, faces turned past
  about 30 degrees or rolled past about 15-20 degrees are missed; faces smaller than
  ``min_size`` pixels (after the image is scaled down to ``max_side``) are missed; it
  fires on face-like texture (false positives, fewer with a larger
  ``min_neighbors``); hard side lighting and occlusion (hands, large sunglasses)
  lose faces; its boxes jitter in scale by about 10 % between neighbouring windows.
  Its score is the cascade's last-stage weight (``detectMultiScale3``): larger is
  surer, not a probability.
- ``run:<run id>[?score=S&top=N]`` (or ``trained:``): a detector trained on the
  catalog's boxes (``celebcat train detector``; :mod:`models.detection.train`), which
  works on any CelebA-format data, synthetic faces included, where the cascade does
  not; ``score``: its threshold (default the run's ``score_threshold``), ``top``: at
  most that many faces per image.
- ``onnx:<path>[?options]``: a user-supplied ONNX face detector run by
  ``onnxruntime`` (the optional extra ``[onnx]``); the contract is
  :class:`OnnxDetector`'s.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np

from catalog import transforms as T
from catalog.db import connect, has_table
from catalog.errors import CatalogError

__all__ = [
    "DETECTOR_SPECS",
    "HAAR_TO_CELEBA",
    "CatalogDetector",
    "Detector",
    "DetectorError",
    "HaarDetector",
    "OnnxDetector",
    "LoadedDetector",
    "TrainedDetector",
    "celeba_to_squares",
    "parse_spec",
    "squares_to_celeba",
]

#: The forms :func:`parse_spec` takes, for messages and ``--help``.
DETECTOR_SPECS = (
    "catalog",
    "haar[?options]",
    "run:<detector run id>[?options]",
    "onnx:<model.onnx>[?options]",
)

#: Haar's square box (x, y, side) -> the CelebA face box: centre x + dx * side,
#: centre y + dy * side, width sw * side, height sh * side. Fitted (medians) on the
#: synthetic CelebA of catalog.synth, matching each detection with its true box:
#: ``python bench/haar_calibration.py`` measures it again.
HAAR_TO_CELEBA = {"dx": 0.01, "dy": -0.06, "sw": 0.90, "sh": 1.17}


class DetectorError(CatalogError, ValueError):
    """A detector cannot be made or run as asked; the message says what to do."""


def _empty() -> np.ndarray:
    return np.zeros((0, 5), np.float32)


class Detector(abc.ABC):
    """``detect(images, names)`` -> per image (K, 5) float32 ``x_1, y_1, x_2, y_2,
    score``, best first. ``names``: each image's name (file name), which only the
    catalog detector needs."""

    #: the spec that makes it again (``models.store.load_detector(spec)``)
    spec: str = ""

    @abc.abstractmethod
    def detect(
        self, images: Sequence[np.ndarray], names: Sequence[str] | None = None
    ) -> list[np.ndarray]: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


class CatalogDetector(Detector):
    """The catalog's face box of each image, looked up by its name (``image_id``)."""

    spec = "catalog"

    def __init__(self, db: str | os.PathLike[str] | None = None) -> None:
        con = connect(db, read_only=True)
        try:
            has = has_table(con, "bboxes")
            rows = (
                con.execute(
                    "SELECT image_id, x_1, y_1, x_1 + width, y_1 + height FROM bboxes"
                ).fetchall()
                if has
                else []
            )
        finally:
            con.close()
        if not rows:
            raise DetectorError(
                "The catalog has no face boxes (no bboxes table, or an empty one), so "
                "--detector catalog has nothing to give; use haar or run:<detector run>."
            )
        self.boxes = {r[0]: np.array(r[1:], np.float32) for r in rows}

    def detect(
        self, images: Sequence[np.ndarray], names: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        if names is None or len(names) != len(images):
            raise DetectorError("the catalog detector needs each image's name (its image_id)")
        missing = [n for n in names if n not in self.boxes]
        if missing:
            raise DetectorError(
                f"{missing[0]!r}{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}"
                " is not an image of the catalog (no row in bboxes): --detector catalog "
                "only knows catalog images by file name; use --detector haar or "
                "run:<detector run> for other photos."
            )
        return [np.append(self.boxes[n], np.float32(1.0))[None].astype(np.float32) for n in names]


class HaarDetector(Detector):
    """OpenCV's frontal-face Haar cascade, its boxes mapped to the CelebA convention.

    The image is scaled down so its longer side is at most ``max_side`` (the cascade's
    time grows with the pixels: 320 keeps a 500 px photo well under the pipeline's
    100 ms), converted to grey and histogram-equalised; faces are found down to
    ``min_size`` pixels at that scale, i.e. ``min_size * longer side / max_side`` in
    the photo (32 px in a 512 px photo, 250 px in a 4000 px one: raise ``max_side``
    for small faces in large photos, ``haar?max_side=1280``). ``scale_factor``: the
    step between window sizes (1.1 finds a few more faces, at 1.7x the time).
    Options in the spec: ``haar?max_side=640&min_neighbors=6``."""

    spec = "haar"
    CASCADE = "haarcascade_frontalface_default.xml"

    OPTIONS = ("scale_factor", "min_neighbors", "min_size", "max_side")

    def __init__(
        self,
        scale_factor: float = 1.2,
        min_neighbors: int = 5,
        min_size: int = 20,
        max_side: int = 320,
    ) -> None:
        import cv2

        path = Path(cv2.data.haarcascades) / self.CASCADE
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise DetectorError(
                f"OpenCV's Haar cascade {path} is missing or unreadable: "
                "reinstall opencv-python-headless 4.x"
            )
        if not scale_factor > 1 or min_neighbors < 0 or min_size < 1 or max_side < 16:
            raise DetectorError(
                "haar options: scale_factor > 1, min_neighbors >= 0, min_size >= 1, max_side >= 16"
            )
        self.scale_factor, self.min_neighbors = float(scale_factor), int(min_neighbors)
        self.min_size, self.max_side = int(min_size), int(max_side)
        defaults = (1.2, 5, 20, 320)
        given = {
            k: v
            for k, v, d in zip(
                self.OPTIONS,
                (scale_factor, min_neighbors, min_size, max_side),
                defaults,
                strict=True,
            )
            if v != d
        }
        self.spec = "haar" + (
            "?" + "&".join(f"{k}={v:g}" for k, v in given.items()) if given else ""
        )

    def detect(
        self, images: Sequence[np.ndarray], names: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        return [self._one(np.asarray(image)) for image in images]

    def _one(self, image: np.ndarray) -> np.ndarray:
        import cv2

        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            grey = cv2.resize(
                grey,
                (max(1, round(w * scale)), max(1, round(h * scale))),
                interpolation=cv2.INTER_AREA,
            )
        grey = cv2.equalizeHist(grey)
        rects, _, weights = self.cascade.detectMultiScale3(
            grey,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
            outputRejectLevels=True,
        )
        if len(rects) == 0:
            return _empty()
        # the working image's pixels back to the original's (edges onto edges)
        rects = np.asarray(rects, np.float64) / scale
        out = haar_to_celeba(rects)
        scores = np.asarray(weights, np.float64).reshape(-1)
        dets = np.concatenate([out, scores[:, None]], axis=1).astype(np.float32)
        return dets[np.argsort(-dets[:, 4], kind="stable")]


def squares_to_celeba(rects: np.ndarray, mapping: dict[str, float]) -> np.ndarray:
    """A detector's rectangles (N, 4) ``x, y, w, h`` -> CelebA-convention boxes (N, 4)
    ``x_1, y_1, x_2, y_2`` through ``mapping`` (``dx, dy``: the centre's shift, ``sw,
    sh``: the box's width and height, in units of the rectangle's side ``sqrt(w h)``)."""
    m = mapping
    r = np.asarray(rects, np.float64).reshape(-1, 4)
    side = np.sqrt(r[:, 2] * r[:, 3])
    cx = r[:, 0] + r[:, 2] / 2 + m["dx"] * side
    cy = r[:, 1] + r[:, 3] / 2 + m["dy"] * side
    w, h = m["sw"] * side, m["sh"] * side
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def celeba_to_squares(boxes: np.ndarray, mapping: dict[str, float]) -> np.ndarray:
    """The inverse of :func:`squares_to_celeba`: CelebA boxes (N, 4) ``x_1, y_1, x_2,
    y_2`` -> the detector's squares (N, 4) ``x, y, side, side``."""
    m = mapping
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    side = np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) / (m["sw"] * m["sh"]))
    cx = (b[:, 0] + b[:, 2]) / 2 - m["dx"] * side
    cy = (b[:, 1] + b[:, 3]) / 2 - m["dy"] * side
    return np.stack([cx - side / 2, cy - side / 2, side, side], axis=1)


def haar_to_celeba(rects: np.ndarray, mapping: dict[str, float] | None = None) -> np.ndarray:
    """Haar rectangles (N, 4) ``x, y, w, h`` -> CelebA-convention boxes (N, 4) ``x_1,
    y_1, x_2, y_2`` (:data:`HAAR_TO_CELEBA`)."""
    return squares_to_celeba(rects, HAAR_TO_CELEBA if mapping is None else mapping)


@dataclass
class LoadedDetector:
    """A detector run's network in eval mode (what :class:`TrainedDetector` runs)."""

    run_id: str
    config: Any  # models.detection.config.DetectorTrainConfig
    model: Any  # models.detection.centernet.CenterNet
    epoch: int  # 0-based epoch of the weights
    checkpoint: Path
    snapshot_hash: str

    @classmethod
    def from_checkpoint(cls, ckpt: Any, device: Any = "cpu") -> LoadedDetector:
        """The network of a detector run's checkpoint (its config complete, as
        :func:`models.store.read_checkpoint` gives it)."""
        from models.checkpoints import load_weights, run_fields
        from models.detection.centernet import create_detector_model
        from models.detection.config import DetectorTrainConfig

        config = DetectorTrainConfig.from_saved(ckpt["config"])
        model = create_detector_model(config.model, input_size=config.input_size)
        load_weights(model, ckpt, "model")
        model.to(device).eval()
        return cls(config=config, model=model, **run_fields(ckpt))


class TrainedDetector(Detector):
    """A detector run of ``celebcat train detector``: each image letterboxed onto the
    run's input square (decoded pixels shrunk first as the training images were,
    :func:`catalog.transforms.reduce_for_crop`), batched, decoded, thresholded at the
    run's ``score_threshold`` and NMS'd, boxes mapped back to the image's pixels."""

    OPTIONS = ("score", "top")

    def __init__(
        self,
        loaded: LoadedDetector,
        score_threshold: float | None = None,
        batch_size: int = 32,
        top: int = 20,
    ) -> None:
        if top < 1:
            raise DetectorError(f"top must be at least 1, got {top}")
        self.loaded = loaded
        self.spec = f"run:{self.loaded.run_id}"
        self.score_threshold = (
            self.loaded.config.score_threshold if score_threshold is None else score_threshold
        )
        self.batch_size, self.top = batch_size, int(top)

    def detect(
        self, images: Sequence[np.ndarray], names: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        import torch

        from catalog.detection import letterbox_matrix, map_boxes
        from models.detection.boxes import NMS_IOU, nms
        from models.detection.centernet import decode

        model = self.loaded.model
        size = model.config.input_size
        device = next(model.parameters()).device
        out: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            crops, inverses = [], []
            for image in chunk:
                h, w = np.asarray(image).shape[:2]
                side = max(w, h)
                x0, y0 = (w - side) / 2, (h - side) / 2
                source, to_source = T.reduce_for_crop(image, (x0, y0, x0 + side, y0 + side), size)
                matrix = letterbox_matrix(w, h, size)
                crops.append(T.to_uint8_tensor(T.warp(source, matrix @ T.invert(to_source), size)))
                inverses.append(T.invert(matrix))
            with torch.no_grad():
                batch = T.normalize_batch(torch.stack(crops).to(device))
                dets = decode(model(batch), model.config, self.top)
            for d, inverse in zip(dets, inverses, strict=True):
                d = d[d[:, 4] >= self.score_threshold].copy()
                d[:, :4] = map_boxes(inverse, d[:, :4])
                out.append(nms(d, NMS_IOU))
        return out


class OnnxDetector(Detector):
    """A user's ONNX face detector, run by onnxruntime on the CPU.

    The contract:

    - input: the model's first input, float32, NCHW, RGB, batch 1, pixel values
      ``(level - mean) / std`` (``mean`` 0 and ``std`` 255 by default: [0, 1]). A
      fixed height and width in the model's input shape: the image is resized to them,
      stretched (``resize=stretch``, the default, as e.g. UltraFace expects) or scaled
      to fit and padded at the right and bottom (``resize=letterbox``, as insightface
      feeds SCRFD); dynamic ones: the image as it is.
    - output, one of:

      - one array (N, 5) or (1, N, 5) ``x_1, y_1, x_2, y_2, score``, or (N, 15) with
        five points ``x, y`` after the score;
      - two: boxes (1, N, 4) or (N, 4) and scores (1, N), (N,), or (1, N, C) / (N, C),
        whose last column is the face score (UltraFace's background, face); three:
        those and five points (N, 10) or (N, 5, 2);
      - SCRFD's raw heads (insightface's ``det_*.onnx``): for strides 8, 16 and 32,
        scores (K, 1), box distances (K, 4) and, in the 9-output form, point offsets
        (K, 10), all in stride units from anchor centres on the input's grid
        (``K = (H / s) (W / s) A``, A anchors a place), ordered scores, boxes, points.

      Five points are CelebA's (eyes, nose, mouth corners, the viewer's left first),
      and the pipeline can align on them (``landmarks=detector``).
    - coordinates: in the input's pixels, or normalised to [0, 1] of its width and
      height; ``coords=auto`` (the default) takes them as normalised when every one
      lies in [-0.25, 1.25].

    Options after ``?`` in the spec: ``score`` (threshold, default 0.5), ``nms`` (IoU,
    default 0.4), ``mean``, ``std``, ``coords`` (auto | pixels | normalized),
    ``resize`` (stretch | letterbox), ``input`` (a model with a dynamic input size is
    fed this side, as if fixed), e.g. ``onnx:version-RFB-320.onnx?mean=127&std=128`` or,
    for insightface's SCRFD, ``onnx:det_10g.onnx?mean=127.5&std=128&resize=letterbox&input=640``.
    """

    OPTIONS = ("score", "nms", "mean", "std", "coords", "resize", "input")
    #: SCRFD's strides, and the number of outputs of its two forms (without, with points).
    SCRFD_STRIDES = (8, 16, 32)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        score: float = 0.5,
        nms: float = 0.4,
        mean: float = 0.0,
        std: float = 255.0,
        coords: str = "auto",
        resize: str = "stretch",
        input: float | None = None,  # noqa: A002 (the spec's option name)
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise DetectorError(f"No ONNX model at {path}")
        if coords not in ("auto", "pixels", "normalized"):
            raise DetectorError(f"coords={coords!r}: use auto, pixels or normalized")
        if resize not in ("stretch", "letterbox"):
            raise DetectorError(f"resize={resize!r}: use stretch or letterbox")
        self.resize = resize
        if not std:
            raise DetectorError("std must not be 0")
        try:
            import onnxruntime as ort
        except ImportError:
            raise DetectorError(
                "--detector onnx needs onnxruntime, an optional extra: pip install "
                "'celeba-catalog[onnx]' (or pip install onnxruntime)"
            ) from None
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's own error types: a bad or foreign file
            first = (str(err).splitlines() or [type(err).__name__])[0]
            raise DetectorError(
                f"{path} is not an ONNX model onnxruntime can run: {first}"
            ) from None
        inputs = self.session.get_inputs()
        if not inputs or len(inputs[0].shape) != 4:
            raise DetectorError(
                f"{path}: the first input must be an NCHW image, got shape "
                f"{inputs[0].shape if inputs else None}"
            )
        self.input_name = inputs[0].name
        h, w = inputs[0].shape[2], inputs[0].shape[3]
        self.fixed = (int(h), int(w)) if isinstance(h, int) and isinstance(w, int) else None
        if input is not None:
            if self.fixed is not None and self.fixed != (int(input), int(input)):
                raise DetectorError(f"{path}: its input is fixed at {h} x {w}; drop input=")
            if input < 32:
                raise DetectorError("input must be at least 32 pixels")
            self.fixed = (int(input), int(input))
        self.spec = f"onnx:{path}"
        self.score, self.nms_iou, self.mean, self.std, self.coords = score, nms, mean, std, coords

    @classmethod
    def from_spec(cls, rest: str) -> OnnxDetector:
        path, _, query = rest.partition("?")
        options: dict[str, Any] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key not in cls.OPTIONS:
                raise DetectorError(f"onnx option {key!r}: use {', '.join(cls.OPTIONS)}")
            try:
                options[key] = value if key in ("coords", "resize") else float(value)
            except ValueError:
                raise DetectorError(f"onnx option {key}={value!r} is not a number") from None
        return cls(path, **options)

    def detect(
        self, images: Sequence[np.ndarray], names: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        return [self._one(np.asarray(image)) for image in images]

    def _one(self, image: np.ndarray) -> np.ndarray:
        import cv2

        from models.detection.boxes import nms

        h, w = image.shape[:2]
        ih, iw = self.fixed or (h, w)
        sx, sy = iw / w, ih / h  # image pixels -> input pixels
        if self.resize == "letterbox" and (ih, iw) != (h, w):
            sx = sy = min(iw / w, ih / h)
        pixels = image
        if (sx, sy) != (1, 1):
            size = (max(1, round(w * sx)), max(1, round(h * sy)))
            pixels = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        if pixels.shape[:2] != (ih, iw):  # letterbox: the rest of the input is zeros
            canvas = np.zeros((ih, iw, 3), np.uint8)
            canvas[: pixels.shape[0], : pixels.shape[1]] = pixels[:ih, :iw]
            pixels = canvas
        x = (pixels.astype(np.float32) - np.float32(self.mean)) / np.float32(self.std)
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
        outputs = self.session.run(None, {self.input_name: x})
        dets, coords = self._parse(outputs, (ih, iw))
        xs = [0, 2, *range(5, dets.shape[1], 2)]  # x columns: the box's and the points'
        ys = [1, 3, *range(6, dets.shape[1], 2)]
        if coords == "normalized" or (
            coords == "auto"
            and len(dets)
            and dets[:, :4].min() >= -0.25
            and dets[:, :4].max() <= 1.25
        ):
            dets[:, xs] *= iw
            dets[:, ys] *= ih
        dets[:, xs] /= sx  # input pixels -> the image's (edges onto edges)
        dets[:, ys] /= sy
        dets = dets[dets[:, 4] >= self.score]
        return nms(dets, self.nms_iou)

    def _parse(
        self, outputs: list[np.ndarray], input_hw: tuple[int, int]
    ) -> tuple[np.ndarray, str]:
        """(rows, their coordinates' kind: SCRFD's are pixels, others' ``coords``)."""
        arrays = [np.asarray(o, np.float32) for o in outputs]
        if len(arrays) in (6, 9) and all(a.shape[-1] == 1 for a in arrays[:3]):
            return self._scrfd(arrays, input_hw), "pixels"
        return self._rows(arrays), self.coords

    def _rows(self, arrays: list[np.ndarray]) -> np.ndarray:
        if len(arrays) == 1:
            a = arrays[0].reshape(-1, arrays[0].shape[-1]) if arrays[0].ndim else arrays[0]
            if a.ndim != 2 or a.shape[1] not in (5, 15):
                raise DetectorError(
                    f"{self.spec}: one output must be (N, 5) x_1, y_1, x_2, y_2, "
                    f"score, or (N, 15) with five points; got shape {arrays[0].shape}"
                )
            return a.copy()
        if len(arrays) in (2, 3):
            boxes, scores = arrays[:2]
            if boxes.shape[-1] != 4 and scores.shape[-1] == 4:
                boxes, scores = scores, boxes
            boxes = boxes.reshape(-1, 4) if boxes.shape[-1] == 4 else None
            if boxes is not None and not len(boxes):
                return _empty()
            if boxes is not None and len(boxes) and scores.size % len(boxes) == 0:
                # one score per box, or C per box whose last is the face's
                scores = scores.reshape(len(boxes), -1)[:, -1]
            if boxes is None or scores.ndim != 1 or len(scores) != len(boxes):
                raise DetectorError(
                    f"{self.spec}: two outputs must be boxes (N, 4) and scores (N,) or (N, C); "
                    f"got shapes {arrays[0].shape} and {arrays[1].shape}"
                )
            columns = [boxes, scores[:, None]]
            if len(arrays) == 3:
                if arrays[2].size != len(boxes) * 10:
                    raise DetectorError(
                        f"{self.spec}: a third output must be five points (N, 10) or (N, 5, "
                        f"2) for N = {len(boxes)} boxes; got shape {arrays[2].shape}"
                    )
                columns.append(arrays[2].reshape(len(boxes), 10))
            return np.concatenate(columns, axis=1)
        raise DetectorError(
            f"{self.spec}: expected one output (N, 5), two or three (boxes, scores, points), "
            f"or SCRFD's 6 or 9; got {len(arrays)}"
        )

    def _scrfd(self, arrays: list[np.ndarray], input_hw: tuple[int, int]) -> np.ndarray:
        """SCRFD's heads decoded (class docstring) into (N, 5) or (N, 15) rows, in input
        pixels: boxes ``centre -/+ distance * stride``, points ``centre + offset * stride``."""
        n = len(self.SCRFD_STRIDES)
        scores, dists = arrays[:n], arrays[n : 2 * n]
        points = arrays[2 * n :] if len(arrays) == 3 * n else [None] * n
        ih, iw = input_hw
        rows = []
        heads = zip(self.SCRFD_STRIDES, scores, dists, points, strict=True)
        for stride, score, dist, point in heads:
            gh, gw = -(-ih // stride), -(-iw // stride)
            score = score.reshape(-1)
            anchors = len(score) // max(gh * gw, 1)
            if anchors < 1 or anchors * gh * gw != len(score) or dist.size != 4 * len(score):
                raise DetectorError(
                    f"{self.spec}: SCRFD's stride-{stride} outputs do not fit a {ih} x {iw} "
                    f"input (scores {score.shape}, boxes {dist.shape})"
                )
            yy, xx = np.mgrid[:gh, :gw]
            centres = np.repeat(np.stack([xx, yy], -1).reshape(-1, 2) * stride, anchors, axis=0)
            d = dist.reshape(-1, 4) * stride
            box = np.concatenate([centres - d[:, :2], centres + d[:, 2:]], axis=1)
            columns = [box, score[:, None]]
            if point is not None:
                offsets = point.reshape(-1, 5, 2) * stride
                columns.append((centres[:, None, :] + offsets).reshape(-1, 10))
            rows.append(np.concatenate(columns, axis=1).astype(np.float32))
        return np.concatenate(rows)


def _options(query: str, allowed: Sequence[str]) -> dict[str, float]:
    """``a=1&b=2`` -> {"a": 1.0, "b": 2.0}; DetectorError for other names or non-numbers."""
    options: dict[str, float] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            raise DetectorError(f"detector option {key!r}: use {', '.join(allowed)}")
        try:
            options[key] = float(value)
        except ValueError:
            raise DetectorError(f"detector option {key}={value!r} is not a number") from None
    return options


def parse_spec(spec: str) -> tuple[str, str, dict[str, float]]:
    """``(kind, target, options)`` of a detector spec: kind ``catalog``, ``haar``,
    ``run`` (target: the run id, run folder or checkpoint) or ``onnx`` (target: the
    file, options left in ``target``'s query for :meth:`OnnxDetector.from_spec`).
    DetectorError listing the valid forms for anything else."""
    kind, sep, rest = str(spec).partition(":")
    if spec == "catalog":
        return "catalog", "", {}
    if not sep and (spec == "haar" or str(spec).startswith("haar?")):
        return "haar", "", _options(str(spec).partition("?")[2], HaarDetector.OPTIONS)
    if sep and kind in ("run", "trained") and rest:
        run, _, query = rest.partition("?")
        return "run", run, _options(query, TrainedDetector.OPTIONS)
    if sep and kind == "onnx" and rest:
        return "onnx", rest, {}
    raise DetectorError(f"Unknown detector {spec!r}: use one of {', '.join(DETECTOR_SPECS)}")
