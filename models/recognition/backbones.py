"""Face recognition backbones: ResNets with insightface's embedding head.

He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
(arXiv:1512.03385), for the residual stages; Deng, Guo, Xue and Zafeiriou, "ArcFace:
Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019 (arXiv:1801.07698),
for the face-recognition adaptations (insightface's IResNet, ``recognition/
arcface_torch/backbones/iresnet.py``):

- **Stem** (``stem_stride``): 1: 3x3 stride-1 conv-BN-ReLU, IResNet's, which keeps
  112 px faces at full resolution until the first stage (112 -> 7 at the end);
  2: the same conv at stride 2, a quarter of the pixels in every stage after it:
  the CPU setting, and at 224 px the resolutions of He et al.'s ImageNet ResNets
  (stages at 56, 28, 14, 7), whose 7x7-conv-and-max-pool stem is not offered (at
  the 112 px face crops it would leave a 2x2 map).
- **Stages**: four, of widths ``width x (1, 2, 4, 8)`` (x 4 out of bottleneck blocks),
  each starting with a stride-2 block (IResNet's layout: every stage halves, so the
  total stride is ``16 x stem_stride``), a 1x1 stride-2 conv-BN on the skip where the
  shape changes. Blocks (``block``):

  * ``"basic"``: He et al.'s two 3x3 convs (ResNet-18/34): conv-BN-ReLU-conv-BN, add,
    ReLU.
  * ``"bottleneck"``: He et al.'s 1x1-3x3-1x1 with a 4x wider output (ResNet-50),
    the stride on the 3x3 (torchvision's "ResNet v1.5").
  * ``"ibasic"``: IResNet's block, BN-conv3x3-BN-PReLU-conv3x3(stride)-BN, added to
    the skip with no activation after the sum (Deng et al. section 3.2, "improved
    residual unit"; Han et al. 2017 for the BN before the first conv).

- **Head** (ArcFace's "option E", insightface's ``features``): BatchNorm2d ->
  Dropout -> Flatten -> Linear -> BatchNorm1d, giving the embedding. The final
  feature map is flattened, not globally pooled: the faces are aligned, so each cell
  of the map sees the same part of every face and a position-aware linear layer
  keeps that (Deng et al. found this head better than global pooling, section 3.2).
  So that one set of widths serves every input size, the map is first
  adaptive-average-pooled to a fixed grid, ``head_grid`` (default 7; capped at the
  map's side at ``input_size``): at 112 px with the stride-1 stem the map *is* 7x7
  and the pool is the identity, i.e. insightface's flatten exactly; at 224 px it
  averages 2x2 cells (14 -> 7) instead of quadrupling the linear layer; at 64 px with
  the stride-2 stem the map is 2x2 and so is the grid. ``head_grid=1`` gives global
  average pooling.

Build by name through :mod:`models.registry` (``create_model("resnet50",
input_size=224)``) or from a :class:`BackboneConfig`. The trainer reads the crop
size from ``model.config.input_size`` and the embedding size from
``model.config.embedding_dim``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

__all__ = [
    "BLOCKS",
    "FACE_CPU",
    "RESNET18",
    "RESNET50",
    "Backbone",
    "BackboneConfig",
    "BasicBlock",
    "Bottleneck",
    "IBasicBlock",
    "face_cpu",
    "n_parameters",
    "resnet18",
    "resnet50",
]

#: Residual block kinds, see the module docstring.
BLOCKS: tuple[str, ...] = ("basic", "bottleneck", "ibasic")
STEM_STRIDES: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class BackboneConfig:
    """Everything that shapes a :class:`Backbone`.

    - ``block``: one of :data:`BLOCKS`.
    - ``layers``: blocks per stage, four stages (ResNet-50: (3, 4, 6, 3)).
    - ``width``: the first stage's width; stage i has ``width * 2**i`` (times 4 at the
      output of bottleneck blocks).
    - ``stem_stride``: 1 or 2 (see the module docstring); the total stride is
      ``16 * stem_stride``.
    - ``input_size``: the side S of the square crops the model is meant for (a
      multiple of 16); other sides run too (the head pools to a fixed grid).
    - ``embedding_dim``: D, the embedding's size.
    - ``dropout``: before the head's linear layer. The ArcFace authors' original
      MXNet head used 0.4; their later PyTorch IResNets default to 0.
    - ``head_grid``: the side the final map is pooled to before the flatten (capped
      at the map's side at ``input_size``); 1 is global average pooling.
    """

    block: str = "basic"
    layers: tuple[int, int, int, int] = (2, 2, 2, 2)
    width: int = 64
    stem_stride: int = 1
    input_size: int = 112
    embedding_dim: int = 512
    dropout: float = 0.0
    head_grid: int = 7

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise ValueError(f"block {self.block!r}: use one of {', '.join(BLOCKS)}")
        layers = tuple(self.layers)
        if len(layers) != 4 or any(not isinstance(n, int) or n < 1 for n in layers):
            raise ValueError(f"layers must be four block counts >= 1, got {self.layers!r}")
        object.__setattr__(self, "layers", layers)  # a list from a config file -> tuple
        if self.stem_stride not in STEM_STRIDES:
            raise ValueError(f"stem_stride must be 1 or 2, got {self.stem_stride!r}")
        for name in ("width", "input_size", "embedding_dim", "head_grid"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"BackboneConfig.{name} must be an integer >= 1, got {value!r}")
        if self.input_size % 16:
            raise ValueError(
                f"input_size {self.input_size} is not a multiple of 16 (the four stages' "
                "stride): use 64, 112, 224, ..."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def channels(self) -> int:
        """The final feature map's channels: ``8 * width``, x 4 for bottleneck blocks."""
        return 8 * self.width * (4 if self.block == "bottleneck" else 1)

    @property
    def feature_size(self) -> int:
        """The final feature map's side at ``input_size`` (each stride-2 step rounds up,
        as a padded 3x3 stride-2 conv does)."""
        side = self.input_size
        for _ in range(self.stem_stride // 2 + 4):
            side = (side + 1) // 2
        return side

    @property
    def grid(self) -> int:
        """The side of the pooled map the head flattens: ``min(head_grid, feature_size)``."""
        return min(self.head_grid, self.feature_size)

    def replace(self, **overrides: Any) -> BackboneConfig:
        """A copy with ``overrides`` applied; an unknown name raises ValueError."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ValueError(
                f"Unknown BackboneConfig field(s) {', '.join(unknown)}; fields: {', '.join(names)}"
            )
        return dataclasses.replace(self, **overrides)


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """A bias-free conv (padding ``kernel // 2``) and its BatchNorm."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def _skip(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Identity, or a 1x1 conv-BN where the shape changes (He et al.'s option B)."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return _conv_bn(in_channels, out_channels, 1, stride)


class BasicBlock(nn.Module):
    """He et al.'s basic block: (B, C_in, H, W) -> (B, C, H/s, W/s).

    conv3x3(stride)-BN-ReLU-conv3x3-BN, added to the skip, then ReLU.
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(in_channels, channels, 3, stride),
            nn.ReLU(inplace=True),
            _conv_bn(channels, channels, 3),
        )
        self.skip = _skip(in_channels, channels, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.skip(x))


class Bottleneck(nn.Module):
    """He et al.'s bottleneck: (B, C_in, H, W) -> (B, 4C, H/s, W/s).

    conv1x1-BN-ReLU, conv3x3(stride)-BN-ReLU, conv1x1 (to 4C)-BN, added to the skip,
    then ReLU; the stride on the 3x3 (torchvision's "v1.5", not the paper's 1x1).
    """

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        out = channels * self.expansion
        self.body = nn.Sequential(
            _conv_bn(in_channels, channels, 1),
            nn.ReLU(inplace=True),
            _conv_bn(channels, channels, 3, stride),
            nn.ReLU(inplace=True),
            _conv_bn(channels, out, 1),
        )
        self.skip = _skip(in_channels, out, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.skip(x))


class IBasicBlock(nn.Module):
    """IResNet's block: (B, C_in, H, W) -> (B, C, H/s, W/s).

    BN-conv3x3-BN-PReLU-conv3x3(stride)-BN, added to the skip; no activation after the
    sum (insightface's ``IBasicBlock``).
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.PReLU(channels),
            _conv_bn(channels, channels, 3, stride),
        )
        self.skip = _skip(in_channels, channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.skip(x)


_BLOCK_CLASSES: dict[str, type[nn.Module]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
    "ibasic": IBasicBlock,
}


def _stem(width: int, stride: int) -> nn.Sequential:
    """(B, 3, S, S) -> (B, width, S/stride, S/stride); see the module docstring."""
    return nn.Sequential(_conv_bn(3, width, 3, stride), nn.ReLU(inplace=True))


class Backbone(nn.Module):
    """A ResNet with the face-recognition head: images (B, 3, S, S) -> embeddings (B, D).

    Inputs are normalised float images (:func:`catalog.transforms.normalize_batch`);
    any side works, ``config.input_size`` is the one the crops are made at. The
    embedding is the head's BatchNorm1d output, not L2-normalised: the margin losses
    and the metrics normalise it themselves. Works in ``channels_last`` memory format
    and under autocast.
    """

    def __init__(self, config: BackboneConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or BackboneConfig()
        block = _BLOCK_CLASSES[config.block]
        self.stem = _stem(config.width, config.stem_stride)
        stages, in_channels = [], config.width
        for i, n in enumerate(config.layers):
            channels = config.width * 2**i
            blocks = [block(in_channels, channels, stride=2)]
            in_channels = channels * block.expansion
            blocks += [block(in_channels, channels) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        grid = config.grid
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.head = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Dropout(config.dropout),
            nn.Flatten(1),
            nn.Linear(in_channels * grid * grid, config.embedding_dim),
            nn.BatchNorm1d(config.embedding_dim),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal convs (fan_out, ReLU: He et al. 2015, torchvision's ResNet),
        BatchNorm weight 1 and bias 0, PReLU slopes 0.25 (PyTorch's default, as
        insightface leaves them). The embedding BatchNorm1d's scale is fixed at 1 and
        not trained (insightface does the same: the linear layer before it already
        sets the scale, and the margin losses normalise the embedding anyway)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.PReLU):
                nn.init.constant_(m.weight, 0.25)
        features = self.head[-1]
        features.weight.requires_grad_(False)

    @property
    def embedding_dim(self) -> int:
        """D, the size of each embedding."""
        return self.config.embedding_dim

    def feature_map(self, x: Tensor) -> Tensor:
        """(B, 3, S, S) -> the last stage's map (B, config.channels, S', S')."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, S, S), got shape {tuple(x.shape)}")
        return self.stages(self.stem(x))

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, S, S) normalised float images -> (B, D) embeddings, in x's dtype
        (float32, or the autocast dtype).

        In training mode B must be at least 2 (the head's BatchNorm1d needs two
        samples to estimate a variance)."""
        return self.head(self.pool(self.feature_map(x)))


def n_parameters(model: nn.Module, trainable: bool = False) -> int:
    """The model's parameter count (only those with ``requires_grad`` if ``trainable``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


# Presets, built by name through models.registry.

#: He et al.'s ResNet-50 (bottleneck blocks 3-4-6-3, 64 wide: 23.5M parameters
#: before the head) with the IResNet stem, at 112 px. Its head pools globally
#: (``head_grid=1``, as He et al.'s ResNets do): flattening its 2048 x 7 x 7 map
#: would take a 51M-parameter linear layer, twice the whole body; pooled, the head
#: has 1.05M.
RESNET50 = BackboneConfig(block="bottleneck", layers=(3, 4, 6, 3), width=64, head_grid=1)
#: He et al.'s ResNet-18 (basic blocks 2-2-2-2, 64 wide: 11.2M before the head).
RESNET18 = BackboneConfig(block="basic", layers=(2, 2, 2, 2), width=64)
#: A lean ResNet-10 for CPU training: one basic block per stage, 32 wide, the
#: stride-2 stem (a quarter of the pixels at every stage): 1.2M parameters before the
#: head. He et al.'s basic block rather than IResNet's: IResNet strides its second
#: conv, so in a stage's first block the first conv runs at the stage's input
#: resolution, and with one block per stage that is every block; measured here
#: (training steps of batch 64, one thread, interleaved), the basic block ran 2.0x
#: faster at 112 px and 1.8x at 64 px. 3x3 convs only: depthwise convs
#: (MobileFaceNet) ran slower on this CPU.
FACE_CPU = BackboneConfig(block="basic", layers=(1, 1, 1, 1), width=32, stem_stride=2)


def resnet50(**overrides: Any) -> Backbone:
    """ResNet-50 (bottleneck 3-4-6-3, width 64), stride-1 stem, 112 px -> global
    average pool -> 512-d."""
    return Backbone(RESNET50.replace(**overrides))


def resnet18(**overrides: Any) -> Backbone:
    """ResNet-18 (basic 2-2-2-2, width 64), stride-1 stem, 112 px -> 512-d."""
    return Backbone(RESNET18.replace(**overrides))


def face_cpu(**overrides: Any) -> Backbone:
    """ResNet-10 (basic blocks 1-1-1-1, width 32), stride-2 stem, 112 px -> 512-d."""
    return Backbone(FACE_CPU.replace(**overrides))
