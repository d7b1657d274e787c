"""Images the catalog knows are bad never reach a snapshot; older snapshots name them.

A deleted, truncated, corrupt or oversized in-the-wild image is found (at ingest from
its header and end, or by ``celebcat check --decode``), recorded as an error-severity
problem that ``clean_images`` leaves out, and named, with the right advice, by
``snapshot create``, ``cache build``, ``export``, ``align`` and the Datasets for a
snapshot made before; ``skip_bad`` goes on without it and records which and why.

One synthetic catalog is built per module; each test gets its own copy of the
catalog and of the images (the tests break files).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest
from conftest import query, snapshot_catalog, snapshot_ids
from typer.testing import CliRunner

import cli
from catalog.cache import CacheError, build_cache, find_cache, list_caches
from catalog.datasets import DatasetError, FaceDataset
from catalog.export import ExportError, export_snapshot
from catalog.imagesize import MAX_IMAGE_PIXELS
from catalog.ingest import ingest
from catalog.problems import check_decode
from catalog.selection import fitted_params, select
from catalog.snapshots import SnapshotImageError, create, get, read_images
from models.alignment.snapshot import align_snapshot

SIZE = 32


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_catalog(tmp_path_factory.mktemp("bad_images"), ids=12, seed=3)


@pytest.fixture
def cat(template: Path, tmp_path: Path) -> SimpleNamespace:
    """A copy of the catalog (snapshot 's') reading a copy of the images."""
    data = tmp_path / "data"
    shutil.copytree(template.parent / "data", data)
    db = tmp_path / "c.duckdb"
    shutil.copyfile(template, db)
    old = Path(query(db, "SELECT value FROM catalog_info WHERE key = 'image_root'")[0][0])
    root = data / old.relative_to(template.parent / "data")
    con = duckdb.connect(str(db))
    con.execute("UPDATE catalog_info SET value = ? WHERE key = 'image_root'", [str(root)])
    con.close()
    ids = snapshot_ids(db)
    return SimpleNamespace(db=db, data=data, root=root, ids=ids, victim=ids[3])


def image_path(cat: SimpleNamespace, image_id: str) -> Path:
    rel = query(cat.db, "SELECT path FROM images WHERE image_id = ?", [image_id])[0][0]
    return cat.root / rel


def problems(db: Path, image_id: str) -> set[tuple[str, str]]:
    return set(
        query(db, "SELECT check_name, severity FROM problems WHERE image_id = ?", [image_id])
    )


def clean(db: Path, image_id: str) -> bool:
    return bool(query(db, "SELECT count(*) FROM clean_images WHERE image_id = ?", [image_id])[0][0])


def reselect_and_snapshot(db: Path, name: str) -> list[str]:
    select(db, **fitted_params(db, images_per_id=10))
    create(name, db)
    return snapshot_ids(db, name)


def corrupt_middle(path: Path) -> None:
    """A bogus Huffman table marker in the middle of the compressed data: libjpeg stops
    with an error there (random byte edits often decode, as grey blocks, with a
    warning only). Header and end marker stay intact."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 6] = b"\xff\xc4\x00\x04\x00\x00"
    path.write_bytes(bytes(data))


# --- a file deleted after ingest --------------------------------------------------------


def test_deleted_file_is_named_with_the_right_advice_then_left_out(cat: SimpleNamespace) -> None:
    path = image_path(cat, cat.victim)
    path.unlink()
    named = rf"missing on disk: {cat.victim} \(.*{path.name}\)"
    with pytest.raises(SnapshotImageError, match=rf"{cat.victim} \(.*{path.name}.*celebcat ingest"):
        create("t", cat.db)  # the selection still holds it: refused, not frozen
    with pytest.raises(CacheError, match=named + r".*--skip-bad.*celebcat ingest"):
        build_cache("s", cat.db, size=SIZE)
    with pytest.raises(ExportError, match=named):
        export_snapshot("s", cat.db.parent / "out", cat.db)
    with pytest.raises(SnapshotImageError, match=named):
        align_snapshot(None, "s", cat.db, size=SIZE, source="truth")
    # not "ingested without images": the catalog has them, one file is gone
    with pytest.raises(DatasetError, match=named) as caught:
        FaceDataset(cat.db, "s", "all")
    assert "without images" not in str(caught.value)
    assert [b.reason for b in caught.value.bad] == ["image_missing"]

    ingest(cat.data, cat.db, workers=1)  # records it missing
    assert problems(cat.db, cat.victim) == {("no_image_on_disk", "error")}
    assert not clean(cat.db, cat.victim)
    assert cat.victim not in reselect_and_snapshot(cat.db, "t")
    # the old snapshot still holds it; now the catalog knows, and says so
    with pytest.raises(
        CacheError,
        match=rf"marked unusable.*{cat.victim}.*no_image_on_disk"
        r".*create a new snapshot",
    ):
        build_cache("s", cat.db, size=SIZE)
    with pytest.raises(DatasetError, match=rf"{cat.victim}.*no_image_on_disk") as caught:
        FaceDataset(cat.db, "s", "all")
    assert "without images" not in str(caught.value)


# --- truncated, corrupt, too large --------------------------------------------------------


def test_truncated_jpeg_is_found_at_ingest_and_left_out(cat: SimpleNamespace) -> None:
    path = image_path(cat, cat.victim)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # header intact, data cut short
    ingest(cat.data, cat.db, workers=1)
    assert problems(cat.db, cat.victim) == {("image_truncated", "error")}
    detail = query(cat.db, "SELECT detail FROM problems WHERE image_id = ?", [cat.victim])[0][0]
    assert "end-of-image marker" in detail and path.name in detail
    assert not clean(cat.db, cat.victim)
    assert cat.victim not in reselect_and_snapshot(cat.db, "t")
    images = read_images(cat.db, "s", skip_bad=True)
    assert [(b.image_id, b.reason) for b in images.skipped] == [(cat.victim, "image_truncated")]
    assert cat.victim not in images.image_id and len(images) == len(cat.ids) - 1


def test_corrupt_data_aborts_nothing_and_check_decode_finds_it(cat: SimpleNamespace) -> None:
    corrupt_middle(image_path(cat, cat.victim))
    ingest(cat.data, cat.db, workers=1)
    assert problems(cat.db, cat.victim) == set()  # header and end are fine
    # found while cropping: one clear error naming it (no traceback), nothing written
    with pytest.raises(
        CacheError,
        match=rf"image {cat.victim}: cropping .*--skip-bad.*"
        r"check --decode",
    ):
        build_cache("s", cat.db, size=SIZE, workers=2)
    assert list_caches(cat.db) == []
    with pytest.raises(ExportError, match=rf"image {cat.victim}: cropping"):
        export_snapshot("s", cat.db.parent / "out", cat.db, crop=True, size=SIZE)
    with pytest.raises(SnapshotImageError, match=rf"image {cat.victim}: aligning"):
        align_snapshot(None, "s", cat.db, size=SIZE, source="truth", workers=2)

    seen: list[tuple[int, int]] = []
    result = check_decode(cat.db, workers=2, progress=lambda d, t: seen.append((d, t)))
    assert result.n_errors == 1 and seen[0] == (0, result.n_images) and seen[-1][0] == seen[0][1]
    assert problems(cat.db, cat.victim) == {("image_decode_error", "error")}
    assert not clean(cat.db, cat.victim)  # the views see it at once
    assert check_decode(cat.db).n_errors == 1  # a second run replaces, not adds
    assert len(query(cat.db, "SELECT * FROM problems WHERE image_id = ?", [cat.victim])) == 1


def test_header_claiming_huge_dimensions_is_too_large(cat: SimpleNamespace) -> None:
    path = image_path(cat, cat.victim)
    data = bytearray(path.read_bytes())
    sof = data.find(b"\xff\xc0")
    assert sof > 0, "the synthetic JPEGs are baseline"
    data[sof + 5 : sof + 9] = (30000).to_bytes(2, "big") * 2  # height, width: 9e8 pixels
    path.write_bytes(bytes(data))
    ingest(cat.data, cat.db, workers=1)
    assert 30000 * 30000 > MAX_IMAGE_PIXELS
    assert query(cat.db, "SELECT width, height FROM images WHERE image_id = ?", [cat.victim]) == [
        (30000, 30000)
    ]
    assert problems(cat.db, cat.victim) == {("image_too_large", "error")}
    assert not clean(cat.db, cat.victim)
    before = check_decode(cat.db).n_images  # never decoded: it is not opened at all
    assert before == query(cat.db, "SELECT count(*) FROM images")[0][0] - 1


# --- skip_bad: go on without it, and say so ----------------------------------------------


def test_cache_build_skip_bad_records_and_datasets_leave_it_out(cat: SimpleNamespace) -> None:
    path = image_path(cat, cat.victim)
    saved = path.read_bytes()
    path.unlink()
    info = build_cache("s", cat.db, size=SIZE, skip_bad=True)
    assert info.built and info.n_images == len(cat.ids) - 1
    assert [(b.image_id, b.reason) for b in info.skipped] == [(cat.victim, "image_missing")]
    (listed,) = list_caches(cat.db)
    assert listed.skipped == info.skipped  # the index row records it
    data = FaceDataset(cat.db, "s", "all", size=SIZE)  # reads the cache, which lacks it
    assert data.cache is not None and len(data) == len(cat.ids) - 1
    assert cat.victim not in data.image_ids and [b.image_id for b in data.skipped] == [cat.victim]
    assert data[0]["image"].shape == (3, SIZE, SIZE)
    # again: nothing to do while the same image is still missing
    assert not build_cache("s", cat.db, size=SIZE, skip_bad=True).built
    with pytest.raises(CacheError, match="missing on disk"):  # asked for every image
        build_cache("s", cat.db, size=SIZE)
    path.write_bytes(saved)
    full = build_cache("s", cat.db, size=SIZE)
    assert full.built and full.n_images == len(cat.ids) and full.skipped == ()


def test_cache_build_skip_bad_goes_on_past_an_image_that_fails_to_decode(
    cat: SimpleNamespace,
) -> None:
    corrupt_middle(image_path(cat, cat.victim))
    info = build_cache("s", cat.db, size=SIZE, skip_bad=True, workers=2)
    assert [(b.image_id, b.reason) for b in info.skipped] == [(cat.victim, "image_decode_error")]
    con = duckdb.connect(str(cat.db), read_only=True)
    try:
        cache = find_cache(con, get(con, "s").hash, SIZE)
    finally:
        con.close()
    assert cache is not None and len(cache) == len(cat.ids) - 1 and cat.victim not in cache
    # current as it is: the image still fails (only decoding finds that, not the checks)
    assert not build_cache("s", cat.db, size=SIZE, skip_bad=True).built
    with pytest.raises(CacheError, match=f"image {cat.victim}: cropping"):
        build_cache("s", cat.db, size=SIZE)  # every image asked for: it is tried again


def test_export_skip_bad_records_in_export_json(cat: SimpleNamespace) -> None:
    image_path(cat, cat.victim).unlink()
    out = cat.db.parent / "out"
    result = export_snapshot("s", out, cat.db, skip_bad=True)
    assert result.n_images == result.n_written == len(cat.ids) - 1
    assert [(b.image_id, b.reason) for b in result.skipped] == [(cat.victim, "image_missing")]
    manifest = json.loads((out / "export.json").read_text())
    assert [b["image_id"] for b in manifest["skipped"]] == [cat.victim]
    assert manifest["n_images"] == len(cat.ids) - 1
    labels = (out / "labels.csv").read_text()
    assert cat.victim not in labels and len(labels.splitlines()) == len(cat.ids)


def test_align_skip_bad_records_in_the_result_and_the_cache(cat: SimpleNamespace) -> None:
    corrupt_middle(image_path(cat, cat.victim))
    image_path(cat, cat.ids[5]).unlink()
    result = align_snapshot(None, "s", cat.db, size=SIZE, source="truth", skip_bad=True, workers=2)
    assert [(b.image_id, b.reason) for b in result.skipped] == sorted(
        [(cat.victim, "image_decode_error"), (cat.ids[5], "image_missing")]
    )
    assert result.n_images == result.cache.n_images == len(cat.ids) - 2
    assert result.cache.skipped == result.skipped
    data = FaceDataset(cat.db, "s", "all", source="aligned", size=SIZE)
    assert len(data) == len(cat.ids) - 2 and {b.image_id for b in data.skipped} == {
        cat.victim,
        cat.ids[5],
    }


def test_align_skip_bad_with_a_landmark_run(cat: SimpleNamespace, tmp_path: Path) -> None:
    """Predicted landmarks skip the missing file too, with no crop cache built first."""
    import torch

    from models.landmarks.train import LandmarkTrainConfig, train_landmarks

    torch.set_num_threads(1)
    run = train_landmarks(
        LandmarkTrainConfig(
            snapshot="s",
            epochs=1,
            batch_size=8,
            max_batches_per_epoch=1,
            augment=False,
            out_dir=str(tmp_path / "ck"),
        ),
        cat.db,
    )
    image_path(cat, cat.victim).unlink()
    with pytest.raises(SnapshotImageError, match=cat.victim):
        align_snapshot(run.run_id, "s", cat.db, size=SIZE, workers=2)
    result = align_snapshot(run.run_id, "s", cat.db, size=SIZE, skip_bad=True, workers=2)
    assert [b.image_id for b in result.skipped] == [cat.victim]
    assert result.n_predictions == len(cat.ids) - 1
    predicted = {r[0] for r in query(cat.db, "SELECT image_id FROM landmark_predictions")}
    assert cat.victim not in predicted and len(predicted) == len(cat.ids) - 1


# --- the command line ---------------------------------------------------------------------


def test_cli_check_decode_and_skip_bad(cat: SimpleNamespace) -> None:
    runner = CliRunner(env={"COLUMNS": "200"})
    corrupt_middle(image_path(cat, cat.victim))
    result = runner.invoke(cli.app, ["check", "--decode", "--strict", "--db", str(cat.db)])
    assert result.exit_code == 1, result.output  # an error-severity problem: --strict fails
    assert "image_decode_error" in result.output and "1 failed" in result.output
    result = runner.invoke(
        cli.app,
        [
            "cache",
            "build",
            "--snapshot",
            "s",
            "--size",
            str(SIZE),
            "--skip-bad",
            "--db",
            str(cat.db),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "skipped 1 images" in result.output and cat.victim in result.output
    out = cat.db.parent / "out"
    result = runner.invoke(cli.app, ["export", "--snapshot", "s", str(out), "--db", str(cat.db)])
    assert result.exit_code != 0 and cat.victim in str(result.exception)
    result = runner.invoke(
        cli.app, ["export", "--snapshot", "s", str(out), "--skip-bad", "--db", str(cat.db)]
    )
    assert result.exit_code == 0 and "export.json" in result.output
    result = runner.invoke(
        cli.app,
        [
            "align",
            "--snapshot",
            "s",
            "--source",
            "truth",
            "--size",
            "64",
            "--skip-bad",
            "--db",
            str(cat.db),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "skipped 1 images" in result.output and "image_decode_error" in result.output


# --- files swapped after the snapshot: every reader answers in one line -----------------


def _bomb_png() -> bytes:
    """A PNG whose header says 60000 x 60000: Pillow refuses it as a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 100))
        + chunk(b"IEND", b"")
    )


def swap_in_bad_files(cat: SimpleNamespace) -> list[str]:
    """Four images of snapshot 's' replaced after it was made: a bomb, an empty file, a
    text file and a JPEG cut to a third. Their ids."""
    victims = cat.ids[1:5]
    paths = [image_path(cat, i) for i in victims]
    paths[0].write_bytes(_bomb_png())
    paths[1].write_bytes(b"")
    paths[2].write_text("not an image")
    data = paths[3].read_bytes()
    paths[3].write_bytes(data[: len(data) // 3])
    return victims


@pytest.mark.parametrize(
    "command",
    [
        ["cache", "build", "--snapshot", "s", "--size", str(SIZE)],
        ["export", "--snapshot", "s", "{out}", "--crop", "--size", str(SIZE)],
        ["export", "--snapshot", "s", "{out}"],
        ["align", "--snapshot", "s", "--source", "truth", "--size", "64"],
    ],
    ids=["cache", "export-crop", "export", "align"],
)
def test_files_swapped_after_the_snapshot_are_one_line_or_skipped(
    cat: SimpleNamespace, tmp_path: Path, command: list[str]
) -> None:
    from conftest import celebcat

    victims = swap_in_bad_files(cat)
    args = [a.replace("{out}", str(tmp_path / "out")) for a in command] + ["--db", str(cat.db)]
    code, out = celebcat(*args)
    assert code == 1 and "Traceback" not in out, out
    assert "--skip-bad" in out
    code, out = celebcat(*args, "--skip-bad")
    assert code == 0 and "Traceback" not in out, out
    flat = " ".join(out.split())
    for image_id in victims:
        assert image_id in flat, (image_id, out)
