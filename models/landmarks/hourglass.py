"""Stacked hourglass network for facial landmark heatmaps, and its loss.

Newell, Yang and Deng, "Stacked Hourglass Networks for Human Pose Estimation",
ECCV 2016 (arXiv:1603.06937); the layer layout follows the authors' Torch code
(github.com/princeton-vl/pose-hg-train, ``src/models/hg.lua`` and
``layers/Residual.lua``):

- **Bottleneck**: the paper's residual module, *pre-activation* (BN-ReLU-conv x3:
  1x1 to C/2, 3x3, 1x1 back to C) plus an identity skip, or a 1x1 conv where the
  width changes.
- **Stem**: 7x7 stride-2 conv-BN-ReLU, bottleneck, 2x2 max-pool, two bottlenecks:
  S -> S/4 (256 -> 64), widths C/4, C/2, C (64, 128, 256 at C = 256, as in hg.lua).
- **Hourglass** of depth d: an upper branch of bottlenecks at full resolution, a
  lower branch that max-pools, runs bottlenecks and a hourglass of depth d-1 (a
  bottleneck at d = 1), then upsamples (nearest) and adds the two branches.
- **Per stack**: hourglass -> bottleneck(s) -> 1x1 conv-BN-ReLU -> 1x1 conv to K
  heatmaps (the bottleneck at output resolution is in the versions of hg.lua that
  derived models copied, with a "Residual layers at output resolution" comment; the
  repository's current hg.lua goes straight to the 1x1 conv). Every stack's
  heatmaps are returned (intermediate supervision, paper section 3.4), and each
  stack but the last feeds its features and its heatmaps, each through a 1x1 conv,
  back into the next stack's input by addition.

Build models by name through :mod:`models.registry` (``create_model("hourglass_seed")``),
or from a :class:`HourglassConfig` directly. The network is fully convolutional: any
input side divisible by ``4 * 2**depth`` works; ``input_size`` is the side it is
meant for (what the training data is cropped to).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "PAPER",
    "SEED",
    "SMALL",
    "Bottleneck",
    "Hourglass",
    "HourglassConfig",
    "HourglassStack",
    "Stem",
    "StackedHourglass",
    "heatmap_loss",
    "hourglass_paper",
    "hourglass_seed",
    "hourglass_small",
]


@dataclass(frozen=True)
class HourglassConfig:
    """Everything that shapes a :class:`StackedHourglass`.

    - ``stacks``: hourglasses in sequence, each with its own heatmap output.
    - ``depth``: recursion levels per hourglass; the lowest resolution is
      ``input_size / 4 / 2**depth`` (4x4 for 256 and depth 4).
    - ``channels``: feature width C inside the hourglasses (bottlenecks run at C/2).
    - ``landmarks``: heatmaps out, K.
    - ``input_size``: the input side S the model is meant for; heatmaps are S/4.
    - ``blocks``: bottlenecks at each position of a hourglass and after it
      (hg.lua's ``nModules``, default 1).
    - ``stem_channels``: widths of the stem's 7x7 conv and first bottleneck;
      None gives (C/4, C/2), the paper's (64, 128) at C = 256.
    """

    stacks: int = 2
    depth: int = 4
    channels: int = 256
    landmarks: int = 5
    input_size: int = 256
    blocks: int = 1
    stem_channels: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for name in ("stacks", "depth", "channels", "landmarks", "input_size", "blocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"HourglassConfig.{name} must be an integer >= 1, got {value!r}")
        if self.channels % 2:
            raise ValueError(f"channels must be even (bottlenecks run at C/2), got {self.channels}")
        if self.stem_channels is not None:
            if len(self.stem_channels) != 2 or min(self.stem_channels) < 1:
                raise ValueError(f"stem_channels must be two widths >= 1, got {self.stem_channels}")
            if self.stem_channels[1] % 2:
                raise ValueError(f"stem_channels[1] must be even, got {self.stem_channels[1]}")
        elif self.channels < 4:
            raise ValueError(f"channels must be >= 4 without stem_channels, got {self.channels}")
        if self.input_size % self.multiple:
            raise ValueError(
                f"input_size {self.input_size} is not divisible by {self.multiple} "
                f"(4 for the stem x 2**depth for depth {self.depth}); use a multiple of "
                f"{self.multiple} or a smaller depth"
            )

    @property
    def multiple(self) -> int:
        """Input sides must be divisible by this: the stem's 4 times 2 per hourglass level."""
        return 4 * 2**self.depth

    @property
    def heatmap_size(self) -> int:
        """H = S/4, the side of each output heatmap at ``input_size``."""
        return self.input_size // 4

    @property
    def stem_widths(self) -> tuple[int, int]:
        """The stem's (7x7 conv, first bottleneck) widths in force."""
        if self.stem_channels is not None:
            return (int(self.stem_channels[0]), int(self.stem_channels[1]))
        return (self.channels // 4, self.channels // 2)

    def replace(self, **overrides: Any) -> HourglassConfig:
        """A copy with ``overrides`` applied; an unknown name raises ValueError."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ValueError(
                f"Unknown HourglassConfig field(s) {', '.join(unknown)}; fields: {', '.join(names)}"
            )
        return dataclasses.replace(self, **overrides)


class Bottleneck(nn.Module):
    """The paper's residual module, pre-activation: (B, C_in, H, W) -> (B, C_out, H, W).

    BN-ReLU-conv1x1 (C_in -> C_out/2), BN-ReLU-conv3x3, BN-ReLU-conv1x1 (-> C_out),
    added to the input (a 1x1 conv on the skip where C_in != C_out). No conv has a
    bias: each is followed by a BatchNorm, directly or in the next block.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1, bias=False),
        )
        self.skip: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        # The skip is evaluated first: the body's first ReLU is in place, but it acts
        # on the BatchNorm's output, never on x itself.
        return self.skip(x) + self.body(x)


def _blocks(channels: int, n: int) -> nn.Sequential:
    """n bottlenecks of constant width: (B, C, H, W) -> (B, C, H, W)."""
    return nn.Sequential(*(Bottleneck(channels, channels) for _ in range(n)))


class Hourglass(nn.Module):
    """One hourglass of ``depth`` levels: (B, C, H, W) -> (B, C, H, W).

    H and W must be divisible by ``2**depth``. Upper branch: ``blocks`` bottlenecks
    at full resolution. Lower branch: 2x2 max-pool, bottlenecks, the hourglass of
    ``depth - 1`` (bottlenecks at the bottom), bottlenecks, nearest 2x upsampling.
    The output is the sum of the branches.
    """

    def __init__(self, depth: int, channels: int, blocks: int = 1) -> None:
        super().__init__()
        self.upper = _blocks(channels, blocks)
        self.down = nn.Sequential(nn.MaxPool2d(2, 2), _blocks(channels, blocks))
        self.inner: nn.Module = (
            Hourglass(depth - 1, channels, blocks) if depth > 1 else _blocks(channels, blocks)
        )
        self.up = _blocks(channels, blocks)

    def forward(self, x: Tensor) -> Tensor:
        low = self.up(self.inner(self.down(x)))
        return self.upper(x) + F.interpolate(low, scale_factor=2.0, mode="nearest")


class Stem(nn.Module):
    """Image to features at a quarter of its side: (B, 3, S, S) -> (B, C, S/4, S/4).

    7x7 stride-2 conv-BN-ReLU (-> w0), bottleneck (-> w1), 2x2 max-pool, bottleneck
    (w1), bottleneck (-> C); (w0, w1) = (64, 128) and C = 256 in the paper.
    """

    def __init__(self, channels: int, widths: tuple[int, int]) -> None:
        super().__init__()
        w0, w1 = widths
        self.layers = nn.Sequential(
            nn.Conv2d(3, w0, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(w0),
            nn.ReLU(inplace=True),
            Bottleneck(w0, w1),
            nn.MaxPool2d(2, 2),
            Bottleneck(w1, w1),
            Bottleneck(w1, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class HourglassStack(nn.Module):
    """One stack: features (B, C, H, W) -> heatmaps (B, K, H, W) and the next stack's input.

    hourglass -> ``blocks`` bottlenecks -> 1x1 conv-BN-ReLU (``features``) -> 1x1 conv
    to K heatmaps (``head``). With ``feedback`` (every stack but the last), the
    next input is ``x + conv1x1(features) + conv1x1(heatmaps)`` (paper figure 4,
    right); without it, ``x`` is passed through unchanged.
    """

    def __init__(
        self, depth: int, channels: int, landmarks: int, blocks: int, feedback: bool
    ) -> None:
        super().__init__()
        self.hourglass = Hourglass(depth, channels, blocks)
        self.features = nn.Sequential(
            _blocks(channels, blocks),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Conv2d(channels, landmarks, 1)
        self.merge_features = nn.Conv2d(channels, channels, 1, bias=False) if feedback else None
        self.merge_heatmaps = nn.Conv2d(landmarks, channels, 1, bias=False) if feedback else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.features(self.hourglass(x))
        heatmaps = self.head(features)
        if self.merge_features is not None and self.merge_heatmaps is not None:
            x = x + self.merge_features(features) + self.merge_heatmaps(heatmaps)
        return heatmaps, x


class StackedHourglass(nn.Module):
    """Stacked hourglass network: images (B, 3, S, S) -> ``stacks`` heatmap tensors.

    ``forward`` returns a list of ``config.stacks`` float tensors (B, K, S/4, S/4),
    one per stack, the last being the final prediction; train with
    :func:`heatmap_loss` on all of them. Heatmaps are raw conv outputs (no sigmoid),
    regressed onto Gaussians of peak 1 (:class:`catalog.datasets.LandmarkDataset`'s
    ``heatmaps``). Works in ``channels_last`` memory format and under autocast.
    """

    def __init__(self, config: HourglassConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or HourglassConfig()
        self.stem = Stem(config.channels, config.stem_widths)
        self.stacks = nn.ModuleList(
            HourglassStack(
                config.depth,
                config.channels,
                config.landmarks,
                config.blocks,
                feedback=i < config.stacks - 1,
            )
            for i in range(config.stacks)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal convs (fan_out, ReLU: torchvision's ResNet), BatchNorm weight 1 and
        bias 0; each heatmap head N(0, 0.001) with bias 0, so that the first outputs
        are near 0, the value of almost every target pixel (as HRNet and Simple
        Baselines initialise their final layer)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for stack in self.stacks:
            nn.init.normal_(stack.head.weight, std=0.001)
            nn.init.zeros_(stack.head.bias)

    @property
    def heatmap_size(self) -> int:
        """H = S/4 at the configured ``input_size``."""
        return self.config.heatmap_size

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, S, S) normalised images -> list of ``stacks`` tensors (B, K, S/4, S/4).

        S may differ from ``config.input_size`` but must be divisible by
        ``config.multiple`` (``4 * 2**depth``), or the branches would not line up.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, S, S), got shape {tuple(x.shape)}")
        m = self.config.multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(
                f"input side {tuple(x.shape[-2:])} is not divisible by {m} "
                f"(4 x 2**depth, depth {self.config.depth}); crop or resize to a multiple"
            )
        x = self.stem(x)
        outputs = []
        for stack in self.stacks:
            heatmaps, x = stack(x)
            outputs.append(heatmaps)
        return outputs


def heatmap_loss(
    outputs: Sequence[Tensor], target: Tensor, visible: Tensor | None = None
) -> Tensor:
    """Intermediate supervision: the heatmap MSE of every stack, summed over the stacks.

    - ``outputs``: what :class:`StackedHourglass` returns, ``stacks`` tensors
      (B, K, H, W).
    - ``target``: (B, K, H, W) Gaussian heatmaps (``LandmarkDataset``'s ``heatmaps``).
    - ``visible``: optional (B, K) mask or weights; a stack's MSE is then averaged over
      the visible maps only (sum of w * error over B, K, H, W divided by sum(w) * H * W),
      so hiding points does not shrink the loss of the others. All hidden gives 0.
      Without it every map counts, and a point outside the crop is trained towards
      its all-zero target map.

    Returns a float32 scalar, sum over stacks of the mean over batch, landmarks and
    pixels; computed in float32 whatever the outputs' dtype (autocast).
    """
    if isinstance(outputs, Tensor):
        raise TypeError("outputs must be the list of per-stack heatmaps; wrap one tensor: [t]")
    if len(outputs) == 0:
        raise ValueError("outputs is empty: expected one heatmap tensor per stack")
    target = target.float()
    weights = None
    if visible is not None:
        if visible.shape != target.shape[:2]:
            raise ValueError(
                f"visible has shape {tuple(visible.shape)}, expected (B, K) = "
                f"{tuple(target.shape[:2])}"
            )
        weights = visible.to(dtype=torch.float32, device=target.device)[:, :, None, None]
        denominator = (weights.sum() * target.shape[-2] * target.shape[-1]).clamp_min(1e-12)
    total = target.new_zeros(())
    for i, out in enumerate(outputs):
        if out.shape != target.shape:
            raise ValueError(
                f"stack {i} output has shape {tuple(out.shape)} but the target has "
                f"{tuple(target.shape)}: is the heatmap size the input size / 4?"
            )
        if weights is None:
            total = total + F.mse_loss(out.float(), target)
        else:
            total = total + (weights * (out.float() - target) ** 2).sum() / denominator
    return total


# Presets, built by name through models.registry.

#: The reference configuration (docs/reference-workflow.md, step 2): input 256, heatmaps 64,
#: 256 channels, depth 4. The reference does not say how many stacks it used. Two is
#: the fewest that has what makes the network *stacked* (intermediate supervision and
#: the feedback of one stack's heatmaps into the next, paper section 3.4); it has
#: 6.5M parameters and 16.6 GFLOPs per 256x256 image (forward), against 25.3M and
#: 54.5 GFLOPs for the paper's 8 stacks (``hourglass_paper``), and more stacks are
#: one override away (``create_model("hourglass_seed", stacks=4)``).
SEED = HourglassConfig(stacks=2, depth=4, channels=256, landmarks=5, input_size=256)
#: The paper's main model: 8 stacks of the same hourglass.
PAPER = SEED.replace(stacks=8)
#: Trains on 2 CPU cores in minutes (tests, demo): input 128 -> heatmaps 32, 64
#: channels, depth 3 (4x4 at the bottom, as in the seed model), 2 stacks so that
#: intermediate supervision and feedback are exercised; 0.34M parameters,
#: 0.27 GFLOPs per image.
SMALL = HourglassConfig(stacks=2, depth=3, channels=64, landmarks=5, input_size=128)


def hourglass_seed(**overrides: Any) -> StackedHourglass:
    """The reference model: 2 stacks, depth 4, 256 channels, 256 -> 64 heatmaps."""
    return StackedHourglass(SEED.replace(**overrides))


def hourglass_paper(**overrides: Any) -> StackedHourglass:
    """Newell et al.'s 8-stack model: depth 4, 256 channels, 256 -> 64 heatmaps."""
    return StackedHourglass(PAPER.replace(**overrides))


def hourglass_small(**overrides: Any) -> StackedHourglass:
    """A CPU-sized model: 2 stacks, depth 3, 64 channels, 128 -> 32 heatmaps."""
    return StackedHourglass(SMALL.replace(**overrides))
