"""Landmark metrics: normalised mean error, failure rate, cumulative error distribution.

Inputs are numpy arrays or torch tensors; :func:`nme` returns the type it was given
(so a validation loop can stay on its device), the summary functions return floats
or numpy arrays.

Conventions follow the face-alignment literature (300-W, WFLW, AFLW): NME is the
mean over landmarks of the point-to-point error divided by a per-sample distance;
the failure rate is the share of samples with NME above a threshold (0.1 usual);
AUC is the area under the cumulative error distribution (CED) up to that threshold,
divided by it (e.g. Feng et al. 2018, "Wing Loss for Robust Facial Landmark
Localisation with Convolutional Neural Networks", arXiv:1711.06753, section 5).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from catalog import ced

__all__ = ["ced_auc", "ced_curve", "failure_rate", "mean_nme", "nme"]

Array = TypeVar("Array", np.ndarray, torch.Tensor)

#: Landmark indices of the two eye centres (CelebA order: lefteye, righteye, ...).
LEFT_EYE, RIGHT_EYE = 0, 1


def _distance(a: Array, b: Array) -> Array:
    """Euclidean distance over the last axis (numpy and torch alike)."""
    return ((a - b) ** 2).sum(-1) ** 0.5


def nme(
    pred: Array, target: Array, norm: str | np.ndarray | torch.Tensor = "inter_ocular"
) -> Array:
    """Per-sample normalised mean error (B,) of points (B, K, 2) (or one sample (K, 2)
    -> a 0-d value).

    ``pred`` and ``target`` are in the same frame (any: input or original pixels; the
    ratio does not depend on it for a similarity between frames, but does for the
    non-uniform box stretch of the crops, so compare in the original image's pixels
    where the reference numbers were). NME = mean over the K landmarks of
    ``|pred_k - target_k|`` divided by the sample's normalising distance:

    - ``"inter_ocular"``: the distance between the target's two eye centres
      (landmarks 0 and 1). With CelebA's five points there are no eye corners, so
      "inter-ocular" here is the eye-centre distance, i.e. what 300-W calls
      inter-pupil normalisation (its "inter-ocular" uses the outer eye corners and
      gives smaller NMEs for the same errors).
    - an array (B,) of distances of your choosing (e.g. the face box diagonal).

    Raises ValueError where a normalising distance is not positive.
    """
    if tuple(pred.shape) != tuple(target.shape) or pred.shape[-1] != 2 or pred.ndim not in (2, 3):
        raise ValueError(
            f"pred and target must both be (B, K, 2) or (K, 2), got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    if isinstance(norm, str):
        if norm != "inter_ocular":
            raise ValueError(f"norm {norm!r}: use 'inter_ocular' or an array of distances")
        if target.shape[-2] <= RIGHT_EYE:
            raise ValueError(f"inter_ocular needs the two eye landmarks, got K={target.shape[-2]}")
        d = _distance(target[..., LEFT_EYE, :], target[..., RIGHT_EYE, :])
    else:
        if isinstance(pred, torch.Tensor):
            d = torch.as_tensor(norm, dtype=pred.dtype, device=pred.device)
        else:
            d = _numpy(norm)
        if tuple(d.shape) != tuple(pred.shape[:-2]):
            raise ValueError(f"norm must have shape {tuple(pred.shape[:-2])}, got {tuple(d.shape)}")
    if not bool((d > 0).all()):
        bad = np.flatnonzero(~(np.asarray(_numpy(d)).reshape(-1) > 0))
        raise ValueError(
            f"normalising distance is not positive for sample(s) {bad[:5].tolist()}: the "
            "two eye landmarks coincide (or the norm given is <= 0)"
        )
    return _distance(pred, target).mean(-1) / d


def mean_nme(
    pred: Array, target: Array, norm: str | np.ndarray | torch.Tensor = "inter_ocular"
) -> float:
    """The mean of :func:`nme` over the samples, as a float."""
    return float(_numpy(nme(pred, target, norm)).mean())


def _numpy(values: np.ndarray | torch.Tensor | float) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().to(torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def failure_rate(nme_values: np.ndarray | torch.Tensor, threshold: float = 0.1) -> float:
    """Share of samples with NME strictly above ``threshold`` (:func:`catalog.ced.failure_rate`)."""
    return ced.failure_rate(_numpy(nme_values), threshold)


def ced_curve(
    nme_values: np.ndarray | torch.Tensor, limit: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """The exact CED on [0, limit] as step vertices (:func:`catalog.ced.ced_curve`)."""
    return ced.ced_curve(_numpy(nme_values), limit)


def ced_auc(nme_values: np.ndarray | torch.Tensor, limit: float = 0.1) -> float:
    """Area under the CED on [0, limit] / limit (:func:`catalog.ced.ced_auc`)."""
    return ced.ced_auc(_numpy(nme_values), limit)
