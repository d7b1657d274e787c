"""models.recognition.backbones and their registration: shapes, head, configs, registry tasks.

CPU, float32, synthetic tensors, batch 2 (the head's BatchNorm1d needs two samples in
training mode); the whole file runs in a few seconds.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from conftest import one_torch_thread
from torch import nn

from models.recognition.backbones import (
    Backbone,
    BackboneConfig,
    BasicBlock,
    IBasicBlock,
    n_parameters,
)
from models.registry import RECOGNITION, create_model, list_models, model_task

BACKBONES = list_models(RECOGNITION)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread for this file, restored after: on the shared 2-core machine two
    OpenMP threads wait on each other whenever another process holds a core, which
    made these small convolutions several times slower."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def built() -> dict[str, Backbone]:
    """Each registered backbone, built once for the file (resnet50 is 25M parameters)."""
    torch.manual_seed(0)
    return {name: create_model(name) for name in BACKBONES}


def body_parameters(model: nn.Module) -> int:
    """Parameters before the embedding head (stem and stages)."""
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("head"))


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_embeds_at_112_and_at_a_smaller_size(
    name: str, built: dict[str, Backbone]
) -> None:
    torch.manual_seed(0)
    model = built[name].train()
    assert model.config.input_size == 112 and model.config.embedding_dim == 512
    out = model(torch.randn(2, 3, 64, 64))  # training mode, the smaller size
    assert out.shape == (2, 512) and out.dtype == torch.float32 and torch.isfinite(out).all()
    out.sum().backward()  # gradient reaches the first conv through every stage
    assert model.stem[0][0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():  # the default size, one image (inference)
        out = model(torch.randn(1, 3, 112, 112))
    assert out.shape == (1, 512) and torch.isfinite(out).all()


def test_parameter_counts_are_ordered_and_resnet50_is_he_et_al_s(
    built: dict[str, Backbone],
) -> None:
    counts = {name: body_parameters(model) for name, model in built.items()}
    print({k: f"{v:,}" for k, v in counts.items()})
    assert counts["resnet50"] > counts["resnet18"] > counts["face_cpu"]
    # He et al.'s ResNet-50 without its fc is 23.5M (torchvision: 25.6M - 2.05M fc);
    # ours differs only in the 3x3 stem conv (1.7k instead of 9.4k weights).
    assert 23_000_000 < counts["resnet50"] < 24_000_000
    assert 11_000_000 < counts["resnet18"] < 11_500_000
    assert counts["face_cpu"] < 2_000_000


def test_overrides_reach_the_config_and_the_head() -> None:
    model = create_model("face_cpu", embedding_dim=128, input_size=64, width=16, dropout=0.2)
    cfg = model.config
    assert (cfg.embedding_dim, cfg.input_size, cfg.width, cfg.dropout) == (128, 64, 16, 0.2)
    assert model.embedding_dim == 128
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 128)
    with pytest.raises(ValueError, match="Unknown BackboneConfig field.*fields: block"):
        create_model("resnet18", depth=3)


def test_head_is_bn_dropout_flatten_linear_bn_over_the_7x7_map() -> None:
    model = create_model("resnet18", dropout=0.4, width=8)  # narrow: the layout is the point
    kinds = [type(m) for m in model.head]
    assert kinds == [nn.BatchNorm2d, nn.Dropout, nn.Flatten, nn.Linear, nn.BatchNorm1d]
    assert model.head[1].p == 0.4
    # Stride-1 stem at 112: the last map is 7x7, so the pool is the identity and the
    # linear layer sees insightface's flattened 8 x width x 7 x 7.
    x = torch.randn(2, 3, 112, 112)
    fmap = model.feature_map(x)
    assert fmap.shape == (2, 64, 7, 7)
    assert torch.equal(model.pool(fmap), fmap)
    assert model.head[3].in_features == 64 * 7 * 7
    assert BackboneConfig(width=64).channels * BackboneConfig().grid ** 2 == 512 * 7 * 7
    # At 224 the 14x14 map is pooled onto the same grid: same weights, any size.
    assert model.feature_map(torch.randn(2, 3, 224, 224)).shape[-1] == 14
    assert model(torch.randn(2, 3, 224, 224)).shape == (2, 512)
    # insightface fixes the embedding BatchNorm's scale at 1.
    assert not model.head[4].weight.requires_grad and torch.all(model.head[4].weight == 1)
    assert n_parameters(model, trainable=True) == n_parameters(model) - 512


@pytest.mark.parametrize(
    ("overrides", "side", "grid"),
    [
        ({}, 7, 7),
        ({"stem_stride": 2}, 4, 4),  # 112 -> 56 -> 28 -> 14 -> 7 -> 4 (padded convs round up)
        ({"input_size": 224, "stem_stride": 2}, 7, 7),  # He et al.'s 224 -> 7
        ({"input_size": 224}, 14, 7),
        ({"input_size": 64, "stem_stride": 2}, 2, 2),
        ({"head_grid": 1}, 7, 1),
    ],
)
def test_feature_size_arithmetic_matches_the_network(overrides: dict, side: int, grid: int) -> None:
    cfg = BackboneConfig(width=8, **overrides)
    assert (cfg.feature_size, cfg.grid) == (side, grid)
    model = Backbone(cfg)
    s = cfg.input_size
    assert model.feature_map(torch.randn(2, 3, s, s)).shape == (2, cfg.channels, side, side)
    assert model.head[3].in_features == cfg.channels * grid * grid


def test_blocks_and_widths(built: dict[str, Backbone]) -> None:
    r50 = built["resnet50"]
    assert r50.config.channels == 2048 and r50.config.grid == 1  # global pool, see RESNET50
    assert [len(s) for s in r50.stages] == [3, 4, 6, 3]
    assert all(isinstance(s[0], BasicBlock) for s in built["face_cpu"].stages)
    iresnet = create_model("face_cpu", block="ibasic")
    assert all(isinstance(s[0], IBasicBlock) for s in iresnet.stages)
    assert iresnet(torch.randn(2, 3, 64, 64)).shape == (2, 512)
    ib = IBasicBlock(8, 8)
    assert isinstance(ib.skip, nn.Identity) and isinstance(ib.body[0], nn.BatchNorm2d)


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="input_size 100 is not a multiple of 16"):
        BackboneConfig(input_size=100)
    with pytest.raises(ValueError, match="stem_stride must be 1 or 2"):
        BackboneConfig(stem_stride=4)
    with pytest.raises(ValueError, match="block 'dense'"):
        BackboneConfig(block="dense")
    with pytest.raises(ValueError, match="four block counts"):
        BackboneConfig(layers=(2, 2, 2))
    assert BackboneConfig(layers=[1, 1, 1, 1]).layers == (1, 1, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"expected images \(B, 3, S, S\)"):
        create_model("face_cpu")(torch.randn(2, 1, 64, 64))


def test_channels_last_and_autocast() -> None:
    torch.manual_seed(0)
    model = create_model("face_cpu", input_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)
        last = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert torch.allclose(plain, last, atol=1e-4)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x).dtype == torch.bfloat16


def test_registry_keeps_tasks_apart() -> None:
    assert BACKBONES == ["face_cpu", "resnet18", "resnet50"]
    assert list_models() == list_models("landmarks")  # what landmark callers expect
    assert not set(list_models()) & set(BACKBONES)
    assert list_models(None) == sorted(list_models() + BACKBONES)
    assert model_task("resnet18") == RECOGNITION and model_task("hourglass_small") == "landmarks"
    with pytest.raises(ValueError, match="Unknown task 'faces'"):
        list_models("faces")
    with pytest.raises(ValueError, match="Unknown model 'resnet19'.*recognition: face_cpu"):
        create_model("resnet19")
