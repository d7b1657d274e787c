"""The synthetic CelebA generator: file formats, counts, ground truth, pixels."""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catalog.formats import (
    ALIGNED_IMAGE_DIR,
    ALIGNED_SIZE,
    ALL_FILES,
    ATTRIBUTES,
    CSV_FILES,
    TXT_FILES,
    WILD_IMAGE_DIR,
    FileSpec,
)
from catalog.synth import Population, make_population, render_face, synthesize
from catalog.synth.faces import RenderedFace
from catalog.synth.geometry import ALIGNED_TEMPLATE, relative_layout
from catalog.synth.population import (
    CELEBA_IDENTITIES,
    CELEBA_IMAGES,
    MAX_IMAGES_PER_IDENTITY,
    identity_attributes,
)

COL = {name: i for i, name in enumerate(ATTRIBUTES)}
TXT = {spec.table: spec for spec in TXT_FILES}
PER_IMAGE_OFF = ("Eyeglasses", "Wearing_Hat", "Blurry", "Smiling", "Mouth_Slightly_Open")


# -- helpers --------------------------------------------------------------------------


def read_rows(path: Path, spec: FileSpec) -> tuple[list[str], np.ndarray]:
    """A deliberately simple reader: split lines on whitespace or commas."""
    text = path.read_text()
    assert text.endswith("\n") and "\r" not in text
    lines = text.split("\n")[:-1][spec.first_data_line - 1 :]
    sep = "," if spec.layout == "csv" else None
    rows = [line.split(sep) for line in lines]
    return [r[0] for r in rows], np.array([[int(v) for v in r[1:]] for r in rows])


def all_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def luminance(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"), dtype=np.float64)


def laplacian_var(gray: np.ndarray) -> float:
    lap = (
        -4 * gray[1:-1, 1:-1] + gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:]
    )
    return float(lap.var())


def changed(a: Image.Image, b: Image.Image) -> np.ndarray:
    """Mask of pixels that differ by more than JPEG-free rounding."""
    d = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max(axis=2)
    return d > 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("synth")
    summary = synthesize(out, ids=8, seed=5, layout="both", aligned=True, workers=1)
    return out, summary


@pytest.fixture(scope="module")
def full_pop() -> Population:
    return make_population(CELEBA_IDENTITIES, seed=0)


@pytest.fixture(scope="module")
def faces_pop() -> Population:
    return make_population(40, seed=2)


def upright_faces(pop: Population, min_face_h: float = 160.0) -> list[int]:
    """Big, nearly upright, frontal faces: easy to reason about in pixel tests."""
    p = pop.poses
    ok = (p.face_h >= min_face_h) & (np.abs(p.roll) < 0.12) & (np.abs(p.yaw) < 0.15)
    found = np.flatnonzero(ok)
    assert len(found) >= 3, "population has too few big upright faces for the pixel tests"
    return [int(i) for i in found[:6]]


def plain(attrs: dict[str, bool], **on: bool) -> dict[str, bool]:
    """The image's attributes with the drawn per-image ones off, then ``on`` applied."""
    return {**attrs, **dict.fromkeys(PER_IMAGE_OFF, False), **on}


def toggled(pop: Population, i: int, **on: bool) -> tuple[RenderedFace, np.ndarray, int]:
    """Face ``i`` drawn :func:`plain` and again with ``on``: the plain drawing, the
    pixels that changed, and the eye distance (right eye x - left eye x) in pixels."""
    traits, pose, attrs = pop.face(i)
    off = render_face(traits, pose, plain(attrs))
    with_on = render_face(traits, pose, plain(attrs, **on))
    (lx, _), (rx, _) = off.landmarks[:2]
    return off, changed(off.image, with_on.image), rx - lx


# -- files ----------------------------------------------------------------------------


def test_summary_lists_files_and_images(dataset) -> None:
    out, s = dataset
    assert s.out == out and s.ids == 8 and s.seed == 5
    assert s.images == round(8 * CELEBA_IMAGES / CELEBA_IDENTITIES)
    assert s.files == tuple(spec.name for spec in TXT_FILES + CSV_FILES)
    assert s.image_dir == out / WILD_IMAGE_DIR and s.aligned_dir == out / ALIGNED_IMAGE_DIR
    names = [f"{i:06d}.jpg" for i in range(1, s.images + 1)]
    assert sorted(p.name for p in s.image_dir.iterdir()) == names
    assert sorted(p.name for p in s.aligned_dir.iterdir()) == names
    assert s.seconds > 0


def test_txt_files_are_byte_exact(dataset) -> None:
    out, s = dataset
    n = s.images
    for spec in TXT_FILES:
        lines = (out / spec.name).read_text().split("\n")
        assert lines[-1] == "", spec.name
        lines = lines[:-1]
        assert len(lines) == n + spec.first_data_line - 1, spec.name
        if spec.count_line:
            assert lines[0] == str(n)
        ids, values = read_rows(out / spec.name, spec)
        assert ids == [f"{i:06d}.jpg" for i in range(1, n + 1)]
        assert values.shape == (n, len(spec.columns))
        rows = lines[spec.first_data_line - 1 :]
        if spec.kind == "attr":
            assert lines[1] == " ".join(ATTRIBUTES) + " "  # the official trailing space
            assert set(np.unique(values)) == {-1, 1}
            expect = [
                f"{i} " + " ".join(f"{v:2d}" for v in row)
                for i, row in zip(ids, values, strict=True)
            ]
            assert all(re.fullmatch(r"\d{6}\.jpg( (-1| 1)){40}", r) for r in rows)
        elif spec.header_line:
            prefix = "image_id " if spec.table == "bboxes" else ""
            assert lines[1] == prefix + " ".join(spec.columns)
            expect = [
                f"{i}" + "".join(f"{v:>5d}" for v in row)
                for i, row in zip(ids, values, strict=True)
            ]
        else:
            expect = [f"{i} {row[0]}" for i, row in zip(ids, values, strict=True)]
        assert rows == expect, spec.name


def test_csv_files_match_txt(dataset) -> None:
    out, _ = dataset
    for spec in CSV_FILES:
        with open(out / spec.name, newline="") as f:
            table = list(csv.reader(f))
        assert table[0] == ["image_id", *spec.columns]
        txt = next(s for s in TXT_FILES if s.table == spec.table)
        ids, values = read_rows(out / txt.name, txt)
        assert [r[0] for r in table[1:]] == ids
        assert np.array_equal(np.array([[int(v) for v in r[1:]] for r in table[1:]]), values)
        assert " " not in (out / spec.name).read_text()


def test_layouts_write_their_files_and_remove_stale_ones(tmp_path: Path) -> None:
    def present() -> set[str]:
        return {spec.name for spec in ALL_FILES if (tmp_path / spec.name).exists()}

    synthesize(tmp_path, ids=3, layout="both", annotations_only=True)
    assert present() == {spec.name for spec in ALL_FILES}
    s = synthesize(tmp_path, ids=3, layout="kaggle", annotations_only=True)
    kaggle = {spec.name for spec in CSV_FILES} | {TXT["identities"].name, TXT["landmarks"].name}
    assert present() == kaggle == set(s.files)
    synthesize(tmp_path, ids=3, layout="txt", annotations_only=True)
    assert present() == {spec.name for spec in TXT_FILES}
    assert not (tmp_path / WILD_IMAGE_DIR).exists()


def test_same_seed_same_bytes_any_workers(tmp_path: Path) -> None:
    kw = dict(ids=4, images=110, layout="both", aligned=True)  # 110 images: 3 chunks
    one = synthesize(tmp_path / "w1", seed=7, workers=1, **kw)
    two = synthesize(tmp_path / "w2", seed=7, workers=2, **kw)
    other = synthesize(tmp_path / "s8", seed=8, workers=2, **kw)
    a, b, c = all_bytes(one.out), all_bytes(two.out), all_bytes(other.out)
    assert len(a) == 10 + 2 * 110
    assert a == b
    assert a.keys() == c.keys()
    differ = [k for k in a if a[k] != c[k]]
    assert TXT["attributes"].name in differ and f"{WILD_IMAGE_DIR}/000001.jpg" in differ


def test_rerun_replaces_images_of_a_bigger_run(tmp_path: Path) -> None:
    synthesize(tmp_path, ids=2, images=30, workers=1, aligned=True)
    synthesize(tmp_path, ids=2, images=12, workers=1)
    assert len(list((tmp_path / WILD_IMAGE_DIR).iterdir())) == 12
    assert list((tmp_path / ALIGNED_IMAGE_DIR).iterdir()) == []


# -- counts and distributions ---------------------------------------------------------


def test_identity_counts(dataset) -> None:
    out, s = dataset
    _, ident = read_rows(out / TXT["identities"].name, TXT["identities"])
    counts = np.bincount(ident[:, 0])[1:]
    assert len(counts) == s.ids and counts.sum() == s.images
    assert counts.min() >= 1 and counts.max() <= MAX_IMAGES_PER_IDENTITY


@pytest.mark.parametrize("ids", [1, 7, 50, 333])
def test_default_and_explicit_totals(ids: int) -> None:
    pop = make_population(ids, seed=ids)
    assert pop.images == round(ids * CELEBA_IMAGES / CELEBA_IDENTITIES)
    for total in (ids, MAX_IMAGES_PER_IDENTITY * ids, 2 * ids + 1):
        pop = make_population(ids, seed=1, images=total)
        assert pop.counts.sum() == total == pop.images
        assert pop.counts.min() >= 1 and pop.counts.max() <= MAX_IMAGES_PER_IDENTITY
        assert np.array_equal(np.bincount(pop.identity, minlength=ids), pop.counts)


def test_full_scale_annotations_only(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    start = time.perf_counter()
    s = synthesize(
        tmp_path,
        ids=CELEBA_IDENTITIES,
        annotations_only=True,
        progress=lambda done, total: calls.append((done, total)),
    )
    print(f"full-scale annotations: {time.perf_counter() - start:.1f} s")  # not asserted
    assert s.images == CELEBA_IMAGES and s.image_dir is None
    assert calls == [(CELEBA_IMAGES, CELEBA_IMAGES)]
    lines = (tmp_path / TXT["identities"].name).read_text().splitlines()
    assert len(lines) == CELEBA_IMAGES
    assert len({line.split()[1] for line in lines}) == CELEBA_IDENTITIES
    assert lines[-1].startswith(f"{CELEBA_IMAGES:06d}.jpg ")
    assert (tmp_path / TXT["attributes"].name).open().readline() == f"{CELEBA_IMAGES}\n"
    assert not (tmp_path / WILD_IMAGE_DIR).exists()


def test_celeba_like_distributions(full_pop: Population) -> None:
    pop, counts = full_pop, full_pop.counts
    assert 0.25 <= (counts >= 25).mean() <= 0.35
    assert ((counts >= 20) & (counts <= 30)).mean() > 0.5
    assert counts.min() == 1 and counts.max() == MAX_IMAGES_PER_IDENTITY
    box = pop.layout.bbox
    small = (box[:, 2] < 100) | (box[:, 3] < 100)
    assert 0.25 <= small.mean() <= 0.40
    assert 1.2 <= np.median(box[:, 3] / box[:, 2]) <= 1.4
    assert np.percentile(box[:, 3] / pop.poses.height, 99) <= 0.65
    rates = (pop.attributes > 0).mean(axis=0)
    celeba = {
        "Male": 0.417,
        "Blurry": 0.051,
        "Eyeglasses": 0.065,
        "Wearing_Hat": 0.048,
        "Smiling": 0.482,
        "Mouth_Slightly_Open": 0.483,
        "Bald": 0.022,
        "Bangs": 0.152,
        "No_Beard": 0.835,
        "Attractive": 0.513,
        "Young": 0.774,
        "Heavy_Makeup": 0.387,
        "Wearing_Lipstick": 0.472,
        "Black_Hair": 0.239,
        "Blond_Hair": 0.148,
    }
    for name, rate in celeba.items():
        assert abs(rates[COL[name]] - rate) < max(0.03, 0.2 * rate), name
    male = pop.attributes[:, COL["Male"]] > 0
    makeup = pop.attributes[:, COL["Heavy_Makeup"]] > 0
    assert makeup[male].mean() < 0.05 < 0.5 < makeup[~male].mean()
    # The reference selection (no Blurry, no box side < 100, >= 25 clean images per
    # identity) must keep a real share of identities and drop the rest.
    clean = ~small & (pop.attributes[:, COL["Blurry"]] < 0)
    kept = np.bincount(pop.identity[clean], minlength=pop.ids) >= 25
    assert 1200 <= kept.sum() <= 0.3 * pop.ids


def test_partitions_identity_disjoint_and_ordered(full_pop: Population, dataset) -> None:
    pop = full_pop
    part_of = np.full(pop.ids, -1)
    part_of[pop.identity] = pop.partition
    assert np.array_equal(part_of[pop.identity], pop.partition)
    shares = np.bincount(pop.partition) / pop.images
    assert np.allclose(shares, [0.8, 0.1, 0.1], atol=0.02)
    # CelebA's order: train block, then valid, then test; identities interleaved.
    assert (np.diff(pop.partition) >= 0).all()
    assert len(set(pop.identity[:100].tolist())) > 50
    out, _ = dataset
    _, ident = read_rows(out / TXT["identities"].name, TXT["identities"])
    _, part = read_rows(out / TXT["partitions"].name, TXT["partitions"])
    pairs = set(zip(ident[:, 0].tolist(), part[:, 0].tolist(), strict=True))
    assert len(pairs) == len(set(ident[:, 0].tolist()))
    assert set(part[:, 0].tolist()) == {0, 1, 2}


def test_identity_attributes_are_constant(full_pop: Population) -> None:
    pop = full_pop
    order = np.argsort(pop.identity, kind="stable")
    ident = pop.identity[order]
    starts = np.flatnonzero(np.r_[True, ident[1:] != ident[:-1]])
    constant = identity_attributes(pop.style)
    for name in constant:
        col = pop.attributes[order, COL[name]].astype(np.int64)
        lo, hi = np.minimum.reduceat(col, starts), np.maximum.reduceat(col, starts)
        assert (lo == hi).all(), name
    varying = [
        name
        for name in ATTRIBUTES
        if name not in constant
        and (
            np.minimum.reduceat(pop.attributes[order, COL[name]].astype(np.int64), starts)
            != np.maximum.reduceat(pop.attributes[order, COL[name]].astype(np.int64), starts)
        ).any()
    ]
    assert {"Blurry", "Eyeglasses", "Wearing_Hat", "Smiling", "Mouth_Slightly_Open"} <= set(varying)
    if pop.style == "hard":  # today's hair and facial hair are drawn per image
        assert {"Black_Hair", "Bangs", "Wavy_Hair", "No_Beard"} <= set(varying)


def test_attributes_are_consistent(full_pop: Population) -> None:
    on = full_pop.attributes > 0
    hair = on[:, [COL[c] for c in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")]]
    assert (hair.sum(axis=1) <= 1).all()
    bald = on[:, COL["Bald"]]
    assert not (hair[bald].any()) and not on[bald, COL["Bangs"]].any()
    facial = on[:, COL["Goatee"]] | on[:, COL["Mustache"]]
    assert not (facial & on[:, COL["No_Beard"]]).any()
    male = on[:, COL["Male"]]
    for name in ("Goatee", "Mustache", "Bald", "Sideburns", "5_o_Clock_Shadow"):
        assert not on[~male, COL[name]].any(), name
    assert not (on[:, COL["Straight_Hair"]] & on[:, COL["Wavy_Hair"]]).any()


# -- geometry -------------------------------------------------------------------------


def test_landmarks_inside_boxes_inside_images(dataset, full_pop: Population) -> None:
    out, s = dataset
    _, file_box = read_rows(out / TXT["bboxes"].name, TXT["bboxes"])
    _, file_lm = read_rows(out / TXT["landmarks"].name, TXT["landmarks"])
    sizes = np.array(
        [Image.open(out / WILD_IMAGE_DIR / f"{i:06d}.jpg").size for i in range(1, s.images + 1)]
    )
    assert sizes.max() <= 500 and sizes.min() >= 128
    cases = [
        (file_box, file_lm.reshape(-1, 5, 2), sizes[:, 0], sizes[:, 1]),
        (
            full_pop.layout.bbox,
            full_pop.layout.landmarks,
            full_pop.poses.width,
            full_pop.poses.height,
        ),
    ]
    for box, lm, w, h in cases:
        x1, y1, bw, bh = box.T
        assert (x1 >= 0).all() and (y1 >= 0).all()
        assert (x1 + bw <= w).all() and (y1 + bh <= h).all()
        assert (lm[:, :, 0] > x1[:, None]).all() and (lm[:, :, 0] < (x1 + bw - 1)[:, None]).all()
        assert (lm[:, :, 1] > y1[:, None]).all() and (lm[:, :, 1] < (y1 + bh - 1)[:, None]).all()
        # CelebA's convention: the left eye is the one on the viewer's left.
        assert (lm[:, 0, 0] < lm[:, 1, 0]).all() and (lm[:, 3, 0] < lm[:, 4, 0]).all()


def test_yaw_shifts_nose_toward_the_turn() -> None:
    pop = make_population(3, seed=0)
    cols = {k: np.repeat(v[:1], 3) for k, v in pop.traits.columns().items()}
    yaw = np.array([-0.4, 0.0, 0.4])
    rel, _ = relative_layout(
        cols,
        np.zeros(3),
        yaw,
        np.zeros(3),
        np.full(3, 200.0),
        np.ones((3, 4)),
        np.zeros(3, bool),
        np.zeros(3, bool),
    )
    nose_offset = rel[:, 2, 0] - rel[:, :2, 0].mean(axis=1)
    assert nose_offset[0] < -5 and abs(nose_offset[1]) < 1e-9 and nose_offset[2] > 5
    eye_gap = rel[:, 1, 0] - rel[:, 0, 0]
    assert eye_gap[0] < eye_gap[1] and eye_gap[2] < eye_gap[1]  # foreshortened


def test_aligned_images_and_landmarks(dataset) -> None:
    out, s = dataset
    for i in (1, s.images // 2, s.images):
        assert Image.open(out / ALIGNED_IMAGE_DIR / f"{i:06d}.jpg").size == ALIGNED_SIZE
    spec = TXT["landmarks_aligned"]
    _, aligned = read_rows(out / spec.name, spec)
    _, wild = read_rows(out / TXT["landmarks"].name, TXT["landmarks"])
    aligned, wild = aligned.reshape(-1, 5, 2), wild.reshape(-1, 5, 2).astype(float)
    dev = np.abs(aligned - ALIGNED_TEMPLATE)
    assert dev.max() <= 15 and dev.mean() < 6
    # Refit the similarity independently (least squares over a, b, tx, ty).
    for p, q in zip(wild, aligned, strict=True):
        rows = [[x, -y, 1, 0] for x, y in p] + [[y, x, 0, 1] for x, y in p]
        rhs = np.r_[ALIGNED_TEMPLATE[:, 0], ALIGNED_TEMPLATE[:, 1]]
        a, b, tx, ty = np.linalg.lstsq(np.array(rows), rhs, rcond=None)[0]
        mapped = np.stack([a * p[:, 0] - b * p[:, 1] + tx, b * p[:, 0] + a * p[:, 1] + ty], 1)
        assert np.abs(mapped - q).max() <= 0.5 + 1e-6


def test_max_side_sets_image_size(tmp_path: Path) -> None:
    s = synthesize(tmp_path, ids=1, images=4, max_side=1200, workers=1)
    sides = [max(Image.open(p).size) for p in s.image_dir.iterdir()]
    assert max(sides) <= 1200 and min(sides) >= 0.6 * 1200 - 1


# -- pixels ---------------------------------------------------------------------------


def test_render_face_is_pure_and_accepts_vectors(faces_pop: Population) -> None:
    i = upright_faces(faces_pop)[0]
    traits, pose, attrs = faces_pop.face(i)
    a = render_face(traits, pose, attrs)
    b = render_face(traits, pose, faces_pop.attributes[i])
    assert a.image.tobytes() == b.image.tobytes()
    assert np.array_equal(a.landmarks, faces_pop.layout.landmarks[i])
    assert a.bbox == tuple(faces_pop.layout.bbox[i])
    with pytest.raises(ValueError, match="unknown attribute"):
        render_face(traits, pose, {"Sunglasses": True})


def test_eyes_are_drawn_at_the_landmarks(faces_pop: Population) -> None:
    for i in upright_faces(faces_pop):
        traits, pose, attrs = faces_pop.face(i)
        face = render_face(traits, pose, plain(attrs))
        gray = luminance(face.image)
        for x, y in face.landmarks[:2]:
            assert gray[y, x] < 70, (i, x, y)  # the pupil
        # The aligned crop puts the same pupils at the aligned landmarks.
        m = face.aligned_matrix
        aligned_lm = np.rint(face.landmarks @ m[:, :2].T + m[:, 2]).astype(int)
        crop = luminance(face.aligned())
        for x, y in aligned_lm[:2]:
            assert crop[y, x] < 90, (i, x, y)


def test_eyeglasses_change_pixels_near_the_eyes_only(faces_pop: Population) -> None:
    for i in upright_faces(faces_pop)[:3]:
        off, mask, d = toggled(faces_pop, i, Eyeglasses=True)
        (lx, ly), (rx, ry) = off.landmarks[:2]
        band = np.zeros_like(mask)
        band[
            max(0, min(ly, ry) - int(0.6 * d)) : max(ly, ry) + int(0.6 * d),
            max(0, lx - int(1.2 * d)) : rx + int(1.2 * d),
        ] = True
        assert mask.sum() > 0.5 * d, i  # frames around both eyes at least
        assert (mask & band).sum() >= 0.98 * mask.sum(), i
        for x, y in off.landmarks[:2]:  # a rim around each eye
            ring = mask[y - d // 2 : y + d // 2, x - d // 2 : x + d // 2]
            assert ring.sum() > 0.2 * d, (i, x, y)


def test_hat_covers_the_top_of_the_head(faces_pop: Population) -> None:
    for i in upright_faces(faces_pop)[:3]:
        off, mask, d = toggled(faces_pop, i, Wearing_Hat=True)
        (_, ly), (_, ry) = off.landmarks[:2]
        # Mostly well above the eyes; nothing reaches down to the brows.
        assert mask[: min(ly, ry) - int(0.6 * d)].sum() > 0.5 * d * d, i
        assert mask[min(ly, ry) - int(0.3 * d) :].sum() <= 0.01 * mask.sum(), i


def test_blurry_lowers_laplacian_variance(faces_pop: Population) -> None:
    for i in upright_faces(faces_pop)[:3]:
        traits, pose, attrs = faces_pop.face(i)
        sharp = render_face(traits, pose, plain(attrs))
        blurred = render_face(traits, pose, plain(attrs, Blurry=True))
        x, y, w, h = sharp.bbox
        crop = (slice(y, y + h), slice(x, x + w))
        v_sharp = laplacian_var(luminance(sharp.image)[crop])
        v_blur = laplacian_var(luminance(blurred.image)[crop])
        assert v_blur < 0.3 * v_sharp, (i, v_blur, v_sharp)


def test_smiling_raises_and_widens_the_mouth(faces_pop: Population) -> None:
    for i in upright_faces(faces_pop)[:3]:
        traits, pose, attrs = faces_pop.face(i)
        neutral = render_face(traits, pose, plain(attrs))
        smile = render_face(traits, pose, plain(attrs, Smiling=True))
        n_lm, s_lm = neutral.landmarks, smile.landmarks
        assert np.array_equal(n_lm[:3], s_lm[:3])  # eyes and nose stay
        assert (s_lm[3:, 1] < n_lm[3:, 1] - 1).all(), i  # corners go up
        assert s_lm[4, 0] - s_lm[3, 0] > n_lm[4, 0] - n_lm[3, 0], i  # and apart
        mask = changed(neutral.image, smile.image)
        # Only the lower face changes (the cheek folds start just above the nose tip).
        above_nose = n_lm[2, 1] - (n_lm[1, 0] - n_lm[0, 0]) // 6
        assert mask.any() and not mask[:above_nose].any(), i


def test_open_mouth_is_dark_between_the_lips(faces_pop: Population) -> None:
    for i in upright_faces(faces_pop)[:6]:
        traits, pose, attrs = faces_pop.face(i)
        shut = render_face(traits, pose, plain(attrs))
        open_ = render_face(traits, pose, plain(attrs, Mouth_Slightly_Open=True))
        left, right = open_.landmarks[3:]
        mid, h, w = (left + right) / 2, pose.face_h[0], right[0] - left[0]
        # The middle third of the mouth, from the lip line 4% of the face down: dark
        # lipstick makes a closed mouth dark too, the opening darker still.
        rows = slice(int(round(mid[1])), int(round(mid[1] + 0.04 * h)) + 1)
        cols = slice(int(round(mid[0] - 0.15 * w)), int(round(mid[0] + 0.15 * w)) + 1)
        opened = luminance(open_.image)[rows, cols].mean()
        assert opened < luminance(shut.image)[rows, cols].mean() - 20, i


# -- arguments and progress -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(ids=0), "ids must be at least 1"),
        (dict(ids=2.5), "ids must be an integer"),
        (dict(layout="parquet"), "unknown layout"),
        (dict(max_side=100), "max_side must be between"),
        (dict(ids=3, images=2), "images must be between"),
        (dict(ids=3, images=106), "images must be between"),
        (dict(workers=0), "workers must be at least 1"),
        (dict(seed=-1), "seed must be >= 0"),
        (dict(annotations_only=True, aligned=True), "aligned images need images"),
    ],
)
def test_bad_arguments_raise(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        synthesize(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_out_must_be_a_folder(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        synthesize(target, ids=1, annotations_only=True)


def test_progress_reports_every_image(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    synthesize(tmp_path, ids=2, images=60, workers=2, progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 60) and calls[-1] == (60, 60)
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(calls) >= 3
