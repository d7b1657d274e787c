"""Transforms: one affine for pixels and points, flips that swap sides, exact frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from catalog import transforms as T

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]


def dotted(size: tuple[int, int], points: np.ndarray, radius: int = 3) -> Image.Image:
    """A grey image with a coloured dot (one colour per point) centred on each point."""
    image = Image.new("RGB", size, (90, 90, 90))
    draw = ImageDraw.Draw(image)
    for (x, y), colour in zip(points, COLOURS, strict=False):
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)
    return image


def centre_of(image: Image.Image, colour: tuple[int, int, int]) -> np.ndarray:
    a = np.asarray(image, dtype=np.int32)
    close = np.abs(a - np.array(colour)).sum(axis=2) < 120
    ys, xs = np.nonzero(close)
    assert len(xs), f"colour {colour} not found"
    return np.array([xs.mean(), ys.mean()])


def test_box_edges_land_on_output_edges() -> None:
    m = T.box_to_square((100, 50, 300, 450), 256)
    corners = T.apply(m, np.array([[99.5, 49.5], [299.5, 449.5]]))
    assert np.allclose(corners, [[-0.5, -0.5], [255.5, 255.5]])
    # the same formula the export uses: (x + 0.5 - x_1) * s - 0.5
    p = T.apply(m, np.array([[180.0, 200.0]]))[0]
    assert np.allclose(p, [(180.5 - 100) * 256 / 200 - 0.5, (200.5 - 50) * 256 / 400 - 0.5])


@pytest.mark.parametrize("seed", range(4))
def test_pixels_and_points_move_together(seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = np.array([[150, 160], [230, 150], [190, 210], [160, 260], [225, 262]], float)
    image = dotted((400, 360), points)
    crop = T.box_to_square((110, 100, 270, 320), 256)
    aug, flipped = T.augment_matrix(256, T.Augment(rotate=30, scale=0.15, flip=0.5), rng)
    m = aug @ crop
    out = T.warp(image, m, 256)
    mapped = T.apply(m, points)
    for k, colour in enumerate(COLOURS):
        assert np.abs(centre_of(out, colour) - mapped[k]).max() < 1.0, (k, flipped)


def test_flip_swaps_left_and_right_on_a_synthetic_face() -> None:
    from catalog.synth import render_face
    from catalog.synth.population import make_population

    pop = make_population(3, seed=1)
    rendered = render_face(*pop.face(0))
    truth = np.asarray(rendered.landmarks, float)
    assert truth[0, 0] < truth[1, 0] and truth[3, 0] < truth[4, 0]  # CelebA's convention
    x, y, w, h = rendered.bbox
    crop = T.box_to_square((x, y, x + w, y + h), 128)
    c = 127 / 2
    mirror = T.translate(c, 0) @ T.scale(-1, 1) @ T.translate(-c, 0)
    m = mirror @ crop
    flipped = T.flip_landmarks(T.apply(m, truth))
    # still "left eye = smaller x" after the swap, and each point is the mirror of
    # the other side's point in the unflipped crop
    assert flipped[0, 0] < flipped[1, 0] and flipped[3, 0] < flipped[4, 0]
    plain = T.apply(crop, truth)
    assert np.allclose(flipped[0], [127 - plain[1, 0], plain[1, 1]])
    assert np.allclose(flipped[3], [127 - plain[4, 0], plain[4, 1]])
    # and the pixels agree: the flipped crop is the mirror image of the plain one
    a = np.asarray(T.warp(rendered.image, crop, 128), dtype=np.int16)
    b = np.asarray(T.warp(rendered.image, m, 128), dtype=np.int16)
    assert np.abs(a[:, ::-1] - b).mean() < 2.0


def test_flip_order_maps_dot_colours() -> None:
    points = np.array([[60, 80], [140, 80], [100, 120], [70, 160], [130, 160]], float)
    image = dotted((200, 200), points)
    c = 199 / 2
    m = T.translate(c, 0) @ T.scale(-1, 1) @ T.translate(-c, 0)
    out = T.warp(image, m, 200)
    flipped = T.flip_landmarks(T.apply(m, points))
    for k in range(5):
        colour = COLOURS[T.FLIP_ORDER[k]]
        assert np.abs(centre_of(out, colour) - flipped[k]).max() < 1.0


def test_inverse_maps_back_to_the_original_image() -> None:
    rng = np.random.default_rng(0)
    m = T.augment_matrix(256, T.Augment(), rng)[0] @ T.box_to_square((10, 20, 210, 260), 256)
    pts = np.array([[50.0, 60.0], [123.4, 200.1]])
    assert np.allclose(T.apply(T.invert(m), T.apply(m, pts)), pts)


def test_draft_decoding_keeps_points_in_place(tmp_path: Path) -> None:
    points = np.array([[800, 700], [1100, 690], [950, 900], [840, 1050], [1080, 1060]], float)
    path = tmp_path / "big.jpg"
    dotted((1600, 1600), points, radius=12).save(path, quality=95)
    box = (600, 500, 1300, 1300)  # 700 px of face for a 128 px output: decoded at 1/4
    image, m_decode = T.open_for_crop(str(path), box, 128)
    assert image.size == (400, 400)
    m = T.box_to_square(box, 128) @ T.invert(m_decode)
    out = T.warp(image, m, 128)
    full = T.apply(T.box_to_square(box, 128), points)
    for k, colour in enumerate(COLOURS):
        assert np.abs(centre_of(out, colour) - full[k]).max() < 1.0
    small, m_small = T.open_for_crop(str(path), box, 512)  # needs full resolution
    assert small.size == (1600, 1600) and np.allclose(m_small, np.eye(3))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_reduced_decoding_of_odd_sizes_keeps_points_in_place(tmp_path: Path, fmt: str) -> None:
    # 1601 x 1403 does not divide by 4 or 8: the scale must be 1/f, not 401/1601.
    points = np.array([[1500, 1300], [1100, 690], [950, 900], [840, 1050], [1080, 1060]], float)
    path = tmp_path / f"odd.{fmt.lower()}"
    dotted((1601, 1403), points, radius=12).save(path, format=fmt)
    box = (300, 200, 1590, 1390)
    image, m_decode = T.open_for_crop(str(path), box, 96)
    assert image.size[0] < 500  # decoded or reduced well below full size
    m = T.box_to_square(box, 96) @ T.invert(m_decode)
    out = T.warp(image, m, 96)
    full = T.apply(T.box_to_square(box, 96), points)
    for k, colour in enumerate(COLOURS):
        assert np.abs(centre_of(out, colour) - full[k]).max() < 0.6, (k, fmt)


def test_heatmaps_peak_at_the_points() -> None:
    pts = T.input_to_heatmap(np.array([[127.5, 63.5], [0.0, 255.0]]), 256, 64)
    assert np.allclose(pts, [[31.5, 15.5], [-0.375, 63.375]])  # (x + 0.5) / 4 - 0.5
    maps = T.gaussian_heatmaps(np.array([[10.0, 20.0], [40.0, 5.0]]), 64, sigma=1.5)
    assert maps.shape == (2, 64, 64) and maps.dtype == np.float32
    assert np.unravel_index(maps[0].argmax(), maps[0].shape) == (20, 10)
    assert maps[0].max() == pytest.approx(1.0)
    assert maps[1, 5, 41] == pytest.approx(np.exp(-1 / (2 * 1.5**2)), rel=1e-5)


def test_colour_jitter_and_tensor() -> None:
    image = Image.new("RGB", (32, 32), (100, 150, 200))
    same = T.jitter_colour(image, T.NO_AUGMENT, np.random.default_rng(0))
    assert np.allclose(same * 255, np.asarray(image), atol=1e-3)
    changed = T.jitter_colour(image, T.Augment(), np.random.default_rng(1))
    assert not np.allclose(changed * 255, np.asarray(image), atol=1)
    # the same blends as PIL's ImageEnhance
    from PIL import ImageEnhance

    photo = Image.fromarray(np.random.default_rng(2).integers(0, 256, (16, 16, 3), np.uint8))
    only = {"brightness": 0, "contrast": 0, "saturation": 0}
    for name, enhancer in (
        ("brightness", ImageEnhance.Brightness),
        ("contrast", ImageEnhance.Contrast),
        ("saturation", ImageEnhance.Color),
    ):
        aug = T.Augment(**{**only, name: 0.3})
        ours = T.jitter_colour(photo, aug, np.random.default_rng(5)) * 255
        factor = 1 + np.random.default_rng(5).uniform(-0.3, 0.3)
        theirs = np.asarray(enhancer(photo).enhance(factor), dtype=np.float32)
        assert np.abs(ours - theirs).mean() < 1.5, name
    tensor = T.to_tensor(image)
    assert tuple(tensor.shape) == (3, 32, 32) and str(tensor.dtype) == "torch.float32"
    assert float(tensor[0, 0, 0]) == pytest.approx((100 / 255 - T.MEAN[0]) / T.STD[0], rel=1e-5)


def test_uint8_jitter_is_the_float_jitter_rounded() -> None:
    photo = np.random.default_rng(3).integers(0, 256, (24, 24, 3), np.uint8)
    for seed in range(5):
        floats = T.jitter_colour(photo, T.Augment(), np.random.default_rng(seed))
        levels = T.jitter_colour_uint8(photo, T.Augment(), np.random.default_rng(seed))
        assert levels.dtype == np.uint8 and levels.shape == photo.shape
        # same draws, same matrix, clipped alike; rounded to levels, and OpenCV's 8-bit
        # transform uses fixed-point coefficients: within one level (measured: max 0.76,
        # mean 0.24 over 50 draws), where a different draw is tens of levels off
        error = np.abs(levels / 255 - floats)
        assert error.max() < 1 / 255 and error.mean() < 0.3 / 255
    assert (T.jitter_colour_uint8(photo, T.NO_AUGMENT, np.random.default_rng(0)) == photo).all()


def test_normalize_batch_equals_to_tensor() -> None:
    import torch

    images = np.random.default_rng(4).integers(0, 256, (3, 20, 20, 3), np.uint8)
    batch = torch.stack([T.to_uint8_tensor(i) for i in images])
    assert batch.dtype == torch.uint8 and tuple(batch.shape) == (3, 3, 20, 20)
    expected = torch.stack([T.to_tensor(i) for i in images])
    assert torch.allclose(T.normalize_batch(batch), expected, atol=1e-5)
    assert torch.allclose(T.normalize_batch(batch[0]), expected[0], atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        T.normalize_batch(expected)
    with pytest.raises(ValueError, match="uint8"):
        T.to_uint8_tensor(images[0].astype(np.float32))


def test_invert_is_the_inverse_and_refuses_a_singular_matrix() -> None:
    rng = np.random.default_rng(9)
    for _ in range(50):
        m = np.vstack([rng.normal(size=(2, 3)) * 50, [0, 0, 1]])
        assert np.allclose(T.invert(m) @ m, np.eye(3), atol=1e-9)
        assert np.allclose(T.invert(m), np.linalg.inv(m))
    with pytest.raises(np.linalg.LinAlgError, match="singular"):
        T.invert(np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 1.0], [0.0, 0.0, 1.0]]))


def test_tensors_need_an_rgb_image() -> None:
    for shape in [(8, 8), (8, 8, 1), (8, 8, 4)]:
        image = np.zeros(shape, np.uint8)
        with pytest.raises(ValueError, match=r"RGB image \(H, W, 3\)"):
            T.to_tensor(image)
        with pytest.raises(ValueError, match=r"RGB image \(H, W, 3\)"):
            T.to_uint8_tensor(image)
    assert tuple(T.to_tensor(Image.new("L", (8, 6)).convert("RGB")).shape) == (3, 6, 8)
