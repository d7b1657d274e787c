"""models.recognition.losses: each loss trains, the margin losses match their formulas and the
library, ArcFace's fallback branch, and the two triplet mining modes.

CPU, float32, tiny synthetic data; the file runs in a few seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from conftest import one_torch_thread
from pytorch_metric_learning.losses import ArcFaceLoss, CosFaceLoss

from models.recognition.losses import (
    ARCFACE,
    BATCH_HARD,
    CE,
    COSFACE,
    LOSSES,
    RANDOM,
    TRIPLET,
    ArcFace,
    MarginSoftmaxLoss,
    RandomTripletMiner,
    TripletLoss,
    make_loss,
)

CLASSES, PER_CLASS, IN_DIM, DIM = 8, 8, 32, 16


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread for this file, restored after (see tests/test_backbones.py)."""
    with one_torch_thread():
        yield


def separable(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(64, 32) points around 8 random class centres (noise as large as the spread of
    the centres in each coordinate, so that random triplets start out violated), labels."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(CLASSES, IN_DIM, generator=g)
    labels = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
    return centres[labels] + 1.0 * torch.randn(len(labels), IN_DIM, generator=g), labels


def train(name: str, steps: int = 40, **kwargs) -> tuple[list[float], torch.nn.Module, object]:
    torch.manual_seed(0)
    x, labels = separable(0)
    net = torch.nn.Linear(IN_DIM, DIM)
    loss_fn = make_loss(name, CLASSES, DIM, **kwargs)
    optimiser = torch.optim.Adam([*net.parameters(), *loss_fn.parameters()], lr=0.02)
    losses = []
    for _ in range(steps):
        loss = loss_fn(net(x), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses, net, loss_fn


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        (CE, {}),
        (ARCFACE, {}),
        (COSFACE, {}),
        (TRIPLET, {"mining": RANDOM}),
        (TRIPLET, {"mining": BATCH_HARD}),
    ],
)
def test_each_loss_falls_on_separable_data(name: str, kwargs: dict) -> None:
    losses, net, loss_fn = train(name, **kwargs)
    print(name, kwargs, " ".join(f"{v:.3f}" for v in losses[::5]), f"{losses[-1]:.3f}")
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.3 * losses[0]
    x, labels = separable(0)
    with torch.no_grad():
        logits = loss_fn.logits(net(x))
    if name == TRIPLET:
        assert logits is None
    else:
        assert logits.shape == (len(labels), CLASSES)
        assert (logits.argmax(1) == labels).float().mean() == 1.0  # closed-set top-1


def test_classifier_weights_are_parameters_of_the_loss() -> None:
    for name in (CE, ARCFACE, COSFACE):
        loss_fn = make_loss(name, 5, 4)
        params = list(loss_fn.parameters())
        assert params and sum(p.numel() for p in params) >= 5 * 4
        if name != CE:
            assert any(p is loss_fn.weight for p in params) and loss_fn.weight.shape == (4, 5)
    assert list(make_loss(TRIPLET).parameters()) == []
    # An optimiser given them moves them.
    loss_fn = make_loss(ARCFACE, 5, 4)
    before = loss_fn.weight.detach().clone()
    optimiser = torch.optim.SGD(loss_fn.parameters(), lr=0.1)
    loss_fn(torch.randn(6, 4), torch.arange(6) % 5).backward()
    optimiser.step()
    assert not torch.equal(before, loss_fn.weight)


def insightface_logits(cos: torch.Tensor, labels: torch.Tensor, kind: str, m: float, s: float):
    """The target-class margin as insightface writes it (arcface_torch losses.py), from
    the cosines (B, C): ArcFace cos(theta + m) where theta + m < pi, else the fallback
    cos(theta) - m sin(m); CosFace cos(theta) - m. Scaled by s."""
    target = cos.gather(1, labels[:, None])
    if kind == ARCFACE:
        sin = (1 - target**2).clamp_min(0).sqrt()
        phi = target * math.cos(m) - sin * math.sin(m)  # cos(theta + m)
        phi = torch.where(target > math.cos(math.pi - m), phi, target - m * math.sin(m))
    else:
        phi = target - m
    return s * cos.scatter(1, labels[:, None], phi)


@pytest.mark.parametrize("kind", [ARCFACE, COSFACE])
def test_margin_losses_match_the_formula_and_the_library(kind: str) -> None:
    torch.manual_seed(1)
    ours = make_loss(kind, 10, 6)
    e, labels = torch.randn(32, 6), torch.randint(0, 10, (32,))
    cos = F.normalize(e, dim=1) @ F.normalize(ours.weight, dim=0)
    assert torch.allclose(ours.logits(e), cos, atol=1e-6)
    expected = F.cross_entropy(insightface_logits(cos, labels, kind, ours.margin, 30.0), labels)
    assert ours(e, labels).item() == pytest.approx(expected.item(), abs=1e-5)
    # The library's own loss, given the same weights and the margin in its units.
    if kind == ARCFACE:
        library = ArcFaceLoss(10, 6, margin=math.degrees(0.5), scale=30)
    else:
        library = CosFaceLoss(10, 6, margin=0.35, scale=30)
    library.W.data.copy_(ours.weight.data)
    assert ours(e, labels).item() == pytest.approx(library(e, labels).item(), abs=1e-5)


def test_arcface_falls_back_where_theta_plus_m_passes_pi() -> None:
    ours = make_loss(ARCFACE, 2, 2)
    ours.weight.data.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # classes at 0 and 90 degrees
    theta = math.radians(170.0)  # 170 + 28.6 degrees > 180: the fallback branch
    e = torch.tensor([[math.cos(theta), math.sin(theta)]])
    fallback = math.cos(theta) - 0.5 * math.sin(0.5)
    other = math.cos(math.radians(80.0))
    expected = -math.log(math.exp(30 * fallback) / (math.exp(30 * fallback) + math.exp(30 * other)))
    assert ours(e, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-5)
    # cos(theta + m) itself would be larger, i.e. a smaller loss past pi: not monotonic.
    naive = math.cos(theta + 0.5)
    assert naive > fallback
    # Below pi - m the margin is the plain cos(theta + m).
    theta = math.radians(100.0)
    e = torch.tensor([[math.cos(theta), math.sin(theta)]])
    target, other = math.cos(theta + 0.5), math.cos(math.radians(10.0))
    expected = -math.log(math.exp(30 * target) / (math.exp(30 * target) + math.exp(30 * other)))
    assert ours(e, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-5)


def test_arcface_gradient_is_finite_on_a_class_weight() -> None:
    torch.manual_seed(0)
    ours = MarginSoftmaxLoss(ARCFACE, 3, 4)
    e = ours.weight.detach().t()[:2].clone().requires_grad_(True)  # cosine exactly 1.0
    ours(e, torch.tensor([0, 1])).backward()
    assert torch.isfinite(e.grad).all() and torch.isfinite(ours.weight.grad).all()
    # The reason for ArcFace's clamp: the library's loss as it is gives NaN there.
    library = ArcFaceLoss(3, 4, margin=math.degrees(0.5), scale=30)
    e = library.W.detach().t()[:2].clone().requires_grad_(True)
    library(e, torch.tensor([0, 1])).backward()
    assert torch.isnan(e.grad).any(), "pytorch-metric-learning fixed it: ArcFace can go"
    assert issubclass(ArcFace, ArcFaceLoss)


def test_autocast_embeddings_leave_the_class_weights_float32() -> None:
    for name in (CE, ARCFACE, COSFACE, TRIPLET):
        torch.manual_seed(0)
        loss_fn = make_loss(name, 4, 8)
        e = torch.randn(8, 8)
        labels = torch.arange(8) % 4
        full = loss_fn(e, labels)
        # bfloat16 embeddings (what an autocast model returns), inside autocast too.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn(e.to(torch.bfloat16), labels)
            logits = loss_fn.logits(e)
        assert loss.dtype == torch.float32
        assert all(p.dtype == torch.float32 for p in loss_fn.parameters()), name
        # computed in float32: only the embeddings' rounding to bfloat16 differs
        assert loss.item() == pytest.approx(full.item(), rel=0.05, abs=0.02), name
        if logits is not None:
            assert logits.dtype == torch.float32


def test_random_mining_draws_valid_seeded_triplets() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])  # label 3: no positive
    e = torch.randn(10, 4)
    miner = RandomTripletMiner(per_anchor=3, seed=5)
    a, p, n = miner(e, labels)
    assert len(a) == len(p) == len(n) == 9 * 3  # every anchor but the lone label-3 image
    assert torch.equal(a, torch.arange(9).repeat_interleave(3))
    assert (labels[a] == labels[p]).all() and (a != p).all() and (labels[a] != labels[n]).all()
    first = (a, p, n)
    assert any(not torch.equal(x, y) for x, y in zip(first, miner(e, labels), strict=True))
    miner.reset()
    assert all(torch.equal(x, y) for x, y in zip(first, miner(e, labels), strict=True))
    assert all(
        torch.equal(x, y)
        for x, y in zip(first, RandomTripletMiner(3, seed=5)(e, labels), strict=True)
    )
    # Draws are uniform over the positives and the negatives: 3000 draws for anchor 0.
    big = RandomTripletMiner(per_anchor=3000, seed=0)
    a, p, n = big(e, labels)
    p0, n0 = p[a == 0], n[a == 0]
    assert set(p0.tolist()) == {1, 2} and abs((p0 == 1).float().mean() - 0.5) < 0.05
    assert set(n0.tolist()) == set(range(3, 10))
    # One identity only, or no pairs: no triplets, and the loss is 0 with a gradient.
    assert len(miner(e[:3], labels[:3])[0]) == 0
    x = torch.randn(3, 4, requires_grad=True)
    loss = TripletLoss(mining=RANDOM)(x, labels[:3])
    loss.backward()
    assert loss.item() == 0.0


def test_batch_hard_picks_the_farthest_positive_and_nearest_negative() -> None:
    torch.manual_seed(3)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3])  # 3: no positive, never an anchor
    e = torch.randn(9, 5)
    loss_fn = TripletLoss(mining=BATCH_HARD)
    a, p, n = loss_fn.mine(e, labels)
    # Brute force on the distance matrix of the L2-normalised embeddings.
    u = F.normalize(e, dim=1)
    d = ((u[:, None] - u[None]) ** 2).sum(-1).sqrt()
    expected = []
    for i in range(9):
        pos = [j for j in range(9) if labels[j] == labels[i] and j != i]
        neg = [j for j in range(9) if labels[j] != labels[i]]
        if pos and neg:
            expected.append((i, max(pos, key=lambda j: d[i, j]), min(neg, key=lambda j: d[i, j])))
    assert list(zip(a.tolist(), p.tolist(), n.tolist(), strict=True)) == expected
    assert len(expected) == 8
    # The loss is the mean over those triplets of max(0, d(a,p) - d(a,n) + 0.2), zeros
    # included (not the library's default non-zero mean).
    ia, ip, ineg = (torch.tensor(t) for t in zip(*expected, strict=True))
    hinge = (d[ia, ip] - d[ia, ineg] + 0.2).clamp_min(0)
    assert loss_fn(e, labels).item() == pytest.approx(hinge.mean().item(), abs=1e-5)


def test_make_loss_refuses_what_it_does_not_know() -> None:
    assert LOSSES == ("ce", "arcface", "cosface", "triplet")
    with pytest.raises(ValueError, match="Unknown loss 'sphereface'"):
        make_loss("sphereface", 3, 4)
    with pytest.raises(ValueError, match="mining 'semi-hard'"):
        make_loss(TRIPLET, mining="semi-hard")
    with pytest.raises(ValueError, match="needs num_classes >= 2"):
        make_loss(ARCFACE)
    with pytest.raises(ValueError, match="radians"):
        make_loss(ARCFACE, 3, 4, margin=28.6)  # degrees by mistake
    with pytest.raises(ValueError, match=r"embeddings must be \(B, D\)"):
        make_loss(CE, 3, 4)(torch.randn(2, 4, 1), torch.zeros(2, dtype=torch.int64))
    assert make_loss(COSFACE, 3, 4, margin=0.2, scale=64).loss.scale == 64
    e = torch.randn(2, 4)
    for name in LOSSES:
        with pytest.raises(ValueError, match=r"labels must be in 0\.\..*got -1\.\.0"):
            make_loss(name, 3, 4)(e, torch.tensor([-1, 0]))
    for name in (CE, ARCFACE, COSFACE):
        with pytest.raises(ValueError, match=r"labels must be in 0\.\.2, got 0\.\.3"):
            make_loss(name, 3, 4)(e, torch.tensor([0, 3]))
