"""Where and how modules run: the device, mixed precision and the images' memory format.

Shared by training (:mod:`models.harness`) and inference (embedding a snapshot,
predicting landmarks), so it imports neither.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from catalog import transforms as T


@dataclass(frozen=True)
class Env:
    """Where and how the modules run: the device, autocast's dtype (None: full
    precision, as on the CPU) and the images' memory format."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    memory_format: torch.memory_format = torch.contiguous_format

    @classmethod
    def create(cls, device: str = "auto") -> Env:
        """``auto``: CUDA if there is one, else the CPU. On CUDA: bfloat16 autocast where
        supported (else float16) and channels_last."""
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: there is no CUDA device here; use auto or cpu")
        if dev.type != "cuda":
            return cls(dev)
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return cls(dev, amp, torch.channels_last)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """A uint8 image batch from the loader, normalised on the device: a quarter of
        the bytes through the loader and the copy (catalog.transforms.normalize_batch)."""
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        # (a no-op where normalising kept the layout)
        return T.normalize_batch(images).contiguous(memory_format=self.memory_format)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed precision around a forward pass (on CUDA; nothing on the CPU)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)
