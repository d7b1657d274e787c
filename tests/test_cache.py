"""Crop cache: same pixels as a direct warp, keyed by hash and settings, atomic, picklable.

One synthetic catalog (20 identities, ~500 px JPEGs) is built per module; each test
works on its own copy of the catalog file (the images are shared, read-only). The
crop size is 64, small enough next to the synthetic face boxes that the JPEG decoder
reduces most images (draft mode), so the matrix composition of that path is checked.
"""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import query, snapshot_catalog
from PIL import Image

from catalog import transforms as T
from catalog.cache import (
    CacheError,
    build_cache,
    drop_cache,
    find_cache,
    list_caches,
    render_crop,
)
from catalog.db import connect
from catalog.ingest import ingest
from catalog.selection import fitted_params, select
from catalog.snapshots import SnapshotError, create, get

SIZE = 64


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The catalog (snapshot 's') each test gets a copy of (conftest's ``db``)."""
    return snapshot_catalog(tmp_path_factory.mktemp("cache"), ids=20, seed=4)


def snapshot_rows(db: Path, name: str = "s") -> list[tuple]:
    """(image_id, absolute path, box) of every image of the snapshot, by image_id."""
    root = Path(query(db, "SELECT value FROM catalog_info WHERE key = 'image_root'")[0][0])
    rows = query(
        db,
        "SELECT s.image_id, i.path, s.x_1, s.y_1, s.x_2, s.y_2 FROM snapshot_images s "
        "JOIN images i USING (image_id) WHERE snapshot = ? ORDER BY 1",
        [name],
    )
    return [(r[0], root / r[1], tuple(r[2:])) for r in rows]


def open_cache(db: Path, name: str = "s", size: int = SIZE, source: str = "bbox"):
    con = connect(db, read_only=True)
    try:
        return find_cache(con, get(con, name).hash, size, source, snapshot=name)
    finally:
        con.close()


def index_rows(db: Path) -> int:
    tables = query(
        db,
        "SELECT count(*) FROM duckdb_tables() "
        "WHERE table_name IN ('crop_caches', 'crop_cache_rows')",
    )[0][0]
    if not tables:
        return 0
    return query(
        db, "SELECT (SELECT count(*) FROM crop_caches) + (SELECT count(*) FROM crop_cache_rows)"
    )[0][0]


def test_cached_crops_equal_a_direct_warp_byte_for_byte(db: Path) -> None:
    info = build_cache("s", db, size=SIZE, workers=2)
    assert info.built and info.n_images == len(snapshot_rows(db)) > 0
    assert info.path.exists() and info.path.parent == db.parent / "c.crops"
    cache = open_cache(db)
    assert cache is not None and len(cache) == info.n_images

    reduced = 0
    crops = []
    for image_id, path, box in snapshot_rows(db):
        pixels, matrix = cache.crop(image_id)
        # What a Dataset computes without the cache: reduced decode, one warp.
        image, m_decode = T.open_for_crop(str(path), box, SIZE)
        with Image.open(path) as full:
            reduced += image.size[0] < full.size[0]
        expected = np.asarray(T.warp(image, T.box_to_square(box, SIZE) @ T.invert(m_decode), SIZE))
        assert pixels.dtype == np.uint8 and pixels.shape == (SIZE, SIZE, 3)
        assert np.array_equal(pixels, expected), image_id
        np.testing.assert_array_equal(matrix, T.box_to_square(box, SIZE))
        crops.append(pixels)
    assert reduced > 0, "no image took the draft-mode path; make SIZE smaller"
    # Rows are distinct faces, not one image repeated or an empty array.
    assert len({c.tobytes() for c in crops}) == len(crops)
    assert min(c.std() for c in crops) > 5


def test_matrix_maps_a_box_corner_onto_the_crop_corner(db: Path) -> None:
    build_cache("s", db, size=SIZE)
    cache = open_cache(db)
    image_id, _, (x1, y1, x2, y2) = snapshot_rows(db)[0]
    _, matrix = cache.crop(image_id)
    # Pixel (x_1, y_1)'s outer corner (-0.5) onto the crop's; exclusive ends onto size-0.5.
    corners = T.apply(matrix, np.array([[x1 - 0.5, y1 - 0.5], [x2 - 0.5, y2 - 0.5]]))
    np.testing.assert_allclose(corners, [[-0.5, -0.5], [SIZE - 0.5, SIZE - 0.5]], atol=1e-9)
    # The crop copies are the caller's to change.
    pixels, matrix = cache.crop(image_id)
    pixels[:] = 0
    matrix[:] = 0
    again, m_again = cache.crop(image_id)
    assert again.any() and m_again[2, 2] == 1.0
    with pytest.raises(KeyError, match="999999.jpg"):
        cache.crop("999999.jpg")


def test_found_by_hash_size_and_source_only(db: Path) -> None:
    assert open_cache(db) is None  # no cache tables yet: read-only lookup still works
    build_cache("s", db, size=SIZE)
    assert open_cache(db) is not None
    assert open_cache(db, size=SIZE * 2) is None
    assert open_cache(db, source="aligned") is None
    con = connect(db, read_only=True)
    try:
        assert find_cache(con, "0" * 64, SIZE) is None
    finally:
        con.close()

    # Another selection -> another hash -> no cache, even under a reused name.
    select(db, seed=99, **fitted_params(db, images_per_id=8))
    create("t", db)
    assert query(db, "SELECT count(DISTINCT hash) FROM snapshots")[0][0] == 2
    assert open_cache(db, "t") is None


def test_other_face_boxes_give_another_hash_and_another_cache(db: Path) -> None:
    first = build_cache("s", db, size=SIZE)
    params = fitted_params(db, images_per_id=10)
    select(db, box_shrink=0.2, **params)  # same images and split, other boxes
    create("s2", db)
    (h1,), (h2,) = query(db, "SELECT hash FROM snapshots ORDER BY name")
    assert h1 != h2  # the snapshot hash covers the face boxes
    con = connect(db, read_only=True)
    try:
        assert find_cache(con, h1, SIZE, snapshot="s") is not None
        assert find_cache(con, h2, SIZE, snapshot="s2") is None
    finally:
        con.close()

    info = build_cache("s2", db, size=SIZE)
    assert info.built and info.path != first.path
    cache = open_cache(db, "s2")
    image_id, path, box = snapshot_rows(db, "s2")[0]
    pixels, matrix = cache.crop(image_id)
    assert np.array_equal(pixels, render_crop(path, box, SIZE))
    np.testing.assert_array_equal(matrix, T.box_to_square(box, SIZE))
    assert query(db, "SELECT count(*) FROM crop_caches")[0][0] == 2


def test_building_again_does_nothing(db: Path) -> None:
    first = build_cache("s", db, size=SIZE)
    stamp = first.path.stat().st_mtime_ns
    calls: list[tuple[int, int]] = []
    second = build_cache("s", db, size=SIZE, progress=lambda d, t: calls.append((d, t)))
    assert not second.built and second.path == first.path
    assert second.n_images == first.n_images
    assert calls == [] and first.path.stat().st_mtime_ns == stamp
    assert query(db, "SELECT count(*) FROM crop_caches")[0][0] == 1


def test_missing_file_makes_the_cache_unfound_and_rebuilds(db: Path) -> None:
    info = build_cache("s", db, size=SIZE)
    info.path.unlink()
    assert open_cache(db) is None
    again = build_cache("s", db, size=SIZE)
    assert again.built and again.path.exists() and open_cache(db) is not None


def test_an_image_replaced_under_its_name_is_cropped_again(db: Path, tmp_path: Path) -> None:
    # the catalog on a copy of the data folder, so that a file can be replaced
    root = Path(query(db, "SELECT value FROM catalog_info WHERE key = 'image_root'")[0][0])
    data = tmp_path / "data"
    shutil.copytree(root.parent, data)
    ingest(data, db)
    build_cache("s", db, size=SIZE)
    image_id, path, _ = snapshot_rows(db)[0]
    old = open_cache(db).crop(image_id)[0]
    with Image.open(path) as im:
        size = im.size
    Image.new("RGB", size, (0, 200, 0)).save(path, quality=95)  # another picture, same name
    assert open_cache(db) is not None  # the index has not seen the file change yet
    ingest(data, db)  # a re-ingest scans the files again
    assert open_cache(db) is None  # its recorded size no longer matches: stale
    again = build_cache("s", db, size=SIZE)
    assert again.built
    new = open_cache(db).crop(image_id)[0]
    assert not np.array_equal(new, old) and abs(new[..., 1].mean() - 200) < 3


def test_a_cache_from_before_file_sizes_is_still_used(db: Path) -> None:
    build_cache("s", db, size=SIZE)
    con = connect(db)
    try:
        con.execute("ALTER TABLE crop_cache_rows DROP COLUMN file_size")
    finally:
        con.close()
    assert open_cache(db) is not None  # nothing recorded, nothing compared
    assert not build_cache("s", db, size=SIZE).built
    build_cache("s", db, size=SIZE + 1)  # a new build gains the column
    assert query(db, "SELECT count(file_size) FROM crop_cache_rows WHERE size = ?", [SIZE + 1])[0][
        0
    ] == len(snapshot_rows(db))


def test_interrupted_build_leaves_nothing_and_a_rerun_completes(db: Path) -> None:
    seen: list[int] = []

    def stop_after_five(done: int, total: int) -> None:
        seen.append(done)
        if done >= 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_cache("s", db, size=SIZE, workers=2, progress=stop_after_five)
    assert seen[:6] == [0, 1, 2, 3, 4, 5]
    assert index_rows(db) == 0
    crops = db.parent / "c.crops"
    assert not crops.exists() or list(crops.iterdir()) == []  # no final, no temporary
    assert open_cache(db) is None

    # A temporary left by a killed process is cleaned up by the next build.
    crops.mkdir(exist_ok=True)
    (crops / ".s-x-bbox-64.npy.deadbeef.part").write_bytes(b"half")
    progress: list[tuple[int, int]] = []
    info = build_cache("s", db, size=SIZE, progress=lambda d, t: progress.append((d, t)))
    assert info.built and progress[-1] == (info.n_images, info.n_images)
    assert sorted(p.name for p in crops.iterdir()) == [info.path.name]
    assert open_cache(db) is not None


def test_pickled_cache_reads_in_another_process(db: Path) -> None:
    build_cache("s", db, size=SIZE)
    cache = open_cache(db)
    image_id = snapshot_rows(db)[7][0]
    pixels, matrix = cache.crop(image_id)  # opens the map here first
    blob = pickle.dumps(cache)
    assert len(blob) < pixels.nbytes * 2  # the map is not pickled, only the index
    child = (
        "import pickle, sys\n"
        "cache = pickle.loads(sys.stdin.buffer.read())\n"
        "assert cache._array is None\n"
        f"pixels, matrix = cache.crop({image_id!r})\n"
        "sys.stdout.buffer.write(pixels.tobytes() + matrix.tobytes())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", child],
        input=blob,
        capture_output=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout
    assert out == pixels.tobytes() + matrix.tobytes()


def test_crops_read_through_a_dataloader_with_workers(db: Path) -> None:
    torch = pytest.importorskip("torch")
    build_cache("s", db, size=SIZE)
    cache = open_cache(db)
    ids = list(cache.image_ids)

    class Crops(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(ids)

        def __getitem__(self, k: int):
            return torch.from_numpy(cache.crop(ids[k])[0])

    loader = torch.utils.data.DataLoader(Crops(), batch_size=16, num_workers=2)
    got = torch.cat(list(loader)).numpy()
    assert np.array_equal(got, np.stack([cache.crop(i)[0] for i in ids]))


def test_list_and_drop(db: Path) -> None:
    assert list_caches(db) == []
    a = build_cache("s", db, size=SIZE)
    b = build_cache("s", db, size=32)
    listed = list_caches(db)
    assert {(c.snapshot, c.size, c.n_images, c.path) for c in listed} == {
        ("s", SIZE, a.n_images, a.path),
        ("s", 32, b.n_images, b.path),
    }
    assert all(c.created_at is not None and c.seconds > 0 for c in listed)
    dropped = drop_cache("s", db, size=32)
    assert [d.size for d in dropped] == [32] and not b.path.exists() and a.path.exists()
    assert query(db, "SELECT count(*) FROM crop_cache_rows WHERE size = 32")[0][0] == 0
    drop_cache("s", db)
    assert list_caches(db) == [] and index_rows(db) == 0 and not a.path.exists()
    with pytest.raises(CacheError, match="no caches"):
        drop_cache("s", db)


def test_unknown_snapshot_is_refused_naming_the_known_ones(db: Path) -> None:
    with pytest.raises(SnapshotError, match="nope.*Known: s"):
        build_cache("nope", db, size=SIZE)


def test_bad_settings_are_refused(db: Path) -> None:
    with pytest.raises(ValueError, match="source"):
        build_cache("s", db, source="aligned")
    with pytest.raises(ValueError, match="size"):
        build_cache("s", db, size=0)


def test_missing_image_is_named_and_nothing_is_written(db: Path) -> None:
    image_id, path, _ = snapshot_rows(db)[3]
    # Point the catalog at a copy of the images without this one (the shared data stay).
    root = Path(query(db, "SELECT value FROM catalog_info WHERE key = 'image_root'")[0][0])
    copy = db.parent / "img"
    shutil.copytree(root, copy)
    (copy / path.relative_to(root)).unlink()
    con = connect(db)
    con.execute("UPDATE catalog_info SET value = ? WHERE key = 'image_root'", [str(copy)])
    con.close()
    with pytest.raises(CacheError, match=rf"missing on disk: {image_id} \(.*{path.name}\)"):
        build_cache("s", db, size=SIZE)
    assert index_rows(db) == 0 and not (db.parent / "c.crops").exists()


def test_catalog_without_images_is_refused(tmp_path: Path, template: Path) -> None:
    data = template.parent / "data"
    db = tmp_path / "annotations.duckdb"
    ingest(data, db, scan_images=False)
    select(db, **fitted_params(db, images_per_id=10))
    create("s", db)
    with pytest.raises(CacheError, match="no image index"):
        build_cache("s", db, size=SIZE)
    assert not (tmp_path / "annotations.crops").exists()
