"""Heatmap decoding (argmax, quarter shift, DARK), heatmap <-> input frames, NME/FR/AUC."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from catalog import transforms as T
from models.landmarks.heatmaps import (
    decode_argmax,
    decode_subpixel,
    heatmap_to_input,
    input_to_original,
)
from models.landmarks.metrics import ced_auc, ced_curve, failure_rate, mean_nme, nme

SIZE, SIGMA = 64, 1.5


def render(points: np.ndarray, size: int = SIZE, sigma: float = SIGMA) -> torch.Tensor:
    """(B, K, size, size) Gaussian heatmaps at points (B, K, 2), the Datasets' targets."""
    return torch.from_numpy(np.stack([T.gaussian_heatmaps(p, size, sigma) for p in points]))


@pytest.fixture(scope="module")
def peaks() -> tuple[np.ndarray, torch.Tensor]:
    """64 samples x 5 landmarks at random sub-pixel positions, away from the edges."""
    rng = np.random.default_rng(0)
    points = rng.uniform(4.0, SIZE - 5.0, size=(64, 5, 2))
    return points, render(points)


def errors(pred: torch.Tensor, points: np.ndarray) -> np.ndarray:
    return np.linalg.norm(pred.numpy().astype(np.float64) - points, axis=-1)


def test_argmax_is_quantised_to_the_nearest_pixel(peaks) -> None:
    points, maps = peaks
    pred, conf = decode_argmax(maps)
    assert pred.shape == (64, 5, 2) and conf.shape == (64, 5)
    assert torch.equal(pred, pred.round())
    # the nearest pixel centre is the maximum of a sampled Gaussian: <= 0.5 px per axis
    assert np.array_equal(pred.numpy(), np.rint(points))
    assert errors(pred, points).max() <= 0.5 * np.sqrt(2)
    assert torch.allclose(conf, maps.flatten(2).max(-1).values)


def test_quarter_shift_halves_the_mean_error(peaks) -> None:
    points, maps = peaks
    argmax_err = errors(decode_argmax(maps)[0], points).mean()
    quarter, conf = decode_subpixel(maps, "quarter")
    err = errors(quarter, points)
    # uniform sub-pixel offsets: mean |error| per axis 0.25 (argmax) vs 0.125 (quarter)
    assert err.mean() < 0.6 * argmax_err
    assert np.abs(quarter.numpy() - np.rint(points)).max() == 0.25  # moves exactly 1/4
    assert torch.allclose(conf, decode_argmax(maps)[1])


def test_dark_recovers_sub_pixel_peaks(peaks) -> None:
    points, maps = peaks
    pred, conf = decode_subpixel(maps, "dark", sigma=SIGMA)
    err = errors(pred, points)
    # log of a Gaussian is quadratic, so one Newton step lands on it (measured ~3e-6)
    assert err.mean() < 0.01 and err.max() < 0.05
    assert pred.dtype == maps.dtype and torch.allclose(conf, decode_argmax(maps)[1])


def test_dark_uses_the_cross_derivative_on_tilted_peaks() -> None:
    """An elongated Gaussian at 30 degrees: the Newton step needs the Hessian's xy term."""
    rng = np.random.default_rng(4)
    centres = rng.uniform(10, 54, size=(20, 2))
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    inv_cov = np.linalg.inv(
        np.array([[c, -s], [s, c]]) @ np.diag([3.0, 1.0]) ** 2 @ np.array([[c, s], [-s, c]])
    )
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    d = np.stack([xx, yy], -1)[None] - centres[:, None, None, :]  # (20, H, W, 2)
    maps = np.exp(-0.5 * np.einsum("nhwi,ij,nhwj->nhw", d, inv_cov, d))
    pred, _ = decode_subpixel(torch.from_numpy(maps)[:, None], "dark", sigma=None)
    # log is exactly quadratic: exact up to rounding; without the xy term errors reach
    # several tenths of a pixel
    assert np.abs(pred[:, 0].numpy() - centres).max() < 1e-6
    smoothed, _ = decode_subpixel(torch.from_numpy(maps)[:, None], "dark", sigma=SIGMA)
    assert np.abs(smoothed[:, 0].numpy() - centres).max() < 0.05


def test_dark_smoothing_helps_on_noisy_maps(peaks) -> None:
    points, maps = peaks
    noisy = maps + 0.03 * torch.randn(maps.shape, generator=torch.Generator().manual_seed(0))
    smooth = errors(decode_subpixel(noisy, "dark", sigma=SIGMA)[0], points).mean()
    raw = errors(decode_subpixel(noisy, "dark", sigma=None)[0], points).mean()
    quarter = errors(decode_subpixel(noisy, "quarter")[0], points).mean()
    # measured: smoothed 0.03, raw log 0.09, quarter 0.21 px
    assert smooth < 0.06 and smooth < 0.6 * raw and smooth < 0.5 * quarter


def test_x_is_the_column_and_y_the_row_on_non_square_maps() -> None:
    maps = torch.zeros(2, 3, 24, 48)  # H=24 rows, W=48 columns; peaks >= 5 px from the edges
    truth = np.array([[[40.3, 6.2], [6.6, 17.4], [30.0, 10.0]], [[41.7, 7.8], [10, 12], [6, 6]]])
    for b in range(2):
        grid = np.arange(48)[None, :], np.arange(24)[:, None]
        for k in range(3):
            x, y = truth[b, k]
            g = np.exp(-((grid[0] - x) ** 2 + (grid[1] - y) ** 2) / (2 * SIGMA**2))
            maps[b, k] = torch.from_numpy(g)
    assert np.array_equal(decode_argmax(maps)[0].numpy(), np.rint(truth))
    for method in ("quarter", "dark"):
        pred, conf = decode_subpixel(maps, method)
        assert pred.shape == (2, 3, 2) and conf.shape == (2, 3)
        assert np.abs(pred.numpy() - truth).max() < 0.5
    assert np.abs(decode_subpixel(maps, "dark")[0].numpy() - truth).max() < 0.05


@pytest.mark.parametrize("method", ["quarter", "dark"])
def test_peaks_on_and_off_the_border_stay_finite_and_close(method: str) -> None:
    points = np.array(
        [[[0.0, 30.0], [63.0, 63.0], [-0.3, 10.0], [0.6, 0.4], [62.7, 1.2], [200.0, 200.0]]]
    )
    pred, conf = decode_subpixel(render(points), method)
    assert torch.isfinite(pred).all() and torch.isfinite(conf).all()
    # near the edge DARK's zero-padded smoothing pulls inward (measured up to ~0.45 px)
    assert np.abs(pred[0, :5].numpy() - points[0, :5]).max() <= 0.5
    assert conf[0, 5] == 0 and pred[0, 5].tolist() == [0.0, 0.0]  # point far outside: empty


@pytest.mark.parametrize("method", ["quarter", "dark"])
@pytest.mark.parametrize("fill", [0.0, -1.0, 0.5])
def test_flat_maps_decode_to_the_argmax_without_nan(method: str, fill: float) -> None:
    maps = torch.full((2, 5, 16, 16), fill)
    pred, conf = decode_subpixel(maps, method)
    assert not torch.isnan(pred).any()
    assert torch.equal(pred, torch.zeros(2, 5, 2)) and torch.equal(conf, torch.full((2, 5), fill))


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="B, K, H, W"):
        decode_argmax(torch.zeros(5, 64, 64))
    with pytest.raises(ValueError, match="quarter"):
        decode_subpixel(torch.zeros(1, 1, 8, 8), "median")


# --- frames -----------------------------------------------------------------------------


def test_heatmap_to_input_inverts_input_to_heatmap() -> None:
    rng = np.random.default_rng(1)
    points = rng.uniform(-10, 266, size=(50, 2))
    back = heatmap_to_input(T.input_to_heatmap(points, 256, 64), 64, 256)
    assert np.allclose(back, points, rtol=0, atol=1e-12)
    # edges onto edges, scale 4: heatmap pixel h is input pixel (h + 0.5) * 4 - 0.5
    hm = np.array([[0.0, 0.0], [63.0, 63.0], [-0.5, 63.5], [31.5, 31.5]])
    expected = np.array([[1.5, 1.5], [253.5, 253.5], [-0.5, 255.5], [127.5, 127.5]])
    assert np.allclose(heatmap_to_input(hm, 64, 256), expected, atol=1e-12)
    as_torch = heatmap_to_input(torch.from_numpy(hm).float()[None], 64, 256)
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.float32
    assert np.allclose(as_torch[0].numpy(), expected, atol=1e-5)


def test_dataset_pipeline_round_trip_to_the_original_image() -> None:
    """Original landmarks -> sample matrix -> heatmaps -> DARK -> input -> original."""
    rng = np.random.default_rng(2)
    original = rng.uniform(120, 300, size=(4, 5, 2))
    boxes = [(100 + 3 * i, 90, 330 - 2 * i, 340) for i in range(4)]
    matrices = [T.rotate(7 * i) @ T.box_to_square(b, 256) for i, b in enumerate(boxes)]
    inputs = np.stack([T.apply(m, p) for m, p in zip(matrices, original, strict=True)])
    maps = render(np.stack([T.input_to_heatmap(p, 256, 64) for p in inputs]))
    affine = torch.from_numpy(np.stack([T.invert(m)[:2] for m in matrices]).astype(np.float32))
    pred, _ = decode_subpixel(maps, "dark")
    back = input_to_original(heatmap_to_input(pred, 64, 256), affine)
    assert back.shape == (4, 5, 2)
    assert np.abs(back.numpy() - original).max() < 0.05
    # numpy in, numpy out, and the same numbers as transforms.apply per sample
    np_back = input_to_original(inputs, affine.numpy().astype(np.float64))
    assert np.allclose(np_back, original, atol=1e-9)


# --- metrics ----------------------------------------------------------------------------


def test_nme_by_hand() -> None:
    target = np.array(
        [
            [[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]],  # eyes 40 px apart
            [[0, 0], [3, 4], [1, 2], [0, 5], [3, 5]],  # eyes 5 px apart
        ],
        dtype=np.float64,
    )
    pred = target.copy()
    pred[0, 0] += [3, 4]  # error 5
    pred[0, 2] += [0, -10]  # error 10
    pred[1, 4] += [1, 0]  # error 1
    # sample 0: (5 + 10) / 5 landmarks / 40 = 0.075; sample 1: 1 / 5 / 5 = 0.04
    values = nme(pred, target)
    assert np.allclose(values, [0.075, 0.04], rtol=0, atol=1e-15)
    assert mean_nme(pred, target) == pytest.approx(0.0575)
    t = nme(torch.from_numpy(pred), torch.from_numpy(target))
    assert isinstance(t, torch.Tensor) and np.allclose(t.numpy(), [0.075, 0.04])
    assert np.allclose(nme(pred, target, norm=np.array([10.0, 2.0])), [0.3, 0.1])
    assert float(nme(pred[0], target[0])) == pytest.approx(0.075)  # one sample


def test_nme_refuses_coincident_eyes() -> None:
    target = np.zeros((2, 5, 2))
    target[0, 1] = [10, 0]
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\]"):
        nme(target, target)


def test_failure_rate_by_hand() -> None:
    values = np.array([0.02, 0.1, 0.1000001, 0.5, np.nan])
    # strictly above 0.1: 0.1000001, 0.5 and the NaN (no prediction): 3 of 5
    assert failure_rate(values) == pytest.approx(0.6)
    assert failure_rate(torch.tensor([0.05, 0.2]), threshold=0.3) == 0.0


def test_ced_auc_by_hand() -> None:
    # CED: 1/3 on [0, 0.05), 2/3 on [0.05, 0.1]; area 0.05 * 1/3 + 0.05 * 2/3 = 0.05;
    # divided by the limit 0.1: 0.5.
    errors_ = np.array([0.0, 0.05, 0.2])
    assert ced_auc(errors_, limit=0.1) == pytest.approx(0.5, abs=1e-15)
    x, y = ced_curve(errors_, limit=0.1)
    assert np.allclose(x, [0.0, 0.05, 0.1]) and np.allclose(y, [1 / 3, 2 / 3, 2 / 3])
    assert np.sum(y[:-1] * np.diff(x)) / 0.1 == pytest.approx(0.5)
    # [0.02, 0.08] with limit 0.1: (0.08 + 0.02) / 2 / 0.1 = 0.5; all zero: 1; all above: 0
    assert ced_auc(torch.tensor([0.02, 0.08], dtype=torch.float64)) == pytest.approx(0.5)
    assert ced_auc(np.zeros(4)) == 1.0 and ced_auc(np.array([0.3, np.nan])) == 0.0


def test_ced_curve_agrees_with_auc_and_failure_rate() -> None:
    values = np.random.default_rng(3).gamma(2.0, 0.03, size=500)
    x, y = ced_curve(values, limit=0.1)
    assert x[0] == 0 and x[-1] == 0.1 and np.all(np.diff(x) > 0) and np.all(np.diff(y) >= 0)
    assert np.sum(y[:-1] * np.diff(x)) / 0.1 == pytest.approx(ced_auc(values, 0.1), rel=1e-12)
    assert y[-1] == pytest.approx(1 - failure_rate(values, 0.1))
