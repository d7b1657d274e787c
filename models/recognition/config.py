"""The recognizer trainer's settings: what a recognition run's checkpoint and its row in
``runs`` record, and what loading the run needs to rebuild its backbone and loss
(without the training loop)."""

from __future__ import annotations

from dataclasses import dataclass

from catalog.crop_source import CropSource
from models.config import TrainConfig
from models.recognition.losses import LOSSES, MININGS, TRIPLET
from models.registry import RECOGNITION, list_models

KIND = "recognition"


@dataclass
class RecognizerTrainConfig(TrainConfig):
    """:class:`models.config.TrainConfig` and the recognizer's settings.

    Defaults: the reference's recipe (AdamW 1e-3, cosine, label smoothing 0.1,
    ArcFace s = 30, m = 0.5, a 512-d embedding, 30 epochs) on the CPU-sized backbone.
    """

    batch_size: int = 64
    backbone: str = "face_cpu"  # models.registry recognition name
    loss: str = "arcface"  # ce | arcface | cosface | triplet
    mining: str = "batch-hard"  # triplet only: random | batch-hard
    source: str = "aligned"  # aligned (newest at size), aligned/<template>/<run>, or bbox
    size: int = 112  # crop side; the backbone's input_size
    embedding_dim: int = 512
    dropout: float = 0.0  # before the embedding head's linear layer
    margin: float | None = None  # None: the loss's default (ArcFace 0.5 rad, ...)
    scale: float = 30.0  # ArcFace / CosFace s
    label_smoothing: float = 0.1  # ce
    pk_images: int = 4  # triplet: K images per identity; P = batch_size // K
    augment: bool = True

    def validate(self) -> None:
        super().validate()
        if self.backbone not in list_models(RECOGNITION):
            raise ValueError(
                f"backbone {self.backbone!r}: use one of {', '.join(list_models(RECOGNITION))}"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r}: use one of {', '.join(LOSSES)}")
        if self.mining not in MININGS:
            raise ValueError(f"mining {self.mining!r}: use one of {', '.join(MININGS)}")
        CropSource.parse(self.source)  # ValueError naming the forms
        if self.size < 16 or self.size % 16:
            raise ValueError(f"size must be a multiple of 16 (64, 112, 224...), got {self.size}")
        if self.embedding_dim < 2:
            raise ValueError(f"embedding_dim must be at least 2, got {self.embedding_dim}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")
        if self.pk_images < 2 or self.batch_size // self.pk_images < 2:
            if self.loss == TRIPLET:
                raise ValueError(
                    f"triplet batches need K >= 2 images of P >= 2 identities: pk_images "
                    f"{self.pk_images} with batch_size {self.batch_size}"
                )
