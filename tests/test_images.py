"""The image index: header sizes (catalog.imagesize), root discovery and scanning."""

from __future__ import annotations

import io
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from catalog import images
from catalog.images import SCAN_COLUMNS, ImageRoots, find_image_roots, scan_images
from catalog.imagesize import _CHUNK, ImageHeaderError, image_size, read_headers

# --------------------------------------------------------------------------- helpers


def _encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def _jpeg(size: tuple[int, int] = (37, 23), mode: str = "RGB", **params: object) -> bytes:
    return _encode(Image.new(mode, size), "JPEG", **params)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _pil_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def _touch_images(folder: Path, names: list[str]) -> None:
    """Real (tiny) JPEGs, so that a scan of them reads valid headers."""
    data = _jpeg((3, 2))
    for name in names:
        _write(folder / name, data)


# ------------------------------------------------------------------ image_size: JPEG


def _big_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    exif[0x010E] = "x" * 10_000  # ImageDescription, to push SOF past the first read
    return exif


JPEG_CASES = {
    "baseline": lambda: _jpeg((37, 23)),
    "progressive": lambda: _jpeg((64, 48), progressive=True),
    "grayscale": lambda: _jpeg((17, 90), mode="L"),
    "cmyk": lambda: _jpeg((21, 13), mode="CMYK"),
    "one_pixel": lambda: _jpeg((1, 1)),
    "large_dims": lambda: _jpeg((4000, 3)),
    "icc_profile": lambda: _jpeg((33, 44), icc_profile=bytes(6000)),
    "exif_oriented": lambda: _jpeg((40, 30), exif=_big_exif()),
}


@pytest.mark.parametrize("case", sorted(JPEG_CASES))
def test_jpeg_size_matches_pil(tmp_path: Path, case: str) -> None:
    path = _write(tmp_path / f"{case}.jpg", JPEG_CASES[case]())
    assert image_size(path) == _pil_size(path)


def test_jpeg_cases_cover_what_they_claim(tmp_path: Path) -> None:
    # Guards the parametrized test above: each case exercises the path it names.
    assert JPEG_CASES["progressive"]().find(b"\xff\xc2") > 0  # SOF2
    assert JPEG_CASES["baseline"]().find(b"\xff\xc2") == -1
    exif_jpeg = JPEG_CASES["exif_oriented"]()
    assert exif_jpeg.find(b"\xff\xc0") > _CHUNK  # SOF lies beyond the first read
    with Image.open(io.BytesIO(JPEG_CASES["cmyk"]())) as im:
        assert im.mode == "CMYK"


def test_exif_orientation_is_not_applied(tmp_path: Path) -> None:
    # Stored pixels are 40 wide and 30 high; displayed upright they would be 30x40.
    path = _write(tmp_path / "rotated.jpg", _jpeg((40, 30), exif=_big_exif()))
    with Image.open(path) as im:
        assert im.getexif()[0x0112] == 6
    assert image_size(path) == (40, 30)


def test_jpeg_fill_bytes_and_stray_bytes_between_segments(tmp_path: Path) -> None:
    data = _jpeg((29, 31))
    sof = data.find(b"\xff\xc0")
    # T.81 allows any number of 0xFF fill bytes before a marker; some writers also
    # leave stray bytes between segments, which decoders skip.
    patched = data[:sof] + b"\x00\x17" + b"\xff" * 5 + data[sof:]
    path = _write(tmp_path / "filled.jpg", patched)
    assert _pil_size(path) == (29, 31)
    assert image_size(path) == (29, 31)


def test_jpeg_restart_and_escaped_bytes_before_sof(tmp_path: Path) -> None:
    data = _jpeg((12, 34))
    sof = data.find(b"\xff\xc0")
    # A standalone marker (RST0) and an escaped 0xFF00 carry no length field.
    patched = data[:sof] + b"\xff\xd0\xff\x00" + data[sof:]
    path = _write(tmp_path / "standalone.jpg", patched)
    assert _pil_size(path) == (12, 34)
    assert image_size(path) == (12, 34)


def test_jpeg_markers_in_the_sof_range_that_are_not_frames(tmp_path: Path) -> None:
    # DHT (C4), JPG (C8) and DAC (CC) sit among SOF0..SOF15 but carry no size. Their
    # payloads here would read as a 1911x1638 frame if mistaken for one.
    data = _jpeg((12, 34))
    sof = data.find(b"\xff\xc0")
    payload = b"\x00\x09\x08\x07\x77\x06\x66\x00\x00"
    dht_dac = b"\xff\xc4" + payload + b"\xff\xcc" + payload
    path = _write(tmp_path / "dht.jpg", data[:sof] + dht_dac + data[sof:])
    assert _pil_size(path) == (12, 34)
    assert image_size(path) == (12, 34)
    # Pillow does not skip a JPG segment by its length; T.81 says it has one.
    path = _write(tmp_path / "jpg.jpg", data[:sof] + b"\xff\xc8" + payload + data[sof:])
    assert image_size(path) == (12, 34)


def test_jpeg_sof_after_a_refill_boundary(tmp_path: Path) -> None:
    # A COM segment sized so that the SOF marker straddles the end of the first read.
    base = _jpeg((55, 66))
    for pad in range(_CHUNK - 40, _CHUNK + 10):
        comment = b"\xff\xfe" + (pad + 2).to_bytes(2, "big") + b"c" * pad
        path = _write(tmp_path / "com.jpg", base[:2] + comment + base[2:])
        assert image_size(path) == (55, 66), pad


# ------------------------------------------------------------ image_size: other formats


@pytest.mark.parametrize(
    ("fmt", "suffix", "mode", "size"),
    [
        ("PNG", ".png", "RGB", (45, 19)),
        ("PNG", ".png", "RGBA", (1, 1)),
        ("PNG", ".png", "I;16", (300, 2)),
        ("BMP", ".bmp", "RGB", (13, 27)),
        ("WEBP", ".webp", "RGB", (31, 9)),
        ("GIF", ".gif", "P", (8, 5)),
    ],
)
def test_other_formats_match_pil(
    tmp_path: Path, fmt: str, suffix: str, mode: str, size: tuple[int, int]
) -> None:
    path = _write(tmp_path / f"img{suffix}", _encode(Image.new(mode, size), fmt))
    assert image_size(path) == size
    assert image_size(path) == _pil_size(path)


def test_format_is_read_from_the_bytes_not_the_suffix(tmp_path: Path) -> None:
    png_named_jpg = _write(tmp_path / "really_png.jpg", _encode(Image.new("RGB", (6, 4)), "PNG"))
    jpeg_named_png = _write(tmp_path / "really_jpeg.png", _jpeg((4, 6)))
    assert image_size(png_named_jpg) == (6, 4)
    assert image_size(jpeg_named_png) == (4, 6)


# ------------------------------------------------------------------ image_size: errors


def _truncated_before_sof() -> bytes:
    data = _jpeg()
    return data[: data.find(b"\xff\xc0")]


def _truncated_inside_sof() -> bytes:
    data = _jpeg()
    return data[: data.find(b"\xff\xc0") + 6]


def _sos_before_sof() -> bytes:
    data = _jpeg()
    return data[:2] + b"\xff\xda\x00\x02" + data[2:]


BAD_FILES = {
    "empty": (b"", "empty file"),
    "text": (b"this is not an image\n", "Pillow cannot identify"),
    "jpeg_cut_before_sof": (_truncated_before_sof(), "truncated JPEG"),
    "jpeg_cut_inside_sof": (_truncated_inside_sof(), "truncated JPEG"),
    "jpeg_soi_only": (b"\xff\xd8\xff", "truncated JPEG"),
    "jpeg_sos_first": (_sos_before_sof(), "before the start of scan"),
    "jpeg_bad_marker": (b"\xff\xd8\xff\x02" + bytes(20), "invalid JPEG marker 0xFF02"),
    "png_cut": (_encode(Image.new("RGB", (5, 5)), "PNG")[:20], "truncated PNG"),
    "png_no_ihdr": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIDAT" + bytes(20), "not IHDR"),
    "bmp_cut": (_encode(Image.new("RGB", (5, 5)), "BMP")[:10], "Pillow cannot identify"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_raise_image_header_error(tmp_path: Path, case: str) -> None:
    data, reason = BAD_FILES[case]
    path = _write(tmp_path / f"{case}.jpg", data)
    with pytest.raises(ImageHeaderError) as info:
        image_size(path)
    assert reason in info.value.reason
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    assert reason in str(info.value)


def test_missing_file_and_directory_raise_image_header_error(tmp_path: Path) -> None:
    with pytest.raises(ImageHeaderError, match="cannot open"):
        image_size(tmp_path / "missing.jpg")
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(ImageHeaderError, match="folder.jpg"):
        image_size(tmp_path / "folder.jpg")


def test_image_header_error_is_a_value_error_and_pickles() -> None:
    err = ImageHeaderError("/data/x.jpg", "empty file")
    assert isinstance(err, ValueError)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.path, copy.reason, str(copy)) == (err.path, err.reason, str(err))


def test_only_the_header_is_read(tmp_path: Path) -> None:
    # A JPEG cut short in its compressed data still has a complete header: the size
    # is known, the damage shows only when the image is decoded.
    data = _jpeg((50, 40))
    path = _write(tmp_path / "cut_body.jpg", data[: data.find(b"\xff\xda") + 40])
    assert image_size(path) == (50, 40)


def test_read_headers_reports_sizes_and_errors(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.jpg", _jpeg((7, 8)))
    bad = _write(tmp_path / "bad.jpg", b"nope")
    missing = tmp_path / "gone.jpg"
    rows = read_headers([str(good), str(bad), str(missing)])
    assert rows[0] == (good.stat().st_size, 7, 8, None)
    assert rows[1][:3] == (4, None, None)
    assert "Pillow cannot identify" in rows[1][3]
    assert rows[2][:3] == (None, None, None)  # no size: the caller drops the row


# -------------------------------------------------------------------- find_image_roots


def test_roots_flat_official_layout(tmp_path: Path) -> None:
    _touch_images(tmp_path / "img_celeba", ["000001.jpg"])
    _touch_images(tmp_path / "img_align_celeba", ["000001.jpg"])
    (tmp_path / "list_attr_celeba.txt").write_text("1\n")
    roots = find_image_roots(tmp_path)
    assert roots == ImageRoots(wild=tmp_path / "img_celeba", aligned=tmp_path / "img_align_celeba")


def test_roots_nested_wild_takes_the_topmost(tmp_path: Path) -> None:
    _touch_images(tmp_path / "archive" / "img_celeba" / "img_celeba", ["000001.jpg"])
    roots = find_image_roots(tmp_path)
    assert roots == ImageRoots(wild=tmp_path / "archive" / "img_celeba", aligned=None)


def test_roots_kaggle_aligned_only(tmp_path: Path) -> None:
    aligned = tmp_path / "img_align_celeba"
    _touch_images(aligned / "img_align_celeba", ["000001.jpg", "000002.jpg"])
    (tmp_path / "list_attr_celeba.csv").write_text("image_id\n")
    # A deeper copy (say a sample folder) must not replace the topmost one.
    _touch_images(tmp_path / "samples" / "img_align_celeba", ["000001.jpg"])
    assert find_image_roots(tmp_path) == ImageRoots(wild=None, aligned=aligned)


def test_roots_both_nested(tmp_path: Path) -> None:
    _touch_images(tmp_path / "a" / "img_celeba" / "img_celeba", ["000001.jpg"])
    _touch_images(tmp_path / "b" / "c" / "img_align_celeba" / "img_align_celeba", ["1.jpg"])
    roots = find_image_roots(tmp_path)
    assert roots.wild == tmp_path / "a" / "img_celeba"
    assert roots.aligned == tmp_path / "b" / "c" / "img_align_celeba"


def test_roots_shallowest_named_folder_wins(tmp_path: Path) -> None:
    _touch_images(tmp_path / "a" / "b" / "img_celeba", ["1.jpg"])
    _touch_images(tmp_path / "z" / "img_celeba", ["1.jpg"])
    assert find_image_roots(tmp_path).wild == tmp_path / "z" / "img_celeba"


def test_roots_ties_go_to_sorted_order(tmp_path: Path) -> None:
    # Created in reverse order, so that neither creation order nor (with 20 names) a
    # file system's hash order is likely to give the sorted answer by chance.
    for i in reversed(range(20)):
        _touch_images(tmp_path / f"n{i:02d}" / "img_celeba", ["1.jpg"])
        _touch_images(tmp_path / f"n{i:02d}" / "img_align_celeba", ["1.jpg"])
    roots = find_image_roots(tmp_path)
    assert roots.wild == tmp_path / "n00" / "img_celeba"
    assert roots.aligned == tmp_path / "n00" / "img_align_celeba"
    for i in reversed(range(20)):  # equal image counts, no named folder
        _touch_images(tmp_path / "counts" / f"m{i:02d}", ["1.jpg", "2.jpg"])
    assert find_image_roots(tmp_path / "counts").wild == tmp_path / "counts" / "m00"


def test_roots_images_directly_in_data_dir(tmp_path: Path) -> None:
    _touch_images(tmp_path, ["000001.jpg", "000002.jpg"])
    _touch_images(tmp_path / "img_align_celeba", ["000001.jpg", "000002.jpg", "000003.jpg"])
    roots = find_image_roots(tmp_path)
    assert roots == ImageRoots(wild=tmp_path, aligned=tmp_path / "img_align_celeba")
    # The aligned folder sits inside the wild root; exclude keeps it out of the scan.
    frame = scan_images(roots.wild, exclude=roots.aligned, workers=1)
    assert list(frame["path"]) == ["000001.jpg", "000002.jpg"]


def test_roots_oddly_named_folder_with_most_images(tmp_path: Path) -> None:
    _touch_images(tmp_path / "faces", ["1.jpg", "2.jpg", "3.JPG"])
    _touch_images(tmp_path / "thumbs", ["1.png"])
    _touch_images(tmp_path, ["cover.jpg"])
    # More images than any other folder, but aligned: never the in-the-wild root.
    _touch_images(tmp_path / "img_align_celeba", [f"{i}.jpg" for i in range(10)])
    roots = find_image_roots(tmp_path)
    assert roots == ImageRoots(wild=tmp_path / "faces", aligned=tmp_path / "img_align_celeba")


def test_roots_no_images(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "README.txt").write_text("no images here")
    (tmp_path / "list_bbox_celeba.txt").write_text("0\n")
    assert find_image_roots(tmp_path) == ImageRoots(wild=None, aligned=None)


def test_roots_ignore_macos_zip_metadata(tmp_path: Path) -> None:
    # "__MACOSX" sorts before "archive", so a name-only search would pick it.
    _touch_images(tmp_path / "__MACOSX" / "img_align_celeba", ["._000001.jpg"])
    _touch_images(tmp_path / ".cache" / "img_celeba", ["000001.jpg"])
    _touch_images(tmp_path / "archive" / "img_align_celeba", ["000001.jpg"])
    roots = find_image_roots(tmp_path)
    assert roots == ImageRoots(wild=None, aligned=tmp_path / "archive" / "img_align_celeba")


def test_roots_data_dir_is_an_image_folder(tmp_path: Path) -> None:
    aligned = tmp_path / "img_align_celeba"
    _touch_images(aligned, ["000001.jpg"])
    assert find_image_roots(aligned) == ImageRoots(wild=None, aligned=aligned)
    wild = tmp_path / "img_celeba"
    _touch_images(wild, ["000001.jpg"])
    assert find_image_roots(wild) == ImageRoots(wild=wild, aligned=None)


def test_roots_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="nowhere"):
        find_image_roots(tmp_path / "nowhere")


# ------------------------------------------------------------------------- scan_images


def _scan_tree(root: Path) -> None:
    _touch_images(root, ["000002.jpg", "000001.jpg"])
    _touch_images(root / "part2", ["000003.JPG", "000004.jpeg", "000001.jpg"])
    _write(root / "part2" / "deep" / "000005.png", _encode(Image.new("RGB", (9, 4)), "PNG"))
    _write(root / "broken.jpg", b"not a jpeg")
    _write(root / "notes.txt", b"skip me")
    _write(root / "._000001.jpg", b"AppleDouble metadata")
    _touch_images(root / "__MACOSX", ["000001.jpg"])


def test_scan_rows_paths_sizes_and_dtypes(tmp_path: Path) -> None:
    _scan_tree(tmp_path)
    frame = scan_images(tmp_path, workers=1)
    assert tuple(frame.columns) == SCAN_COLUMNS
    assert list(frame["path"]) == [
        "000001.jpg",
        "000002.jpg",
        "broken.jpg",
        "part2/000001.jpg",
        "part2/000003.JPG",
        "part2/000004.jpeg",
        "part2/deep/000005.png",
    ]
    assert list(frame["image_id"]) == [p.rsplit("/", 1)[-1] for p in frame["path"]]
    expected_sizes = [(tmp_path / p).stat().st_size for p in frame["path"]]
    assert list(frame["file_size"]) == expected_sizes
    assert str(frame["file_size"].dtype) == "int64"
    assert str(frame["width"].dtype) == "Int32"
    assert str(frame["height"].dtype) == "Int32"
    png = frame.set_index("path").loc["part2/deep/000005.png"]
    assert (png["width"], png["height"], png["error"]) == (9, 4, None)


def test_scan_bad_image_is_a_row_not_an_exception(tmp_path: Path) -> None:
    _scan_tree(tmp_path)
    frame = scan_images(tmp_path, workers=1).set_index("path")
    broken = frame.loc["broken.jpg"]
    assert pd.isna(broken["width"]) and pd.isna(broken["height"])
    assert "Pillow cannot identify" in broken["error"]
    good = frame.drop(index="broken.jpg")
    assert good["error"].isna().all()
    assert good["width"].notna().all()


def test_scan_returns_duplicate_names(tmp_path: Path) -> None:
    _scan_tree(tmp_path)
    frame = scan_images(tmp_path, workers=1)
    dupes = frame[frame["image_id"] == "000001.jpg"]
    assert list(dupes["path"]) == ["000001.jpg", "part2/000001.jpg"]


def test_scan_paths_are_relative_to_the_root_given(tmp_path: Path) -> None:
    _touch_images(tmp_path / "data" / "img_celeba" / "sub", ["000001.jpg"])
    assert list(scan_images(tmp_path / "data", workers=1)["path"]) == ["img_celeba/sub/000001.jpg"]
    assert list(scan_images(tmp_path / "data" / "img_celeba", workers=1)["path"]) == [
        "sub/000001.jpg"
    ]


def test_scan_exclude_skips_the_subtree(tmp_path: Path) -> None:
    _touch_images(tmp_path, ["000001.jpg"])
    _touch_images(tmp_path / "img_align_celeba" / "img_align_celeba", ["000001.jpg"])
    _touch_images(tmp_path / "img_align_celeba_extra", ["000009.jpg"])
    everything = scan_images(tmp_path, workers=1)
    assert len(everything) == 3
    # Another spelling of the same folder excludes it too.
    other_spelling = tmp_path / "img_align_celeba_extra" / ".." / "img_align_celeba"
    frame = scan_images(tmp_path, exclude=other_spelling, workers=1)
    assert list(frame["path"]) == ["000001.jpg", "img_align_celeba_extra/000009.jpg"]
    assert len(scan_images(tmp_path, exclude=tmp_path / "nothing_here", workers=1)) == 3


def test_scan_empty_folder_has_the_columns(tmp_path: Path) -> None:
    frame = scan_images(tmp_path, workers=1)
    assert frame.empty
    assert tuple(frame.columns) == SCAN_COLUMNS
    assert str(frame["width"].dtype) == "Int32"
    assert str(frame["file_size"].dtype) == "int64"


@pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="POSIX symlinks")
def test_scan_survives_a_symlink_loop(tmp_path: Path) -> None:
    _touch_images(tmp_path / "a", ["000001.jpg"])
    os.symlink(tmp_path, tmp_path / "a" / "loop")
    assert list(scan_images(tmp_path, workers=1)["path"]) == ["a/000001.jpg"]
    assert find_image_roots(tmp_path).wild == tmp_path / "a"


def test_scan_drops_a_file_removed_during_the_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _touch_images(tmp_path, ["000001.jpg", "000002.jpg"])

    def remove_then_read(paths: list[str]) -> list[tuple[object, ...]]:
        os.remove(tmp_path / "000001.jpg")
        return read_headers(paths)

    monkeypatch.setattr(images, "read_headers", remove_then_read)
    assert list(scan_images(tmp_path, workers=1)["path"]) == ["000002.jpg"]


def test_scan_missing_root(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="nowhere"):
        scan_images(tmp_path / "nowhere")


@pytest.mark.parametrize("kwargs", [{"workers": 0}, {"chunk_size": 0}])
def test_scan_rejects_bad_settings(tmp_path: Path, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        scan_images(tmp_path, **kwargs)


class _SpyPool(ProcessPoolExecutor):
    """The real pool, recording that it was started and with how many workers."""

    started: list[int | None] = []

    def __init__(self, max_workers: int | None = None, **kwargs: object) -> None:
        super().__init__(max_workers=max_workers, **kwargs)
        _SpyPool.started.append(max_workers)


def test_scan_parallel_equals_serial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _scan_tree(tmp_path)
    _touch_images(tmp_path / "more", [f"{i:06d}.jpg" for i in range(10, 20)])
    serial_calls: list[tuple[int, int]] = []
    serial = scan_images(
        tmp_path, workers=1, chunk_size=4, progress=lambda *a: serial_calls.append(a)
    )

    monkeypatch.setattr(_SpyPool, "started", [])
    monkeypatch.setattr(images, "ProcessPoolExecutor", _SpyPool)
    calls: list[tuple[int, int]] = []
    parallel = scan_images(tmp_path, workers=2, chunk_size=4, progress=lambda *a: calls.append(a))

    assert _SpyPool.started == [2]
    pd.testing.assert_frame_equal(parallel, serial)
    assert len(serial) == 17
    # 17 files in chunks of 4: a call at 0, then one per chunk (5), ending at the total.
    for progress_calls in (calls, serial_calls):
        assert progress_calls[0] == (0, 17)
        assert len(progress_calls) == 6
        assert [done for done, _ in progress_calls] == sorted(done for done, _ in progress_calls)
        assert progress_calls[-1] == (17, 17)
        assert {total for _, total in progress_calls} == {17}


def test_scan_small_input_stays_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _touch_images(tmp_path, ["1.jpg", "2.jpg", "3.jpg"])

    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("a pool was started for one chunk of work")

    monkeypatch.setattr(images, "ProcessPoolExecutor", no_pool)
    assert len(scan_images(tmp_path, workers=4, chunk_size=3)) == 3
    assert len(scan_images(tmp_path, workers=1, chunk_size=1)) == 3
    with pytest.raises(AssertionError, match="pool was started"):
        scan_images(tmp_path, workers=2, chunk_size=2)


# ------------------------------------------------------------ bad files: ends and links


def test_read_headers_notices_a_file_cut_short(tmp_path: Path) -> None:
    jpeg, png = _jpeg((64, 48)), _encode(Image.new("RGB", (30, 20)), "PNG")
    cut_jpeg = _write(tmp_path / "cut.jpg", jpeg[: len(jpeg) * 2 // 3])
    cut_png = _write(tmp_path / "cut.png", png[:-12])  # the IEND chunk is gone
    trailer = _write(tmp_path / "trailer.jpg", jpeg + b"\0" * 64 + b"camera trailer" * 20)
    rows = read_headers([str(cut_jpeg), str(cut_png), str(trailer)])
    assert rows[0][1:3] == (64, 48) and rows[0][3].startswith("truncated JPEG: no end-of-image")
    assert rows[1][1:3] == (30, 20) and rows[1][3].startswith("truncated PNG")
    assert rows[2] == (trailer.stat().st_size, 64, 48, None)  # data after EOI: complete
    assert read_headers([str(cut_jpeg)], check_tail=False)[0][3] is None
    frame = scan_images(tmp_path, workers=1).set_index("path")
    assert list(frame["problem"]) == ["image_truncated", "image_truncated", None]


@pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="POSIX symlinks")
def test_scan_never_follows_a_link_out_of_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    _touch_images(root, ["000001.jpg"])
    _touch_images(root / "inner", ["000003.jpg"])
    _touch_images(outside, ["000009.jpg"])
    secret = _write(tmp_path / "passwd", b"root:x:0:0:root:/root:/bin/bash\n")
    os.symlink(secret, root / "000002.jpg")  # a file link out of the root
    os.symlink(outside, root / "elsewhere")  # a folder link out of the root
    os.symlink(root / "inner" / "000003.jpg", root / "000004.jpg")  # inside: followed
    opened: list[str] = []

    def spy(paths: list[str]) -> list[tuple[object, ...]]:
        opened.extend(paths)
        return read_headers(paths)

    monkeypatch.setattr(images, "read_headers", spy)
    frame = scan_images(root, workers=1).set_index("path")
    assert list(frame.index) == [
        "000001.jpg",
        "000002.jpg",
        "000004.jpg",
        "elsewhere/",
        "inner/000003.jpg",
    ]
    assert not any("000002" in p or "elsewhere" in p for p in opened)  # never opened
    link = frame.loc["000002.jpg"]
    assert link["problem"] == "image_outside_root" and pd.isna(link["width"])
    assert str(secret) in link["error"] and "not followed" in link["error"]
    folder = frame.loc["elsewhere/"]
    assert folder["image_id"] is None and folder["problem"] == "image_outside_root"
    assert str(outside) in folder["error"]
    inside = frame.loc["000004.jpg"]
    assert inside["problem"] is None and inside["width"] == 3
