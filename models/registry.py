"""Every named model of the project, built by name (timm's ``create_model`` style).

    from models.registry import create_model, list_models
    model = create_model("hourglass_small", stacks=1)   # overrides go to the config
    backbone = create_model("resnet18", input_size=64, embedding_dim=256)

The tables below are the whole registry, one per task: a name maps to a constructor
that takes keyword overrides of its family's config and returns an ``nn.Module``. Add
a model by adding a line (its constructor documented where it is defined), so the
names, and what each one builds, are listed in one place and nothing registers
itself as a side effect of an import. Names are unique across tasks, so
``create_model`` needs only the name.

- ``landmarks``: images (B, 3, S, S) -> a list of heatmaps (B, K, S/4, S/4) per stack.
- ``recognition``: images (B, 3, S, S) -> embeddings (B, D).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from models.landmarks import hourglass
from models.recognition import backbones

__all__ = ["LANDMARKS", "RECOGNITION", "TASKS", "create_model", "list_models", "model_task"]

LANDMARKS, RECOGNITION = "landmarks", "recognition"
TASKS: tuple[str, ...] = (LANDMARKS, RECOGNITION)

_MODELS: dict[str, dict[str, Callable[..., nn.Module]]] = {
    LANDMARKS: {
        # Stacked hourglass landmark models (models/landmarks/hourglass.py): S -> heatmaps S/4.
        "hourglass_seed": hourglass.hourglass_seed,  # the reference: 2 stacks, 256 ch, 256 -> 64
        "hourglass_paper": hourglass.hourglass_paper,  # Newell et al.: 8 stacks, 256 ch, 256 -> 64
        "hourglass_small": hourglass.hourglass_small,  # CPU-sized: 2 stacks, 64 ch, 128 -> 32
    },
    RECOGNITION: {
        # ResNets, ArcFace embedding head (models/recognition/backbones.py): 112 px -> 512-d.
        "resnet50": backbones.resnet50,  # He et al.'s ResNet-50: bottleneck 3-4-6-3, 64 wide
        "resnet18": backbones.resnet18,  # He et al.'s ResNet-18: basic 2-2-2-2, 64 wide
        "face_cpu": backbones.face_cpu,  # ResNet-10, 32 wide, stride-2 stem: CPU-sized
    },
}
_TASK_OF = {name: task for task, table in _MODELS.items() for name in table}
assert len(_TASK_OF) == sum(map(len, _MODELS.values())), "a model name is in two tasks"


def list_models(task: str | None = LANDMARKS) -> list[str]:
    """The registered model names of ``task``, sorted; ``task=None``: every task's.

    The default is the landmark models: what ``list_models()`` listed before there
    were other tasks, and what its callers (landmark training and its tests) expect.
    """
    if task is None:
        return sorted(_TASK_OF)
    if task not in _MODELS:
        raise ValueError(f"Unknown task {task!r}: use one of {', '.join(TASKS)} (or None: all)")
    return sorted(_MODELS[task])


def model_task(name: str) -> str:
    """The task (:data:`LANDMARKS` or :data:`RECOGNITION`) of the registered model ``name``."""
    try:
        return _TASK_OF[name]
    except KeyError:
        raise _unknown(name) from None


def _unknown(name: str) -> ValueError:
    listing = "; ".join(f"{task}: {', '.join(list_models(task))}" for task in TASKS)
    return ValueError(f"Unknown model {name!r}. Registered models: {listing}")


def create_model(name: str, **overrides: Any) -> nn.Module:
    """A freshly initialised model ``name``, its config fields replaced by ``overrides``.

    Unknown names raise ValueError listing the registered ones; unknown override
    names raise ValueError listing the config's fields.
    """
    return _MODELS[model_task(name)][name](**overrides)
