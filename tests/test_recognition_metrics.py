"""models.recognition.metrics: hand-made cases with known answers, scikit-learn's ROC,
the reference's per-pair loops (bench/ir_metric.py), chunked == whole.

Hand-made embeddings have coordinates 0, +-1 or +-0.5 in 4-d, unit length, so every
cosine (-1, -0.5, 0, 0.5, 1) is exact in float32 whatever the order of summation:
ties fall exactly on thresholds and the conventions are tested, not rounding.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve
from threadpoolctl import threadpool_limits

from models.recognition import metrics as rm

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread() -> Iterator[None]:
    """One BLAS thread for this file: on the shared 2-core machine a multi-threaded
    OpenBLAS call waits tens of ms for its helper thread (see bench/ir_metric.py)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def load_bench():
    """bench/ir_metric.py, for the reference's loops that it times."""
    spec = importlib.util.spec_from_file_location("ir_metric", ROOT / "bench" / "ir_metric.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def e(i: int) -> list[float]:
    return [1.0 if k == i else 0.0 for k in range(4)]


def h(signs: str) -> list[float]:
    return [0.5 if c == "+" else -0.5 for c in signs]


# Three query identities x 2 images and three distractors (see the test below).
QUERY = np.array([e(0), e(0), e(1), h("++++"), e(2), e(3)], np.float32)
QUERY_LABELS = np.array([7, 7, 8, 8, 9, 9])
DISTRACTORS = np.array([h("++++"), h("----"), e(0)], np.float32)


def test_open_set_hand_made_known_answers() -> None:
    pos, neg = rm.open_set_scores(QUERY, QUERY_LABELS, DISTRACTORS)
    # Positives: (e0, e0) = 1, (e1, h) = 0.5, (e2, e3) = 0.
    assert pos.tolist() == [1.0, 0.5, 0.0]
    # Negatives: 12 query pairs of two identities (eight 0, four 0.5), then 3 x 6
    # query-distractor pairs (h++++: five 0.5 and a 1; h----: five -0.5 and a -1;
    # e0: 1, 1, 0, 0.5, 0, 0), i.e. -1 x1, -0.5 x5, 0 x11, 0.5 x10, 1 x3.
    assert len(neg) == 12 + 18
    values, counts = np.unique(neg, return_counts=True)
    assert values.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0] and counts.tolist() == [1, 5, 11, 10, 3]
    result = rm.open_set_verification(QUERY, QUERY_LABELS, DISTRACTORS, fprs=(0.5, 0.2, 0.1, 0.05))
    # np.quantile of the 30 sorted negatives at 1 - f, position 29 (1 - f):
    # f=0.5: 14.5 -> between two 0s: 0; f=0.2: 23.2 -> 0.5; f=0.1: 26.1 -> 0.5 + 0.1 x 0.5;
    # f=0.05: 27.55 -> 1. TPR = positives strictly above: the tie at 0 and at 1 rejected.
    assert result.thresholds.tolist() == pytest.approx([0.0, 0.5, 0.55, 1.0])
    assert result.tprs.tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 3, 0.0])
    assert result.fprs_reached.tolist() == pytest.approx([13 / 30, 3 / 30, 3 / 30, 0.0])
    assert result.threshold(0.1) == pytest.approx(0.55) and result.tpr(0.5) == pytest.approx(2 / 3)
    with pytest.raises(KeyError, match="FPR 0.3 was not measured"):
        result.threshold(0.3)


def test_reference_loops_agree_on_the_hand_made_case_and_on_a_score_matrix() -> None:
    bench = load_bench()
    fprs = (0.5, 0.2, 0.1, 0.05)
    tprs, thresholds, pos, neg = bench.reference_ir_loops(QUERY, QUERY_LABELS, DISTRACTORS, fprs)
    ours = rm.open_set_verification(QUERY, QUERY_LABELS, DISTRACTORS, fprs)
    assert ours.tprs.tolist() == tprs and ours.thresholds.tolist() == pytest.approx(thresholds)
    assert sorted(pos) == sorted(ours.positives.tolist())
    assert sorted(neg) == sorted(ours.negatives.tolist())
    # A hand-made score matrix through the loops' score lookup: rows are indices.
    matrix = np.array(
        [
            [1.0, 0.9, 0.3, 0.2, 0.4, 0.1],
            [0.9, 1.0, 0.6, 0.35, 0.25, 0.45],
            [0.3, 0.6, 1.0, 0.55, 0.5, 0.15],
            [0.2, 0.35, 0.55, 1.0, 0.05, 0.7],
        ]
    )  # 4 query images (ids 0, 0, 1, 1) x (4 query + 2 distractor) columns
    idx = np.arange(6)[:, None]
    tprs, thresholds, pos, neg = bench.reference_ir_loops(
        idx[:4], [0, 0, 1, 1], idx[4:], fprs, score=lambda a, b: matrix[a[0], b[0]]
    )
    assert pos == [0.9, 0.55]
    assert neg == [0.3, 0.2, 0.4, 0.1, 0.6, 0.35, 0.25, 0.45, 0.5, 0.15, 0.05, 0.7]
    # ours on the same scores: 12 negatives sorted .05 .1 .15 .2 .25 .3 .35 .4 .45 .5 .6 .7
    got, got_thr, reached = rm.tpr_at_fpr(pos, neg, fprs)
    assert got.tolist() == tprs and got_thr.tolist() == pytest.approx(thresholds)
    # Position 11 (1 - f): f = 0.5: 5.5 -> 0.325; f = 0.2: 8.8 -> 0.45 + 0.8 x 0.05 = 0.49;
    # f = 0.1: 9.9 -> 0.59; f = 0.05: 10.45 -> 0.6 + 0.45 x 0.1 = 0.645. Positives 0.9 and
    # 0.55: both above the first two, one above the others. FPR reached at 0.2: 3/12
    # (0.5, 0.6, 0.7 above 0.49: within 1/12 of the target); at 0.05: 1/12.
    assert got_thr.tolist() == pytest.approx([0.325, 0.49, 0.59, 0.645])
    assert got.tolist() == [1.0, 1.0, 0.5, 0.5]
    assert reached[1] == pytest.approx(3 / 12) and reached[3] == pytest.approx(1 / 12)


@pytest.mark.parametrize("seed", [0, 1])
def test_vectorised_open_set_equals_the_reference_loops_on_random_embeddings(seed: int) -> None:
    bench = load_bench()
    query, labels, distractors = bench.protocol(scale=1, dim=32, seed=seed)
    query, labels = query[:60], labels[:60]  # 30 query ids x 2, 500 distractor images
    tprs, thresholds, pos, neg = bench.reference_ir_loops(query, labels, distractors)
    ours = rm.open_set_verification(query, labels, distractors, chunk=7)
    assert np.allclose(np.sort(ours.positives), np.sort(pos), atol=1e-6)
    assert np.allclose(np.sort(ours.negatives), np.sort(neg), atol=1e-6)
    assert ours.tprs.tolist() == tprs
    assert np.allclose(ours.thresholds, thresholds, atol=1e-6)
    assert len(ours.positives) == 30 and len(ours.negatives) == 60 * 59 // 2 - 30 + 60 * 500


def sklearn_tpr_above(pos: np.ndarray, neg: np.ndarray, threshold: float) -> float:
    """TPR of 'score > threshold' read off sklearn's ROC: its points accept score >= t,
    so take the point of the smallest t strictly above the threshold."""
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    _, tpr, thr = sk_roc_curve(y, np.r_[pos, neg], drop_intermediate=False)
    return float(tpr[thr > threshold][-1])


def test_roc_auc_and_tpr_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    # Rounded scores: many ties between and within the classes.
    pos = np.round(rng.normal(0.6, 0.2, 400), 2).astype(np.float32)
    neg = np.round(rng.normal(0.2, 0.2, 3000), 2).astype(np.float32)
    y, s = np.r_[np.ones(400), np.zeros(3000)], np.r_[pos, neg]
    for drop in (False, True):
        ours = rm.roc_curve(pos, neg, drop_intermediate=drop)
        fpr, tpr, thr = sk_roc_curve(y, s, drop_intermediate=drop)
        assert np.allclose(ours.fpr, fpr) and np.allclose(ours.tpr, tpr)
        assert np.array_equal(ours.thresholds[1:], thr[1:]) and np.isinf(ours.thresholds[0])
    assert rm.roc_auc(pos, neg) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    tprs, thresholds, reached = rm.tpr_at_fpr(pos, neg, (0.1, 0.01, 0.001))
    for tpr, threshold in zip(tprs, thresholds, strict=True):
        assert tpr == pytest.approx(sklearn_tpr_above(pos, neg, threshold))
    # Reached: at most one negative above the target, and below it by the ties (each
    # rounded score is shared by up to ~60 negatives here).
    assert np.all(reached <= np.array([0.1, 0.01, 0.001]) + 1 / 3000)
    assert np.all(reached >= np.array([0.1, 0.01, 0.001]) - 60 / 3000)
    _, _, reached = rm.tpr_at_fpr(pos, rng.normal(0.2, 0.2, 3000), (0.1, 0.01, 0.001))
    assert np.all(np.abs(reached - [0.1, 0.01, 0.001]) <= 1 / 3000 + 1e-12)  # no ties
    result = rm.verification_from_scores(pos, neg)
    assert result.auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    roc = result.roc()
    assert np.allclose(roc.tpr, sk_roc_curve(y, s)[1])


def test_equal_error_rate() -> None:
    # At threshold 0.7: FPR 1/3 (0.7), FNR 1/3 (0.3 missed): the curves cross on a point.
    eer, threshold = rm.equal_error_rate([0.9, 0.8, 0.3], [0.7, 0.2, 0.1])
    assert eer == pytest.approx(1 / 3) and threshold == 0.7
    # Between points: pos 0.9, 0.6; neg 0.8, 0.1. Thresholds 0.9 (fpr 0, fnr .5),
    # 0.8 (fpr .5, fnr .5) -> 0.5 exactly on a point again; and a crossing inside:
    # pos [.9 .8 .7 .2], neg [.6 .5 .4 .3]: t=.7 fpr 0 fnr .25; t=.6 fpr .25 fnr .25.
    assert rm.equal_error_rate([0.9, 0.6], [0.8, 0.1])[0] == pytest.approx(0.5)
    assert rm.equal_error_rate([0.9, 0.8, 0.7, 0.2], [0.6, 0.5, 0.4, 0.3])[0] == pytest.approx(0.25)
    # Interpolated: pos [1, 0] neg [0.5]: t=1 (fpr 0, fnr .5), t=.5 (fpr 1, fnr .5):
    # gap goes -0.5 -> 0.5, crossing halfway: 0.5.
    assert rm.equal_error_rate([1.0, 0.0], [0.5])[0] == pytest.approx(0.5)
    # Perfect separation: EER 0; sklearn-based check on random scores.
    assert rm.equal_error_rate([0.9, 0.8], [0.1, 0.2])[0] == 0.0
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(1, 1, 500), rng.normal(0, 1, 700)
    y = np.r_[np.ones(500), np.zeros(700)]
    fpr, tpr, _ = sk_roc_curve(y, np.r_[pos, neg], drop_intermediate=False)
    fnr = 1 - tpr
    i = np.argmax(fpr >= fnr)
    assert fpr[i - 1] <= rm.equal_error_rate(pos, neg)[0] <= fpr[i]
    assert abs(rm.equal_error_rate(pos, neg)[0] - 0.31) < 0.05  # Phi(-0.5) for d' = 1


def sklearn_eer(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """EER on sklearn's full ROC: the first point with FPR >= FNR (counted in integers)
    and linear interpolation from the point before it."""
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    fpr, tpr, thr = sk_roc_curve(y, np.r_[pos, neg], drop_intermediate=False)
    fps, tps = np.rint(fpr * len(neg)), np.rint(tpr * len(pos))
    gap = fps * len(pos) - (len(pos) - tps) * len(neg)
    i = int(np.argmax(gap >= 0))
    w = -gap[i - 1] / (gap[i] - gap[i - 1])
    return fpr[i - 1] + w * (fpr[i] - fpr[i - 1]), thr[i]


@pytest.mark.parametrize("seed", range(6))
def test_equal_error_rate_matches_the_full_curve(seed: int) -> None:
    rng = np.random.default_rng(seed)
    digits = [1, 2, 3, 6, 1, 2][seed]  # coarse rounding: ties, crossings on points
    pos = np.round(rng.normal(0.5, 0.3, rng.integers(1, 60)), digits)
    neg = np.round(rng.normal(0.2, 0.3, rng.integers(1, 90)), digits)
    eer, threshold = rm.equal_error_rate(pos, neg)
    expected, expected_threshold = sklearn_eer(pos, neg)
    assert eer == pytest.approx(expected, abs=1e-12) and threshold == expected_threshold


def test_verification_all_pairs_chunked_equals_whole_and_triu_order() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 12, 50)
    emb = rng.standard_normal((50, 16)).astype(np.float32)
    same, diff = rm.pair_scores(emb, labels)
    u = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    i, j = np.triu_indices(50, 1)
    full = np.einsum("pd,pd->p", u[i], u[j])
    match = labels[i] == labels[j]
    assert np.allclose(same, full[match], atol=1e-6) and np.allclose(diff, full[~match], atol=1e-6)
    for chunk in (1, 3, 49, 50, 1000):
        s, d = rm.pair_scores(emb, labels, chunk=chunk)
        assert np.allclose(s, same, atol=1e-6) and np.allclose(d, diff, atol=1e-6)
    whole = rm.verification(emb, labels)
    chunked = rm.verification(torch.from_numpy(emb), torch.from_numpy(labels), chunk=4)
    assert chunked.auc == pytest.approx(whole.auc) and chunked.eer == pytest.approx(whole.eer)
    assert np.allclose(chunked.tprs, whole.tprs) and chunked.n_positive == match.sum()
    q, d = rm.open_set_scores(emb[:20], labels[:20], emb[20:])
    q2, d2 = rm.open_set_scores(emb[:20], labels[:20], emb[20:], chunk=3)
    assert np.allclose(q, q2, atol=1e-6) and np.allclose(d, d2, atol=1e-6)


def test_open_set_identification_hand_made() -> None:
    # Gallery: A1 = e0, B1 = e1, C1 = e2. Mated probes: A2 = e0 (right, 1.0), B2 =
    # h(-+-+) (B1 0.5, others -0.5: right, 0.5), C2 = e1 (B1 1.0: wrong identity).
    query = np.array([e(0), e(1), e(2), e(0), h("-+-+"), e(1)], np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2])
    # Non-mated best scores: h++++ 0.5, e3 0, h---+ -0.5, e0 1.0.
    distractors = np.array([h("++++"), e(3), h("---+"), e(0)], np.float32)
    result = rm.open_set_identification(query, labels, distractors, fpirs=(0.5, 0.25, 0.1))
    assert result.rank1 == pytest.approx(2 / 3)
    assert result.mated_correct.tolist() == [True, True, False]
    assert result.mated_scores.tolist() == [1.0, 0.5, 1.0]
    assert result.nonmated_scores.tolist() == [0.5, 0.0, -0.5, 1.0]
    # Quantiles of [-0.5, 0, 0.5, 1] at 0.5, 0.75, 0.9: 0.25, 0.625, 0.85.
    assert result.thresholds.tolist() == pytest.approx([0.25, 0.625, 0.85])
    # TPIR: right at rank 1 and above: A2 and B2 at 0.25, A2 only above; the wrong C2
    # never counts, however high its score.
    assert result.tpirs.tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 3])
    assert result.fpirs_reached.tolist() == pytest.approx([0.5, 0.25, 0.25])
    assert result.threshold(0.25) == pytest.approx(0.625) and result.tpir(0.5) == pytest.approx(
        2 / 3
    )
    with pytest.raises(KeyError, match="FPIR 0.2 was not measured"):
        result.tpir(0.2)
    # The gallery is each label's *first* image in the order given.
    flipped = rm.open_set_identification(query[::-1].copy(), labels[::-1].copy(), distractors)
    assert flipped.mated_scores.tolist() != result.mated_scores.tolist()
    chunked = rm.open_set_identification(query, labels, distractors, (0.5, 0.25, 0.1), chunk=1)
    assert np.array_equal(chunked.tpirs, result.tpirs)


def test_closed_set_topk_from_logits_and_from_centres() -> None:
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.4, 0.4, 0.1], [0.0, 0.2, 0.1]])
    labels = np.array([0, 1, 1, 0])
    # Ranks of the true class: 0, 1, 0 (tie with the best counts for it), 2.
    assert rm.topk_accuracy(scores, labels, ks=(1, 2, 3)) == {1: 0.5, 2: 0.75, 3: 1.0}
    assert rm.topk_accuracy(torch.tensor(scores), torch.tensor(labels), ks=(1,)) == {1: 0.5}
    with pytest.raises(ValueError, match="class indices"):
        rm.topk_accuracy(scores, [0, 1, 3, 0])
    gallery = np.array([e(0), h("++--"), e(1), e(2)], np.float32)
    gallery_labels = np.array([10, 10, 20, 30])
    centres, classes = rm.class_centres(gallery, gallery_labels)
    assert classes.tolist() == [10, 20, 30]
    assert np.allclose(np.linalg.norm(centres, axis=1), 1)
    expected = np.array([1.5, 0.5, -0.5, -0.5]) / np.linalg.norm([1.5, 0.5, -0.5, -0.5])
    assert np.allclose(centres[0], expected)
    probes = np.array([e(0), e(1), e(2), h("-+--")], np.float32)
    acc = rm.closed_set_accuracy(probes, [10, 20, 30, 10], gallery, gallery_labels, ks=(1, 2))
    # h(-+--) is nearest e1's centre (0.5) before class 10's (cos < 0.5): top-2 only.
    assert acc == {1: 0.75, 2: 1.0}
    chunked = rm.closed_set_accuracy(probes, [10, 20, 30, 10], gallery, gallery_labels, (1, 2), 1)
    assert chunked == acc
    with pytest.raises(ValueError, match="without gallery images: \\[40\\]"):
        rm.closed_set_accuracy(probes, [10, 20, 40, 10], gallery, gallery_labels)


def test_triplet_accuracy_given_and_random() -> None:
    emb = np.array([e(0), h("++++"), e(1), e(0)], np.float32)
    triplets = [[0, 3, 2], [0, 1, 2], [1, 0, 2], [2, 0, 3]]
    # cos(a,p) vs cos(a,n): 1 > 0 yes; 0.5 > 0 yes; 0.5 = 0.5 tie: no; 0 = 0 tie: no.
    assert rm.triplet_accuracy(emb, triplets) == 0.5
    labels = np.array([0, 0, 1, 1, 1, 2, 3])
    t = rm.random_triplets(labels, per_anchor=4, seed=3)
    assert t.shape == (5 * 4, 3)  # anchors 0-4 have a positive; 5 and 6 do not
    assert np.array_equal(t[:, 0], np.repeat(np.arange(5), 4))
    assert np.all(labels[t[:, 0]] == labels[t[:, 1]]) and np.all(t[:, 0] != t[:, 1])
    assert np.all(labels[t[:, 0]] != labels[t[:, 2]])
    assert np.array_equal(t, rm.random_triplets(labels, per_anchor=4, seed=3))
    assert not np.array_equal(t, rm.random_triplets(labels, per_anchor=4, seed=4))
    # Uniform: anchor 2's positives 3 and 4 and its four negatives all drawn.
    many = rm.random_triplets(labels, per_anchor=4000, seed=0)
    two = many[many[:, 0] == 2]
    assert set(two[:, 1]) == {3, 4} and abs((two[:, 1] == 3).mean() - 0.5) < 0.03
    assert set(two[:, 2]) == {0, 1, 5, 6}
    assert np.allclose(np.bincount(two[:, 2], minlength=7)[[0, 1, 5, 6]] / 4000, 0.25, atol=0.03)
    rng = np.random.default_rng(0)
    separated = np.eye(4, dtype=np.float32)[labels % 4] + 0.01 * rng.standard_normal((7, 4))
    assert rm.triplet_accuracy(separated, labels=labels, seed=1) == 1.0
    with pytest.raises(ValueError, match="give triplets, or labels"):
        rm.triplet_accuracy(emb)


def test_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match=r"embeddings must be \(N, D\)"):
        rm.pair_scores(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match=r"labels must be \(N,\)"):
        rm.pair_scores(np.eye(3), [0, 1])
    with pytest.raises(ValueError, match="FPRs must be in"):
        rm.tpr_at_fpr([1.0], [0.0], (0.0,))
    with pytest.raises(ValueError, match="need positive and negative"):
        rm.roc_curve([], [0.1])
    with pytest.raises(ValueError, match="need mated probes"):
        rm.open_set_identification(np.eye(3), [0, 1, 2], np.eye(3))
