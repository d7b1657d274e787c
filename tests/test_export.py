"""``catalog.export``: copy and crop exports, labels.csv, resuming, refusals.

The catalog is built from scratch: a few JPEGs (and one PNG) drawn with PIL, with a
coloured disk at the nose and at the left eye, and hand-written CelebA txt files.
One image is large enough that a small crop size makes the JPEG decoder reduce it
(draft mode), so the coordinate scaling of that path is checked too.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import attr_row, attr_txt, bbox_txt, landmarks_txt, pairs_txt, write
from PIL import Image, ImageDraw, JpegImagePlugin

from catalog.db import connect
from catalog.export import LABEL_COLUMNS, ExportError, export_snapshot
from catalog.formats import ATTRIBUTES, LANDMARK_COLUMNS
from catalog.ingest import ingest
from catalog.selection import select
from catalog.snapshots import SnapshotError, SnapshotImageError, create

NOSE = (255, 0, 0)  # red disk at the nose
LEFT_EYE = (0, 0, 255)  # blue disk at the left eye

#: identity -> its images: (image_id, image size, bbox x_1 y_1 w h). 000001.jpg is large
#: (a 700 px face), so exporting at 48 px decodes it at 1/8 scale.
IMAGES: dict[int, list[tuple[str, tuple[int, int], tuple[int, int, int, int]]]] = {
    101: [
        ("000001.jpg", (1600, 1800), (300, 350, 700, 800)),
        ("000002.jpg", (180, 220), (30, 40, 110, 130)),
        ("000003.jpg", (200, 200), (50, 30, 100, 120)),
    ],
    202: [
        ("000004.jpg", (160, 210), (20, 50, 120, 120)),
        ("000005.jpg", (240, 180), (60, 20, 120, 140)),
        ("000006.png", (200, 230), (40, 40, 100, 110)),
    ],
    303: [
        ("000007.jpg", (220, 220), (35, 45, 130, 125)),
        ("000008.jpg", (190, 240), (25, 60, 140, 150)),
        ("000009.jpg", (210, 200), (45, 35, 110, 120)),
    ],
}
POSITIVES = {"000002.jpg": {"Male", "Smiling"}, "000007.jpg": {"Young", "5_o_Clock_Shadow"}}

#: Selection: all three identities, 3 images each, 1 train + 1 val; the third image of
#: each identity is selected but in no split ('unused').
PARAMS = dict(
    n_ids=3,
    min_images_per_id=3,
    images_per_id=3,
    holdout_ids=0,
    query_ids=0,
    distractor_ids=0,
    query_images=1,
    distractor_images=1,
    train_per_id=1,
    val_per_id=1,
    test_per_id=0,
    min_box_w=10,
    min_box_h=10,
)


def landmarks_for(box: tuple[int, int, int, int]) -> tuple[int, ...]:
    """Five points inside the box, at fixed shares of its size (lefteye first)."""
    x, y, w, h = box
    shares = ((0.3, 0.35), (0.7, 0.35), (0.52, 0.55), (0.35, 0.75), (0.65, 0.75))
    return tuple(round(v) for sx, sy in shares for v in (x + sx * w, y + sy * h))


def draw_image(path: Path, size: tuple[int, int], box: tuple[int, int, int, int]) -> None:
    rng = np.random.default_rng(len(path.name) + size[0])
    # Mid-grey with mild noise: distinct file bytes per image, no red or blue blobs.
    pixels = np.clip(rng.normal(128, 12, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(pixels)
    points = landmarks_for(box)
    radius = max(4, box[2] // 14)
    draw = ImageDraw.Draw(im)
    for (x, y), colour in (((points[4], points[5]), NOSE), ((points[0], points[1]), LEFT_EYE)):
        # PIL fills [x - r, x + r] inclusive: the disk's centre is pixel (x, y).
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))


def build_catalog(root: Path, corrupt: tuple[str, ...] = ()) -> Path:
    """Data folder with nested image folders, ingested, two snapshots: 'snap' and 'other'.

    Images named in ``corrupt`` are written as bytes no decoder reads.
    """
    data = root / "celeba"
    rows = {image_id: (size, box) for imgs in IMAGES.values() for image_id, size, box in imgs}
    for k, (image_id, (size, box)) in enumerate(rows.items()):
        path = data / "img_celeba" / f"part{k % 2}" / image_id
        draw_image(path, size, box)
        if image_id in corrupt:
            path.write_bytes(b"\xff\xd8 not really a JPEG")
    identity = {image_id: ident for ident, imgs in IMAGES.items() for image_id, _, _ in imgs}
    write(
        data,
        {
            "list_attr_celeba.txt": attr_txt(
                [attr_row(i, POSITIVES.get(i, frozenset())) for i in rows]
            ),
            "list_bbox_celeba.txt": bbox_txt({i: box for i, (_, box) in rows.items()}),
            "list_landmarks_celeba.txt": landmarks_txt(
                {i: landmarks_for(box) for i, (_, box) in rows.items()}
            ),
            "identity_CelebA.txt": pairs_txt(identity),
            "list_eval_partition.txt": pairs_txt({i: 0 for i in rows}),
        },
    )
    db = root / "catalog.duckdb"
    ingest(data, db)
    select(db, **PARAMS)
    create("snap", db)
    select(db, train_per_id=2, val_per_id=0)  # other splits: another hash
    create("other", db)
    return db


@pytest.fixture(scope="module")
def catalog_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_catalog(tmp_path_factory.mktemp("export_catalog"))


def snapshot_rows(db: Path, name: str = "snap") -> dict[str, dict]:
    con = connect(db, read_only=True)
    try:
        root = Path(
            con.execute("SELECT value FROM catalog_info WHERE key = 'image_root'").fetchone()[0]
        )
        cur = con.execute(
            "SELECT s.*, i.path FROM snapshot_images s JOIN images i USING (image_id) "
            "WHERE snapshot = ?",
            [name],
        )
        cols = [d[0] for d in cur.description]
        rows = {r[1]: dict(zip(cols, r, strict=True)) for r in cur.fetchall()}
    finally:
        con.close()
    for row in rows.values():
        row["src"] = root / row["path"]
        row["file"] = f"{row['split'] or 'unused'}/{row['image_id']}"
    return rows


def read_labels(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "labels.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == LABEL_COLUMNS
        return {row["image_id"]: row for row in reader}


def files_under(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


def test_snapshot_fixture_has_every_split(catalog_db: Path) -> None:
    splits = {row["split"] for row in snapshot_rows(catalog_db).values()}
    assert splits == {"train", "val", None}


def test_copy_writes_identical_files_and_labels(catalog_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    calls: list[tuple[int, int]] = []
    result = export_snapshot(
        "snap", out, catalog_db, progress=lambda done, total: calls.append((done, total))
    )
    rows = snapshot_rows(catalog_db)
    assert (result.n_images, result.n_written, result.n_skipped) == (9, 9, 0)
    assert files_under(out) == {r["file"] for r in rows.values()} | {"export.json", "labels.csv"}
    for row in rows.values():
        assert (out / row["file"]).read_bytes() == row["src"].read_bytes(), row["image_id"]
    assert calls[0] == (0, 9) and calls[-1] == (9, 9)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)

    labels = read_labels(out)
    assert set(labels) == set(rows)
    boxes = {i: box for imgs in IMAGES.values() for i, _, box in imgs}
    for image_id, row in rows.items():
        got = labels[image_id]
        assert got["file"] == row["file"]
        assert int(got["identity"]) == row["identity"]
        assert got["split"] == (row["split"] or "")
        assert got["label"] == ("" if row["label"] is None else str(row["label"]))
        positives = POSITIVES.get(image_id, set())
        assert {a: got[a] for a in ATTRIBUTES} == {
            a: "1" if a in positives else "0" for a in ATTRIBUTES
        }
        # Copied: the in-the-wild frame, unchanged integers.
        assert tuple(int(got[c]) for c in ("x_1", "y_1", "width", "height")) == boxes[image_id]
        assert tuple(int(got[c]) for c in LANDMARK_COLUMNS) == landmarks_for(boxes[image_id])


def dot_centre(pixels: np.ndarray, colour: tuple[int, int, int]) -> tuple[float, float]:
    """Mean pixel index (x, y) of the pixels close to ``colour``."""
    distance = np.abs(pixels.astype(int) - np.array(colour)).sum(axis=2)
    ys, xs = np.nonzero(distance < 150)
    assert len(xs) > 0, f"no {colour} dot in the exported image"
    return float(xs.mean()), float(ys.mean())


@pytest.mark.parametrize("size", [48, 256])
def test_crop_moves_landmarks_with_the_pixels(
    catalog_db: Path, tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    scales: dict[str, float] = {}  # image_id -> the decoder's reduction
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, request):  # PIL's signature; records the reduction it chose
        width = self.size[0]
        answer = real_draft(self, mode, request)
        scales[Path(self.filename).name] = width / answer[1][2] if answer else 1.0
        return answer

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    out = tmp_path / "crop"
    result = export_snapshot("snap", out, catalog_db, crop=True, size=size, workers=2)
    # The 665 px face box of 000001.jpg: decoded at 1/8 for 48 px (83 px left), at 1/2
    # for 256 px (332 px; 1/4 would leave 166, below `size`).
    assert scales["000001.jpg"] == (8.0 if size == 48 else 2.0)
    if size == 48:  # the ~100 px boxes of the small JPEGs are halved where they can be
        assert sorted(scales.values()).count(2.0) >= 4

    rows = snapshot_rows(catalog_db)
    labels = read_labels(out)
    for image_id, row in rows.items():
        with Image.open(out / row["file"]) as im:
            assert im.size == (size, size) and im.mode == "RGB"
            assert im.format == ("PNG" if image_id.endswith(".png") else "JPEG")
            pixels = np.asarray(im)
        got = labels[image_id]
        for point, colour in (("nose", NOSE), ("lefteye", LEFT_EYE)):
            # Measured within 0.2 px; 0.5 catches a lost half-pixel (centre) convention.
            x, y = dot_centre(pixels, colour)
            want = float(got[f"{point}_x"]), float(got[f"{point}_y"])
            assert abs(x - want[0]) <= 0.5 and abs(y - want[1]) <= 0.5, (image_id, point)

        if image_id in scales:  # never decoded so small that the box has under `size` px
            scale = scales[image_id]
            assert min(row["x_2"] - row["x_1"], row["y_2"] - row["y_1"]) / scale >= size

        # The CelebA box, by the documented formula, in the exported frame.
        fx1, fy1, fx2, fy2 = row["x_1"], row["y_1"], row["x_2"], row["y_2"]
        sx, sy = size / (fx2 - fx1), size / (fy2 - fy1)
        x_1, y_1, w, h = next(b for imgs in IMAGES.values() for i, _, b in imgs if i == image_id)
        assert float(got["x_1"]) == pytest.approx((x_1 - fx1) * sx, abs=0.01)
        assert float(got["y_1"]) == pytest.approx((y_1 - fy1) * sy, abs=0.01)
        assert float(got["width"]) == pytest.approx(w * sx, abs=0.01)
        assert float(got["height"]) == pytest.approx(h * sy, abs=0.01)
        # The face box is the CelebA box shrunk by 5%: its edges sit just outside the crop.
        assert -0.05 * size < float(got["x_1"]) < 0 < size < float(got["x_1"]) + float(got["width"])
    # ... which the export says, in the result (the CLI prints it) and in export.json
    assert result.outside == len(rows)
    said = json.loads((out / "export.json").read_text())["coordinates"]
    assert f"{size} x {size} crop" in said and "negative" in said


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("crop", [False, True])
def test_resume_skips_finished_files_and_leaves_no_temporaries(
    catalog_db: Path, tmp_path: Path, crop: bool
) -> None:
    out = tmp_path / "out"
    k = 4

    def stop_after_k(done: int, total: int) -> None:
        if done >= k:
            raise Interrupt

    with pytest.raises(Interrupt):
        export_snapshot(
            "snap", out, catalog_db, crop=crop, size=32, workers=1, progress=stop_after_k
        )
    first = {p: (out / p).stat().st_mtime_ns for p in files_under(out)}
    images = {p for p in first if p not in ("export.json", "labels.csv")}
    # The worker may have finished a few more files than the callback saw before it
    # raised (it does not wait for the callback), but every file is whole or absent.
    assert k <= len(images) <= 9
    assert "labels.csv" not in first  # written last: its absence marks an unfinished export
    assert not [p for p in out.rglob("*.part")]

    # A temporary left by a killed run (no chance to clean up) is removed on resume.
    stale = out / "train" / ".000002.jpg.0123456789ab.part"
    stale.write_bytes(b"half a file")
    stale_labels = out / ".labels.csv.0123456789ab.part"
    stale_labels.write_text("image_id\n")
    calls: list[tuple[int, int]] = []
    result = export_snapshot(
        "snap", out, catalog_db, crop=crop, size=32, progress=lambda d, t: calls.append((d, t))
    )
    assert (result.n_skipped, result.n_written) == (len(images), 9 - len(images))
    assert calls[0] == (len(images), 9) and calls[-1] == (9, 9)
    assert not stale.exists() and not stale_labels.exists()
    assert not [p for p in out.rglob("*.part")]
    for p in images:  # skipped, not rewritten
        assert (out / p).stat().st_mtime_ns == first[p]
    assert len(read_labels(out)) == 9

    # A complete export done again writes nothing.
    again = export_snapshot("snap", out, catalog_db, crop=crop, size=32)
    assert (again.n_skipped, again.n_written) == (9, 0)
    if not crop:
        for row in snapshot_rows(catalog_db).values():
            assert (out / row["file"]).read_bytes() == row["src"].read_bytes()


def test_copy_resume_redoes_a_file_of_the_wrong_size(catalog_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_snapshot("snap", out, catalog_db)
    row = next(iter(snapshot_rows(catalog_db).values()))
    (out / row["file"]).write_bytes(b"not the image")
    result = export_snapshot("snap", out, catalog_db)
    assert result.n_written == 1
    assert (out / row["file"]).read_bytes() == row["src"].read_bytes()


def test_refuses_a_folder_of_another_export(catalog_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_snapshot("snap", out, catalog_db)
    before = {p: (out / p).read_bytes() for p in files_under(out)}

    with pytest.raises(ExportError, match=r"snapshot 'snap' .*copied.*not of snapshot 'other'"):
        export_snapshot("other", out, catalog_db)
    with pytest.raises(ExportError, match="cropped to 256x256"):
        export_snapshot("snap", out, catalog_db, crop=True)
    assert {p: (out / p).read_bytes() for p in files_under(out)} == before

    cropped = tmp_path / "cropped"
    export_snapshot("snap", cropped, catalog_db, crop=True, size=32)
    with pytest.raises(ExportError, match="cropped to 32x32.*cropped to 64x64"):
        export_snapshot("snap", cropped, catalog_db, crop=True, size=64)

    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty and holds no export.json"):
        export_snapshot("snap", stranger, catalog_db)
    assert files_under(stranger) == {"notes.txt"}


def test_refuses_a_folder_another_export_is_writing(catalog_db: Path, tmp_path: Path) -> None:
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a running export holds it
        with pytest.raises(ExportError, match="Another export is writing"):
            export_snapshot("snap", out, catalog_db)
    finally:
        os.close(fd)
    assert files_under(out) == set()
    assert export_snapshot("snap", out, catalog_db).n_written == 9  # free again


def test_unknown_snapshot_names_the_known_ones(catalog_db: Path, tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match=r"No snapshot 'nope'\. Known: other, snap"):
        export_snapshot("nope", tmp_path / "out", catalog_db)
    assert not (tmp_path / "out").exists()


def test_catalog_without_snapshots(tmp_path: Path, small_celeba: Path) -> None:
    db = tmp_path / "plain.duckdb"
    ingest(small_celeba, db, scan_images=False)
    with pytest.raises(SnapshotError, match="There are none yet"):
        export_snapshot("snap", tmp_path / "out", db)


def test_missing_source_image_is_named(tmp_path: Path) -> None:
    db = build_catalog(tmp_path)
    row = next(r for r in snapshot_rows(db).values() if r["image_id"] == "000005.jpg")
    os.unlink(row["src"])
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=r"1 missing on disk: 000005\.jpg \(.*part"):
        export_snapshot("snap", out, db)
    assert not out.exists()  # refused before anything was written


def test_unreadable_image_is_named_and_the_rest_resumes(tmp_path: Path) -> None:
    db = build_catalog(tmp_path)
    row = snapshot_rows(db)["000005.jpg"]
    good = row["src"].read_bytes()
    row["src"].write_bytes(b"\xff\xd8 not really a JPEG")
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=r"image 000005\.jpg: cropping .*000005\.jpg"):
        export_snapshot("snap", out, db, crop=True, size=32, workers=2)
    assert not (out / row["file"]).exists() and not list(out.rglob("*.part"))
    row["src"].write_bytes(good)
    result = export_snapshot("snap", out, db, crop=True, size=32)
    assert result.n_written + result.n_skipped == 9 and result.n_written >= 1
    assert (out / row["file"]).exists()


def test_an_image_flagged_unreadable_is_never_exported(tmp_path: Path) -> None:
    """Copying needs no decoding, but a file the catalog knows is bad is not copied
    either; --skip-bad exports the rest and says what it left out."""
    db = build_catalog(tmp_path)
    row = snapshot_rows(db)["000008.jpg"]
    row["src"].write_bytes(b"\xff\xd8 not really a JPEG")
    ingest(tmp_path / "celeba", db)  # marks it unreadable; the snapshot still holds it
    out = tmp_path / "out"
    for crop in (False, True):
        with pytest.raises(
            SnapshotImageError,
            match=r"1 marked unusable.*000008\.jpg \(.*part1"
            r".*unreadable_image.*--skip-bad.*create a new snapshot",
        ):
            export_snapshot("snap", out, db, crop=crop)
    assert not out.exists()
    result = export_snapshot("snap", out, db, skip_bad=True)
    assert result.n_images == result.n_written == 8
    assert [(b.image_id, b.reason) for b in result.skipped] == [("000008.jpg", "unreadable_image")]
    assert not any(f.endswith("000008.jpg") for f in files_under(out))
    assert "000008.jpg" not in read_labels(out)
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["n_images"] == 8
    assert [(b["image_id"], b["reason"]) for b in manifest["skipped"]] == [
        ("000008.jpg", "unreadable_image")
    ]


@pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="POSIX symlinks")
def test_a_link_out_of_the_image_root_is_never_followed(tmp_path: Path) -> None:
    db = build_catalog(tmp_path)
    row = snapshot_rows(db)["000005.jpg"]
    secret = tmp_path / "passwd"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    row["src"].unlink()
    os.symlink(secret, row["src"])  # since the ingest: the catalog does not know yet
    outside = tmp_path / "outside"
    outside.mkdir()
    draw_image(outside / "000099.jpg", (100, 100), (10, 10, 50, 50))
    os.symlink(outside, tmp_path / "celeba" / "img_celeba" / "linked")
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=r"link out of the image root.*000005\.jpg.*passwd"):
        export_snapshot("snap", out, db)
    assert not out.exists()

    ingest(tmp_path / "celeba", db)  # records both links; indexes neither target
    con = connect(db, read_only=True)
    try:
        found = con.execute(
            "SELECT image_id, severity FROM problems WHERE check_name = 'image_outside_root' "
            "ORDER BY image_id NULLS LAST"
        ).fetchall()
        indexed = {r[0] for r in con.execute("SELECT image_id FROM images").fetchall()}
        clean = {r[0] for r in con.execute("SELECT image_id FROM clean_images").fetchall()}
    finally:
        con.close()
    assert found == [("000005.jpg", "error"), (None, "error")]  # the file, then the folder
    assert "000099.jpg" not in indexed and "000005.jpg" not in clean
    with pytest.raises(ExportError, match=r"000005\.jpg.*image_outside_root"):
        export_snapshot("snap", out, db)
    result = export_snapshot("snap", out, db, skip_bad=True)
    skipped = [(b.image_id, b.reason) for b in result.skipped]
    assert skipped == [("000005.jpg", "image_outside_root")]
    assert all(b"root:x" not in p.read_bytes() for p in out.rglob("*") if p.is_file())


def test_bad_arguments(catalog_db: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size"):
        export_snapshot("snap", tmp_path / "a", catalog_db, crop=True, size=0)
    with pytest.raises(ValueError, match="workers"):
        export_snapshot("snap", tmp_path / "a", catalog_db, workers=0)
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        export_snapshot("snap", target, catalog_db)


def test_the_size_and_workers_checks_the_writers_share() -> None:
    from catalog import files

    for bad in (0, -3, 2.5, True, "64"):
        with pytest.raises(ValueError, match="size must be a positive whole number"):
            files.check_size(bad)
    for bad in (0, -1, False):
        with pytest.raises(ValueError, match="workers must be at least 1"):
            files.check_workers(bad)
    files.check_size(1)
    files.check_workers(None)
    files.check_workers(4)
