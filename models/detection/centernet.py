"""A small CenterNet-style face detector: box centres as a heatmap, sizes regressed.

Zhou, Wang and Krähenbühl, "Objects as Points" (2019): one heatmap channel peaks at
each face's centre; at that cell two channels give the box's size and two the
centre's sub-cell offset. Decoding is a 3 x 3 max-pool (a peak is its own
neighbourhood's maximum), the top peaks, their boxes: no anchors, and any number of
faces per image, though CelebA gives one face per image to learn from (the
Dataset's mosaics give several).

The network is sized for the CPU: a plain stride-2 conv backbone to stride 32 and a
light feature pyramid back up to stride ``config.stride`` (4), where the heads run;
about 0.2M parameters. Inputs are letterboxed squares of ``config.input_size``
(:func:`catalog.detection.letterbox_matrix`), uint8 normalised as every model here
(:func:`catalog.transforms.normalize_batch`).

Targets (:func:`render_targets`) and the loss (:func:`detection_loss`): the
penalty-reduced focal loss of CenterNet on an elliptical Gaussian per face (sides
``0.54 w / 6`` and ``0.54 h / 6`` heatmap cells, TTFNet's box-shaped Gaussian, Liu et
al. 2020), L1 on log width and height (in cells) and on the offset at the centre
cell. Sizes in log space make a 20 px face and a 200 px one weigh alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DETECTORS",
    "CenterNet",
    "CenterNetConfig",
    "create_detector_model",
    "decode",
    "detection_loss",
    "render_targets",
]

#: TTFNet's share of the box covered by the Gaussian's 6 sigma.
GAUSSIAN_ALPHA = 0.54
#: Initial heatmap bias: a prior of 0.1 for "a centre here" (CenterNet's -2.19).
HEAT_PRIOR_BIAS = -2.19


@dataclass(frozen=True)
class CenterNetConfig:
    """``input_size``: the letterboxed square's side (a multiple of 32); ``widths``:
    channels at strides 2, 4, 8, 16, 32; ``neck``: the pyramid's channels; ``stride``:
    the heads' stride (4 or 8)."""

    input_size: int = 128
    widths: tuple[int, int, int, int, int] = (16, 24, 32, 64, 96)
    neck: int = 32
    stride: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.input_size, int) or self.input_size < 32 or self.input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32, got {self.input_size!r}")
        if self.stride not in (4, 8):
            raise ValueError(f"stride must be 4 or 8, got {self.stride!r}")
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if len(self.widths) != 5 or min(self.widths) < 1 or self.neck < 1:
            raise ValueError(f"widths must be five channel counts >= 1, got {self.widths!r}")

    @property
    def heatmap_size(self) -> int:
        return self.input_size // self.stride

    def replace(self, **overrides: Any) -> CenterNetConfig:
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ValueError(
                f"Unknown CenterNetConfig field(s) {', '.join(unknown)}; fields: {', '.join(names)}"
            )
        return dataclasses.replace(self, **overrides)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class CenterNet(nn.Module):
    """images (B, 3, S, S) normalised -> {"heat": (B, 1, M, M) logits, "size": (B, 2, M, M)
    log width and height in heatmap cells, "offset": (B, 2, M, M) in cells}, M = S /
    stride."""

    def __init__(self, config: CenterNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or CenterNetConfig()
        w = config.widths
        stages, cin = [], 3
        for cout in w:  # each stage halves the side
            stages.append(nn.Sequential(_conv(cin, cout, 2), _conv(cout, cout)))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.levels = {4: 1, 8: 2}[config.stride]  # index of the heads' stage
        self.lateral = nn.ModuleList(nn.Conv2d(c, config.neck, 1) for c in w[self.levels :])
        self.smooth = _conv(config.neck, config.neck)
        self.heat = nn.Sequential(_conv(config.neck, config.neck), nn.Conv2d(config.neck, 1, 1))
        self.box = nn.Sequential(_conv(config.neck, config.neck), nn.Conv2d(config.neck, 4, 1))
        nn.init.constant_(self.heat[-1].bias, HEAT_PRIOR_BIAS)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        features = features[self.levels :]
        top = self.lateral[-1](features[-1])
        for lateral, feature in zip(
            reversed(self.lateral[:-1]), reversed(features[:-1]), strict=True
        ):
            top = F.interpolate(top, size=feature.shape[-2:], mode="nearest") + lateral(feature)
        top = self.smooth(top)
        box = self.box(top)
        return {"heat": self.heat(top), "size": box[:, :2], "offset": box[:, 2:]}


def centernet_small(**overrides: Any) -> CenterNet:
    """The CPU-sized detector: 128 px input, heads at stride 4 (32 x 32 cells)."""
    return CenterNet(CenterNetConfig().replace(**overrides))


#: The detector models by name (the trainer's ``model`` setting). Not in
#: models.registry, whose tables are the landmark and recognition models.
DETECTORS = {"centernet_small": centernet_small}


def create_detector_model(name: str, **overrides: Any) -> CenterNet:
    if name not in DETECTORS:
        raise ValueError(f"Unknown detector model {name!r}: use one of {', '.join(DETECTORS)}")
    return DETECTORS[name](**overrides)


# --- targets and loss -----------------------------------------------------------------------


def _cells(boxes: torch.Tensor, config: CenterNetConfig) -> tuple[torch.Tensor, ...]:
    """Centre (heatmap pixel-index coordinates) and size (cells) of boxes (..., 4) in
    input pixels (exclusive ends): edges onto edges, as catalog.transforms maps a crop."""
    r = config.input_size / config.heatmap_size
    cx = (boxes[..., 0] + boxes[..., 2]) / 2 / r - 0.5  # ((x1 + x2) / 2 - 0.5 + 0.5) / r - 0.5
    cy = (boxes[..., 1] + boxes[..., 3]) / 2 / r - 0.5
    w = (boxes[..., 2] - boxes[..., 0]) / r
    h = (boxes[..., 3] - boxes[..., 1]) / r
    return cx, cy, w, h


def render_targets(
    boxes: torch.Tensor, n_boxes: torch.Tensor, config: CenterNetConfig
) -> dict[str, torch.Tensor]:
    """CenterNet targets of a batch: boxes (B, K, 4) input pixels, the first
    ``n_boxes`` (B,) of each row real. Returns ``heat`` (B, 1, M, M) (1 at each centre
    cell, Gaussians around it, the max where faces overlap), ``cell`` (B, K, 2) long
    (x, y), ``size`` (B, K, 2) log w, log h in cells, ``offset`` (B, K, 2), ``valid``
    (B, K) bool."""
    m = config.heatmap_size
    b, k, _ = boxes.shape
    valid = torch.arange(k, device=boxes.device)[None, :] < n_boxes[:, None]
    cx, cy, w, h = _cells(boxes.float(), config)
    ix = cx.round().clamp(0, m - 1)
    iy = cy.round().clamp(0, m - 1)
    sx = (GAUSSIAN_ALPHA * w / 6).clamp(min=0.5)
    sy = (GAUSSIAN_ALPHA * h / 6).clamp(min=0.5)
    grid = torch.arange(m, device=boxes.device, dtype=torch.float32)
    gx = torch.exp(-((grid[None, None, :] - ix[..., None]) ** 2) / (2 * sx[..., None] ** 2))
    gy = torch.exp(-((grid[None, None, :] - iy[..., None]) ** 2) / (2 * sy[..., None] ** 2))
    maps = gy[..., :, None] * gx[..., None, :] * valid[..., None, None]  # (B, K, M, M)
    heat = maps.amax(dim=1, keepdim=True) if k else torch.zeros(b, 1, m, m)
    return {
        "heat": heat,
        "cell": torch.stack([ix, iy], dim=-1).long(),
        "size": torch.stack([w.clamp(min=1e-3).log(), h.clamp(min=1e-3).log()], dim=-1),
        "offset": torch.stack([cx - ix, cy - iy], dim=-1),
        "valid": valid,
    }


def _gather(maps: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """(B, C, M, M) at cells (B, K, 2) (x, y) -> (B, K, C)."""
    b, c, m, _ = maps.shape
    index = cell[..., 1] * m + cell[..., 0]  # (B, K)
    flat = maps.reshape(b, c, m * m)
    return flat.gather(2, index[:, None, :].expand(b, c, index.shape[1])).transpose(1, 2)


def detection_loss(
    outputs: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    size_weight: float = 1.0,
    offset_weight: float = 1.0,
) -> torch.Tensor:
    """Focal loss on the heatmap (per face) + L1 on log size and offset at the centres."""
    logits = outputs["heat"].float()
    gt = targets["heat"]
    pos = gt.eq(1).float()
    n_pos = pos.sum().clamp(min=1.0)
    # log(sigmoid) and log(1 - sigmoid) from logsigmoid: finite for any logit
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = logits.sigmoid()
    pos_loss = (log_p * (1 - p) ** 2 * pos).sum()
    neg_loss = (log_not_p * p**2 * (1 - gt) ** 4 * (1 - pos)).sum()
    focal = -(pos_loss + neg_loss) / n_pos
    valid = targets["valid"].float()[..., None]
    n_valid = valid.sum().clamp(min=1.0)
    size = _gather(outputs["size"].float(), targets["cell"])
    offset = _gather(outputs["offset"].float(), targets["cell"])
    size_l1 = ((size - targets["size"]).abs() * valid).sum() / n_valid
    offset_l1 = ((offset - targets["offset"]).abs() * valid).sum() / n_valid
    return focal + size_weight * size_l1 + offset_weight * offset_l1


# --- decoding -------------------------------------------------------------------------------


def decode(
    outputs: dict[str, torch.Tensor], config: CenterNetConfig, top_k: int = 20
) -> np.ndarray:
    """(B, top_k, 5) float32 boxes ``x_1, y_1, x_2, y_2, score`` in input pixels
    (exclusive ends), the highest-scoring peaks first (scores are heatmap sigmoids;
    threshold and NMS them as needed: :func:`models.detection.boxes.nms`)."""
    heat = outputs["heat"].float().sigmoid()
    b, _, m, _ = heat.shape
    peaks = heat * (F.max_pool2d(heat, 3, 1, 1) == heat)
    k = min(top_k, m * m)
    scores, index = peaks.reshape(b, -1).topk(k, dim=1)
    iy, ix = (index // m).float(), (index % m).float()
    cell = torch.stack([index % m, index // m], dim=-1)
    size = _gather(outputs["size"].float(), cell).exp()
    offset = _gather(outputs["offset"].float(), cell)
    r = config.input_size / m
    cx = (ix + offset[..., 0] + 0.5) * r  # centre in input pixels + 0.5 (edges frame)
    cy = (iy + offset[..., 1] + 0.5) * r
    w, h = size[..., 0] * r, size[..., 1] * r
    # edges at c - w/2 .. c + w/2 in continuous coordinates = x_1 - 0.5 .. x_2 - 0.5 in
    # pixel-index ones, i.e. x_1 = c - w/2 (continuous) and x_2 = c + w/2
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, scores], dim=-1)
    return boxes.cpu().numpy().astype(np.float32)
