"""The landmark trainer's settings: what a landmark run's checkpoint and its row in
``runs`` record, and what loading the run needs to rebuild its model (without the
training loop)."""

from __future__ import annotations

from dataclasses import dataclass

from catalog import results
from models.config import TrainConfig
from models.registry import list_models

KIND = "landmarks"
DECODES = ("dark", "quarter")


@dataclass
class LandmarkTrainConfig(TrainConfig):
    """:class:`models.config.TrainConfig` (snapshot, epochs, batch_size, lr, schedule,
    weight_decay, num_workers, seed, device, out_dir, max_minutes,
    max_batches_per_epoch) and the landmark model's settings."""

    model: str = "hourglass_small"  # models.registry name; its input_size sets the crops
    sigma: float = 1.5  # heatmap pixels, targets and DARK smoothing alike
    augment: bool = True  # catalog.transforms.Augment() defaults on the train split
    decode: str = "dark"  # decode_subpixel method: dark | quarter
    normaliser: str = results.NME_NORMALISER  # how NME is normalised (models.landmarks.metrics.nme)

    def validate(self) -> None:
        super().validate()
        if self.model not in list_models():
            raise ValueError(f"model {self.model!r}: use one of {', '.join(list_models())}")
        if self.decode not in DECODES:
            raise ValueError(f"decode must be one of {', '.join(DECODES)}, got {self.decode!r}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")
        if self.normaliser != results.NME_NORMALISER:
            raise ValueError(
                f"normaliser must be {results.NME_NORMALISER!r}, got {self.normaliser!r}"
            )
