"""Ingest as a whole: image index, cross-file problems, atomicity, re-runs."""

from __future__ import annotations

import os
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


# --- a first ingest builds the catalog whole beside it; a re-ingest stages -------------


def _views(db: Path) -> dict[str, str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return dict(
            con.execute("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal").fetchall()
        )
    finally:
        con.close()


def _paths_taken(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    taken: list[str] = []
    for name in ("_ingest_fresh", "_ingest_staged"):
        real = getattr(ingest_module, name)

        def spy(*args, _real=real, _name=name):
            taken.append(_name)
            return _real(*args)

        monkeypatch.setattr(ingest_module, name, spy)
    return taken


@pytest.mark.parametrize(
    "missing", [(), ("list_landmarks_align_celeba.txt", "list_eval_partition.txt")]
)
def test_a_first_ingest_and_a_re_ingest_make_the_same_catalog(
    missing: tuple[str, ...], small_celeba: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in missing:  # their tables are created empty
        (small_celeba / name).unlink()
    _with_images(small_celeba, {IDS[0]: (400, 300), IDS[2]: (64, 80)})  # problems too
    for name in IDS[:2]:
        _jpeg(small_celeba / "img_align_celeba" / name, (178, 218))
    taken = _paths_taken(monkeypatch)
    fresh = tmp_path / "fresh" / "c.duckdb"
    first = ingest(small_celeba, fresh, workers=2)
    again = tmp_path / "again.duckdb"
    other = tmp_path / "other"
    other.mkdir()
    (other / "identity_CelebA.txt").write_text(pairs_txt({"x.jpg": 1}))
    ingest(other, again, scan_images=False)  # a catalog of other data, then re-ingested
    second = ingest(small_celeba, again, workers=2)
    assert taken == ["_ingest_fresh", "_ingest_fresh", "_ingest_staged"]

    assert sorted(p.name for p in fresh.parent.iterdir()) == ["c.duckdb"]  # no WAL, no temp
    a, b = _dump(fresh), _dump(again)
    info = {k for k, _ in a["catalog_info"]}
    a.pop("catalog_info"), b.pop("catalog_info")  # the run's token and time
    assert a == b and a["images"] and a["images_aligned"] and a["problems"]
    assert _views(fresh) == _views(again) and _views(fresh)
    assert info == {k for k, _ in _dump(again)["catalog_info"]}
    assert (first.rows, first.problems, first.files, first.notes) == (
        second.rows,
        second.problems,
        second.files,
        second.notes,
    )
    assert first.db == fresh and first.rows["attributes"] == 3
    assert [t for t, n in first.rows.items() if not n] == [
        {"list_landmarks_align_celeba.txt": "landmarks_aligned"}.get(m, "partitions")
        for m in missing
    ]
    con = duckdb.connect(str(fresh))  # writable: opens cleanly, nothing to replay
    assert con.execute("SELECT count(*) FROM selection").fetchone() is not None
    con.close()


def _bad_file(folder: Path, monkeypatch: pytest.MonkeyPatch) -> type[BaseException]:
    part = folder / "list_eval_partition.txt"
    part.write_text(part.read_text() + "000009.jpg 7\n")
    return AnnotationError


def _ctrl_c_in_the_checks(folder: Path, monkeypatch: pytest.MonkeyPatch) -> type[BaseException]:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest_module, "run_checks", interrupted)
    return KeyboardInterrupt


def _error_in_the_views(folder: Path, monkeypatch: pytest.MonkeyPatch) -> type[BaseException]:
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(ingest_module, "_rebuild_views", broken)
    return RuntimeError


def _ctrl_c_before_the_rename(folder: Path, monkeypatch: pytest.MonkeyPatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest_module, "_publish", interrupted)
    return KeyboardInterrupt


@pytest.mark.parametrize(
    "fail",
    [_bad_file, _ctrl_c_in_the_checks, _error_in_the_views, _ctrl_c_before_the_rename],
    ids=["bad-file", "ctrl-c-in-checks", "error-in-views", "ctrl-c-before-rename"],
)
def test_a_failed_first_ingest_leaves_no_catalog_and_no_temporary_file(
    fail, small_celeba: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = fail(small_celeba, monkeypatch)
    folder = tmp_path / "cat"
    db = folder / "c.duckdb"
    with pytest.raises(error) as raised:
        ingest(small_celeba, db, scan_images=False)
    if error is KeyboardInterrupt:
        assert raised.value.committed is False and "no catalog was created" in str(raised.value)
    if error is AnnotationError:
        assert "list_eval_partition.txt, line 4" in str(raised.value)
    assert list(folder.iterdir()) == []  # no catalog, no WAL, no temporary file
    monkeypatch.undo()
    if error is AnnotationError:
        return
    ingest(small_celeba, db, scan_images=False)  # nothing in the way of the next one
    assert _dump(db)["identities"]


def test_ctrl_c_just_after_the_rename_says_the_new_catalog_is_complete(
    small_celeba: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ingest_module._publish

    def then_ctrl_c(tmp: Path, path: Path) -> bool:
        real(tmp, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest_module, "_publish", then_ctrl_c)
    db = tmp_path / "c.duckdb"
    with pytest.raises(KeyboardInterrupt) as raised:
        ingest(small_celeba, db, scan_images=False)
    assert raised.value.committed is True and "is complete" in str(raised.value)
    assert [p.name for p in tmp_path.iterdir() if p.name != "celeba"] == ["c.duckdb"]
    assert len(_dump(db)["attributes"]) == 3


def test_a_catalog_made_meanwhile_is_re_ingested_not_replaced(
    small_celeba: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another ingest creates the catalog while a first one builds it: the first one
    finds it at the rename and re-ingests into it, keeping what the other left (here
    a parameter someone set), instead of replacing the file under it."""
    from catalog.views import get_params, set_params

    db = tmp_path / "c.duckdb"
    other = tmp_path / "other"
    other.mkdir()
    (other / "identity_CelebA.txt").write_text(pairs_txt({"x.jpg": 1}))
    real = ingest_module.run_checks

    def meanwhile(*args, **kwargs):
        monkeypatch.setattr(ingest_module, "run_checks", real)
        ingest(other, db, scan_images=False)  # its own first ingest, done first
        con = duckdb.connect(str(db))
        set_params(con, n_ids=5)
        con.close()
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "run_checks", meanwhile)
    taken = _paths_taken(monkeypatch)
    result = ingest(small_celeba, db, scan_images=False)
    assert taken == ["_ingest_fresh", "_ingest_fresh", "_ingest_staged"]
    assert result.rows["identities"] == 3 and result.rows["attributes"] == 3
    assert len(_dump(db)["identities"]) == 3  # this ingest's data
    con = duckdb.connect(str(db), read_only=True)
    assert get_params(con)["n_ids"] == 5  # the other's parameter kept
    con.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.duckdb", "celeba", "other"]


def test_a_killed_first_ingest_s_temporary_file_is_removed_by_the_next(
    small_celeba: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    pid = int(dead.stdout)  # a process that has ended
    left = tmp_path / f".c.duckdb.ingest-{pid}-0123456789ab.tmp"
    live = tmp_path / f".c.duckdb.ingest-{os.getpid()}-0123456789ab.tmp"  # maybe at work
    unrelated = tmp_path / f".d.duckdb.ingest-{pid}-0123456789ab.tmp"
    for path in (left, left.with_name(left.name + ".wal"), live, unrelated):
        path.write_bytes(b"x")
    ingest(small_celeba, tmp_path / "c.duckdb", scan_images=False)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == sorted(
        [live.name, unrelated.name]
    )


@pytest.mark.parametrize("point", ["load", "commit-after"])
def test_a_first_ingest_killed_leaves_no_catalog_and_the_next_one_cleans_up(
    point: str, small_celeba: Path, tmp_path: Path
) -> None:
    """SIGKILL (no cleanup runs) when a file has loaded, or after the final COMMIT
    before the rename: no catalog, only the temporary file (and its WAL), which the
    next ingest removes on its way to a whole catalog."""
    import json
    import signal
    import subprocess
    import sys

    _with_images(small_celeba)
    db = tmp_path / "cat" / "c.duckdb"
    tests = Path(__file__).parent
    args = {"data": str(small_celeba), "images": str(small_celeba / "img_celeba"), "db": str(db)}
    done = subprocess.run(
        [sys.executable, str(tests / "_crash_child.py"), "ingest", point, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(tests.parent)},
    )
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    left = sorted(p.name for p in db.parent.iterdir())
    assert left and all(n.startswith(".c.duckdb.ingest-") for n in left), left
    ingest(small_celeba, db, workers=1)
    assert sorted(p.name for p in db.parent.iterdir()) == ["c.duckdb"]
    assert len(_dump(db)["images"]) == 3


# --- loads in parallel, compression, fsync ------------------------------------------------


def test_of_two_bad_files_loading_in_parallel_the_first_in_file_order_is_named(
    small_celeba: Path, tmp_path: Path
) -> None:
    # the partition file is among the smallest: it fails first in time, but the box
    # file comes first in file order, and its error is the one reported, as loading
    # one by one would; nothing is published
    boxes = small_celeba / "list_bbox_celeba.txt"
    boxes.write_text(boxes.read_text().replace("226", "2x6"))
    part = small_celeba / "list_eval_partition.txt"
    part.write_text(part.read_text() + "000009.jpg 7\n")
    for workers in (1, 2, 2, 2):
        folder = tmp_path / f"cat{workers}"
        with pytest.raises(AnnotationError) as raised:
            ingest(small_celeba, folder / "c.duckdb", scan_images=False, workers=workers)
        assert raised.value.path == boxes and raised.value.line == 3, raised.value
        assert not folder.exists() or list(folder.iterdir()) == []


def test_files_loaded_in_parallel_make_the_catalog_one_by_one_loads_make(
    small_celeba: Path, tmp_path: Path
) -> None:
    one = ingest(small_celeba, tmp_path / "one.duckdb", scan_images=False, workers=1)
    two = ingest(small_celeba, tmp_path / "two.duckdb", scan_images=False, workers=2)
    a, b = _dump(one.db), _dump(two.db)
    a.pop("catalog_info"), b.pop("catalog_info")  # the run's token and time
    assert a == b and one.rows == two.rows


def _compression(db: Path) -> dict[tuple[str, str], set[str]]:
    """(table, column) -> the compression of its segments, for the annotation tables."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        out: dict[tuple[str, str], set[str]] = {}
        for table in ("attributes", "bboxes", "identities"):
            for column, method in con.execute(
                "SELECT column_name, compression FROM pragma_storage_info(?) "
                "WHERE segment_type <> 'VALIDITY'",
                [table],
            ).fetchall():
                out.setdefault((table, column), set()).add(method)
        return out
    finally:
        con.close()


def test_attributes_are_stored_roaring_on_both_paths(small_celeba: Path, tmp_path: Path) -> None:
    import catalog.annotations as parser

    con = duckdb.connect(str(tmp_path / "probe.duckdb"))
    try:
        if not parser._takes_compression(con, "attributes", None):  # before DuckDB 1.2's
            pytest.skip("this DuckDB's storage has no roaring")  # storage
    finally:
        con.close()
    db = tmp_path / "c.duckdb"
    for _ in ("first ingest", "re-ingest"):
        ingest(small_celeba, db, scan_images=False)
        found = _compression(db)
        assert found[("attributes", "Male")] == {"Roaring"}
        assert "ZSTD" not in found[("attributes", "image_id")]  # DuckDB's choice
        assert found[("bboxes", "width")] != {"Roaring"}  # integers: DuckDB's choice


def test_a_compression_the_database_refuses_leaves_the_choice_to_duckdb(
    small_celeba: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as a catalog of an older storage version refuses roaring: the same tables,
    # compressed as DuckDB chooses
    import catalog.annotations as parser

    monkeypatch.setattr(parser, "_COMPRESSION", {"BOOLEAN": "zstd"})  # no such for BOOLEAN
    db = tmp_path / "c.duckdb"
    for _ in ("first ingest", "re-ingest"):
        ingest(small_celeba, db, scan_images=False)
        assert "Roaring" not in _compression(db)[("attributes", "Male")]
        assert _dump(db)["attributes"][0][0] == "000001.jpg"


def test_a_first_ingest_syncs_only_its_final_transaction(
    small_celeba: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = duckdb.connect()
    try:
        if not ingest_module._without_fsync(probe):
            pytest.skip("this DuckDB has no fsync_mode: it syncs every COMMIT")
    finally:
        probe.close()
    seen: dict[str, str] = {}
    load, fill = ingest_module.load_annotation, ingest_module._fill

    def setting(con: duckdb.DuckDBPyConnection) -> str:
        return con.execute("SELECT current_setting('fsync_mode')").fetchone()[0]

    def spy_load(con, found, table=None):
        seen[found.spec.table] = setting(con)
        return load(con, found, table)

    def spy_fill(con, *args):
        seen["final"] = setting(con)
        return fill(con, *args)

    monkeypatch.setattr(ingest_module, "load_annotation", spy_load)
    monkeypatch.setattr(ingest_module, "_fill", spy_fill)
    ingest(small_celeba, tmp_path / "c.duckdb", scan_images=False)
    assert seen.pop("final") == "STANDARD"  # the COMMIT and CHECKPOINT sync the file
    assert set(seen.values()) == {"NONE"} and len(seen) == 6
    seen.clear()
    ingest(small_celeba, tmp_path / "c.duckdb", scan_images=False)  # a re-ingest: as ever
    assert set(seen.values()) == {"STANDARD"}
