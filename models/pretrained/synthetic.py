"""Our own recognizer and face detector, trained beforehand on synthetic faces and
shipped inside the package (``models/pretrained/weights/``): the runs
``recognition-synthetic-easy`` and ``detector-synthetic-easy``.

What it is: ArcFace on the ``face_cpu`` backbone, 128-d embeddings of 64 x 64 crops
aligned on the ``arcface`` template, trained on the people of a synthetic population
that no demo draws (``celebcat synth --seed 1001 --style easy``; the demo draws seeds
0, 1, 2, ...). ``python bench/train_shipped_recognizer.py`` makes the file again, and
docs/pretrained.md has its figures. The demo identifies its group photo with it
(models/pipeline/demo.py): a recognizer trained in the demo's own seconds on a few
dozen people leaves too many of the photo's faces unnamed.

What it is not: a model of real faces. It has seen drawn faces only; on photographs
it names no one. Use it to try the pipeline on synthetic data; for photographs use a
model trained on real faces (``celebcat runs import dlib``).

Its crops are aligned with the catalog's true landmarks in training, so a photo's
need a landmark run (``--landmarks RUN``), as any run trained on true landmarks does.
The file holds the backbone's weights in half precision (half the size; embeddings
differ from full precision by under 1e-3 in cosine) and the settings to build it.

The detector is the small CenterNet of ``celebcat train detector`` trained on tens
of thousands of that population's pictures, most of them 2 x 2 mosaics (several
small faces, as a group photo has), where the demo's own trains on a few hundred for
seconds; ``python bench/train_shipped_detector.py`` makes its file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.pretrained import PretrainedModel, PretrainedRecognizer, RecognizerSettings

SOURCE = "synthetic"
RECOGNIZER_RUN = "recognition-synthetic-easy"
FILE = "recognizer-synthetic-easy.pt"
#: The file as this version ships it (bench/train_shipped_recognizer.py prints it).
SHA256 = "0c9838b5003d592e1934ffe8f3e0fe31cad6ab24481cfd04a16e08234f0c58cc"
DETECTOR_RUN = "detector-synthetic-easy"
DETECTOR_FILE = "detector-synthetic-easy.pt"
#: bench/train_shipped_detector.py prints it.
DETECTOR_SHA256 = "47e780da2b524fb44d74c8e3016d0eb326e8e0355ac70a510b2bf93da8b747e8"

MODELS = (
    PretrainedModel(
        RECOGNIZER_RUN,
        "recognition",
        SOURCE,
        "recognizer-synthetic-easy",
        "ArcFace on face_cpu, 128-d, 64 px arcface-aligned crops, trained on synthetic "
        "faces (style easy): drawn faces only, it names no one in real photographs",
        "MIT (celeba-catalog's own weights)",
        file=FILE,
        sha256=SHA256,
        settings={"source": "aligned/arcface/truth", "size": 64, "embedding_dim": 128},
    ),
    PretrainedModel(
        DETECTOR_RUN,
        "detector",
        SOURCE,
        "detector-synthetic-easy",
        "CenterNet (centernet_small, 128 px input) trained on synthetic pictures (style "
        "easy), most of them mosaics of several faces: drawn faces only",
        "MIT (celeba-catalog's own weights)",
        file=DETECTOR_FILE,
        sha256=DETECTOR_SHA256,
    ),
)


@dataclass
class SyntheticRecognizer(PretrainedRecognizer):
    """The shipped backbone behind the recognizers' interface (``embed``, ``recipe``).

    A face's embedding is the sum of the backbone's for the crop and for its mirror
    image (then L2-normalised by ``embed``): on the demo's held-out people this lifts
    the open-set TPIR at FPIR 0.01 by 0.03-0.06 on two seeds of three (docs/pretrained.md),
    for twice the embedding time of a 64 px crop."""

    net: Any = None
    device: Any = "cpu"

    def _embed(self, crops: np.ndarray) -> np.ndarray:
        import torch

        from catalog import transforms as T

        recipe = self.recipe
        part = np.ascontiguousarray(crops.transpose(0, 3, 1, 2))
        with torch.no_grad():
            images = T.normalize_batch(
                torch.from_numpy(part).to(self.device), recipe.mean, recipe.std
            )
            one = torch.nn.functional.normalize(self.net(images).float(), dim=1)
            mirror = torch.nn.functional.normalize(self.net(images.flip(3)).float(), dim=1)
            return (one + mirror).cpu().numpy()


def save(path: str | Path, state: dict[str, Any], settings: dict[str, Any], provenance: str) -> str:
    """Write a shipped file: the network's ``state`` in half precision, the
    ``settings`` that build it (the recognizer's backbone, size, embedding_dim,
    dropout; the detector's model, input_size, score_threshold) and where it comes
    from. Returns the file's SHA-256, the hash :data:`MODELS` pins."""
    import torch

    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    torch.save({"model": half, "settings": dict(settings), "provenance": provenance}, path)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _full_precision(saved: dict[str, Any]) -> dict[str, Any]:
    """The saved network's weights back in float32, for ``load_state_dict``."""
    return {k: v.float() for k, v in saved["model"].items()}


def load(model: PretrainedModel, path: Path | None, config: dict[str, Any], device: Any) -> Any:
    """The inference object of ``model`` (weights at ``path``) with its run's config."""
    import torch

    from models.registry import create_model

    assert path is not None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if model.kind == "detector":
        return _detector(model, path, saved, device)
    built = saved["settings"]
    net = create_model(
        built["backbone"],
        input_size=int(built["size"]),
        embedding_dim=int(built["embedding_dim"]),
        dropout=float(built.get("dropout", 0.0)),
    )
    net.load_state_dict(_full_precision(saved))
    net.to(device).eval()
    settings = RecognizerSettings(
        str(config["source"]),
        int(config["size"]),
        int(config["embedding_dim"]),
        backbone="face_cpu",
    )
    return SyntheticRecognizer(model.run_id, settings, path, net=net, device=device)


def _detector(model: PretrainedModel, path: Path, saved: dict[str, Any], device: Any) -> Any:
    """The shipped CenterNet as the detectors' interface (``detect``), thresholded at
    the score it was saved with."""
    from models.detection.centernet import create_detector_model
    from models.detection.config import DetectorTrainConfig
    from models.detection.detectors import LoadedDetector, TrainedDetector

    built = saved["settings"]
    config = DetectorTrainConfig(
        snapshot="",
        model=str(built["model"]),
        input_size=int(built["input_size"]),
        score_threshold=float(built["score_threshold"]),
    )
    net = create_detector_model(config.model, input_size=config.input_size)
    net.load_state_dict(_full_precision(saved))
    net.to(device).eval()
    return TrainedDetector(LoadedDetector(model.run_id, config, net, 0, path, ""))
