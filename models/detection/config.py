"""The detector trainer's settings: what a detector run's checkpoint and its row in
``runs`` record, and what loading the run needs to rebuild its model (without the
training loop)."""

from __future__ import annotations

from dataclasses import dataclass

from models.config import TrainConfig
from models.detection.centernet import DETECTORS

KIND = "detector"


@dataclass
class DetectorTrainConfig(TrainConfig):
    """:class:`models.config.TrainConfig` and the detector's settings."""

    batch_size: int = 32
    epochs: int = 20
    lr: float = 3e-3
    model: str = "centernet_small"  # models.detection.centernet.DETECTORS
    input_size: int = 128  # the letterboxed square's side (a multiple of 32)
    augment: bool = True
    mosaic: float = 0.3  # share of training pictures that are 2 x 2 mosaics
    score_threshold: float = 0.3  # a detection's minimum heatmap score (recall, pipeline)

    def validate(self) -> None:
        super().validate()
        if self.model not in DETECTORS:
            raise ValueError(f"model {self.model!r}: use one of {', '.join(DETECTORS)}")
        if self.input_size < 32 or self.input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32, got {self.input_size}")
        if not 0 <= self.mosaic <= 1:
            raise ValueError(f"mosaic must be in [0, 1], got {self.mosaic}")
        if not 0 < self.score_threshold < 1:
            raise ValueError(f"score_threshold must be in (0, 1), got {self.score_threshold}")
