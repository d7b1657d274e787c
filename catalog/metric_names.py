"""Names of metrics measured at an operating point: ``tpr@fpr=0.01``,
``threshold@fpr=0.01``, ``verif_tpr@fpr=0.001``, ``recall@iou=0.5``.

They are rows of the ``metrics`` table (``name``), written by evaluation and read by
reports, the HTML page and ``identify``; built and read here only, so the number is
always printed the same way (``%g``: 0.01, 0.001, 0.5) and a reader never splits
strings by hand.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_PATTERN = re.compile(r"(?P<measure>\w+)@(?P<at>\w+)=(?P<value>[-+0-9.eE]+)")


@dataclass(frozen=True)
class MetricName:
    """``measure`` at ``at`` = ``value``, e.g. ``tpr`` at ``fpr`` = 0.01."""

    measure: str
    at: str
    value: float

    def __str__(self) -> str:
        return f"{self.measure}@{self.at}={self.value:g}"

    @classmethod
    def parse(cls, text: str) -> MetricName | None:
        """The name ``text`` spells, or None for a plain metric name (``auc``, ``top1``)."""
        m = _PATTERN.fullmatch(text)
        if m is None:
            return None
        value = float(m["value"])
        return cls(m["measure"], m["at"], value) if math.isfinite(value) else None


def at_fpr(measure: str, fpr: float) -> str:
    """``<measure>@fpr=<fpr>``: ``at_fpr("tpr", 0.01)`` is ``tpr@fpr=0.01``."""
    return str(MetricName(measure, "fpr", float(fpr)))


def at_iou(measure: str, iou: float) -> str:
    """``<measure>@iou=<iou>``: ``at_iou("recall", 0.5)`` is ``recall@iou=0.5``."""
    return str(MetricName(measure, "iou", float(iou)))


def operating_points(names: list[str] | set[str], measure: str, at: str = "fpr") -> list[float]:
    """The values at which ``measure`` was taken among ``names``, ascending."""
    parsed = (MetricName.parse(n) for n in names)
    return sorted({p.value for p in parsed if p is not None and (p.measure, p.at) == (measure, at)})


__all__ = ["MetricName", "at_fpr", "at_iou", "operating_points"]
