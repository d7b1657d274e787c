"""A snapshot as COCO keypoints JSON (catalog/coco.py), loaded back by pycocotools with the
catalog's boxes, points, identities and splits.

Outside CI the tests that need pycocotools skip where it is missing; on CI (CI=true)
they fail, as the [test] extra installs it.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import holdout_snapshot, query, snapshot_catalog
from PIL import Image

from catalog import coco
from catalog.coco import KEYPOINT_NAMES, CocoExportError, export_coco
from catalog.formats import LANDMARK_COLUMNS
from catalog.snapshots import SnapshotError, SnapshotImageError

ON_CI = os.environ.get("CI", "").lower() == "true"


def coco_api(path: Path) -> Any:
    """``pycocotools.coco.COCO(path)``; a skip (a failure on CI) without pycocotools."""
    try:
        from pycocotools.coco import COCO
    except ImportError:
        hint = "pip install pycocotools (in the [test] extra)"
        if ON_CI:
            pytest.fail(f"pycocotools is missing on CI: {hint}")
        pytest.skip(f"pycocotools is missing ({hint})")
    return COCO(str(path))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Snapshot ``s`` (train/val/test) and ``h`` (with held-out and unused images)."""
    db = snapshot_catalog(tmp_path_factory.mktemp("coco"), ids=12, seed=2)
    holdout_snapshot(db, images_per_id=10, train_per_id=6)
    return db


def by_celeba_id(path: Path) -> tuple[dict[str, dict], dict[int, dict]]:
    """The file's images by CelebA image id, and its annotations by image id."""
    doc = json.loads(path.read_text())
    return (
        {im["celeba_image_id"]: im for im in doc["images"]},
        {a["image_id"]: a for a in doc["annotations"]},
    )


def test_pycocotools_loads_the_snapshot_with_the_catalogs_values(
    template: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sub" / "s.json"
    result = export_coco(template, "s", out)
    api = coco_api(out)
    stored = query(
        template,
        "SELECT image_id, identity, split, label, x_1, y_1, x_2, y_2 FROM snapshot_images "
        "WHERE snapshot = 's' ORDER BY image_id",
    )
    assert len(api.getImgIds()) == len(api.getAnnIds()) == len(stored)
    assert result.n_images == result.n_annotations == len(stored)
    assert api.getCatIds() == [1] and len(api.getAnnIds(catIds=[1])) == len(stored)
    category = api.loadCats(1)[0]
    assert category["name"] == "face" and category["keypoints"] == list(KEYPOINT_NAMES)
    assert category["skeleton"] == [[1, 2], [1, 3], [2, 3], [3, 4], [3, 5], [4, 5]]
    # CelebA's numbers are the ids; file_name under the image root is the image itself
    image_id, identity, split, label, x_1, y_1, x_2, y_2 = stored[len(stored) // 2]
    coco_id = int(image_id.split(".")[0])
    image = api.loadImgs(coco_id)[0]
    assert (image["celeba_image_id"], image["identity"], image["split"], image["label"]) == (
        image_id,
        identity,
        split,
        label,
    )
    root = Path(api.dataset["info"]["image_root"])
    with Image.open(root / image["file_name"]) as im:
        assert im.size == (image["width"], image["height"])
    # the face box, exclusive ends -> COCO's [x, y, w, h]; the points as the catalog has them
    (ann,) = api.loadAnns(api.getAnnIds(imgIds=[coco_id]))
    assert ann["bbox"] == [x_1, y_1, x_2 - x_1, y_2 - y_1]
    assert ann["area"] == (x_2 - x_1) * (y_2 - y_1) and ann["iscrowd"] == 0
    marks = query(
        template,
        f"SELECT {', '.join(LANDMARK_COLUMNS)} FROM landmarks WHERE image_id = ?",
        [image_id],
    )[0]
    assert ann["keypoints"][0::3] == list(marks[0::2])  # x
    assert ann["keypoints"][1::3] == list(marks[1::2])  # y
    assert ann["keypoints"][2::3] == [2] * 5 and ann["num_keypoints"] == 5
    assert (ann["identity"], ann["split"], ann["label"]) == (identity, split, label)
    celeba = query(
        template, "SELECT x_1, y_1, width, height FROM bboxes WHERE image_id = ?", [image_id]
    )[0]
    assert ann["celeba_bbox"] == list(celeba)
    info = api.dataset["info"]
    snap_hash = query(template, "SELECT hash FROM snapshots WHERE name = 's'")[0][0]
    assert (info["snapshot"], info["snapshot_hash"], info["split"]) == ("s", snap_hash, "all")
    assert info["image_id_scheme"] == "celeba_number" and info["code_version"]
    assert api.dataset["licenses"][0]["id"] == image["license"] == 1
    assert [p.name for p in out.parent.iterdir()] == ["s.json"]  # no temporary left


def test_every_box_and_point_within_the_image(template: Path, tmp_path: Path) -> None:
    out = export_coco(template, "s", tmp_path / "s.json").path
    api = coco_api(out)
    for ann in api.loadAnns(api.getAnnIds()):
        image = api.loadImgs(ann["image_id"])[0]
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and w > 0 and h > 0
        assert x + w <= image["width"] and y + h <= image["height"]
        points = np.array(ann["keypoints"], dtype=float).reshape(5, 3)
        assert (points[:, 0] <= image["width"] - 1).all() and (points[:, 1] >= 0).all()
        # "left" is the viewer's left, as CelebA's: the left eye has the smaller x
        assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]


def test_split_filter_keeps_the_ids_of_the_whole_snapshot(template: Path, tmp_path: Path) -> None:
    whole, _ = by_celeba_id(export_coco(template, "h", tmp_path / "all.json").path)
    for split in ("val", "query", "unused"):
        out = tmp_path / f"{split}.json"
        result = export_coco(template, "h", out, split=split)
        api = coco_api(out)
        expected = query(
            template,
            "SELECT image_id FROM snapshot_images WHERE snapshot = 'h' AND "
            "coalesce(split, 'unused') = ? ORDER BY 1",
            [split],
        )
        assert len(api.getImgIds()) == len(api.getAnnIds()) == result.n_images == len(expected)
        images, anns = by_celeba_id(out)
        assert sorted(images) == [r[0] for r in expected]
        assert all(images[i]["id"] == whole[i]["id"] for i in images)  # same ids as 'all'
        assert {a["split"] for a in anns.values()} == {split}
        assert api.dataset["info"]["split"] == split
        if split != "val":  # held out, or in no split: no label
            assert {a["label"] for a in anns.values()} == {None}
    with pytest.raises(SnapshotError, match="no split 'nope'"):
        export_coco(template, "h", tmp_path / "x.json", split="nope")
    with pytest.raises(SnapshotError, match="No snapshot 'nope'"):
        export_coco(template, "nope", tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_file_names_relative_to_another_folder(template: Path, tmp_path: Path) -> None:
    data = template.parent / "data"
    out = export_coco(template, "s", tmp_path / "s.json", relative_to=data).path
    api = coco_api(out)
    images = api.loadImgs(api.getImgIds())
    assert all(im["file_name"].startswith("img_celeba/") for im in images)
    assert all((data / im["file_name"]).is_file() for im in images)
    assert api.dataset["info"]["image_root"] == data.as_posix()


def test_ids_fall_back_to_positions_for_other_names() -> None:
    numbers, scheme = coco._image_numbers(np.array(["000007.jpg", "000010.png"]))
    assert (numbers, scheme) == ([7, 10], "celeba_number")
    for names in (["000007.jpg", "b.jpg"], ["7.jpg", "007.jpg"], ["000000.jpg", "000001.jpg"]):
        numbers, scheme = coco._image_numbers(np.array(names))
        assert (numbers, scheme) == ([1, 2], "snapshot_position")


def test_image_without_landmarks_has_no_labelled_points(template: Path, tmp_path: Path) -> None:
    db = Path(tmp_path / "c.duckdb")
    db.write_bytes(template.read_bytes())
    image_id = query(db, "SELECT min(image_id) FROM snapshot_images WHERE snapshot = 's'")[0][0]
    import duckdb

    con = duckdb.connect(str(db))
    con.execute("DELETE FROM landmarks WHERE image_id = ?", [image_id])
    con.close()
    out = export_coco(db, "s", tmp_path / "s.json").path
    images, anns = by_celeba_id(out)
    ann = anns[images[image_id]["id"]]
    assert ann["keypoints"] == [0] * 15 and ann["num_keypoints"] == 0
    assert sum(a["num_keypoints"] == 5 for a in anns.values()) == len(anns) - 1


def test_refuses_a_name_not_json_or_a_folder(template: Path, tmp_path: Path) -> None:
    for name in ("s.parquet", "s", "s.json.tmp"):
        with pytest.raises(CocoExportError, match=r"\.json"):
            export_coco(template, "s", tmp_path / name)
    (tmp_path / "d.json").mkdir()
    with pytest.raises(CocoExportError, match="is a folder"):
        export_coco(template, "s", tmp_path / "d.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json"]
    export_coco(template, "s", tmp_path / "upper.JSON")  # the suffix in any case


def test_catalog_without_images_is_refused(tmp_path: Path) -> None:
    db = snapshot_catalog(tmp_path, ids=4, seed=1, images=False)
    with pytest.raises(SnapshotImageError, match="no image index"):
        export_coco(db, "s", tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "s.json"
    out.write_text("old")
    real_dump = json.dump

    def full_disk(obj: Any, f: Any, **kwargs: Any) -> None:
        f.write(json.dumps(obj, **kwargs)[:100])  # half a file, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(coco.json, "dump", full_disk)
    with pytest.raises(CocoExportError, match="no space left"):
        export_coco(template, "s", out)

    def interrupted(obj: Any, f: Any, **kwargs: Any) -> None:
        f.write("{")
        raise KeyboardInterrupt

    monkeypatch.setattr(coco.json, "dump", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_coco(template, "s", out)
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"] and out.read_text() == "old"
    monkeypatch.setattr(coco.json, "dump", real_dump)
    export_coco(template, "s", out)
    assert json.loads(out.read_text())["info"]["snapshot"] == "s"
