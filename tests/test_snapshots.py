"""Snapshots: frozen, hashed, immutable selections; and the face boxes they carry."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
from conftest import attr_row, attr_txt, bbox_txt, pairs_txt, query, write
from PIL import Image

from catalog import snapshots
from catalog.ingest import ingest
from catalog.selection import select
from catalog.synth import synthesize

PARAMS = dict(
    n_ids=10,
    min_images_per_id=20,
    images_per_id=20,
    holdout_ids=4,
    query_ids=2,
    distractor_ids=2,
    train_per_id=14,
    val_per_id=3,
    test_per_id=3,
)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    synthesize(tmp_path / "data", ids=50, seed=5, annotations_only=True)
    path = tmp_path / "c.duckdb"
    ingest(tmp_path / "data", path, scan_images=False)
    select(path, **PARAMS)
    return path


def half_up(value: float) -> int:
    """SQL's round() of a positive value (Python's round() rounds half to even)."""
    return math.floor(value + 0.5)


def test_snapshot_freezes_selection_split_and_labels(db: Path) -> None:
    snap = snapshots.create("base", db)
    frozen = query(
        db,
        "SELECT image_id, identity, split FROM snapshot_images WHERE snapshot = 'base' ORDER BY 1",
    )
    current = query(
        db,
        "SELECT s.image_id, s.identity, r.split FROM selection s "
        "LEFT JOIN recognition_split r USING (image_id) ORDER BY 1",
    )
    assert frozen == current
    assert snap.n_images == len(frozen) == 200 and snap.n_identities == 10
    boxes = {
        r[0]: r[1:] for r in query(db, "SELECT image_id, x_1, y_1, x_2, y_2 FROM snapshot_images")
    }
    lines = "\n".join(
        f"{i}:{k}:{s or ''}:" + ",".join(str(v) for v in boxes[i] if v is not None)
        for i, k, s in frozen
    )
    assert snap.hash == hashlib.sha256(lines.encode()).hexdigest()
    # labels: contiguous 0..C-1 over the closed-set identities, none for held-out ones
    labels = query(
        db, "SELECT identity, label FROM snapshot_labels WHERE snapshot = 'base' ORDER BY label"
    )
    assert [lab for _, lab in labels] == list(range(6))
    assert [k for k, _ in labels] == sorted(k for k, _ in labels)
    held = query(
        db,
        "SELECT DISTINCT label FROM snapshot_images WHERE snapshot = 'base' "
        "AND split IN ('query', 'distractor')",
    )
    assert held == [(None,)]
    assert snap.params["n_ids"] == 10 and snap.params["seed"] == 21


def test_snapshots_never_change(db: Path, tmp_path: Path) -> None:
    snap = snapshots.create("base", db)
    before = query(db, "SELECT * FROM snapshot_images ORDER BY ALL")
    select(db, seed=99)
    data = tmp_path / "data"
    (data / "identity_CelebA.txt").write_text(
        (data / "identity_CelebA.txt").read_text().replace(" 1\n", " 2\n")
    )
    ingest(data, db, scan_images=False)
    assert query(db, "SELECT * FROM snapshot_images ORDER BY ALL") == before
    assert snapshots.show("base", db)[0].hash == snap.hash
    with pytest.raises(snapshots.SnapshotError, match="exists and snapshots never change"):
        snapshots.create("base", db)


def test_same_parameters_same_hash_new_seed_new_hash(db: Path) -> None:
    a = snapshots.create("a", db)
    b = snapshots.create("b", db)
    assert a.hash == b.hash
    select(db, seed=22)
    c = snapshots.create("c", db)
    assert c.hash != a.hash
    d = snapshots.diff("a", "c", db)
    assert d.params_changed == {"seed": (21, 22)}
    assert len(d.only_a) == len(d.only_b) > 0
    assert snapshots.diff("a", "b", db).only_a == []


def test_list_show_drop_and_unknown_names(db: Path) -> None:
    snapshots.create("one", db)
    snapshots.create("two", db)
    assert [s.name for s in snapshots.list_snapshots(db)] == ["one", "two"]
    snap, splits = snapshots.show("one", db)
    assert splits["train"] == (84, 6) and splits["query"] == (4, 2)
    snapshots.drop("one", db)
    assert [s.name for s in snapshots.list_snapshots(db)] == ["two"]
    assert query(db, "SELECT count(*) FROM snapshot_images WHERE snapshot = 'one'") == [(0,)]
    with pytest.raises(snapshots.SnapshotError, match="No snapshot 'one'. Known: two"):
        snapshots.show("one", db)
    with pytest.raises(snapshots.SnapshotError, match="letters, digits"):
        snapshots.create("bad name", db)


def test_face_boxes_shrink_and_clamp(tmp_path: Path) -> None:
    # Two identities x 2 images; one box runs past the image's right and bottom edges.
    boxes = {
        "000001.jpg": (100, 100, 200, 200),
        "000002.jpg": (250, 300, 200, 200),  # image is 400 x 400: clamped
        "000003.jpg": (0, 0, 120, 140),
        "000004.jpg": (10, 20, 300, 100),
    }
    folder = write(
        tmp_path / "d",
        {
            "list_attr_celeba.txt": attr_txt([attr_row(i) for i in boxes]),
            "list_bbox_celeba.txt": bbox_txt(boxes),
            "identity_CelebA.txt": pairs_txt({i: 1 + (n >= 2) for n, i in enumerate(boxes)}),
        },
    )
    (folder / "img_celeba").mkdir()
    for name in boxes:
        Image.new("RGB", (400, 400)).save(folder / "img_celeba" / name)
    db = tmp_path / "c.duckdb"
    ingest(folder, db, workers=1)
    select(
        db,
        n_ids=2,
        min_images_per_id=2,
        images_per_id=2,
        holdout_ids=0,
        query_ids=0,
        distractor_ids=0,
        train_per_id=2,
        val_per_id=0,
        test_per_id=0,
    )
    got = {r[0]: r[1:] for r in query(db, "SELECT image_id, x_1, y_1, x_2, y_2 FROM face_boxes")}
    for name, (x, y, w, h) in boxes.items():
        expect = (
            max(half_up(x + w * 0.05 / 2), 0),
            max(half_up(y + h * 0.05 / 2), 0),
            min(half_up(x + w * (1 - 0.05 / 2)), 400),
            min(half_up(y + h * (1 - 0.05 / 2)), 400),
        )
        assert got[name] == expect, name
    assert got["000002.jpg"][2:] == (400, 400)
    snapshots.create("s", db)
    frozen = query(db, "SELECT image_id, x_1, y_1, x_2, y_2 FROM snapshot_images ORDER BY 1")
    assert {r[0]: r[1:] for r in frozen} == got


def test_same_files_same_parameters_same_hash_in_a_new_catalog(db: Path, tmp_path: Path) -> None:
    first = snapshots.create("base", db)
    again = tmp_path / "again.duckdb"
    ingest(tmp_path / "data", again, scan_images=False)
    select(again, **PARAMS)
    assert snapshots.create("base", again).hash == first.hash
