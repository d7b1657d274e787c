"""Umeyama similarity fits, templates, and aligning synthetic faces."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from catalog import transforms as T
from catalog.synth import make_population, render_face
from catalog.synth.geometry import ALIGNED_TEMPLATE
from models.alignment.similarity import (
    ARCFACE_TEMPLATE_112,
    REFERENCE_TEMPLATE,
    align_face,
    alignment_matrices,
    alignment_matrix,
    template_points,
    umeyama,
    umeyama_batch,
)


def similarity(angle: float, s: float, tx: float, ty: float) -> np.ndarray:
    return T.translate(tx, ty) @ T.rotate(angle) @ T.scale(s)


def random_similarity(rng: np.random.Generator) -> np.ndarray:
    return similarity(rng.uniform(-180, 180), rng.uniform(0.2, 5), *rng.uniform(-300, 300, 2))


# --- umeyama ----------------------------------------------------------------------------


def test_umeyama_recovers_a_known_similarity_exactly() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = random_similarity(rng)
        src = rng.uniform(0, 500, size=(5, 2))
        fit = umeyama(src, T.apply(m, src))
        assert fit.shape == (3, 3)
        assert np.allclose(fit, m, rtol=0, atol=1e-9 * np.abs(m).max())


def test_umeyama_is_the_least_squares_fit() -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, size=(5, 2))
    dst = T.apply(similarity(20, 1.3, 5, -7), src) + rng.normal(0, 2.0, size=(5, 2))
    fit = umeyama(src, dst)

    def cost(m: np.ndarray) -> float:
        return float(((T.apply(m, src) - dst) ** 2).sum())

    # any nudge of angle, scale or translation costs more
    for nudge in (
        similarity(0.2, 1, 0, 0),
        T.scale(1.002),
        T.translate(0.05, 0),
        T.translate(0, -0.05),
        similarity(-0.2, 0.998, 0, 0),
    ):
        assert cost(nudge @ fit) > cost(fit)
        assert cost(fit @ nudge) > cost(fit)


def test_umeyama_does_not_depend_on_the_order_of_the_pairs() -> None:
    rng = np.random.default_rng(2)
    src = rng.uniform(0, 100, size=(5, 2))
    dst = rng.uniform(0, 100, size=(5, 2))
    order = rng.permutation(5)
    assert np.allclose(umeyama(src[order], dst[order]), umeyama(src, dst), atol=1e-12)
    # but it does pair them: a shuffled dst alone gives another transform
    assert not np.allclose(umeyama(src, dst[order]), umeyama(src, dst), atol=1e-3)


def test_umeyama_refuses_coincident_points() -> None:
    same = np.full((5, 2), 42.0)
    ok = np.random.default_rng(3).uniform(0, 100, size=(5, 2))
    with pytest.raises(ValueError, match=r"src points all coincide in sample\(s\) \[0\]"):
        umeyama(same, ok)
    with pytest.raises(ValueError, match="dst points all coincide"):
        umeyama(ok, same)
    with pytest.raises(ValueError, match="finite"):
        umeyama(np.where(ok > 50, np.nan, ok), ok)
    with pytest.raises(ValueError, match=r"at least 2"):
        umeyama(ok[:1], ok[:1])
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\]"):
        umeyama_batch(np.stack([ok, same]), ok)


def test_mirrored_points_give_a_rotation_unless_reflection_is_allowed() -> None:
    rng = np.random.default_rng(4)
    src = rng.uniform(0, 100, size=(5, 2))
    mirror = similarity(30, 1.5, 10, 20) @ T.scale(-1.0, 1.0)
    dst = T.apply(mirror, src)
    proper = umeyama(src, dst)
    assert np.linalg.det(proper[:2, :2]) > 0
    a = proper[:2, :2]  # a scaled rotation: [[c, s], [-s, c]]
    assert np.isclose(a[0, 0], a[1, 1]) and np.isclose(a[0, 1], -a[1, 0])
    mirrored = umeyama(src, dst, allow_reflection=True)
    assert np.linalg.det(mirrored[:2, :2]) < 0
    assert np.allclose(mirrored, mirror, atol=1e-9)


def test_batched_umeyama_matches_one_at_a_time() -> None:
    rng = np.random.default_rng(5)
    src = rng.uniform(0, 200, size=(16, 5, 2))
    dst = rng.uniform(0, 112, size=(16, 5, 2))
    batch = umeyama_batch(src, dst)
    assert batch.shape == (16, 3, 3)
    for b in range(16):
        assert np.allclose(batch[b], umeyama(src[b], dst[b]), atol=1e-12)
    shared = umeyama_batch(src, dst[0])  # one template for all
    assert np.allclose(shared[3], umeyama(src[3], dst[0]), atol=1e-12)


# --- templates --------------------------------------------------------------------------


def test_template_points_in_output_pixels() -> None:
    # fractions of the edge-to-edge side: 0.30 * 256 - 0.5 = 76.3, 0.70 * 256 - 0.5 = 178.7
    ref = template_points(REFERENCE_TEMPLATE, 256)
    assert np.allclose(ref[:2], [[76.3, 89.1], [178.7, 89.1]])
    assert np.isclose(ref[:2, 0].mean(), 127.5) and np.isclose(ref[2, 0], 127.5)  # centred
    arc = template_points(ARCFACE_TEMPLATE_112, 112)
    assert np.allclose(arc[0], [38.2946, 51.6963]) and np.allclose(arc[4], [70.7299, 92.2041])
    # at 224, edge to edge: (38.2946 + 0.5) * 2 - 0.5
    assert np.allclose(template_points(ARCFACE_TEMPLATE_112, 224)[0], [77.0892, 103.8926])
    # CelebA order: the viewer's left eye and mouth corner first
    for points in (ref, arc):
        assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]
        assert points[0, 1] < points[2, 1] < points[3, 1]


def test_align_face_puts_landmarks_on_the_template_and_crops() -> None:
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    target = template_points(REFERENCE_TEMPLATE, 256)
    inverse = similarity(-12, 1.4, 80, 30)  # template pixels -> image pixels
    points = T.apply(inverse, target)  # a face with exactly the template's shape
    full, m = align_face(image, points)
    assert full.shape == (256, 256, 3) and full.dtype == np.uint8
    assert np.allclose(T.apply(m, points), target, atol=1e-9)
    assert np.allclose(m, T.invert(inverse), atol=1e-9)
    cropped, mc = align_face(Image.fromarray(image), points, size=256, crop=224)
    assert cropped.shape == (224, 224, 3)
    assert np.allclose(T.apply(mc, points), target - 16, atol=1e-9)
    # the crop is the full square's centre, from the same single resampling (equal up to
    # OpenCV's 1/32-pixel rounding of source positions: on this noise image 1% of the
    # values differ, by up to 8; one row off would differ by 38 on average)
    diff = np.abs(cropped.astype(int) - full[16:240, 16:240])
    assert diff.mean() < 0.1 and (diff > 0).mean() < 0.05


# --- synthetic faces --------------------------------------------------------------------


def bilinear(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Sample (H, W, 3) at pixel-index points (N, 2) (all inside), float64 (N, 3)."""
    x, y = points[:, 0], points[:, 1]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    im = image.astype(np.float64)
    top = im[y0, x0] * (1 - fx) + im[y0, x0 + 1] * fx
    bottom = im[y0 + 1, x0] * (1 - fx) + im[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


@pytest.fixture(scope="module")
def faces() -> list:
    # The easy style: faces of CelebA's mean proportions, which the limits below were
    # measured on (the default style widens face geometry on purpose, issue 10).
    pop = make_population(12, seed=5, style="easy")
    return [render_face(*pop.face(i)) for i in range(0, pop.images, 10)]


def test_synthetic_faces_align_onto_arcface(faces) -> None:
    arc = template_points(ARCFACE_TEMPLATE_112, 112)
    eye_errors = []
    for face in faces:
        aligned, m = align_face(face.image, face.landmarks, ARCFACE_TEMPLATE_112, 112)
        assert aligned.shape == (112, 112, 3)
        mapped = T.apply(m, face.landmarks)
        eye_errors.append(np.linalg.norm(mapped[:2] - arc[:2], axis=1))
        # Roll is removed: the eye line is level within a few degrees (input roll is
        # up to ~20 degrees), and the face is centred between the template's eyes.
        dx, dy = mapped[1] - mapped[0]
        assert abs(np.degrees(np.arctan2(dy, dx))) < 6
        assert abs(mapped[:2, 0].mean() - arc[:2, 0].mean()) < 2.5
        # Pixels follow the points: the pupils (drawn dark at the landmarks) are dark
        # where the matrix puts them in the aligned crop.
        for x, y in np.rint(mapped[:2]).astype(int):
            assert aligned[y, x].mean() < 60, (x, y, aligned[y, x])
        # ... and every aligned pixel is the bilinear sample of the image at its
        # preimage. OpenCV rounds source positions to 1/32 pixel, worth a few levels on
        # the drawn edges (measured: mean 0.27, max 5); a half-pixel slip in the
        # convention gives mean 2-4.5 and max 90-170, a 0.1 px one max 20-40.
        grid = np.stack(np.meshgrid(np.arange(112), np.arange(112)), -1).reshape(-1, 2)
        src = T.apply(T.invert(m), grid)
        w, h = face.image.size
        inside = (src >= 0).all(1) & (src[:, 0] < w - 1) & (src[:, 1] < h - 1)
        expected = bilinear(np.asarray(face.image), src[inside])
        got = aligned.reshape(-1, 3)[inside].astype(np.float64)
        assert np.abs(got - expected).mean() < 0.4 and np.abs(got - expected).max() < 10
    eye_errors = np.array(eye_errors)
    # Issue 5 asks for the eyes within 2 px of the template's when aligned with the true
    # landmarks. The synthetic faces have CelebA's mean proportions, so the typical face
    # does (measured on these 24 faces: mean 1.77 px, median 1.46); a 4-DOF fit cannot
    # remove each face's own proportions and its head turn, hence the tail (max 4.1).
    assert eye_errors.mean() < 2.0 and np.median(eye_errors) < 2.0 and eye_errors.max() < 6.0


def test_synthetic_population_lands_on_the_templates_on_average() -> None:
    """Over thousands of true landmarks (no pixels), the eyes land within 2 px on ArcFace.

    Synthetic faces are drawn around CelebA's mean face (the generator's own aligned
    template, eye distance / eye-to-mouth drop 0.95); that mean face lands within 2 px
    of both templates. Per face, identity proportions and head turn (yaw sd 15 deg)
    spread the error (measured: ArcFace mean 1.60 px, p95 3.4; reference mean 2.16).
    """
    pop = make_population(300, seed=7, style="easy")  # proportions around the mean face
    points = pop.layout.landmarks.astype(np.float64)
    for template, mean_limit in ((ARCFACE_TEMPLATE_112, 2.0), (REFERENCE_TEMPLATE, 2.5)):
        target = template_points(template, 112)
        mapped = T.apply(alignment_matrices(points, template, 112), points)
        errors = np.linalg.norm(mapped[:, :2] - target[:2], axis=2)
        assert errors.mean() < mean_limit, (template.name, errors.mean())
        mean_face = T.apply(alignment_matrix(ALIGNED_TEMPLATE, template, 112), ALIGNED_TEMPLATE)
        assert np.linalg.norm(mean_face[:2] - target[:2], axis=1).max() < 2.0


def test_synthetic_faces_of_template_proportions_land_on_it(faces) -> None:
    """A face whose landmarks are a similarity of the template's: eyes land exactly."""
    rng = np.random.default_rng(7)
    arc = template_points(ARCFACE_TEMPLATE_112, 112)
    for face in faces[:6]:
        # the similarity that best matches the face's own landmarks, applied to the
        # template: a face-sized, face-placed set of points with ArcFace's proportions
        placed = T.apply(T.invert(alignment_matrix(face.landmarks, ARCFACE_TEMPLATE_112, 112)), arc)
        noisy = placed + rng.uniform(-0.5, 0.5, size=(5, 2))  # integer-landmark rounding
        m = alignment_matrix(noisy, ARCFACE_TEMPLATE_112, 112)
        eye_error = np.linalg.norm(T.apply(m, noisy)[:2] - arc[:2], axis=1)
        assert eye_error.max() < 2.0
        exact = alignment_matrix(placed, ARCFACE_TEMPLATE_112, 112)
        assert np.allclose(T.apply(exact, placed), arc, atol=1e-9)


def test_batched_alignment_matches_single(faces) -> None:
    points = np.stack([f.landmarks for f in faces]).astype(np.float64)
    batch = alignment_matrices(points, ARCFACE_TEMPLATE_112, 112)
    for m, p in zip(batch, points, strict=True):
        assert np.allclose(m, alignment_matrix(p, ARCFACE_TEMPLATE_112, 112), atol=1e-12)
