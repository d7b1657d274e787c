"""Every named model of the project, built by name (timm's ``create_model`` style).

    from models.registry import create_model, list_models
    model = create_model("hourglass_small", stacks=1)   # overrides go to the config

The table below is the whole registry: a name maps to a constructor that takes
keyword overrides of its family's config and returns an ``nn.Module``. Add a model
by adding a line (its constructor documented where it is defined), so the names,
and what each one builds, are listed in one place and nothing registers itself as
a side effect of an import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from models import hourglass

__all__ = ["create_model", "list_models"]

_MODELS: dict[str, Callable[..., nn.Module]] = {
    # Stacked hourglass landmark models (models/hourglass.py), input S -> heatmaps S/4.
    "hourglass_seed": hourglass.hourglass_seed,  # the reference: 2 stacks, 256 ch, 256 -> 64
    "hourglass_paper": hourglass.hourglass_paper,  # Newell et al.: 8 stacks, 256 ch, 256 -> 64
    "hourglass_small": hourglass.hourglass_small,  # CPU-sized: 2 stacks, 64 ch, 128 -> 32
}


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_MODELS)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """A freshly initialised model ``name``, its config fields replaced by ``overrides``.

    Unknown names raise ValueError listing the registered ones; unknown override
    names raise ValueError listing the config's fields.
    """
    try:
        constructor = _MODELS[name]
    except KeyError:
        raise ValueError(
            f"Unknown model {name!r}. Registered models: {', '.join(list_models())}"
        ) from None
    return constructor(**overrides)
