"""``celebcat stats``: every statistic against a plain-Python count of the same files."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from pathlib import Path

import duckdb
import pytest
from conftest import attr_row, attr_txt, bbox_txt, pairs_txt, write
from PIL import Image

from catalog import snapshots
from catalog.formats import ATTRIBUTES, PARTITION_NAMES
from catalog.ingest import ingest
from catalog.selection import select
from catalog.stats import QUANTILES, compute_stats, write_plots

# Images per identity: one identity short of everything, two above the 25 the reference
# selection needs, and the counts in between so the histogram has gaps (k = 2, 4, ...).
IMAGES_PER_ID = {101: 1, 102: 3, 103: 3, 104: 6, 105: 25, 106: 27}


def _data() -> dict[str, dict]:
    """The hand-made dataset as plain Python values, image by image."""
    ids = [identity for identity, n in IMAGES_PER_ID.items() for _ in range(n)]
    data: dict[str, dict] = {}
    for i, identity in enumerate(ids, start=1):
        image_id = f"{i:06d}.jpg"
        # Each attribute j is positive on its own arithmetic pattern, so the 40 shares
        # differ from each other (and a column mix-up would show).
        positives = {a for j, a in enumerate(ATTRIBUTES) if (i + j) % (j % 7 + 2) == 0}
        data[image_id] = {
            "identity": identity,
            "positives": positives,
            "box": (i % 13, i % 17, 60 + (i * 37) % 120, 80 + (i * 53) % 110),
            "partition": 0 if i % 5 < 3 else (1 if i % 5 == 3 else 2),
            # Every 7th image has no file, so the image index is a strict subset.
            "size": None if i % 7 == 0 else (150 + (i * 29) % 200, 160 + (i * 31) % 240),
        }
    return data


DATA = _data()


def _write_dataset(folder: Path, images: bool) -> Path:
    write(
        folder,
        {
            "list_attr_celeba.txt": attr_txt(
                [attr_row(i, d["positives"]) for i, d in DATA.items()]
            ),
            "list_bbox_celeba.txt": bbox_txt({i: d["box"] for i, d in DATA.items()}),
            "identity_CelebA.txt": pairs_txt({i: d["identity"] for i, d in DATA.items()}),
            "list_eval_partition.txt": pairs_txt({i: d["partition"] for i, d in DATA.items()}),
        },
    )
    if images:
        (folder / "img_celeba").mkdir()
        for image_id, d in DATA.items():
            if d["size"] is not None:
                Image.new("RGB", d["size"], (90, 90, 90)).save(folder / "img_celeba" / image_id)
    return folder


@pytest.fixture
def catalog_with_images(tmp_path: Path) -> Path:
    db = tmp_path / "with_images.duckdb"
    ingest(_write_dataset(tmp_path / "with_images", images=True), db)
    return db


@pytest.fixture
def catalog_without_images(tmp_path: Path) -> Path:
    db = tmp_path / "without_images.duckdb"
    ingest(_write_dataset(tmp_path / "without_images", images=False), db, scan_images=False)
    return db


def _quantile(values: list[int], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, DuckDB's quantile_cont)."""
    values = sorted(values)
    pos = (len(values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def _expected(
    image_ids: list[str], identity_of: dict[str, int], many: int = 25, box: tuple = (100, 100)
) -> dict:
    """Every statistic, computed in plain Python over ``image_ids``, with ``many`` images
    per identity and face boxes under ``box`` (width, height) as the thresholds."""
    rows = [DATA[i] for i in image_ids]
    n = len(rows)
    positive = {a: sum(a in r["positives"] for r in rows) for a in ATTRIBUTES}
    per_id = Counter(identity_of[i] for i in image_ids)
    hist = Counter(per_id.values())
    widths = [r["box"][2] for r in rows]
    heights = [r["box"][3] for r in rows]
    sizes = [r["size"] for r in rows if r["size"] is not None]
    partitions = []
    for p, name in PARTITION_NAMES.items():
        members = [i for i in image_ids if DATA[i]["partition"] == p]
        if members:
            partitions.append((name, len(members), len({identity_of[i] for i in members})))

    def quantiles(xs: list[int], ys: list[int]) -> list[tuple]:
        return [(label, _quantile(xs, q), _quantile(ys, q)) for label, q in QUANTILES]

    return {
        "n": n,
        "positive": positive,
        "share": {a: p / n for a, p in positive.items()},
        "identities": len(per_id),
        "hist": [(k, hist.get(k, 0)) for k in range(1, max(per_id.values()) + 1)],
        "per_id": list(per_id.values()),
        "small": sum(w < box[0] or h < box[1] for w, h in zip(widths, heights, strict=True)),
        "many": many,
        "box": box,
        "bbox_q": quantiles(widths, heights),
        "image_q": quantiles([w for w, _ in sizes], [h for _, h in sizes]) if sizes else None,
        "n_sized": len(sizes),
        "partitions": partitions,
    }


def _same_quantiles(got: list[tuple], expected: list[tuple]) -> None:
    """Rows (label, width, height) equal up to the table's rounding to 0.1 px.

    Not round(expected, 1) == got: a value on a .x5 boundary rounds either way
    depending on the last bit of the interpolation, which differs between engines.
    """
    assert [label for label, _, _ in got] == [label for label, _, _ in expected]
    for (_, w, h), (_, ew, eh) in zip(got, expected, strict=True):
        assert w == pytest.approx(ew, abs=0.05 + 1e-9) and h == pytest.approx(eh, abs=0.05 + 1e-9)


def _check(stats, exp: dict) -> None:
    """Assert every statistic of ``stats`` equals the plain-Python ``exp``."""
    assert stats.n_images == exp["n"]
    assert stats.n_identities == exp["identities"]
    assert stats.male_share == pytest.approx(exp["share"]["Male"], abs=1e-12)
    assert stats.blurry_share == pytest.approx(exp["share"]["Blurry"], abs=1e-12)
    # attribute table: every attribute, exact counts, shares rounded, largest first
    got = {a: (p, s) for a, p, s in stats.attributes.rows}
    assert got == {a: (exp["positive"][a], round(exp["share"][a], 4)) for a in ATTRIBUTES}
    counts = [p for _, p, _ in stats.attributes.rows]
    assert counts == sorted(counts, reverse=True)
    # images per identity
    assert stats.images_per_identity.rows == exp["hist"]
    assert stats.images_per_id_min == min(exp["per_id"])
    assert stats.images_per_id_median == statistics.median(exp["per_id"])
    assert stats.images_per_id_max == max(exp["per_id"])
    assert stats.ids_with_many == sum(n >= exp["many"] for n in exp["per_id"])
    assert (stats.many_images, stats.small_box) == (exp["many"], exp["box"])
    # boxes
    _same_quantiles(stats.bbox_sizes.rows, exp["bbox_q"])
    assert stats.small_box_share == pytest.approx(exp["small"] / exp["n"], abs=1e-12)
    assert sum(n for _, _, n in stats.bbox_bins.rows) == exp["n"]
    # images and partitions
    if exp["image_q"] is None:
        assert stats.image_sizes is None and stats.image_size_bins is None
    else:
        _same_quantiles(stats.image_sizes.rows, exp["image_q"])
        assert sum(n for _, _, n in stats.image_size_bins.rows) == exp["n_sized"]
    assert stats.partitions.rows == exp["partitions"]
    summary = dict(stats.summary.rows)
    assert summary["images"] == exp["n"]
    assert summary["identities"] == exp["identities"]
    assert summary["Male share"] == round(exp["share"]["Male"], 4)
    assert summary["Blurry share"] == round(exp["share"]["Blurry"], 4)
    many, (w, h) = exp["many"], exp["box"]
    assert summary[f"identities with >= {many} images"] == sum(n >= many for n in exp["per_id"])
    label = f"{w} px wide or high" if w == h else f"{w} px wide or {h} px high"
    assert summary[f"boxes under {label}"] == exp["small"]
    assert summary["images with a size in the image index"] == exp["n_sized"]


def test_whole_catalog_statistics_match_a_plain_count(catalog_with_images: Path) -> None:
    stats = compute_stats(catalog_with_images)
    exp = _expected(list(DATA), {i: d["identity"] for i, d in DATA.items()})
    _check(stats, exp)
    # the hand-made data were chosen to exercise these; guard against a silent change
    assert exp["hist"][1] == (2, 0) and stats.ids_with_many == 2 and 0 < exp["small"] < exp["n"]
    assert stats.scope == "whole catalog" and stats.splits is None
    assert stats.notes == []


def test_thresholds_are_parameters(catalog_with_images: Path) -> None:
    stats = compute_stats(catalog_with_images, many_images=6, small_box=120, bin_px=50)
    boxes = [d["box"] for d in DATA.values()]
    assert stats.ids_with_many == sum(n >= 6 for n in IMAGES_PER_ID.values()) == 3
    assert stats.small_box_share == pytest.approx(
        sum(w < 120 or h < 120 for _, _, w, h in boxes) / len(boxes)
    )
    expected_bins = Counter(((w // 50) * 50, (h // 50) * 50) for _, _, w, h in boxes)
    assert stats.bbox_bins.rows == sorted((w, h, n) for (w, h), n in expected_bins.items())


def test_snapshot_statistics_cover_only_its_images(catalog_with_images: Path) -> None:
    db = catalog_with_images
    # Every image clean, identities with >= 5 images eligible (104, 105, 106): two of
    # them, 5 images each, split 3/1/1 and nothing held out.
    select(
        db,
        drop_blurry=0,
        min_box_w=0,
        min_box_h=0,
        min_images_per_id=5,
        n_ids=2,
        images_per_id=5,
        holdout_ids=0,
        query_ids=0,
        distractor_ids=0,
        query_images=0,
        distractor_images=0,
        train_per_id=3,
        val_per_id=1,
        test_per_id=1,
    )
    snapshots.create("small", db)
    con = duckdb.connect(str(db), read_only=True)
    frozen = dict(
        con.execute(
            "SELECT image_id, identity FROM snapshot_images WHERE snapshot = 'small'"
        ).fetchall()
    )
    con.close()
    assert len(frozen) == 10

    stats = compute_stats(db, snapshot="small")
    # the thresholds are the snapshot's parameters: 5 images per identity, no box cut
    _check(stats, _expected(sorted(frozen), frozen, many=5, box=(0, 0)))
    assert stats.scope == "snapshot small"
    assert stats.splits.rows == [("train", 6, 2), ("val", 2, 2), ("test", 2, 2)]
    # the whole-catalog numbers are unchanged by the snapshot's existence
    assert compute_stats(db).n_images == len(DATA)


def test_thresholds_are_the_parameters_in_force_or_the_snapshots(
    catalog_with_images: Path,
) -> None:
    db = catalog_with_images
    data = {i: d["identity"] for i, d in DATA.items()}
    _check(compute_stats(db), _expected(list(DATA), data))  # the defaults: 25, 100 x 100
    select(
        db,
        drop_blurry=0,
        min_box_w=80,
        min_box_h=120,
        min_images_per_id=3,
        n_ids=3,
        images_per_id=3,
        holdout_ids=0,
        train_per_id=1,
        val_per_id=1,
        test_per_id=1,
    )
    stats = compute_stats(db)
    _check(stats, _expected(list(DATA), data, many=3, box=(80, 120)))
    assert stats.as_dict()["thresholds"] == {
        "min_images_per_id": 3,
        "min_box_w": 80,
        "min_box_h": 120,
    }
    snapshots.create("then", db)
    select(db, min_box_w=100, min_box_h=100, min_images_per_id=6, images_per_id=3, n_ids=2)
    assert compute_stats(db).many_images == 6  # in force now
    then = compute_stats(db, snapshot="then")  # the snapshot's own
    assert (then.many_images, then.small_box) == (3, (80, 120))
    # given thresholds win
    assert compute_stats(db, many_images=2, small_box=(10, 20)).small_box == (10, 20)


def test_unknown_snapshot_names_the_known_ones(catalog_with_images: Path) -> None:
    with pytest.raises(snapshots.SnapshotError, match="There are none yet"):
        compute_stats(catalog_with_images, snapshot="nope")
    select(
        catalog_with_images,
        drop_blurry=0,
        min_box_w=0,
        min_box_h=0,
        min_images_per_id=5,
        n_ids=1,
        images_per_id=5,
        holdout_ids=0,
        query_ids=0,
        distractor_ids=0,
        query_images=0,
        distractor_images=0,
        train_per_id=5,
        val_per_id=0,
        test_per_id=0,
    )
    snapshots.create("a1", catalog_with_images)
    with pytest.raises(snapshots.SnapshotError, match=r"No snapshot 'nope'\. Known: a1"):
        compute_stats(catalog_with_images, snapshot="nope")


def test_catalog_without_image_index_says_so(catalog_without_images: Path) -> None:
    stats = compute_stats(catalog_without_images)
    exp = _expected(list(DATA), {i: d["identity"] for i, d in DATA.items()})
    exp["image_q"], exp["n_sized"] = None, 0
    _check(stats, exp)
    assert any("no image index" in note for note in stats.notes)
    assert "image sizes, pixels (image index)" not in stats.tables()


def test_empty_catalog_does_not_fail(tmp_path: Path) -> None:
    # Only a partition file: no attributes, boxes or identities to describe.
    data = write(tmp_path / "data", {"list_eval_partition.txt": pairs_txt({"000001.jpg": 0})})
    db = tmp_path / "c.duckdb"
    ingest(data, db, scan_images=False)
    stats = compute_stats(db)
    assert stats.n_images == 1 and stats.n_identities == 0
    assert stats.male_share is None and stats.images_per_identity.rows == []
    assert stats.bbox_sizes.rows[0] == ("min", None, None)
    assert stats.partitions.rows == [("train", 1, 0)]
    assert "Attribute shares are over the 0 of 1 images that have attributes." in stats.notes
    assert [p.name for p in write_plots(stats, tmp_path / "plots")] == ["partitions.png"]


def test_as_dict_holds_the_tables(catalog_without_images: Path) -> None:
    out = compute_stats(catalog_without_images).as_dict()
    assert out["images"] == len(DATA) and out["image_sizes"] is None
    assert {r["attribute"] for r in out["attributes"]} == set(ATTRIBUTES)
    train = [d["identity"] for d in DATA.values() if d["partition"] == 0]
    assert out["partitions"][0] == {
        "partition": "train",
        "images": len(train),
        "identities": len(set(train)),
    }


@pytest.mark.parametrize("with_images", [True, False])
def test_write_plots_writes_readable_pngs(
    with_images: bool, catalog_with_images: Path, catalog_without_images: Path, tmp_path: Path
) -> None:
    db = catalog_with_images if with_images else catalog_without_images
    paths = write_plots(compute_stats(db), tmp_path / "plots")
    expected = [
        "attribute_shares.png",
        "images_per_identity.png",
        "bbox_sizes.png",
        "partitions.png",
    ]
    if with_images:
        expected.insert(3, "image_sizes.png")
    assert [p.name for p in paths] == expected
    for path in paths:
        assert path.parent == tmp_path / "plots" and path.stat().st_size > 0
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.width >= 400 and image.height >= 300
