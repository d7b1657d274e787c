"""Ingest as a whole: image index, cross-file problems, atomicity, re-runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest
from conftest import pairs_txt
from PIL import Image

import catalog.ingest as ingest_module
from catalog.annotations import AnnotationError
from catalog.ingest import IngestError, ingest

IDS = ["000001.jpg", "000002.jpg", "000003.jpg"]


def _jpeg(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 90, 60)).save(path, quality=80)


def _with_images(folder: Path, sizes: dict[str, tuple[int, int]] | None = None) -> Path:
    sizes = sizes or {i: (400, 500) for i in IDS}
    for name, size in sizes.items():
        _jpeg(folder / "img_celeba" / name, size)
    return folder


def _dump(db: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        names = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return {n: con.execute(f"SELECT * FROM {n} ORDER BY ALL").fetchall() for n in names}
    finally:
        con.close()


def _problems(db: Path) -> set[tuple[str, str, str]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return set(con.execute("SELECT check_name, source, image_id FROM problems").fetchall())
    finally:
        con.close()


def test_image_index_reads_sizes_and_keeps_frames_apart(small_celeba: Path, tmp_path: Path):
    _with_images(small_celeba, {IDS[0]: (400, 500), IDS[1]: (350, 420), IDS[2]: (64, 80)})
    for name in IDS:  # aligned copies with the same names must not be confused
        _jpeg(small_celeba / "img_align_celeba" / name, (178, 218))
    db = tmp_path / "c.duckdb"
    result = ingest(small_celeba, db, workers=1)
    assert result.rows["images"] == 3 and result.rows["images_aligned"] == 3
    con = duckdb.connect(str(db), read_only=True)
    # paths are relative to the image root (img_celeba/)
    rows = con.execute("SELECT image_id, path, width, height FROM images ORDER BY 1").fetchall()
    assert rows == [
        (IDS[0], IDS[0], 400, 500),
        (IDS[1], IDS[1], 350, 420),
        (IDS[2], IDS[2], 64, 80),
    ]
    assert con.execute("SELECT DISTINCT width, height FROM images_aligned").fetchall() == [
        (178, 218)
    ]
    assert con.execute("SELECT count(*) FROM images WHERE width = 178").fetchone() == (0,)
    info = dict(con.execute("SELECT key, value FROM catalog_info").fetchall())
    assert info["image_root"].endswith("img_celeba")
    assert info["aligned_root"].endswith("img_align_celeba")
    con.close()
    assert _problems(db) == set()


def test_cross_file_problems_are_recorded_not_fatal(small_celeba: Path, tmp_path: Path):
    # 000001: its 400x300 image is smaller than its box (95+226 wide, 71+313 high).
    # 000002: no image file on disk. 000003: fine. zzz.jpg: an identity with no attributes.
    _with_images(small_celeba, {IDS[0]: (400, 300), IDS[2]: (64, 80)})
    (small_celeba / "img_celeba" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    _jpeg(small_celeba / "img_celeba" / "more" / IDS[2], (64, 80))  # a second 000003.jpg
    ident = small_celeba / "identity_CelebA.txt"
    ident.write_text(ident.read_text() + "zzz.jpg 7\n")
    bbox = small_celeba / "list_bbox_celeba.txt"
    bbox.write_text(bbox.read_text().replace("   10   20   30   40", "   10   20    0   40"))
    db = tmp_path / "c.duckdb"
    result = ingest(small_celeba, db, workers=1)
    found = _problems(db)
    assert ("bbox_outside_image", "bboxes", IDS[0]) in found
    assert ("no_image_on_disk", "images", IDS[1]) in found
    assert ("zero_size_box", "bboxes", IDS[2]) in found
    # with width 0, all of 000003's landmarks fall outside its box
    assert ("landmark_outside_bbox", "landmarks", IDS[2]) in found
    assert ("unreadable_image", "images", "broken.jpg") in found
    assert ("duplicate_image_name", "images", IDS[2]) in found
    assert ("image_not_annotated", "images", "broken.jpg") in found
    assert ("no_image_on_disk", "images", "zzz.jpg") in found
    # zzz.jpg is in identities only: every other table lacks it
    assert ("missing_annotation", "attributes", "zzz.jpg") in found
    assert ("missing_annotation", "bboxes", "zzz.jpg") in found
    assert ("missing_annotation", "identities", IDS[0]) not in found
    assert result.problems["missing_annotation"] == 5
    # the first path of a duplicated name is indexed
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute(f"SELECT path FROM images WHERE image_id = '{IDS[2]}'").fetchone() == (
        IDS[2],
    )
    assert con.execute("SELECT count(*) FROM images").fetchone() == (3,)
    con.close()


def test_a_failing_ingest_leaves_the_previous_catalog_exactly(small_celeba: Path, tmp_path):
    db = tmp_path / "c.duckdb"
    ingest(small_celeba, db, scan_images=False)
    before = _dump(db)
    # a bad line in the last file to load: everything before it was already loaded
    part = small_celeba / "list_eval_partition.txt"
    part.write_text(part.read_text() + "000009.jpg 7\n")
    with pytest.raises(AnnotationError, match="line 4"):
        ingest(small_celeba, db, scan_images=False)
    assert _dump(db) == before


def test_ctrl_c_midway_leaves_the_previous_catalog(small_celeba, tmp_path, monkeypatch):
    db = tmp_path / "c.duckdb"
    ingest(small_celeba, db, scan_images=False)
    before = _dump(db)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest_module, "run_checks", interrupted)
    (small_celeba / "identity_CelebA.txt").write_text(pairs_txt({"x.jpg": 1}))
    with pytest.raises(KeyboardInterrupt):
        ingest(small_celeba, db, scan_images=False)
    assert _dump(db) == before


def test_running_again_replaces_the_data(small_celeba: Path, tmp_path: Path):
    db = tmp_path / "c.duckdb"
    ingest(small_celeba, db, scan_images=False)
    first = _dump(db)
    ingest(small_celeba, db, scan_images=False)
    second = _dump(db)
    first.pop("catalog_info"), second.pop("catalog_info")  # ingest time differs
    assert first == second
    other = tmp_path / "other"
    other.mkdir()
    (other / "identity_CelebA.txt").write_text(pairs_txt({"x.jpg": 1}))
    ingest(other, db, scan_images=False)
    after = _dump(db)
    assert after["attributes"] == [] and after["identities"] == [("x.jpg", 1)]


def test_images_option_overrides_the_found_root(small_celeba: Path, tmp_path: Path):
    elsewhere = tmp_path / "photos" / "deep"
    for name in IDS:
        _jpeg(elsewhere / name, (300, 400))
    db = tmp_path / "c.duckdb"
    result = ingest(small_celeba, db, images=elsewhere, workers=1)
    assert result.image_root == elsewhere.resolve()
    assert result.rows["images"] == 3


def test_nothing_to_load_is_an_error_and_writes_nothing(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    db = tmp_path / "c.duckdb"
    with pytest.raises(IngestError, match="No CelebA annotation files"):
        ingest(empty, db)
    assert not db.exists()
    with pytest.raises(IngestError, match="not a folder"):
        ingest(tmp_path / "missing", db)
    with pytest.raises(IngestError, match="--images"):
        shutil.copytree(Path(__file__).parent, tmp_path / "x", dirs_exist_ok=True)
        (tmp_path / "x" / "identity_CelebA.txt").write_text("a.jpg 1\n")
        ingest(tmp_path / "x", db, images=tmp_path / "nope")


def test_interrupt_while_files_load_in_parallel_leaves_no_trace(
    small_celeba: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "c.duckdb"
    ingest(small_celeba, db, scan_images=False)
    before = _dump(db)
    real = ingest_module.load_annotation

    def flaky(con, found, table=None):
        if found.spec.table == "partitions":
            raise KeyboardInterrupt
        return real(con, found, table)

    monkeypatch.setattr(ingest_module, "load_annotation", flaky)
    with pytest.raises(KeyboardInterrupt):
        ingest(small_celeba, db, scan_images=False, workers=2)
    assert _dump(db) == before  # no shadow tables left, old tables untouched
    monkeypatch.setattr(ingest_module, "load_annotation", real)
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE _ingest_attributes (x INTEGER)")  # as a killed run leaves it
    con.close()
    ingest(small_celeba, db, scan_images=False)
    assert "_ingest_attributes" not in _dump(db)
