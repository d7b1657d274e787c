"""The cumulative error distribution (CED) of landmark errors, and its summaries.

NumPy only, so reports in ``catalog`` and training in ``models`` share one
definition (``models.landmarks.metrics`` re-exports these for torch tensors). Errors are NME
values, one per face; NaN (no prediction) counts as an infinite error.

Conventions follow the face-alignment literature (300-W, WFLW): the failure rate is
the share of faces with NME above a threshold (0.1 usual); AUC is the area under the
CED up to that threshold, divided by it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ced_auc", "ced_curve", "failure_rate", "plot_ced"]


def _errors(nme_values: Any) -> np.ndarray:
    """Flat float64 errors; NaN counts as an infinite error."""
    e = np.asarray(nme_values, dtype=np.float64).reshape(-1)
    if e.size == 0:
        raise ValueError("no NME values")
    return np.where(np.isnan(e), np.inf, e)


def failure_rate(nme_values: Any, threshold: float = 0.1) -> float:
    """Share of samples with NME strictly above ``threshold``: ``1 - CED(threshold)``."""
    return float((_errors(nme_values) > threshold).mean())


def ced_curve(nme_values: Any, limit: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The exact cumulative error distribution on [0, limit], as step-function vertices.

    Returns ``x`` (M,) increasing from 0 to ``limit`` (0, every distinct error below
    the limit, the limit) and ``y`` (M,), the share of samples with error <= x. The
    CED is right-continuous and constant between vertices, so
    ``plt.step(x, y, where="post")`` draws it exactly and
    ``sum(y[:-1] * diff(x)) / limit`` is :func:`ced_auc`.
    """
    if not limit > 0:
        raise ValueError(f"limit must be > 0, got {limit}")
    e = np.sort(_errors(nme_values))
    x = np.unique(np.concatenate([[0.0], e[(e > 0) & (e < limit)], [limit]]))
    y = np.searchsorted(e, x, side="right") / e.size
    return x, y


def ced_auc(nme_values: Any, limit: float = 0.1) -> float:
    """Area under the CED on [0, limit], divided by ``limit``: in [0, 1], 1 when every
    error is 0.

    Exact, with no histogram: sample i counts towards the CED from e_i on, so it adds
    ``max(0, limit - e_i)`` to the area, and AUC = mean_i max(0, limit - e_i) / limit.
    """
    if not limit > 0:
        raise ValueError(f"limit must be > 0, got {limit}")
    e = _errors(nme_values)
    return float(np.clip(limit - e, 0.0, None).mean() / limit)


def plot_ced(
    curves: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    limit: float = 0.1,
    title: str = "Cumulative error distribution",
    xlabel: str = "NME (inter-ocular)",
) -> Path:
    """Write a PNG of the CED of each ``label -> NME values``, AUC and failure rate
    in the legend; returns the path. Needs matplotlib (the ``plots`` extra).
    """
    try:
        from matplotlib.figure import Figure  # no pyplot: no global backend switch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "Plotting needs matplotlib: pip install 'celeba-catalog[plots]'"
        ) from exc
    if not curves:
        raise ValueError("no curves to plot")
    fig = Figure(figsize=(6, 4.5), dpi=120)
    ax = fig.add_subplot()
    for label, values in curves.items():
        x, y = ced_curve(values, limit)
        n = _errors(values).size
        ax.step(
            x,
            y,
            where="post",
            label=(
                f"{label}: AUC@{limit:g} {ced_auc(values, limit):.3f}, "
                f"FR@{limit:g} {failure_rate(values, limit):.3f}, n={n:,}"
            ),
        )
    ax.set(xlim=(0, limit), ylim=(0, 1.0), xlabel=xlabel, ylabel="share of faces", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
