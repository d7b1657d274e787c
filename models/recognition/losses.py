"""Face recognition losses behind one interface: softmax, ArcFace, CosFace, triplet.

    loss_fn = make_loss("arcface", num_classes=C, embedding_dim=D)
    optimiser = torch.optim.SGD([*model.parameters(), *loss_fn.parameters()], lr=0.1)
    loss = loss_fn(model(images), labels)            # a scalar, float32
    logits = loss_fn.logits(model(images))           # (B, C), or None for "triplet"

Every loss is a :class:`RecognitionLoss` (an ``nn.Module``): ``forward(embeddings,
labels)`` with embeddings (B, D) of any float dtype and labels (B,) int64 in 0..C-1
(checked: FaceDataset's -1 for held-out images is refused). Losses and logits are
computed in float32 with autocast off, whatever the model ran in. The classifier
losses own their class weights as parameters, so the optimiser must be given
``loss_fn.parameters()`` too, and ``loss_fn.to(device)`` must follow the model.

- ``"ce"``: a linear classifier (with bias) and cross-entropy with label smoothing
  0.1 (Szegedy et al. 2016, "Rethinking the Inception Architecture", section 7).
- ``"arcface"``: additive angular margin, ``s * cos(theta_y + m)`` for the target
  class, m = 0.5 rad (Deng et al., "ArcFace", CVPR 2019, arXiv:1801.07698).
- ``"cosface"``: additive cosine margin, ``s * (cos(theta_y) - m)``, m = 0.35 (Wang
  et al., "CosFace: Large Margin Cosine Loss", CVPR 2018, arXiv:1801.09414).

  Both use pytorch-metric-learning's ``ArcFaceLoss`` / ``CosFaceLoss``: class
  weights W (D, C) as a parameter, cosines between L2-normalised embeddings and
  columns of W, cross-entropy averaged over the batch. Scale s = 30 for both (the
  two then differ only in the margin): the papers used 64, but 30 is well above what
  a softmax over C classes needs to reach a target probability near 1 (AdaCos,
  Zhang et al. 2019, puts the fixed scale at sqrt(2) ln(C - 1), 13 for C = 10,000).
  The library's ArcFace already has insightface's fallback where theta + m would
  pass pi (``cos(theta) - m sin(m)``, which keeps the target logit decreasing in
  theta); :class:`ArcFace` only keeps the arccos away from +-1, where its gradient
  is infinite: measured with the library's loss as it is, an embedding exactly on
  its class weight (cosine 1.0 in float32) gives NaN gradients in that embedding
  and in the whole column of W.
- ``"triplet"``: ``max(0, d(a, p) - d(a, n) + 0.2)`` on L2-normalised embeddings,
  Euclidean d (FaceNet: Schroff et al., CVPR 2015, arXiv:1503.03832; library's
  ``TripletMarginLoss``), averaged over all mined triplets, the zero ones included
  (so the value falls as triplets are satisfied; the library's default averages only
  the non-zero ones). Two ways to pick the triplets in a batch (``mining``):

  * ``"random"``: for every anchor with a positive and a negative in the batch, a
    positive and a negative drawn uniformly (``triplets_per_anchor`` of each, with
    replacement), from a seeded generator: the reference's random triplets.
  * ``"batch-hard"``: for every such anchor, its farthest positive and its nearest
    negative (Hermans, Beyer and Leibe, "In Defense of the Triplet Loss for Person
    Re-Identification", 2017, arXiv:1703.07737; the library's ``BatchHardMiner``),
    for P identities x K images batches (:class:`catalog.datasets.PKSampler`).

  ``logits`` is None: a triplet model is evaluated by distances only.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.miners import BatchHardMiner
from pytorch_metric_learning.reducers import MeanReducer
from torch import Tensor, nn

__all__ = [
    "ARCFACE",
    "BATCH_HARD",
    "CE",
    "COSFACE",
    "LOSSES",
    "MININGS",
    "RANDOM",
    "TRIPLET",
    "ArcFace",
    "MarginSoftmaxLoss",
    "RandomTripletMiner",
    "RecognitionLoss",
    "SoftmaxLoss",
    "TripletLoss",
    "make_loss",
]

CE, ARCFACE, COSFACE, TRIPLET = "ce", "arcface", "cosface", "triplet"
#: The loss names :func:`make_loss` takes.
LOSSES: tuple[str, ...] = (CE, ARCFACE, COSFACE, TRIPLET)
RANDOM, BATCH_HARD = "random", "batch-hard"
#: The triplet mining modes.
MININGS: tuple[str, ...] = (RANDOM, BATCH_HARD)

#: Defaults: (margin, scale) of the margin losses; ArcFace's margin in radians.
ARCFACE_MARGIN, COSFACE_MARGIN, MARGIN_SCALE = 0.5, 0.35, 30.0
TRIPLET_MARGIN, LABEL_SMOOTHING = 0.2, 0.1

Triplets = tuple[Tensor, Tensor, Tensor]


class RecognitionLoss(nn.Module):
    """The interface: ``forward(embeddings (B, D), labels (B,) int64) -> scalar float32
    loss`` and ``logits(embeddings) -> (B, C) class scores or None``."""

    name: ClassVar[str]

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def logits(self, embeddings: Tensor) -> Tensor | None:
        """(B, D) -> (B, C) scores whose argmax is the predicted class (closed-set top-1),
        or None where the loss has no classifier."""
        return None


def _float32(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a loss method with autocast off: cosines, margins and the softmax in float32
    (under autocast the library's matrix products would run in bfloat16/float16, the
    arccos of ArcFace included)."""

    @functools.wraps(method)
    def wrapper(self: nn.Module, embeddings: Tensor, *args: Any) -> Any:
        with torch.autocast(embeddings.device.type, enabled=False):
            return method(self, embeddings, *args)

    return wrapper


def _check(
    embeddings: Tensor, labels: Tensor | None = None, num_classes: int | None = None
) -> Tensor:
    """embeddings as float32 (B, D); labels (B,) in 0..num_classes-1 where given."""
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be (B, D), got shape {tuple(embeddings.shape)}")
    if labels is not None:
        if tuple(labels.shape) != (embeddings.shape[0],):
            raise ValueError(
                f"labels must be (B,) = ({embeddings.shape[0]},), got shape {tuple(labels.shape)}"
            )
        low, high = (int(v) for v in torch.aminmax(labels)) if len(labels) else (0, 0)
        if low < 0 or (num_classes is not None and high >= num_classes):
            raise ValueError(
                f"labels must be in 0..{'C-1' if num_classes is None else num_classes - 1}, got "
                f"{low}..{high} (FaceDataset labels the held-out query/distractor images -1)"
            )
    # float32 whatever autocast made: the library casts its W to the embeddings'
    # dtype, in place (W.data), which would leave a bfloat16 parameter behind.
    return embeddings.float()


class SoftmaxLoss(RecognitionLoss):
    """Linear classifier (D -> C, with bias) and cross-entropy with label smoothing."""

    name = CE

    def __init__(
        self, num_classes: int, embedding_dim: int, label_smoothing: float = LABEL_SMOOTHING
    ) -> None:
        super().__init__()
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    @_float32
    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        embeddings = _check(embeddings, labels, self.classifier.out_features)
        return self.criterion(self.classifier(embeddings), labels)

    @_float32
    def logits(self, embeddings: Tensor) -> Tensor:
        """(B, D) -> (B, C) float32: the classifier's outputs."""
        return self.classifier(_check(embeddings))


class ArcFace(pml_losses.ArcFaceLoss):
    """pytorch-metric-learning's ArcFaceLoss (``margin`` in degrees, as there), its
    cosines kept within ``1 - eps`` of +-1 before the arccos: at +-1 the arccos'
    gradient is infinite and the library's loss returns NaN gradients (see the module
    docstring). The value changes only for angles within 1.5e-3 rad (0.08 degrees) of
    a class weight or of its opposite, where the target's gradient becomes 0 instead
    of NaN."""

    EPS = 1e-6

    def get_angles(self, cosine_of_target_classes: Tensor) -> Tensor:
        return super().get_angles(cosine_of_target_classes.clamp(-1 + self.EPS, 1 - self.EPS))


class MarginSoftmaxLoss(RecognitionLoss):
    """ArcFace (``kind="arcface"``, ``margin`` in radians) or CosFace (``"cosface"``,
    ``margin`` in cosine units), over class weights W (D, C) of the library's loss
    (``self.loss.W``); see the module docstring."""

    def __init__(
        self,
        kind: str,
        num_classes: int,
        embedding_dim: int,
        margin: float | None = None,
        scale: float = MARGIN_SCALE,
    ) -> None:
        super().__init__()
        if kind == ARCFACE:
            self.margin = ARCFACE_MARGIN if margin is None else float(margin)
            if not 0.0 <= self.margin < math.pi / 2:
                raise ValueError(f"ArcFace margin is in radians, in [0, pi/2): got {margin}")
            self.loss: nn.Module = ArcFace(
                num_classes, embedding_dim, margin=math.degrees(self.margin), scale=scale
            )
        elif kind == COSFACE:
            self.margin = COSFACE_MARGIN if margin is None else float(margin)
            self.loss = pml_losses.CosFaceLoss(
                num_classes, embedding_dim, margin=self.margin, scale=scale
            )
        else:
            raise ValueError(f"kind {kind!r}: use {ARCFACE!r} or {COSFACE!r}")
        self.name = kind  # type: ignore[misc]
        self.scale = float(scale)
        self.num_classes = num_classes

    @property
    def weight(self) -> Tensor:
        """(D, C) float32: the class weights (the library's ``W``, a parameter)."""
        return self.loss.W

    @_float32
    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return self.loss(_check(embeddings, labels, self.num_classes), labels)

    @_float32
    def logits(self, embeddings: Tensor) -> Tensor:
        """(B, D) -> (B, C) float32: cosines between the L2-normalised embeddings and
        class weights, no margin, no scale (argmax: the predicted class)."""
        e = F.normalize(_check(embeddings), dim=1)
        return e @ F.normalize(self.loss.W, dim=0)


class RandomTripletMiner:
    """The reference's random triplets: for every anchor that has a positive (same
    label, another index) and a negative in the batch, ``per_anchor`` (anchor,
    positive, negative) triplets, each positive and negative drawn uniformly with
    replacement. Draws come from a torch Generator seeded with ``seed``: the same
    seed and batches give the same triplets (``reset`` starts the sequence again)."""

    def __init__(self, per_anchor: int = 1, seed: int = 0) -> None:
        if per_anchor < 1:
            raise ValueError(f"per_anchor must be >= 1, got {per_anchor}")
        self.per_anchor, self.seed = per_anchor, seed
        self.reset()

    def reset(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, embeddings: Tensor, labels: Tensor) -> Triplets:
        """labels (B,) -> (anchors, positives, negatives), three int64 (T,) index tensors
        on labels' device, T = per_anchor x anchors with both, anchor-major order."""
        device = labels.device
        labels = labels.detach().cpu()
        n = labels.shape[0]
        same = labels[:, None] == labels[None, :]
        positive = same & ~torch.eye(n, dtype=torch.bool)
        negative = ~same
        anchors = torch.nonzero(positive.any(1) & negative.any(1)).flatten()
        # The argmax of i.i.d. uniform scores over the allowed entries of each row is
        # a uniform draw among them, for every row at once.
        pos_draws, neg_draws = [], []
        for _ in range(self.per_anchor):
            scores = torch.rand(n, n, generator=self.generator)
            pos_draws.append(scores.masked_fill(~positive, -1.0).argmax(1)[anchors])
            scores = torch.rand(n, n, generator=self.generator)
            neg_draws.append(scores.masked_fill(~negative, -1.0).argmax(1)[anchors])
        a = anchors.repeat_interleave(self.per_anchor)
        p = torch.stack(pos_draws, 1).flatten()
        ng = torch.stack(neg_draws, 1).flatten()
        return a.to(device), p.to(device), ng.to(device)


class TripletLoss(RecognitionLoss):
    """Triplet margin loss on L2-normalised embeddings with ``"random"`` or
    ``"batch-hard"`` mining; see the module docstring."""

    name = TRIPLET

    def __init__(
        self,
        margin: float = TRIPLET_MARGIN,
        mining: str = BATCH_HARD,
        triplets_per_anchor: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if mining not in MININGS:
            raise ValueError(f"mining {mining!r}: use one of {', '.join(MININGS)}")
        self.margin, self.mining = float(margin), mining
        distance = LpDistance(normalize_embeddings=True, p=2)
        self.loss = pml_losses.TripletMarginLoss(
            margin=self.margin, distance=distance, reducer=MeanReducer()
        )
        if mining == BATCH_HARD:
            self.miner = BatchHardMiner(distance=LpDistance(normalize_embeddings=True, p=2))
        else:
            self.miner = RandomTripletMiner(triplets_per_anchor, seed)

    @_float32
    def mine(self, embeddings: Tensor, labels: Tensor) -> Triplets:
        """(anchors, positives, negatives): int64 (T,) index tensors into the batch."""
        a, p, n = self.miner(_check(embeddings, labels).detach(), labels)
        return a, p, n

    @_float32
    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Mean triplet loss over the mined triplets; 0 (with a gradient of zeros) when
        the batch has none (no identity with two images, or a single identity)."""
        embeddings = _check(embeddings, labels)
        return self.loss(embeddings, labels, self.mine(embeddings, labels))


def make_loss(
    name: str,
    num_classes: int | None = None,
    embedding_dim: int | None = None,
    *,
    mining: str = BATCH_HARD,
    margin: float | None = None,
    scale: float = MARGIN_SCALE,
    label_smoothing: float = LABEL_SMOOTHING,
    triplets_per_anchor: int = 1,
    seed: int = 0,
) -> RecognitionLoss:
    """The loss ``name`` (one of :data:`LOSSES`) for C = ``num_classes`` identities and
    D = ``embedding_dim``-dimensional embeddings (both required but for "triplet").

    ``margin`` None takes each loss's default (ArcFace 0.5 rad, CosFace 0.35, triplet
    0.2); ``scale`` is the margin losses'; ``label_smoothing`` the softmax's;
    ``mining``, ``triplets_per_anchor`` and ``seed`` the triplet loss's.
    """
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}: use one of {', '.join(LOSSES)}")
    if name == TRIPLET:
        return TripletLoss(
            TRIPLET_MARGIN if margin is None else margin, mining, triplets_per_anchor, seed
        )
    if num_classes is None or embedding_dim is None or num_classes < 2 or embedding_dim < 1:
        raise ValueError(
            f"loss {name!r} needs num_classes >= 2 and embedding_dim >= 1, got "
            f"{num_classes} and {embedding_dim}"
        )
    if name == CE:
        return SoftmaxLoss(num_classes, embedding_dim, label_smoothing)
    return MarginSoftmaxLoss(name, num_classes, embedding_dim, margin, scale)
