"""The unknown-face threshold of a gallery, measured on the gallery itself.

``identify`` compares a face with every person of a gallery and names the best. A
threshold measured for a *pair* of faces (the open-set evaluation's
``threshold@fpr=f``) does not hold there: a stranger gets one chance per person, and a
face against a person's centre does not score like two single faces, so the rate at
which strangers get named grows with the gallery's size (measured in
``bench/gallery_calibration.py``).

So a gallery is *calibrated*: the faces of people it does not hold (strangers) are
searched in it exactly as ``identify`` searches (same crops, same template ``how``),
and each one's best cosine is stored (:class:`catalog.gallery.Calibration`). The
threshold for a false-positive identification rate (FPIR, the share of strangers
named as someone) ``fpir`` is the score above which at most that share of the
strangers fall (:func:`threshold_at_fpir`); a stranger from the same population
then gets named at about that rate, whatever the gallery's size.

With n strangers no rate below 1/n can be measured: there the threshold is the
highest stranger score (none of them named) and the result says so
(:attr:`FpirThreshold.enough` is False): no rate is claimed that was not measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["FpirThreshold", "best_scores", "named_rate", "threshold_at_fpir"]


def best_scores(scores: Callable[[np.ndarray], np.ndarray], embeddings: np.ndarray) -> np.ndarray:
    """Each face's best cosine in a gallery, ascending float32: ``scores`` maps (Q, D)
    L2-normalised embeddings to (Q, I) cosines with the gallery's people
    (``GalleryIndex.scores``). Computed in chunks, so many faces fit in memory."""
    out = [scores(embeddings[k : k + 4096]).max(axis=1) for k in range(0, len(embeddings), 4096)]
    return np.sort(np.concatenate(out).astype(np.float32)) if out else np.zeros(0, np.float32)


def named_rate(stranger_scores: np.ndarray, threshold: float) -> float:
    """The share of strangers named at ``threshold`` (score strictly above it, as
    ``identify`` names)."""
    s = np.asarray(stranger_scores)
    return float((s > threshold).mean()) if len(s) else math.nan


@dataclass(frozen=True)
class FpirThreshold:
    """The cosine threshold for a target FPIR on ``n`` strangers: ``named`` of them
    score above ``value``. ``enough``: n is large enough to measure the target at
    all (n x fpir >= 1); where it is not, ``value`` is the highest stranger score."""

    value: float
    fpir: float
    named: int
    n: int

    @property
    def enough(self) -> bool:
        return self.n * self.fpir >= 1

    @property
    def measured(self) -> float:
        """The share of the strangers named at :attr:`value`."""
        return self.named / self.n


def threshold_at_fpir(stranger_scores: np.ndarray, fpir: float) -> FpirThreshold:
    """The lowest threshold at which at most ``fpir`` of the strangers are named (their
    best cosine strictly above it): with n strangers, k = floor(fpir x n) may score
    above, so the threshold is the (n - k)-th smallest score. ValueError for an empty
    set or a rate outside (0, 1)."""
    if not 0 < fpir < 1:
        raise ValueError(f"fpir must be in (0, 1), got {fpir}")
    s = np.sort(np.asarray(stranger_scores, dtype=np.float64))
    n = len(s)
    if not n:
        raise ValueError("no stranger scores to calibrate on")
    # float rounding: 0.01 x 300 is 3.0000000000000004, floor must give 3
    k = min(int(math.floor(fpir * n + 1e-9)), n - 1)
    value = float(s[n - k - 1])
    return FpirThreshold(value, fpir, int((s > value).sum()), n)
