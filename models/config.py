"""What every trainer is configured by: :class:`TrainConfig`, which each task's config
subclasses (``models/<task>/config.py``).

It lives apart from the training loop (:mod:`models.harness`) because loading a
trained model needs the config its checkpoint saved, and inference must not import
the trainer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

import torch

SCHEDULES = ("cosine", "constant")

C = TypeVar("C", bound="TrainConfig")


@dataclass
class TrainConfig:
    """What every trainer is configured by; a trainer's config subclasses it.

    Invalid values raise ValueError when the config is made (:meth:`validate`)."""

    snapshot: str = "demo"
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3  # AdamW
    schedule: str = "cosine"  # per epoch: cosine (lr down to lr/100 at the last) | constant
    weight_decay: float = 1e-4
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"  # cuda if available, else cpu
    out_dir: str = "checkpoints"
    max_minutes: float | None = None  # budget: no epoch starts that, as long as the longest
    # so far, would overrun it
    max_batches_per_epoch: int | None = None  # short epochs for tests and demos
    world_size: int = 1  # processes training together (torchrun): set by train(), recorded

    #: Fields a resumed run may change; any other change would make it a different run.
    #: (A new ``epochs`` reshapes the rest of a cosine schedule, which is the point of it.)
    RESUMABLE: ClassVar[frozenset[str]] = frozenset(
        {"epochs", "num_workers", "device", "out_dir", "max_minutes", "world_size"}
    )
    #: Values of fields a checkpoint saved before they existed: runs saved before the
    #: schedule existed trained at a constant rate. (Other missing fields: defaults.)
    SAVED_DEFAULTS: ClassVar[Mapping[str, Any]] = {"schedule": "constant"}

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """ValueError for settings that would fail later or train nothing, silently."""
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        for name in ("epochs", "batch_size", "max_batches_per_epoch", "world_size"):
            value = getattr(self, name)
            if value is not None and value < 1:  # 0 batches would train nothing, silently
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be positive, got {self.max_minutes}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in ("weight_decay", "num_workers", "seed"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError:
                raise ValueError(
                    f"device {self.device!r}: use auto, cpu, cuda or cuda:<index>"
                ) from None

    @classmethod
    def from_saved(cls: type[C], saved: Mapping[str, Any]) -> C:
        """The config a checkpoint or the runs table recorded (``asdict`` of one): fields
        it lacks, being older, get :attr:`SAVED_DEFAULTS` or their defaults."""
        unknown = sorted(set(saved) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(map(str, unknown))}")
        return cls(**{**cls.SAVED_DEFAULTS, **saved})

    @classmethod
    def resumed(cls: type[C], saved: Mapping[str, Any] | TrainConfig, /, **changed: Any) -> C:
        """The config of a resumed run: ``saved`` (a run's config, as saved, or a
        config) with ``changed`` over it. A change to a field not in
        :attr:`RESUMABLE` raises ValueError naming it (passing a field's saved value
        is no change)."""
        if isinstance(saved, TrainConfig):
            saved = dataclasses.asdict(saved)
        base = cls.from_saved(saved)
        unknown = sorted(set(changed) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}")
        refused = [
            n for n, v in changed.items() if n not in cls.RESUMABLE and v != getattr(base, n)
        ]
        if refused:
            was = "; ".join(f"{n} {getattr(base, n)!r}, given {changed[n]!r}" for n in refused)
            raise ValueError(
                f"Cannot resume with a different {', '.join(refused)} (the run's {was}); only "
                f"{', '.join(sorted(cls.RESUMABLE))} may change on resume."
            )
        return dataclasses.replace(base, **changed)
