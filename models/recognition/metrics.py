"""Face recognition metrics from embeddings and labels: closed-set, verification,
open-set verification and identification, triplet accuracy.

Inputs are numpy arrays or torch tensors (moved to the CPU): embeddings (N, D) of any
float dtype, labels (N,) of integers. Nothing here reads the catalog, plots, or
needs scikit-learn (the tests check against it). Similarities are cosines of
L2-normalised embeddings, in float32; all pairs come from one matrix product, done in
row chunks of at most ``chunk`` rows so that memory stays near ``chunk x N`` floats
plus the output, and the chunked and whole results are the same.

**Threshold convention** (every "TPR at FPR f" here, verification and open set):
the threshold is ``np.quantile(negatives, 1 - f)`` (numpy's default linear
interpolation between order statistics), and a pair is accepted when its score is
strictly above it: TPR = ``mean(positives > threshold)``. The false-positive rate
reached, ``mean(negatives > threshold)``, is at most f + 1/len(negatives), and below f
where negatives tie at the threshold; results report it next to f. This is the
reference's quantile-of-negatives rule. ROC curves (:func:`roc_curve`), AUC and EER
instead take every distinct score as a threshold and accept ``score >= threshold``, as
scikit-learn's ``roc_curve`` does, so that they match it point for point. AUC and EER
are computed from the sorted scores by binary search, without building the curve (at
12M pairs the curve's arrays take several times the scores' memory).

Protocols:

- **Closed set**: top-k accuracy from class scores (:func:`topk_accuracy`), either a
  classifier's logits (``RecognitionLoss.logits``) or, for a model without a
  classifier (triplet), cosines to class centres, the re-normalised mean of each
  class's L2-normalised gallery embeddings (:func:`class_centres`,
  :func:`closed_set_accuracy`).
- **Verification over all pairs** of a set (:func:`verification`): same-identity pairs
  are positives, the rest negatives; ROC AUC, EER, TPR at FPR 1e-1, 1e-2, 1e-3.
- **Open-set verification, the reference's protocol** (:func:`open_set_verification`):
  200 held-out identities, 100 "query" identities x 2 images and 100 "distractor"
  identities x 5 images. Positives: query-query pairs of one identity; negatives:
  query-query pairs of two identities and every query-distractor pair
  (distractor-distractor pairs are not used). TPR at FPR 0.5, 0.2, 0.1, 0.05, 0.01,
  0.001, and the thresholds: the pipeline's "unknown below the threshold".
- **Open-set identification**, as IJB-C reports it (Maze et al., "IARPA Janus
  Benchmark - C", ICB 2018; Grother and Ngan's FRVT terms)
  (:func:`open_set_identification`): the gallery is each query identity's first
  image; the probes are the other query images (mated) and every distractor image
  (non-mated). The threshold at FPIR f is the (1 - f) quantile of the non-mated
  probes' best gallery scores; TPIR is the share of mated probes whose best gallery
  entry is their own identity *and* scores above it.
- **Triplet accuracy** (:func:`triplet_accuracy`): the share of (a, p, n) triplets
  with d(a, p) < d(a, n) on L2-normalised embeddings (ties fail).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "IDENTIFICATION_FPIRS",
    "OPEN_SET_FPRS",
    "VERIFICATION_FPRS",
    "IdentificationResult",
    "RocCurve",
    "VerificationResult",
    "class_centres",
    "closed_set_accuracy",
    "equal_error_rate",
    "l2_normalize",
    "open_set_identification",
    "open_set_scores",
    "open_set_verification",
    "pair_scores",
    "random_triplets",
    "roc_auc",
    "roc_curve",
    "topk_accuracy",
    "tpr_at_fpr",
    "triplet_accuracy",
    "verification",
    "verification_from_scores",
]

#: FPRs of the all-pairs verification report.
VERIFICATION_FPRS: tuple[float, ...] = (1e-1, 1e-2, 1e-3)
#: FPRs of the reference's open-set protocol (0.5 to 0.05), and two stricter ones.
OPEN_SET_FPRS: tuple[float, ...] = (0.5, 0.2, 0.1, 0.05, 0.01, 0.001)
#: FPIRs of open-set identification (IJB-C reports 0.1 and 0.01).
IDENTIFICATION_FPIRS: tuple[float, ...] = (0.1, 0.01)
#: Default row chunk: chunk x N float32 similarities at a time (64 MiB at N = 4096 x 4096).
CHUNK_ELEMENTS = 1 << 24


def _numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """A numpy array of x (a torch tensor is detached and moved to the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def l2_normalize(embeddings: Any) -> np.ndarray:
    """(N, D) -> (N, D) float32 rows of unit length (zero rows stay zero)."""
    e = _numpy(embeddings, np.float32)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {e.shape}")
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    return e / np.maximum(norms, np.finfo(np.float32).tiny)


def _labels(labels: Any, n: int) -> np.ndarray:
    lab = _numpy(labels)
    if lab.shape != (n,):
        raise ValueError(f"labels must be (N,) = ({n},), got shape {lab.shape}")
    return lab


def _rows_per_chunk(chunk: int | None, columns: int) -> int:
    if chunk is not None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        return chunk
    return max(1, CHUNK_ELEMENTS // max(columns, 1))


# --- closed set -------------------------------------------------------------------------


def topk_accuracy(scores: Any, labels: Any, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Top-k accuracy from class scores (N, C) (logits or cosines; higher is better) and
    true class indices (N,) in 0..C-1: ``{k: share of samples whose class is among
    the k best}``. A class counts as among the k best when fewer than k classes score
    strictly higher (ties go to the true class)."""
    s = _numpy(scores)
    if s.ndim != 2:
        raise ValueError(f"scores must be (N, C), got shape {s.shape}")
    lab = _labels(labels, s.shape[0]).astype(np.int64)
    if lab.size and (lab.min() < 0 or lab.max() >= s.shape[1]):
        raise ValueError(f"labels must be class indices in 0..{s.shape[1] - 1}")
    true = s[np.arange(len(lab)), lab]
    rank = (s > true[:, None]).sum(1)  # 0 for the best
    return {int(k): float((rank < k).mean()) if len(lab) else float("nan") for k in ks}


def class_centres(embeddings: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-class centres: (centres (C, D) float32, unit rows; classes (C,) sorted labels).

    A centre is the mean of the class's L2-normalised embeddings, normalised again.
    """
    e = l2_normalize(embeddings)
    lab = _labels(labels, len(e))
    classes, inverse = np.unique(lab, return_inverse=True)
    sums = np.zeros((len(classes), e.shape[1]), np.float64)
    np.add.at(sums, inverse, e)
    return l2_normalize(sums), classes


def closed_set_accuracy(
    embeddings: Any,
    labels: Any,
    gallery_embeddings: Any,
    gallery_labels: Any,
    ks: Sequence[int] = (1, 5),
    chunk: int | None = None,
) -> dict[int, float]:
    """Top-k accuracy of (N, D) embeddings by nearest class centre: each one's cosine to
    the centres of ``gallery_embeddings`` (M, D) per ``gallery_labels`` (M,) (e.g. the
    training split's), for a model without a classifier; ties as in
    :func:`topk_accuracy`. Every label must have a centre. Scored ``chunk`` rows at a
    time."""
    centres, classes = class_centres(gallery_embeddings, gallery_labels)
    e = l2_normalize(embeddings)
    lab = _labels(labels, len(e))
    index = np.minimum(np.searchsorted(classes, lab), len(classes) - 1)
    if not np.array_equal(classes[index], lab):
        missing = np.setdiff1d(lab, classes)
        raise ValueError(f"labels without gallery images: {missing[:5].tolist()}")
    rank = np.empty(len(e), np.int64)
    rows = _rows_per_chunk(chunk, len(classes))
    for i0 in range(0, len(e), rows):
        sims = e[i0 : i0 + rows] @ centres.T
        true = sims[np.arange(len(sims)), index[i0 : i0 + rows]]
        rank[i0 : i0 + rows] = (sims > true[:, None]).sum(1)
    return {int(k): float((rank < k).mean()) if len(e) else float("nan") for k in ks}


# --- pairs and ROC ----------------------------------------------------------------------


def pair_scores(
    embeddings: Any, labels: Any, chunk: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cosines of all pairs i < j of (N, D) embeddings: (same, different), two float32
    arrays, same-label pairs and the others, each in ``np.triu_indices(N, 1)`` order.

    One matrix product per chunk of ``chunk`` rows (default: ~16M similarities per
    chunk); the outputs are allocated once at their final sizes.
    """
    e = l2_normalize(embeddings)
    n = len(e)
    lab = _labels(labels, n)
    _, counts = np.unique(lab, return_counts=True)
    n_same = int((counts * (counts - 1) // 2).sum())
    same = np.empty(n_same, np.float32)
    different = np.empty(n * (n - 1) // 2 - n_same, np.float32)
    rows = _rows_per_chunk(chunk, n)
    at_same = at_diff = 0
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        sims = e[i0:i1] @ e[i0:].T  # (c, n - i0); column jj is pair (i, i0 + jj)
        upper = np.arange(n - i0)[None, :] > np.arange(i1 - i0)[:, None]
        match = lab[i0:i1, None] == lab[None, i0:]
        values = sims[upper & match]
        same[at_same : at_same + len(values)] = values
        at_same += len(values)
        values = sims[upper & ~match]
        different[at_diff : at_diff + len(values)] = values
        at_diff += len(values)
    return same, different


@dataclass(frozen=True)
class RocCurve:
    """ROC points, thresholds descending: accept ``score >= thresholds[i]`` to get
    ``fpr[i]``, ``tpr[i]``; the first point is (0, 0) at +inf. float64 arrays (K,)."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


def _sorted_scores(positives: Any, negatives: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both score sets flattened and sorted ascending; both must be non-empty."""
    pos = np.sort(_numpy(positives).ravel())
    neg = np.sort(_numpy(negatives).ravel())
    if not len(pos) or not len(neg):
        raise ValueError(f"need positive and negative scores, got {len(pos)} and {len(neg)}")
    return pos, neg


def _roc_counts(
    pos: np.ndarray, neg: np.ndarray, drop_intermediate: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true positives, false positives) int64 and thresholds float64 (K,), from sorted
    scores, accepting ``score >= threshold``; the first point is (0, 0) at +inf."""
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
    tps = len(pos) - np.searchsorted(pos, thresholds, side="left")
    fps = len(neg) - np.searchsorted(neg, thresholds, side="left")
    if drop_intermediate and len(thresholds) > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        thresholds, tps, fps = thresholds[keep], tps[keep], fps[keep]
    return np.r_[0, tps], np.r_[0, fps], np.r_[np.inf, thresholds.astype(np.float64)]


def roc_curve(positives: Any, negatives: Any, drop_intermediate: bool = True) -> RocCurve:
    """The ROC curve of positive and negative scores, as ``sklearn.metrics.roc_curve``
    gives it for labels 1/0 (its ``drop_intermediate`` too: points on a straight line
    between their neighbours are dropped, which leaves the AUC unchanged)."""
    pos, neg = _sorted_scores(positives, negatives)
    tps, fps, thresholds = _roc_counts(pos, neg, drop_intermediate)
    return RocCurve(fpr=fps / len(neg), tpr=tps / len(pos), thresholds=thresholds)


def roc_auc(positives: Any, negatives: Any) -> float:
    """Area under the ROC curve (trapezoids; a tied positive-negative pair counts one
    half): the probability that a random positive scores above a random negative."""
    return _auc(*_sorted_scores(positives, negatives))


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUC of sorted scores as the Mann-Whitney statistic: per positive, the negatives
    below it plus half those equal to it (what the trapezoids of the ROC sum to)."""
    below = np.searchsorted(neg, pos, side="left")
    equal = np.searchsorted(neg, pos, side="right") - below
    return float((below.sum() + 0.5 * equal.sum()) / (len(pos) * len(neg)))


def equal_error_rate(positives: Any, negatives: Any) -> tuple[float, float]:
    """(EER, threshold): the rate where the false-positive rate equals the false-negative
    rate 1 - TPR, linearly interpolated between the two ROC points around the crossing;
    the threshold is the ROC threshold of the first point (from the top) with FPR >= FNR."""
    return _eer(*_sorted_scores(positives, negatives))


def _eer(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """EER and threshold of sorted scores. With TP(t), FP(t) the scores >= t, the sign
    of FPR - FNR is that of gap(t) = FP(t) P - (P - TP(t)) N, integers, so that a ROC
    point exactly on the crossing (FPR = FNR = 1/3, say) is not missed by a rounding
    of the rates. gap falls as t rises; the crossing's point is the highest score with
    gap >= 0 (found by binary search in each sorted array), the point before it the
    next higher distinct score (or the origin, at +inf)."""
    n_pos, n_neg = len(pos), len(neg)

    def counts(t: float) -> tuple[int, int]:
        tp = n_pos - int(np.searchsorted(pos, t, side="left"))
        return tp, n_neg - int(np.searchsorted(neg, t, side="left"))

    def gap(t: float) -> int:
        tp, fp = counts(t)
        return fp * n_pos - (n_pos - tp) * n_neg

    def highest_crossing(values: np.ndarray) -> float:
        lo, hi = -1, len(values) - 1  # values[lo] has gap >= 0 (lo = -1: none yet)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if gap(float(values[mid])) >= 0:
                lo = mid
            else:
                hi = mid - 1
        return float(values[lo]) if lo >= 0 else -np.inf

    t = max(highest_crossing(pos), highest_crossing(neg))  # gap(lowest score) = P N >= 0
    above = [v[i] for v in (pos, neg) if (i := int(np.searchsorted(v, t, "right"))) < len(v)]
    if above:  # the ROC point before the crossing's
        fp0, gap0 = counts(float(min(above)))[1], gap(float(min(above)))
    else:  # t is the highest score: the point before is the origin
        fp0, gap0 = 0, -n_pos * n_neg
    fp1, gap1 = counts(t)[1], gap(t)
    w = 0.0 if gap1 == gap0 else -gap0 / (gap1 - gap0)
    return float((fp0 + w * (fp1 - fp0)) / n_neg), t


def tpr_at_fpr(
    positives: Any, negatives: Any, fprs: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(TPRs, thresholds, FPRs reached) at each target FPR, float64 arrays (F,), by the
    module's convention: threshold ``np.quantile(negatives, 1 - fpr)``, TPR
    ``mean(positives > threshold)``, FPR reached ``mean(negatives > threshold)``."""
    return _tpr_at_fpr(*_sorted_scores(positives, negatives), fprs)


def _tpr_at_fpr(
    pos: np.ndarray, neg: np.ndarray, fprs: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f = np.asarray(fprs, dtype=np.float64)
    if np.any((f <= 0) | (f >= 1)):
        raise ValueError(f"FPRs must be in (0, 1), got {list(fprs)}")
    thresholds = np.quantile(neg, 1.0 - f)
    tpr = (len(pos) - np.searchsorted(pos, thresholds, side="right")) / len(pos)
    reached = (len(neg) - np.searchsorted(neg, thresholds, side="right")) / len(neg)
    return tpr.astype(np.float64), thresholds.astype(np.float64), reached.astype(np.float64)


# --- verification -----------------------------------------------------------------------


def _index(rates: np.ndarray, rate: float, name: str) -> int:
    """Where ``rate`` is in ``rates`` (to a relative 1e-9)."""
    hits = np.flatnonzero(np.isclose(rates, rate, rtol=1e-9, atol=0))
    if not len(hits):
        raise KeyError(f"{name} {rate} was not measured; measured: {rates.tolist()}")
    return int(hits[0])


@dataclass(frozen=True)
class VerificationResult:
    """Verification figures of positive (same identity) and negative pair scores.

    ``fprs``, ``tprs``, ``thresholds``, ``fprs_reached``: (F,) float64 by the module's
    quantile convention; ``threshold(fpr)`` looks one up (the pipeline's "unknown
    below"). ``auc`` and ``eer``/``eer_threshold`` from the ROC curve; ``roc()`` gives
    its points for plotting. ``positives``/``negatives``: the float32 scores.
    """

    auc: float
    eer: float
    eer_threshold: float
    fprs: np.ndarray
    tprs: np.ndarray
    thresholds: np.ndarray
    fprs_reached: np.ndarray
    positives: np.ndarray = field(repr=False)
    negatives: np.ndarray = field(repr=False)

    @property
    def n_positive(self) -> int:
        return len(self.positives)

    @property
    def n_negative(self) -> int:
        return len(self.negatives)

    def threshold(self, fpr: float) -> float:
        """The threshold measured at target FPR ``fpr`` (one of ``fprs``; else KeyError)."""
        return float(self.thresholds[_index(self.fprs, fpr, "FPR")])

    def tpr(self, fpr: float) -> float:
        """The TPR measured at target FPR ``fpr`` (one of ``fprs``; else KeyError)."""
        return float(self.tprs[_index(self.fprs, fpr, "FPR")])

    def roc(self, drop_intermediate: bool = True) -> RocCurve:
        """The ROC curve's points (for plots)."""
        return roc_curve(self.positives, self.negatives, drop_intermediate)


def verification_from_scores(
    positives: Any, negatives: Any, fprs: Sequence[float] = VERIFICATION_FPRS
) -> VerificationResult:
    """:class:`VerificationResult` of given positive and negative scores."""
    pos = _numpy(positives, np.float32).ravel()
    neg = _numpy(negatives, np.float32).ravel()
    pos_sorted, neg_sorted = _sorted_scores(pos, neg)  # sorted once for all figures
    tprs, thresholds, reached = _tpr_at_fpr(pos_sorted, neg_sorted, fprs)
    eer, eer_threshold = _eer(pos_sorted, neg_sorted)
    return VerificationResult(
        auc=_auc(pos_sorted, neg_sorted),
        eer=eer,
        eer_threshold=eer_threshold,
        fprs=np.asarray(fprs, np.float64),
        tprs=tprs,
        thresholds=thresholds,
        fprs_reached=reached,
        positives=pos,
        negatives=neg,
    )


def verification(
    embeddings: Any,
    labels: Any,
    fprs: Sequence[float] = VERIFICATION_FPRS,
    chunk: int | None = None,
) -> VerificationResult:
    """Verification over all pairs i < j of (N, D) embeddings with labels (N,)."""
    return verification_from_scores(*pair_scores(embeddings, labels, chunk), fprs)


# --- open set ---------------------------------------------------------------------------


def open_set_scores(
    query: Any, query_labels: Any, distractors: Any, chunk: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The reference protocol's pairs: (positives, negatives), float32 cosines.

    ``query`` (Nq, D) with ``query_labels`` (Nq,), ``distractors`` (Nd, D) (their labels
    do not matter: no distractor is paired with another). Positives: query pairs
    i < j of one label, in ``np.triu_indices`` order. Negatives: query pairs i < j of
    two labels (same order), then every (query i, distractor k), row-major.
    """
    q = l2_normalize(query)
    d = l2_normalize(distractors)
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"query and distractors differ in D: {q.shape[1]} vs {d.shape[1]}")
    positives, qq_negatives = pair_scores(q, query_labels, chunk)
    negatives = np.empty(len(qq_negatives) + len(q) * len(d), np.float32)
    negatives[: len(qq_negatives)] = qq_negatives
    cross = negatives[len(qq_negatives) :].reshape(len(q), len(d))
    rows = _rows_per_chunk(chunk, len(d))
    for i0 in range(0, len(q), rows):
        np.matmul(q[i0 : i0 + rows], d.T, out=cross[i0 : i0 + rows])
    return positives, negatives


def open_set_verification(
    query: Any,
    query_labels: Any,
    distractors: Any,
    fprs: Sequence[float] = OPEN_SET_FPRS,
    chunk: int | None = None,
) -> VerificationResult:
    """The reference's open-set verification (see the module docstring): TPR at each
    FPR of ``fprs``, the thresholds, and AUC/EER, of :func:`open_set_scores`."""
    return verification_from_scores(*open_set_scores(query, query_labels, distractors, chunk), fprs)


@dataclass(frozen=True)
class IdentificationResult:
    """Open-set identification figures.

    ``fpirs``, ``tpirs``, ``thresholds``, ``fpirs_reached``: (F,) float64. ``rank1``:
    the share of mated probes whose best gallery entry is their identity, whatever
    its score (closed-set rank-1 over the query identities). Per probe, float32 /
    bool arrays: ``mated_scores`` (best gallery score), ``mated_correct`` (rank 1 is
    right), ``nonmated_scores`` (best gallery score).
    """

    fpirs: np.ndarray
    tpirs: np.ndarray
    thresholds: np.ndarray
    fpirs_reached: np.ndarray
    rank1: float
    mated_scores: np.ndarray = field(repr=False)
    mated_correct: np.ndarray = field(repr=False)
    nonmated_scores: np.ndarray = field(repr=False)

    def threshold(self, fpir: float) -> float:
        """The threshold measured at target FPIR ``fpir`` (one of ``fpirs``; else KeyError)."""
        return float(self.thresholds[_index(self.fpirs, fpir, "FPIR")])

    def tpir(self, fpir: float) -> float:
        """The TPIR measured at target FPIR ``fpir`` (one of ``fpirs``; else KeyError)."""
        return float(self.tpirs[_index(self.fpirs, fpir, "FPIR")])


def _best(probes: np.ndarray, gallery: np.ndarray, chunk: int | None) -> tuple[np.ndarray, ...]:
    """Per probe row: (best cosine float32, index of the first best gallery row)."""
    scores = np.empty(len(probes), np.float32)
    index = np.empty(len(probes), np.int64)
    rows = _rows_per_chunk(chunk, len(gallery))
    for i0 in range(0, len(probes), rows):
        sims = probes[i0 : i0 + rows] @ gallery.T
        index[i0 : i0 + rows] = sims.argmax(1)
        scores[i0 : i0 + rows] = sims[np.arange(len(sims)), index[i0 : i0 + rows]]
    return scores, index


def open_set_identification(
    query: Any,
    query_labels: Any,
    distractors: Any,
    fpirs: Sequence[float] = IDENTIFICATION_FPIRS,
    chunk: int | None = None,
) -> IdentificationResult:
    """Open-set identification, IJB-C style (see the module docstring).

    The gallery holds the first image (in the order given) of each query label; the
    other query images are mated probes, every distractor a non-mated probe. The
    threshold at FPIR f is ``np.quantile(nonmated best scores, 1 - f)``; TPIR =
    share of mated probes with the right rank-1 identity and best score > threshold.
    """
    q = l2_normalize(query)
    lab = _labels(query_labels, len(q))
    d = l2_normalize(distractors)
    _, first = np.unique(lab, return_index=True)
    first = np.sort(first)
    is_gallery = np.zeros(len(q), bool)
    is_gallery[first] = True
    gallery, gallery_labels = q[first], lab[first]
    mated = np.flatnonzero(~is_gallery)
    if not len(mated) or not len(d):
        raise ValueError(
            f"need mated probes (query labels with two or more images) and distractors, "
            f"got {len(mated)} and {len(d)}"
        )
    mated_scores, mated_index = _best(q[mated], gallery, chunk)
    correct = gallery_labels[mated_index] == lab[mated]
    nonmated_scores, _ = _best(d, gallery, chunk)
    f = np.asarray(fpirs, np.float64)
    if np.any((f <= 0) | (f >= 1)):
        raise ValueError(f"FPIRs must be in (0, 1), got {list(fpirs)}")
    thresholds = np.quantile(nonmated_scores, 1.0 - f)
    tpirs = ((mated_scores[None, :] > thresholds[:, None]) & correct[None, :]).mean(1)
    reached = (nonmated_scores[None, :] > thresholds[:, None]).mean(1)
    return IdentificationResult(
        fpirs=f,
        tpirs=tpirs,
        thresholds=thresholds,
        fpirs_reached=reached,
        rank1=float(correct.mean()),
        mated_scores=mated_scores,
        mated_correct=correct,
        nonmated_scores=nonmated_scores,
    )


# --- triplets ---------------------------------------------------------------------------


def random_triplets(labels: Any, per_anchor: int = 1, seed: int = 0) -> np.ndarray:
    """(T, 3) int64 (anchor, positive, negative) index triplets: ``per_anchor`` for every
    index with a positive (another index, same label) and a negative, each positive
    and negative drawn uniformly (with replacement) from
    ``numpy.random.default_rng(seed)``; anchor-major order."""
    lab = _labels(labels, len(_numpy(labels)))
    n = len(lab)
    order = np.argsort(lab, kind="stable")
    _, start, count = np.unique(lab[order], return_index=True, return_counts=True)
    group = np.searchsorted(lab[order], lab, side="left")  # each index's group start
    group_id = np.searchsorted(start, group)
    size = count[group_id]
    where = np.empty(n, np.int64)
    where[order] = np.arange(n)  # each index's position in the sorted order
    anchors = np.flatnonzero((size >= 2) & (size < n))
    a = np.repeat(anchors, per_anchor)
    rng = np.random.default_rng(seed)
    # Positive: one of the group's other size - 1 slots; negative: one of the n - size
    # slots outside the group, both mapped back to indices through the sorted order.
    r = (rng.random(len(a)) * (size[a] - 1)).astype(np.int64)
    r += r >= where[a] - group[a]
    positives = order[group[a] + r]
    r = (rng.random(len(a)) * (n - size[a])).astype(np.int64)
    r += np.where(r >= group[a], size[a], 0)
    negatives = order[r]
    return np.stack([a, positives, negatives], 1)


def triplet_accuracy(
    embeddings: Any,
    triplets: Any = None,
    labels: Any = None,
    per_anchor: int = 1,
    seed: int = 0,
) -> float:
    """Share of triplets (T, 3) (anchor, positive, negative) with d(a, p) < d(a, n),
    Euclidean on L2-normalised embeddings (i.e. cos(a, p) > cos(a, n)); ties fail.

    Give ``triplets``, or ``labels`` (N,) to draw :func:`random_triplets` with
    ``per_anchor`` and ``seed`` (the reference's metric).
    """
    e = l2_normalize(embeddings)
    if triplets is None:
        if labels is None:
            raise ValueError("give triplets, or labels to draw random ones")
        triplets = random_triplets(_labels(labels, len(e)), per_anchor, seed)
    t = _numpy(triplets).astype(np.int64)
    if t.ndim != 2 or t.shape[1] != 3:
        raise ValueError(f"triplets must be (T, 3), got shape {t.shape}")
    if not len(t):
        raise ValueError("no triplets: every label needs a second image and another label")
    ap = np.einsum("td,td->t", e[t[:, 0]], e[t[:, 1]])
    an = np.einsum("td,td->t", e[t[:, 0]], e[t[:, 2]])
    return float((ap > an).mean())
