"""catalog.datasets: samples, frames, reproducible augmentation, workers, PK batches.

One synthetic catalog (30 identities, ~600 drawn faces) is built per module; its
faces are redrawn with ``render_face`` where pixels are compared with the truth.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import duckdb
import numpy as np
import pytest
import torch
from conftest import query, snapshot_catalog
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

from catalog import transforms as T
from catalog.datasets import DatasetError, FaceDataset, LandmarkDataset, PKSampler
from catalog.formats import ATTRIBUTES, LANDMARK_COLUMNS
from catalog.ingest import ingest
from catalog.selection import fitted_params, select
from catalog.snapshots import SnapshotError, create
from catalog.synth import render_face, synthesize
from catalog.synth.population import make_population

IDS, SEED = 30, 5
#: Geometry only: pixels are compared with the drawn truth, which colour jitter changes.
GEOMETRY = T.Augment(
    scale=0.1, rotate=30, shift=0.05, flip=1.0, brightness=0, contrast=0, saturation=0
)


@pytest.fixture(scope="module")
def cat(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    db = snapshot_catalog(tmp_path_factory.mktemp("datasets"), ids=IDS, seed=SEED)
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute(f"SELECT image_id, {', '.join(LANDMARK_COLUMNS)} FROM landmarks").fetchall()
    con.close()
    truth = {r[0]: np.array(r[1:], float).reshape(5, 2) for r in rows}
    return SimpleNamespace(db=db, landmarks=truth, population=make_population(IDS, seed=SEED))


def pixels(image: torch.Tensor) -> np.ndarray:
    """A normalised (3, S, S) tensor back to (S, S, 3) 0..255 floats."""
    return image.numpy().transpose(1, 2, 0) * np.array(T.STD) * 255 + np.array(T.MEAN) * 255


def forward(affine: torch.Tensor) -> np.ndarray:
    """The sample's matrix (in-the-wild -> input pixels) from its inverse ``affine``."""
    return T.invert(np.vstack([affine.double().numpy(), [0.0, 0.0, 1.0]]))


# --- samples ----------------------------------------------------------------------------


@pytest.mark.parametrize("augment", [None, T.Augment()])
def test_landmark_sample_shapes_and_dtypes(cat: SimpleNamespace, augment: T.Augment | None):
    ds = LandmarkDataset(cat.db, "s", "train", input_size=128, heatmap_size=32, augment=augment)
    sample = ds[3]
    assert set(sample) == {"image", "landmarks", "heatmaps", "affine", "image_id"}
    shapes = {
        "image": (3, 128, 128),
        "landmarks": (5, 2),
        "heatmaps": (5, 32, 32),
        "affine": (2, 3),
    }
    for key, shape in shapes.items():
        assert tuple(sample[key].shape) == shape and sample[key].dtype == torch.float32, key
    assert sample["image_id"] == ds.image_ids[3] and isinstance(sample["image_id"], str)
    assert float(sample["heatmaps"].amax()) > 0.5  # the points are on the map
    assert len(ds) == len(set(ds.image_ids)) and list(ds.image_ids) == sorted(ds.image_ids)


def test_face_samples_and_contiguous_labels(cat: SimpleNamespace) -> None:
    classes = None
    for split in ("train", "val", "test"):
        ds = FaceDataset(cat.db, "s", split)
        sample = ds[0]
        assert set(sample) == {"image", "label", "image_id"}
        assert tuple(sample["image"].shape) == (3, 112, 112)
        assert sample["image"].dtype == torch.float32
        assert sample["label"].dtype == torch.int64 and sample["label"].shape == ()
        assert int(sample["label"]) == ds.labels[0] and ds.labels.dtype == np.int64
        classes = ds.num_classes
        assert sorted(set(ds.labels.tolist())) == list(range(classes)), split
    assert classes and classes > 5
    for split in ("query", "distractor"):
        ds = FaceDataset(cat.db, "s", split, size=48)
        assert (ds.labels == -1).all() and int(ds[0]["label"]) == -1
        assert tuple(ds[0]["image"].shape) == (3, 48, 48)
    every = FaceDataset(cat.db, "s", "all")
    assert len(every) == sum(
        len(FaceDataset(cat.db, "s", s))
        for s in ("train", "val", "test", "query", "distractor", "unused")
    )


# --- frames -----------------------------------------------------------------------------


@pytest.mark.parametrize("augment", [None, GEOMETRY, T.Augment(flip=0.0)])
def test_affine_maps_landmarks_back_to_the_catalog(
    cat: SimpleNamespace, augment: T.Augment | None
) -> None:
    ds = LandmarkDataset(cat.db, "s", "all", augment=augment, seed=3)
    flipped = augment is not None and augment.flip == 1.0
    for i in range(0, len(ds), 17):
        sample = ds[i]
        back = T.apply(sample["affine"].double().numpy(), sample["landmarks"].double().numpy())
        if flipped:
            back = T.flip_landmarks(back)  # a flipped sample lists the points mirrored
        assert np.allclose(back, cat.landmarks[sample["image_id"]], atol=2e-3), i
    if augment is None:  # no augmentation: exactly the face box onto the square
        box = ds.boxes[0]
        assert np.allclose(forward(ds[0]["affine"]), T.box_to_square(box, 256), atol=1e-4)


@pytest.mark.parametrize("size", [256, 64])
def test_flip_and_rotation_keep_landmarks_on_the_drawn_features(
    cat: SimpleNamespace, size: int
) -> None:
    """Against the drawn truth: the sample's pixels are the rendered face warped by the
    sample's matrix (better than by that matrix moved one pixel), each eye landmark sits
    on a dark pupil, and after the flip index 0 is again the viewer's left eye. At 64
    pixels most faces are decoded at half scale (JPEG draft mode)."""
    ds = LandmarkDataset(
        cat.db, "s", "all", input_size=size, heatmap_size=16, augment=GEOMETRY, seed=1
    )
    yy, xx = np.mgrid[:size, :size]
    samples = range(0, len(ds), 23)
    if size == 64:
        sides = np.minimum(*(ds.boxes[:, 2:] - ds.boxes[:, :2]).T)[list(samples)]
        assert (sides >= 2 * size).sum() >= 3
    for i in samples:
        sample = ds[i]
        image = pixels(sample["image"])
        points = sample["landmarks"].numpy()
        rendered = render_face(*cat.population.face(int(sample["image_id"][:6]) - 1))
        assert np.array_equal(rendered.landmarks, cat.landmarks[sample["image_id"]])
        m = forward(sample["affine"])
        errors = [
            np.abs(np.asarray(T.warp(rendered.image, nudge @ m, size), float) - image).mean()
            for nudge in (
                np.eye(3),
                T.translate(1, 0),
                T.translate(-1, 0),
                T.translate(0, 1),
                T.translate(0, -1),
            )
        ]
        assert errors[0] < 6 and errors[0] < min(errors[1:]), (sample["image_id"], errors)
        luminance = image.mean(axis=2)
        for k in (0, 1) if size >= 128 else ():  # pupils: (12, 10, 10) at the eye landmarks
            near = np.hypot(xx - points[k, 0], yy - points[k, 1]) <= 1.5
            # dark (below 30), or clearly darker than the eye and skin around it: the
            # default synthetic style varies exposure per image, lifting some pupils
            ring = np.abs(np.hypot(xx - points[k, 0], yy - points[k, 1]) - 8) <= 1.5
            pupil, around = luminance[near].mean(), np.median(luminance[ring])
            assert pupil < max(30, min(60, around - 40)), (sample["image_id"], k, pupil, around)
        # the mirror put the subject's left eye on the viewer's left: reordered
        assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]
        assert np.allclose(points, T.flip_landmarks(T.apply(m, rendered.landmarks)), atol=1e-3)


def test_heatmap_peaks_decode_to_the_landmarks(cat: SimpleNamespace) -> None:
    """Log-parabola through the argmax and its neighbours (exact for a Gaussian)."""
    ds = LandmarkDataset(cat.db, "s", "train", augment=T.Augment(), seed=2)
    h, decoded = ds.heatmap_size, 0
    for i in range(0, len(ds), 9):
        sample = ds[i]
        target = T.input_to_heatmap(sample["landmarks"].double().numpy(), ds.input_size, h)
        for k, heat in enumerate(sample["heatmaps"].double().numpy()):
            y, x = np.unravel_index(heat.argmax(), heat.shape)
            if not (1 <= x < h - 1 and 1 <= y < h - 1):
                assert heat.max() < 0.7 or not (0 <= target[k]).all()
                continue
            log = np.log(heat[y - 1 : y + 2, x - 1 : x + 2])
            dx = (log[1, 0] - log[1, 2]) / (2 * (log[1, 0] - 2 * log[1, 1] + log[1, 2]))
            dy = (log[0, 1] - log[2, 1]) / (2 * (log[0, 1] - 2 * log[1, 1] + log[2, 1]))
            assert np.allclose([x + dx, y + dy], target[k], atol=0.02), (i, k)
            decoded += 1
    assert decoded > 40


# --- loading ----------------------------------------------------------------------------


def batches(ds: torch.utils.data.Dataset, workers: int, n: int = 2) -> list[dict]:
    loader = DataLoader(ds, batch_size=6, num_workers=workers)
    return [b for b, _ in zip(loader, range(n), strict=False)]


def same(a: list[dict], b: list[dict]) -> bool:
    return all(
        x["image_id"] == y["image_id"]
        and all(torch.equal(x[k], y[k]) for k in x if k != "image_id")
        for x, y in zip(a, b, strict=True)
    )


def test_workers_give_the_same_batches_and_epochs_differ(cat: SimpleNamespace) -> None:
    con = duckdb.connect(str(cat.db), read_only=True)
    plain = LandmarkDataset(con, "s", "val", input_size=96, heatmap_size=24)
    assert con.execute("SELECT count(*) FROM snapshots").fetchone() == (1,)  # left open
    con.close()  # the Dataset keeps no connection: it works after the caller's closes
    assert same(batches(plain, 0), batches(plain, 2))
    augmented = LandmarkDataset(
        cat.db, "s", "val", input_size=96, heatmap_size=24, augment=T.Augment(), seed=7
    )
    first = batches(augmented, 0)
    assert same(first, batches(augmented, 2))  # draws depend on the index, not the worker
    assert not same(first, batches(plain, 0))
    augmented.set_epoch(1)
    assert not same(first, batches(augmented, 2))  # a new epoch, new draws
    augmented.set_epoch(0)
    assert same(first, batches(pickle.loads(pickle.dumps(augmented)), 0))


def test_distributed_sampler_splits_the_dataset(cat: SimpleNamespace) -> None:
    ds = FaceDataset(cat.db, "s", "train", size=32)
    ranks = [DistributedSampler(ds, num_replicas=2, rank=r, seed=4) for r in (0, 1)]
    assert set(ranks[0]) | set(ranks[1]) == set(range(len(ds)))
    assert len(ranks[0]) == (len(ds) + 1) // 2
    batch = next(iter(DataLoader(ds, batch_size=5, sampler=ranks[0], num_workers=2)))
    first = list(ranks[0])[:5]
    assert batch["image_id"] == [ds.image_ids[i] for i in first]
    assert batch["label"].tolist() == ds.labels[first].tolist()


# --- PK batches -------------------------------------------------------------------------


def test_pk_sampler_batches(cat: SimpleNamespace) -> None:
    labels = FaceDataset(cat.db, "s", "all").labels  # query/distractor/unused are -1
    identities = set(labels[labels >= 0].tolist())
    sampler = PKSampler(labels, p=4, k=3, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(identities) // 4
    seen: set[int] = set()
    for batch in batches:
        assert len(batch) == 12
        chosen = labels[batch]
        assert (chosen >= 0).all() and len(set(batch)) == 12  # >= K images each: no repeats
        ids, counts = np.unique(chosen, return_counts=True)
        assert len(ids) == 4 and (counts == 3).all()
        assert not seen & set(ids.tolist())  # an identity once per epoch
        seen |= set(ids.tolist())
    assert batches == list(PKSampler(labels, p=4, k=3, seed=1))
    assert batches != list(PKSampler(labels, p=4, k=3, seed=2))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    sampler.set_epoch(0)
    assert list(sampler) == batches

    def identities_per_batch(batches: list[list[int]]) -> list[set[int]]:
        return [set(labels[b].tolist()) for b in batches]

    sampler.set_epoch(1)  # a new epoch visits the identities in another order
    assert identities_per_batch(list(sampler)) != identities_per_batch(batches)
    whole = list(PKSampler(labels, p=5, k=10, seed=1))  # K = all 10 images: each exactly once
    assert all(sorted(b) == sorted(np.flatnonzero(np.isin(labels, labels[b]))) for b in whole)
    every = PKSampler(labels, p=4, k=3, seed=1, drop_last=False)
    assert len(every) == -(-len(identities) // 4)
    assert {int(labels[i]) for b in every for i in b} == identities


def test_pk_sampler_repeats_small_identities() -> None:
    labels = [0, 0, 1, 1, 1, 1, 1, 2, -1, -1]
    for batch in PKSampler(labels, p=3, k=4, seed=0):
        chosen = np.array(labels)[batch]
        assert sorted(chosen.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
        assert {i for i in batch if labels[i] == 0} == {0, 1}  # all of it, then repeats
    with pytest.raises(ValueError, match="only 3"):
        PKSampler(labels, p=4, k=2)


# --- refusals ---------------------------------------------------------------------------


def test_unknown_snapshot_split_and_source(cat: SimpleNamespace) -> None:
    with pytest.raises(SnapshotError, match="No snapshot 'nope'. Known: s"):
        LandmarkDataset(cat.db, "nope", "train")
    with pytest.raises(
        ValueError,
        match=r"no split 'training'. Available: train \(\d+\), "
        r"val \(\d+\), .* all \(\d+\)",
    ):
        FaceDataset(cat.db, "s", "training")
    with pytest.raises(ValueError, match="source 'crop': use one of bbox, aligned"):
        FaceDataset(cat.db, "s", "train", source="crop")


def test_aligned_source_without_crops_says_what_to_run(cat: SimpleNamespace) -> None:
    with pytest.raises(
        FileNotFoundError,
        match=r"No aligned crops for snapshot 's' \(hash "
        r"[0-9a-f]+\).*celebcat align.*source='bbox'",
    ):
        FaceDataset(cat.db, "s", "train", source="aligned")


def test_snapshot_without_face_boxes(tmp_path: Path) -> None:
    synthesize(tmp_path / "data", ids=IDS, seed=SEED, annotations_only=True)
    db = tmp_path / "c.duckdb"
    ingest(tmp_path / "data", db, scan_images=False)
    select(db, **fitted_params(db, images_per_id=10))
    create("bare", db)
    with pytest.raises(DatasetError, match="have no face box.*ingested without images"):
        LandmarkDataset(db, "bare", "train")
    with pytest.raises(DatasetError, match="have no face box"):
        FaceDataset(db, "bare", "all")


# --- crop cache -------------------------------------------------------------------------


def test_crop_cache_gives_the_same_tensors(cat: SimpleNamespace, tmp_path: Path) -> None:
    """With a cache of the Dataset's size and no augmentation the warp is the identity,
    so cached and decoded samples agree exactly, in the main process and in workers."""
    from catalog.cache import build_cache

    db = tmp_path / "c.duckdb"
    shutil.copy(cat.db, db)
    decoded = FaceDataset(db, "s", "val", size=64)
    assert decoded.cache is None
    build_cache("s", db, size=64)
    cached = FaceDataset(db, "s", "val", size=64)
    assert cached.cache is not None
    assert same(batches(decoded, 0), batches(cached, 2))
    cached[0]  # the handle travels to workers without its memory map, even after use here
    assert len(pickle.dumps(cached)) < len(cached) * 64 * 64 * 3 // 4
    # The geometry never depends on where the pixels come from; the pixels are resampled
    # twice from the cache, and outside the face box (corners after a rotation or a
    # zoom out) the cache has none, so compare the middle of the crop, loosely.
    a = LandmarkDataset(cat.db, "s", "val", input_size=64, heatmap_size=16, augment=T.Augment())
    b = LandmarkDataset(db, "s", "val", input_size=64, heatmap_size=16, augment=T.Augment())
    assert a.cache is None and b.cache is not None
    errors = []
    for i in range(0, 30, 3):
        for key in ("landmarks", "affine", "heatmaps"):
            assert torch.equal(a[i][key], b[i][key])
        errors.append(np.abs(pixels(a[i]["image"]) - pixels(b[i]["image"]))[16:-16, 16:-16].mean())
    assert np.mean(errors) < 5, errors


def test_aligned_source_reads_the_aligned_cache(
    cat: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No aligned cache can be built yet (issue 5): the bbox cache's crops stand in,
    with matrices that are not the face box's (as an alignment's would not be). An
    aligned crop is the output frame itself: at the cache's size the samples are the
    cached crops as they are, at another size the same picture resized; a Dataset
    that mapped the face box through the cache's matrix would come out shifted."""
    import catalog.cache
    from catalog.cache import CropCache, build_cache, find_cache

    db = tmp_path / "c.duckdb"
    shutil.copy(cat.db, db)
    build_cache("s", db, size=64)
    con = duckdb.connect(str(db), read_only=True)
    real = find_cache(con, FaceDataset(con, "s", "test").snapshot_hash, 64, "bbox")
    con.close()
    ids = real.image_ids
    moved = np.stack([T.translate(5, -3) @ real.crop(i)[1] for i in ids])
    stand_in = CropCache(real.path, 64, "aligned", ids, np.arange(len(ids)), moved)
    assert np.array_equal(stand_in.crop(ids[9])[0], real.crop(ids[9])[0])

    def find(
        con: duckdb.DuckDBPyConnection,
        snapshot_hash: str,
        size: int,
        source: str = "bbox",
        snapshot: str | None = None,
    ) -> CropCache | None:
        return stand_in if source == "aligned" else None

    monkeypatch.setattr(catalog.cache, "find_cache", find)
    aligned = FaceDataset(db, "s", "test", source="aligned", size=64)
    for i in (0, 7):
        crop, _ = stand_in.crop(aligned.image_ids[i])
        assert np.array_equal(np.rint(pixels(aligned[i]["image"])), crop)
    half = FaceDataset(db, "s", "test", source="aligned", size=32)
    small = np.asarray(T.warp(Image.fromarray(crop), T.box_to_square((0, 0, 64, 64), 32), 32))
    assert np.abs(np.rint(pixels(half[7]["image"])) - small).max() <= 1


@pytest.mark.parametrize("cached", [False, True])
def test_uint8_images_normalise_to_the_float_ones(
    cat: SimpleNamespace, tmp_path: Path, cached: bool
) -> None:
    """image_dtype="uint8" changes only the image's dtype: the same geometry, jitter
    and levels; normalising them gives the float images (within float rounding)."""
    db = tmp_path / "c.duckdb"
    shutil.copy(cat.db, db)
    if cached:
        from catalog.cache import build_cache

        build_cache("s", db, size=64)
    common = dict(input_size=64, heatmap_size=16, augment=T.Augment())
    floats = LandmarkDataset(db, "s", "train", **common)
    levels = LandmarkDataset(db, "s", "train", **common, image_dtype="uint8")
    assert (floats.cache is not None) == (levels.cache is not None) == cached
    for i in range(0, 20, 4):
        a, b = floats[i], levels[i]
        assert b["image"].dtype == torch.uint8 and tuple(b["image"].shape) == (3, 64, 64)
        for key in ("landmarks", "heatmaps", "affine"):
            assert torch.equal(a[key], b[key])
        assert torch.allclose(T.normalize_batch(b["image"]), a["image"], atol=1e-5)
    plain = FaceDataset(db, "s", "val", size=64, image_dtype="uint8")[0]["image"]
    normalised = FaceDataset(db, "s", "val", size=64)[0]["image"]
    assert torch.allclose(T.normalize_batch(plain), normalised, atol=1e-5)
    with pytest.raises(ValueError, match="image_dtype 'float16'"):
        FaceDataset(db, "s", "val", image_dtype="float16")


# --- transforms, attributes, repr -------------------------------------------------------


def noisy(image: torch.Tensor) -> torch.Tensor:
    """A random transform drawing from torch's global generator, as torchvision v2's do
    (module level: picklable for workers)."""
    return image + torch.rand(())


def test_transforms_apply_to_the_image_and_the_target_only(cat: SimpleNamespace) -> None:
    seen: list[torch.Tensor] = []

    def flip(image: torch.Tensor) -> torch.Tensor:
        seen.append(image.clone())
        return image.flip(-1)

    plain = FaceDataset(cat.db, "s", "train", size=32, image_dtype="uint8")
    mine = FaceDataset(
        cat.db,
        "s",
        "train",
        size=32,
        image_dtype="uint8",
        transform=flip,
        target_transform=lambda label: label + 100,
    )
    a, b = plain[4], mine[4]
    assert len(seen) == 1 and torch.equal(seen[0], a["image"])  # our tensor, image_dtype's
    assert seen[0].dtype == torch.uint8 and tuple(seen[0].shape) == (3, 32, 32)
    assert torch.equal(b["image"], a["image"].flip(-1))
    assert int(b["label"]) == int(a["label"]) + 100 and b["image_id"] == a["image_id"]
    assert set(b) == set(a)
    common = dict(input_size=64, heatmap_size=16, augment=T.Augment(), seed=3)
    points = LandmarkDataset(cat.db, "s", "val", **common)
    moved = LandmarkDataset(
        cat.db, "s", "val", **common, transform=lambda x: -x, target_transform=lambda p: p / 64
    )
    a, b = points[2], moved[2]
    assert torch.equal(b["image"], -a["image"]) and torch.equal(b["landmarks"], a["landmarks"] / 64)
    for key in ("heatmaps", "affine"):  # made before the target transform, left alone
        assert torch.equal(b[key], a[key]), key


def test_random_transforms_are_reproducible(cat: SimpleNamespace) -> None:
    """torch's generator is seeded per (seed, epoch, index): the same draws in the main
    process and in workers, new ones each epoch, and the caller's generator untouched."""
    ds = FaceDataset(cat.db, "s", "val", size=32, transform=noisy)
    plain = FaceDataset(cat.db, "s", "val", size=32)
    state = torch.get_rng_state()
    first = ds[1]["image"] - plain[1]["image"]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(ds[1]["image"] - plain[1]["image"], first)
    assert not torch.equal(ds[2]["image"] - plain[2]["image"], first)
    before = batches(ds, 0)
    assert same(before, batches(ds, 2))
    ds.set_epoch(1)
    assert not same(before, batches(ds, 0))


def test_attributes_as_a_target(cat: SimpleNamespace) -> None:
    every = FaceDataset(cat.db, "s", "val", size=32, attributes=True)
    assert every.attribute_names == ATTRIBUTES
    columns = ", ".join(f'"{a}"' for a in ATTRIBUTES)
    truth = {r[0]: r[1:] for r in query(cat.db, f"SELECT image_id, {columns} FROM attributes", [])}
    for i in (0, 5, len(every) - 1):
        sample = every[i]
        assert sample["attributes"].dtype == torch.float32
        assert sample["attributes"].tolist() == [float(v) for v in truth[sample["image_id"]]]
    two = FaceDataset(cat.db, "s", "val", size=32, attributes=["Smiling", "Male"])
    assert two.attribute_names == ("Smiling", "Male")
    smiling, male = ATTRIBUTES.index("Smiling"), ATTRIBUTES.index("Male")
    assert np.array_equal(two.attribute_values, every.attribute_values[:, [smiling, male]])
    assert two.attribute_values.any(axis=0).all() and not two.attribute_values.all(axis=0).any()
    batch = next(iter(DataLoader(two, batch_size=4)))
    assert tuple(batch["attributes"].shape) == (4, 2)
    assert batch["attributes"].tolist() == two.attribute_values[:4].astype(float).tolist()
    marks = LandmarkDataset(cat.db, "s", "val", input_size=32, heatmap_size=8, attributes="Young")
    assert marks[0]["attributes"].tolist() == [float(truth[marks.image_ids[0]][-1])]
    assert "attributes" not in FaceDataset(cat.db, "s", "val", size=32)[0]
    with pytest.raises(ValueError, match=r"Unknown attribute 'Smilling'; did you mean Smiling"):
        FaceDataset(cat.db, "s", "val", attributes=["Male", "Smilling"])
    with pytest.raises(ValueError, match=r"Unknown attribute 'male'; did you mean .*Male"):
        FaceDataset(cat.db, "s", "val", attributes=["male"])


def test_images_without_attributes_are_refused(cat: SimpleNamespace, tmp_path: Path) -> None:
    db = tmp_path / "c.duckdb"
    shutil.copy(cat.db, db)
    first = FaceDataset(db, "s", "test", size=32).image_ids[0]
    con = duckdb.connect(str(db))
    con.execute('UPDATE attributes SET "Smiling" = NULL WHERE image_id = ?', [first])
    con.close()
    assert len(FaceDataset(db, "s", "test", size=32, attributes=["Male"])) > 0
    with pytest.raises(DatasetError, match=rf"1 of the \d+ images .* \(first: {first}\)"):
        FaceDataset(db, "s", "test", size=32, attributes=["Male", "Smiling"])
    con = duckdb.connect(str(db))
    con.execute("DROP TABLE attributes")
    con.close()
    with pytest.raises(DatasetError, match="no attributes table"):
        FaceDataset(db, "s", "test", size=32, attributes=True)


def test_repr_names_the_snapshot_split_size_source_and_length(cat: SimpleNamespace) -> None:
    face = FaceDataset(cat.db, "s", "train", size=48, attributes=["Male"])
    ids = len(set(face.identities.tolist()))
    assert repr(face) == (
        f"FaceDataset(snapshot='s', split='train', size=48, source='bbox', "
        f"identities={ids}, images={len(face)}, attributes=1)"
    )
    marks = LandmarkDataset(cat.db, "s", "val", input_size=64, heatmap_size=16, image_dtype="uint8")
    assert repr(marks) == (
        f"LandmarkDataset(snapshot='s', split='val', input_size=64, heatmap_size=16, "
        f"images={len(marks)}, image_dtype='uint8')"
    )
