"""A user's ONNX file as a pretrained run: a recognizer in insightface's layout, or a
face detector (with or without five landmarks), run by onnxruntime (extra ``[onnx]``).

``celebcat runs import onnx:<file>[?options] --kind recognition|detector`` records the
file (its absolute path and SHA-256) as run ``<kind>-onnx-<file stem>``; loading it
checks the hash again, so a file replaced since is refused, naming it.

**Recognizers** (:class:`OnnxRecognizer`), insightface's ``ArcFaceONNX`` layout: the
first input NCHW float32 (batch fixed at 1 or dynamic), a square crop aligned on the
``arcface`` template (112 x 112 for insightface's released models), each pixel
``(level - mean) / std`` with ``mean`` = ``std`` = 127.5, channels RGB; the first
output the embedding, any size. Options: ``size`` (default: the input's, else 112),
``template`` (a name of :data:`models.alignment.similarity.TEMPLATES`), ``mean``,
``std``, ``channels`` (rgb | bgr), ``landmarks`` (the landmark run whose points align
the crops, pinned in the run's crop source; ``detector``: the five points the
detector gives, see :class:`models.detection.detectors.OnnxDetector`). A graph whose
first nodes already subtract and scale (insightface's MXNet exports) wants ``mean=0&std=1``.

**Detectors**: :class:`models.detection.detectors.OnnxDetector`'s contract, its
options (``score``, ``nms``, ``mean``, ``std``, ``coords``, ``resize``) recorded in
the run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np

from catalog.crop_source import CropSource
from models.pretrained import (
    PretrainedError,
    PretrainedModel,
    PretrainedRecognizer,
    RecognizerSettings,
)

SOURCE = "onnx"
KINDS = ("recognition", "detector")
RECOGNIZER_OPTIONS = ("size", "template", "mean", "std", "channels", "landmarks")
#: insightface's ArcFaceONNX normalisation: (level - 127.5) / 127.5, RGB.
INSIGHTFACE_MEAN = INSIGHTFACE_STD = 127.5
DEFAULT_SIZE = 112
#: ``landmarks=detector``: the crops are aligned on the detector's own five points.
FROM_DETECTOR = "detector"
_LICENCE = "the file's own: see where it came from"


def _session(path: Path) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own error types: a bad or foreign file
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise PretrainedError(f"{path} is not an ONNX model onnxruntime can run: {first}") from None


def _slug(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-.") or "model"


def _recognizer_settings(path: Path, query: str, session: Any) -> dict[str, Any]:
    from models.alignment.similarity import TEMPLATES

    given = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(given) - set(RECOGNIZER_OPTIONS))
    if unknown:
        raise PretrainedError(
            f"onnx recognizer option {unknown[0]!r}: use {', '.join(RECOGNIZER_OPTIONS)}"
        )
    shape = session.get_inputs()[0].shape
    if len(shape) != 4 or shape[1] not in (3, "3"):
        raise PretrainedError(f"{path}: the first input must be an NCHW RGB image, got {shape}")
    fixed = shape[2] if isinstance(shape[2], int) else None
    if fixed is not None and shape[3] != fixed:
        raise PretrainedError(f"{path}: the input must be square, got {shape[2]} x {shape[3]}")
    try:
        size = int(given.get("size", fixed or DEFAULT_SIZE))
        mean, std = float(given.get("mean", INSIGHTFACE_MEAN)), float(given.get("std", 127.5))
    except ValueError as err:
        raise PretrainedError(f"{path}: an option is not a number ({err})") from None
    if fixed is not None and size != fixed:
        raise PretrainedError(f"{path}: its input is {fixed} x {fixed}, not size={size}")
    if size < 8 or not std:
        raise PretrainedError(f"{path}: size must be at least 8 and std not 0")
    template = given.get("template", "arcface")
    if template not in TEMPLATES:
        raise PretrainedError(f"template={template!r}: use one of {', '.join(TEMPLATES)}")
    channels = given.get("channels", "rgb").lower()
    if channels not in ("rgb", "bgr"):
        raise PretrainedError(f"channels={channels!r}: use rgb or bgr")
    landmarks = given.get("landmarks")
    try:
        source = CropSource.aligned(template, landmarks) if landmarks else CropSource("aligned")
    except ValueError as err:
        raise PretrainedError(f"landmarks={landmarks!r}: {err}") from None
    settings = {
        "source": str(source),
        "size": size,
        "mean": mean,
        "std": std,
        "channels": channels,
        "batch": 1 if shape[0] == 1 else None,
    }
    probe = OnnxRecognizer("probe", _settings(settings, 0), path, session=session, options=settings)
    settings["embedding_dim"] = int(probe.raw(np.zeros((1, size, size, 3), np.uint8)).shape[1])
    return settings


def describe(spec: str, kind: str | None) -> PretrainedModel:
    """The pretrained model an ``onnx:`` import names: ``spec`` is ``<file>[?options]``."""
    target, _, query = spec.partition("?")
    if kind not in KINDS:
        raise PretrainedError(
            f"onnx:{target}: say what the file is (--kind {' or --kind '.join(KINDS)})"
        )
    path = Path(target).expanduser().resolve()
    if not path.is_file():
        raise PretrainedError(f"No ONNX file at {path}")
    if kind == "detector":
        from models.detection.detectors import DetectorError, OnnxDetector

        try:
            OnnxDetector.from_spec(f"{path}?{query}" if query else str(path))
        except DetectorError as err:
            raise PretrainedError(str(err)) from None
        settings: dict[str, Any] = {"options": query}
        summary = f"the ONNX face detector {path.name}"
    else:
        settings = _recognizer_settings(path, query, _session(path))
        summary = f"the ONNX face recognizer {path.name} ({settings['embedding_dim']}-d)"
    return PretrainedModel(
        f"{kind}-onnx-{_slug(path)}", kind, SOURCE, path.name, summary, _LICENCE, str(path),
        settings=settings,
    )  # fmt: skip


def model_for(run_id: str, config: dict[str, Any]) -> PretrainedModel:
    """The model a recorded ONNX run's config names."""
    info = config["pretrained"]
    kind = run_id.partition("-")[0]
    settings = {k: v for k, v in config.items() if k != "pretrained"}
    return PretrainedModel(
        run_id, kind, SOURCE, str(info.get("model")), str(info.get("summary", "")),
        str(info.get("licence", _LICENCE)), str(info.get("file")), settings=settings,
    )  # fmt: skip


def _settings(config: dict[str, Any], dim: int) -> RecognizerSettings:
    return RecognizerSettings(str(config["source"]), int(config["size"]), dim, backbone="onnx")


@dataclass
class OnnxRecognizer(PretrainedRecognizer):
    """An ONNX face recognizer behind the recognizers' interface (``embed``, ``recipe``)."""

    session: Any = None
    options: dict[str, Any] = field(default_factory=dict)

    def raw(self, crops: np.ndarray) -> np.ndarray:
        """The first output (N, d) for uint8 RGB crops (N, S, S, 3), as the model gives it."""
        x = crops.astype(np.float32)
        if self.options.get("channels") == "bgr":
            x = x[..., ::-1]
        x = (x - np.float32(self.options["mean"])) / np.float32(self.options["std"])
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        name = self.session.get_inputs()[0].name
        step = 1 if self.options.get("batch") == 1 else max(len(x), 1)
        out = [
            np.asarray(self.session.run(None, {name: x[i : i + step]})[0], np.float32)
            for i in range(0, len(x), step)
        ]
        return np.concatenate(out).reshape(len(x), -1)

    _embed = raw


def load(model: PretrainedModel, path: Path | None, config: dict[str, Any], device: Any) -> Any:
    """The detector or recognizer of a recorded ONNX run (onnxruntime, on the CPU)."""
    assert path is not None
    if model.kind == "detector":
        from models.detection.detectors import OnnxDetector

        options = str(config.get("options") or "")
        detector = OnnxDetector.from_spec(f"{path}?{options}" if options else str(path))
        detector.spec = f"run:{model.run_id}"
        return detector
    settings = _settings(config, int(config["embedding_dim"]))
    return OnnxRecognizer(
        model.run_id, settings, path, session=_session(path), options=dict(config)
    )
