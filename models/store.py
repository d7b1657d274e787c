"""The model store: the one way to load any model the catalog knows, for inference.

A user names a model the same way everywhere (``--run`` on ``align``, ``embed``,
``eval recognizer``, ``gallery add``, ``identify``, ``report html``, the demo):

- a **run id** (``landmarks-20261206-...``): the run's checkpoint under the
  ``out_dir`` its config recorded (relative paths taken from the current folder, as in
  training), ``best.pt`` where there is one, else ``last.pt``;
- a **run folder** (``checkpoints/<run id>/``): the same two files;
- a **checkpoint file** (``.../best.pt``);
- a **pretrained run** (``recognition-dlib-resnet``, ...: ``celebcat runs import``),
  loaded by :mod:`models.pretrained` from the package its weights ship in, as the
  same inference objects.

Each loader returns the task's inference object, one interface per task:

- :func:`load_landmarks` -> :class:`models.landmarks.predict.LandmarkModel`:
  ``predict(crops) -> (N, 5, 2)``;
- :func:`load_recognizer` -> :class:`models.recognition.recognizer.Recognizer`:
  ``embed(aligned) -> (N, d)`` and its ``recipe`` (crop source, size, normalisation);
- :func:`load_detector` -> :class:`models.detection.detectors.Detector`:
  ``detect(images)``; a detector spec may also name a model that is not a run
  (``catalog``, ``haar``, ``onnx:<path>``, see :data:`models.detection.detectors.DETECTOR_SPECS`).

Checkpoints are read in :func:`read_checkpoint` only (``weights_only``: nothing in the
file is run; whatever is wrong is one :class:`models.checkpoints.CheckpointError` line
naming the file). Nothing here imports a trainer: the configs a checkpoint saved are
read with the tasks' config classes (``models/<task>/config.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models import checkpoints
from models.checkpoints import Checkpoint
from models.config import TrainConfig
from models.detection import config as detection_config
from models.landmarks import config as landmarks_config
from models.recognition import config as recognition_config

if TYPE_CHECKING:  # loaded lazily: the recognizer's losses import pytorch-metric-learning
    from models.detection.detectors import Detector
    from models.landmarks.predict import LandmarkModel
    from models.recognition.recognizer import Recognizer

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class _Kind:
    """What the store knows of a kind of run: its config class and its loader."""

    config_type: type[TrainConfig]
    load: Callable[[Checkpoint, Any], Any]


def _load_landmarks(ckpt: Checkpoint, device: Any) -> Any:
    from models.landmarks.predict import LandmarkModel

    return LandmarkModel.from_checkpoint(ckpt, device)


def _load_recognizer(ckpt: Checkpoint, device: Any) -> Any:
    from models.recognition.recognizer import Recognizer

    return Recognizer.from_checkpoint(ckpt, device)


def _load_detector(ckpt: Checkpoint, device: Any) -> Any:
    from models.detection.detectors import LoadedDetector

    return LoadedDetector.from_checkpoint(ckpt, device)


#: Every kind of run, by ``runs.kind`` (also the run ids' prefix).
LANDMARKS, RECOGNITION, DETECTOR = (
    landmarks_config.KIND,
    recognition_config.KIND,
    detection_config.KIND,
)
KINDS: dict[str, _Kind] = {
    LANDMARKS: _Kind(landmarks_config.LandmarkTrainConfig, _load_landmarks),
    RECOGNITION: _Kind(recognition_config.RecognizerTrainConfig, _load_recognizer),
    DETECTOR: _Kind(detection_config.DetectorTrainConfig, _load_detector),
}


def _kind(kind: str) -> _Kind:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"Unknown kind of run {kind!r}: use one of {', '.join(KINDS)}") from None


def checkpoint_path(name: PathLike, db: PathLike | None, kind: str) -> Path:
    """The checkpoint file ``name`` means for a run of ``kind``: a checkpoint path, a
    run folder (its best.pt, else last.pt) or a run id (module docstring). RunError for
    an unknown id, ValueError for a run of another kind, FileNotFoundError where its
    checkpoints are not where it recorded them."""
    from catalog import results

    path = Path(name)
    if not path.exists():
        run = results.get_run(db, str(name))  # RunError for unknown ids
        if run.kind != kind:
            raise ValueError(f"Run {run.run_id} is a {run.kind} run, not a {kind} run")
        path = Path(run.config.get("out_dir", "checkpoints")) / run.run_id
        if not path.exists():
            raise FileNotFoundError(
                f"Run {run.run_id}'s checkpoints are not at {path} (its out_dir "
                f"{run.config.get('out_dir')!r}, relative to where it was trained); pass "
                "the checkpoint file instead."
            )
    if path.is_dir():
        path = path / "best.pt" if (path / "best.pt").exists() else path / "last.pt"
    return path


def read_checkpoint(path: PathLike, kind: str, map_location: Any = "cpu") -> Checkpoint:
    """The checkpoint at ``path`` (a run folder means its last.pt) of a run of ``kind``,
    its ``config`` complete (fields older runs lack filled in). CheckpointError (a
    ValueError) naming the file where it is not one; FileNotFoundError where there is
    none. Training's ``--resume`` reads its checkpoint here too."""
    return checkpoints.load_checkpoint(
        path, map_location, kind=kind, config_type=_kind(kind).config_type
    )


def resumed_config(path: PathLike, kind: str, **changed: Any) -> TrainConfig:
    """The config of a run of ``kind`` resumed from the checkpoint at ``path``, with
    ``changed`` over it (:meth:`models.config.TrainConfig.resumed`: only its
    ``RESUMABLE`` settings may change)."""
    config = read_checkpoint(path, kind)["config"]
    return _kind(kind).config_type.resumed(config, **changed)


def pretrained_run(name: PathLike, db: PathLike | None) -> Any | None:
    """The run record of ``name`` where it is a pretrained run of the catalog, else None
    (a path, an unknown id, a trained run)."""
    import duckdb

    from catalog import results
    from catalog.errors import CatalogError
    from models import pretrained

    if not isinstance(name, str) or Path(name).exists():
        return None
    try:
        run = results.get_run(db, name)
    except (CatalogError, OSError, ValueError, duckdb.Error):
        return None  # the trained-run path says what is wrong
    return run if pretrained.is_pretrained(run.config) else None


def load_run(name: PathLike, kind: str, db: PathLike | None = None, device: Any = "cpu") -> Any:
    """The inference object of run ``name`` (id, folder or checkpoint, or a pretrained
    run's id) of ``kind``, in eval mode on ``device``: the one place a model is loaded.
    ``device="auto"``: a GPU where there is one (under torchrun, this rank's)."""
    load = _kind(kind).load  # an unknown kind is refused before anything is read
    if device == "auto":
        from models import distributed

        device = distributed.device("auto")
    run = pretrained_run(name, db)
    if run is not None:
        from models import pretrained

        if run.kind != kind:
            raise ValueError(f"Run {run.run_id} is a {run.kind} run, not a {kind} run")
        return pretrained.load(run.run_id, kind, run.config, device)
    return load(read_checkpoint(checkpoint_path(name, db, kind), kind), device)


def load_landmarks(
    name: PathLike, db: PathLike | None = None, device: Any = "cpu"
) -> LandmarkModel:
    """A landmark run as a :class:`models.landmarks.predict.LandmarkModel`."""
    return load_run(name, LANDMARKS, db, device)


def load_recognizer(name: PathLike, db: PathLike | None = None, device: Any = "cpu") -> Recognizer:
    """A recognition run as a :class:`models.recognition.recognizer.Recognizer`."""
    return load_run(name, RECOGNITION, db, device)


def load_detector(
    spec: str | Detector, db: PathLike | None = None, device: Any = "cpu"
) -> Detector:
    """The :class:`models.detection.detectors.Detector` a spec names (``catalog``,
    ``haar[?options]``, ``run:<run>[?score=S&top=N]``, ``onnx:<path>[?options]``); a
    Detector is returned as it is. DetectorError (a ValueError) for unknown specs."""
    from models.detection import detectors as D

    if isinstance(spec, D.Detector):
        return spec
    kind, target, options = D.parse_spec(str(spec))
    if kind == "catalog":
        return D.CatalogDetector(db)
    if kind == "haar":
        return D.HaarDetector(**options)
    if kind == "onnx":
        return D.OnnxDetector.from_spec(target)
    loaded = load_run(target, DETECTOR, db, device)
    if isinstance(loaded, D.Detector):  # a pretrained detector
        return loaded
    return D.TrainedDetector(loaded, options.get("score"), top=int(options.get("top", 20)))


__all__ = [
    "DETECTOR",
    "KINDS",
    "LANDMARKS",
    "RECOGNITION",
    "checkpoint_path",
    "load_detector",
    "load_landmarks",
    "load_recognizer",
    "load_run",
    "pretrained_run",
    "read_checkpoint",
    "resumed_config",
]
