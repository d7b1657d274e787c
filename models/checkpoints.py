"""Checkpoints of every trainer: written atomically, read safely, checked before use.

A checkpoint is one ``torch.save``'d dict: the modules' state dicts under their
names (``model``, and e.g. ``loss`` for a classifier head), the optimizer's and
GradScaler's state, the config, the run id, the epoch count and the snapshot hash
(:mod:`models.harness` writes them). Reading uses ``weights_only``: tensors,
numbers, strings and containers, nothing is executed.

Whatever is wrong with a file (not a checkpoint, empty, holding code, lacking keys,
weights that do not fit the model) raises :class:`CheckpointError`, whose message is
one line naming the file and the problem. It is a ValueError, so callers that report
ValueErrors as one line (the CLI) report it too.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from catalog.errors import CatalogError
from catalog.names import is_run_id

#: What every training checkpoint holds (harness layout), with the type of each.
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "config": dict,
    "run_id": str,
    "epoch": int,
    "snapshot_hash": str,
}


class CheckpointError(CatalogError, ValueError):
    """A file that is not a usable checkpoint; the message names the file and why."""

    def __init__(self, path: str | os.PathLike[str] | None, problem: str) -> None:
        self.path, self.problem = path, problem
        where = f"Checkpoint {path}" if path is not None else "Checkpoint"
        super().__init__(f"{where}: {problem}")


class Checkpoint(dict):
    """A loaded checkpoint: a dict that remembers its file (``path``), so that later
    checks can name it. Saved again, it is a plain (ordered) dict."""

    path: Path | None = None

    def __reduce__(self):  # noqa: ANN204 - weights_only loads OrderedDict, not this class
        return (collections.OrderedDict, (list(self.items()),))


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a crash mid-write leaves the previous
    checkpoint intact (the folder is created if need be)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(dict(state), tmp)
    os.replace(tmp, path)


def _shorten(names: list[str], limit: int = 3) -> str:
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _reason(err: BaseException) -> str:
    """The informative part of torch's message, one short line (its refusals run to a
    dozen lines of advice)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    pick = next((line for line in lines if "unsupported global" in line.lower()), None)
    pick = pick or next((line for line in lines if line.startswith("Unsupported")), None)
    pick = (pick or (lines[0] if lines else type(err).__name__)).split(". ")[0].rstrip(".")
    return pick if len(pick) <= 160 else pick[:157] + "..."


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: Any = "cpu",
    *,
    required: Mapping[str, type | tuple[type, ...]] = REQUIRED,
    kind: str | None = None,
    config_type: Any = None,
) -> Checkpoint:
    """The checkpoint at ``path`` (a run folder means its ``last.pt``).

    Checks that it is a dict with ``required`` keys of those types; with ``kind``,
    that it is a checkpoint of a run of that kind (its run id says); with
    ``config_type`` (a :class:`models.config.TrainConfig` subclass) its ``config`` is
    replaced by the full config it describes (``config_type.from_saved``: fields
    saved before they existed get their defaults). Raises FileNotFoundError where
    there is no file, CheckpointError for anything wrong with it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}")
    try:
        if path.stat().st_size == 0:
            raise CheckpointError(path, "the file is empty")
        with warnings.catch_warnings():  # torch warns about odd pickle protocols
            warnings.simplefilter("ignore")
            # weights_only: tensors, numbers, strings and containers (nothing is executed)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except CheckpointError:
        raise
    except Exception as err:  # whatever a damaged file makes torch raise
        reason = "truncated" if isinstance(err, EOFError) else _reason(err)
        if "unsupported global" in reason.lower():
            raise CheckpointError(
                path,
                f"holds objects other than weights, so it was not loaded (nothing in "
                f"it was run): {reason}",
            ) from None
        raise CheckpointError(
            path, f"not a readable checkpoint: not written by torch.save, or damaged ({reason})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(path, f"holds a {type(state).__name__}, not a checkpoint dict")
    ckpt = Checkpoint(state)
    ckpt.path = path
    require(ckpt, required)
    run_id = ckpt.get("run_id")
    if not is_run_id(run_id):  # a file anyone can edit: the id it records is checked
        raise CheckpointError(
            path, f"records run id {run_id!r}, which is not a run id (<kind>-<plain word>)"
        )
    if kind is not None and isinstance(run_id, str) and not run_id.startswith(f"{kind}-"):
        raise CheckpointError(path, f"is run {run_id}'s, not a {kind} run's")
    if config_type is not None:
        try:
            ckpt["config"] = dataclasses.asdict(config_type.from_saved(ckpt["config"]))
        except (TypeError, ValueError) as err:
            raise CheckpointError(path, f"its config is not valid: {err}") from None
    return ckpt


def require(ckpt: Mapping[str, Any], required: Mapping[str, type | tuple[type, ...]]) -> None:
    """CheckpointError unless ``ckpt`` has each key of ``required`` with a value of its
    type (bool does not count as int)."""
    path = getattr(ckpt, "path", None)
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise CheckpointError(path, f"lacks {_shorten(missing)} (not a training checkpoint?)")
    wrong = [
        f"{k} is a {type(ckpt[k]).__name__}"
        for k, kind in required.items()
        if not isinstance(ckpt[k], kind) or (isinstance(ckpt[k], bool) and kind is not bool)
    ]
    if wrong:
        raise CheckpointError(path, f"damaged: {_shorten(wrong)}")


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def load_weights(module: nn.Module, ckpt: Mapping[str, Any], key: str = "model") -> None:
    """Load ``ckpt[key]`` into ``module``, strictly, after checking that its names and
    shapes are the module's: a CheckpointError lists the missing and unexpected
    names and the shape mismatches (shortened) instead of torch's wall of text."""
    path = getattr(ckpt, "path", None)
    state = ckpt.get(key)
    what = f"{type(module).__name__} weights ({key!r})"
    if not isinstance(state, Mapping):
        raise CheckpointError(path, f"has no {what}")
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [str(k) for k in state if k not in own]
    mismatched = [
        f"{k} {_shape(v)} in the file, {tuple(own[k].shape)} in the model"
        for k, v in state.items()
        if k in own and (not isinstance(v, torch.Tensor) or v.shape != own[k].shape)
    ]
    problems = [
        f"{label} {len(names)}: {_shorten(names)}"
        for label, names in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", mismatched),
        )
        if names
    ]
    if problems:
        raise CheckpointError(path, f"its {what} do not fit the model: {'; '.join(problems)}")
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as err:  # e.g. a dtype it cannot take
        raise CheckpointError(path, f"its {what} do not load: {_reason(err)}") from None


def run_fields(ckpt: Checkpoint) -> dict[str, Any]:
    """What every loaded model records of the run its checkpoint came from: ``run_id``,
    ``epoch`` (0-based, of the weights), ``checkpoint`` (the file) and
    ``snapshot_hash`` (of the images it trained on)."""
    return {
        "run_id": str(ckpt["run_id"]),
        "epoch": int(ckpt["epoch"]) - 1,
        "checkpoint": ckpt.path if ckpt.path is not None else Path(),
        "snapshot_hash": str(ckpt["snapshot_hash"]),
    }


__all__ = [
    "REQUIRED",
    "Checkpoint",
    "CheckpointError",
    "load_checkpoint",
    "load_weights",
    "require",
    "run_fields",
    "save_checkpoint",
]
