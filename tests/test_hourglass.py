"""models.landmarks.hourglass and models.registry: shapes, wiring, loss, init, a tiny run.

Everything runs on CPU in float32 on synthetic tensors; the training run uses the
``hourglass_small`` preset at its own input size (128 -> 32) and takes a few seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from catalog import transforms as T
from models.landmarks.hourglass import (
    Bottleneck,
    HourglassConfig,
    StackedHourglass,
    heatmap_loss,
)
from models.registry import create_model, list_models


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_runs_forward(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name)
    cfg = model.config
    batch = 1 if cfg.channels >= 256 else 2  # the 256-channel models are heavy on CPU
    x = torch.randn(batch, 3, cfg.input_size, cfg.input_size)
    with torch.no_grad():
        outputs = model(x)
    h = cfg.input_size // 4
    assert isinstance(outputs, list)
    assert [tuple(o.shape) for o in outputs] == [(batch, cfg.landmarks, h, h)] * cfg.stacks
    assert all(o.dtype == torch.float32 and torch.isfinite(o).all() for o in outputs)


def test_seed_is_the_reference_configuration() -> None:
    model = create_model("hourglass_seed")
    cfg = model.config
    assert (cfg.input_size, cfg.heatmap_size, cfg.channels, cfg.depth, cfg.landmarks) == (
        256,
        64,
        256,
        4,
        5,
    )
    assert cfg.stacks == 2
    count = n_params(model)
    print(f"hourglass_seed: {count:,} parameters")
    # Two stacks of Newell et al.'s 256-channel depth-4 hourglass: 6.5M (the 8-stack
    # model is about 25M).
    assert 5_000_000 < count < 8_000_000
    paper = n_params(create_model("hourglass_paper"))
    print(f"hourglass_paper: {paper:,} parameters")
    assert 20_000_000 < paper < 30_000_000


def test_small_preset_is_cpu_sized() -> None:
    model = create_model("hourglass_small")
    count = n_params(model)
    print(f"hourglass_small: {count:,} parameters")
    assert count < 1_000_000
    assert model.config.stacks >= 2  # intermediate supervision and feedback exercised


def test_overrides_reach_the_config() -> None:
    model = create_model("hourglass_small", stacks=3, landmarks=7, input_size=64)
    assert (model.config.stacks, model.config.landmarks, model.config.input_size) == (3, 7, 64)
    assert len(model.stacks) == 3
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outputs] == [(1, 7, 16, 16)] * 3


def test_unknown_model_name_lists_the_registered_ones() -> None:
    with pytest.raises(ValueError, match="Unknown model 'hourglas_seed'") as err:
        create_model("hourglas_seed")
    for name in list_models():
        assert name in str(err.value)


def test_unknown_override_names_the_fields() -> None:
    with pytest.raises(ValueError, match="stack_count.*fields: stacks"):
        create_model("hourglass_small", stack_count=3)


def test_sizes_that_cannot_line_up_are_refused() -> None:
    with pytest.raises(ValueError, match="input_size 100 is not divisible by 32"):
        HourglassConfig(depth=3, input_size=100)
    model = create_model("hourglass_small")  # depth 3: sides must be multiples of 32
    with pytest.raises(ValueError, match="not divisible by 32"):
        model(torch.randn(1, 3, 112, 112))
    with pytest.raises(ValueError, match=r"expected images \(B, 3, S, S\)"):
        model(torch.randn(1, 1, 128, 128))


def test_stacks_feed_forward_into_the_next_and_the_last_returns_the_final() -> None:
    torch.manual_seed(0)
    model = create_model("hourglass_small", stacks=3).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        before = model(x)
        # The first stack's heatmaps enter the second through merge_heatmaps: changing
        # its head changes every later stack, and leaves the first stack's features.
        model.stacks[0].head.bias.add_(1.0)
        after = model(x)
    assert torch.allclose(after[0], before[0] + 1.0, atol=1e-5)
    assert not torch.allclose(after[1], before[1], atol=1e-3)
    assert not torch.allclose(after[2], before[2], atol=1e-3)
    assert model.stacks[-1].merge_features is None and model.stacks[-1].merge_heatmaps is None
    assert all(s.merge_features is not None for s in model.stacks[:-1])


def test_every_stack_gets_gradient_from_the_loss() -> None:
    torch.manual_seed(0)
    model = create_model("hourglass_small")
    outputs = model(torch.randn(2, 3, 128, 128))
    heatmap_loss(outputs, torch.rand(2, 5, 32, 32)).backward()
    for stack in model.stacks:
        assert stack.head.weight.grad is not None and stack.head.weight.grad.abs().sum() > 0
    assert model.stem.layers[0].weight.grad.abs().sum() > 0


def test_initial_heatmaps_are_near_zero() -> None:
    torch.manual_seed(0)
    for name in ("hourglass_small", "hourglass_seed"):
        model = create_model(name)
        s = model.config.input_size
        with torch.no_grad():
            outputs = model(torch.randn(2, 3, s, s))
        # Targets peak at 1: a start near 0 is the all-background prediction.
        assert max(o.abs().max().item() for o in outputs) < 0.1, name


def test_init_convs_kaiming_batchnorm_identity() -> None:
    torch.manual_seed(0)
    model = StackedHourglass(HourglassConfig(stacks=1, depth=2, channels=64, input_size=64))
    conv = model.stacks[0].hourglass.upper[0].body[2]  # 1x1 conv, 64 -> 32, fan_out 32
    assert abs(conv.weight.std().item() - (2 / 32) ** 0.5) < 0.05
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    assert model.stacks[0].head.weight.std().item() < 0.002


def test_bottleneck_is_pre_activation_with_a_projection_only_where_widths_change() -> None:
    same, wider = Bottleneck(32, 32), Bottleneck(32, 64)
    assert isinstance(same.skip, torch.nn.Identity)
    assert isinstance(wider.skip, torch.nn.Conv2d)
    assert isinstance(same.body[0], torch.nn.BatchNorm2d)  # BN-ReLU-conv
    assert isinstance(same.body[-1], torch.nn.Conv2d)
    x = torch.randn(2, 32, 8, 8)
    x_copy = x.clone()
    assert wider(x).shape == (2, 64, 8, 8)
    assert torch.equal(x, x_copy)  # the in-place ReLUs never touch the input


def test_loss_sums_the_mse_of_every_stack() -> None:
    target = torch.zeros(2, 2, 2, 2)
    first = torch.ones(2, 2, 2, 2)
    first[0, 1] = 10.0  # one map far off
    second = torch.full((2, 2, 2, 2), 3.0)
    # Stack 1: (12 maps-pixels of error 1 + 4 of error 100) / 16 = 25.75; stack 2: 9.
    assert heatmap_loss([first, second], target).item() == pytest.approx(25.75 + 9.0)
    assert heatmap_loss([second], target).item() == pytest.approx(9.0)
    # Hiding the far-off map: stack 1 averages its 3 visible maps of error 1.
    visible = torch.tensor([[True, False], [True, True]])
    assert heatmap_loss([first, second], target, visible).item() == pytest.approx(1.0 + 9.0)
    assert heatmap_loss([first], target, torch.zeros(2, 2)).item() == 0.0


def test_loss_refuses_what_does_not_match() -> None:
    target = torch.zeros(1, 5, 8, 8)
    with pytest.raises(TypeError, match="list of per-stack heatmaps"):
        heatmap_loss(torch.zeros(1, 5, 8, 8), target)
    with pytest.raises(ValueError, match="stack 1 output has shape"):
        heatmap_loss([torch.zeros(1, 5, 8, 8), torch.zeros(1, 5, 4, 4)], target)
    with pytest.raises(ValueError, match="visible has shape"):
        heatmap_loss([target], target, torch.ones(5))
    with pytest.raises(ValueError, match="empty"):
        heatmap_loss([], target)


def test_channels_last_gives_the_same_heatmaps() -> None:
    torch.manual_seed(0)
    model = create_model("hourglass_small").eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        plain = model(x)
        model = model.to(memory_format=torch.channels_last)
        last = model(x.to(memory_format=torch.channels_last))
    for a, b in zip(plain, last, strict=True):
        assert torch.allclose(a, b, atol=1e-4)


def test_autocast_runs_and_the_loss_stays_float32() -> None:
    torch.manual_seed(0)
    model = create_model("hourglass_small")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(torch.randn(2, 3, 128, 128))
        loss = heatmap_loss(outputs, torch.rand(2, 5, 32, 32))
    assert outputs[-1].dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(model.stacks[-1].head.weight.grad).all()


#: Each landmark drawn as a blob of its own colour, so its position is in the pixels.
COLOURS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1]], np.float32)


def blobs(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """n noisy images (3, size, size) with five coloured blobs at random points, their
    Gaussian target heatmaps (5, size/4, size/4) as LandmarkDataset makes them, and
    the points in heatmap pixels (n, 5, 2)."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(0.15 * size, 0.85 * size, (n, 5, 2))
    images = 0.2 * rng.standard_normal((n, 3, size, size)).astype(np.float32)
    heat = size // 4
    targets, on_map = [], []
    for i in range(n):
        images[i] += 2 * np.einsum("kc,khw->chw", COLOURS, T.gaussian_heatmaps(points[i], size, 3))
        p = T.input_to_heatmap(points[i], size, heat)
        targets.append(T.gaussian_heatmaps(p, heat, 1.5))
        on_map.append(p)
    return torch.from_numpy(images), torch.from_numpy(np.stack(targets)), np.stack(on_map)


def argmax_points(heatmaps: torch.Tensor) -> np.ndarray:
    """(B, K, H, W) -> (B, K, 2) integer (x, y) of each map's maximum."""
    flat = heatmaps.flatten(2).argmax(-1)
    w = heatmaps.shape[-1]
    return torch.stack([flat % w, flat // w], -1).numpy()


def train_small(steps: int) -> tuple[torch.nn.Module, list[float]]:
    torch.manual_seed(0)
    images, targets, _ = blobs(8, 128, seed=0)
    model = create_model("hourglass_small")
    optimiser = torch.optim.Adam(model.parameters(), lr=2.5e-3)
    losses = []
    for _ in range(steps):
        loss = heatmap_loss(model(images), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return model, losses


def test_small_learns_to_localise_in_thirty_steps() -> None:
    model, losses = train_small(30)
    print("losses:", " ".join(f"{v:.4f}" for v in losses))
    # The zero-initialised heads start at the all-background loss (2 stacks x mean t^2).
    assert losses[0] == pytest.approx(2 * blobs(8, 128, seed=0)[1].square().mean().item(), rel=0.1)
    assert losses[-1] < 0.25 * losses[0]
    # Fresh images, other points: the model localises rather than remembering maps.
    images, targets, points = blobs(8, 128, seed=1)
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    assert heatmap_loss(outputs, targets).item() < 0.5 * losses[0]
    error = np.linalg.norm(argmax_points(outputs[-1]) - points, axis=-1)
    assert (error < 2).mean() > 0.8, np.round(error, 1)


def test_training_is_deterministic_with_a_fixed_seed() -> None:
    assert train_small(3)[1] == train_small(3)[1]
