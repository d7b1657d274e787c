"""`celebcat report landmarks`: a landmark run's NME grouped by CelebA attributes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import snapshot_catalog, snapshot_ids

from catalog.ced import ced_auc
from catalog.db import connect
from catalog.formats import LANDMARK_COLUMNS
from catalog.reports import LANDMARK_NAMES, landmark_errors, landmark_report, write_ced_plot
from catalog.results import RunError, start_run, write_landmark_predictions


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_catalog(tmp_path_factory.mktemp("reports"), ids=12, seed=3)


@pytest.fixture
def run(template_db: Path, tmp_path: Path) -> tuple[Path, str, dict[str, float]]:
    """A catalog copy with a run whose predictions have known NMEs (some failures)."""
    db = tmp_path / "c.duckdb"
    shutil.copyfile(template_db, db)
    ids = snapshot_ids(db)
    run_id = start_run(db, "landmarks", {"snapshot": "s"}, "s")
    errors = {i: 0.02 + 0.2 * (k % 4 == 0) + 0.001 * k for k, i in enumerate(ids)}
    write_landmark_predictions(
        db,
        run_id,
        {
            "image_id": ids,
            "landmarks": np.zeros((len(ids), 5, 2)),
            "nme": [errors[i] for i in ids],
        },
    )
    return db, run_id, errors


def _attrs(db: Path) -> dict[str, tuple[int, int]]:
    con = connect(db, read_only=True)
    try:
        return {
            r[0]: (r[1], r[2])
            for r in con.execute('SELECT image_id, "Male", "Eyeglasses" FROM attributes').fetchall()
        }
    finally:
        con.close()


def test_grouped_by_male_and_eyeglasses(run: tuple[Path, str, dict[str, float]]) -> None:
    db, run_id, errors = run
    report = landmark_report(db, run_id, ["Male", "Eyeglasses"])
    assert report.columns == [
        "Male",
        "Eyeglasses",
        "nme_mean",
        "nme_median",
        "failure_rate",
        "ced_auc",
        "images",
    ]
    assert sum(r[-1] for r in report.rows) == len(errors)
    assert len({r[:2] for r in report.rows}) == len(report.rows) >= 2
    attrs = _attrs(db)
    for male, glasses, mean, median, failures, auc, count in report.rows:
        group = [e for i, e in errors.items() if attrs.get(i) == (male, glasses)]
        assert count == len(group)
        assert mean == pytest.approx(np.mean(group))
        assert median == pytest.approx(np.median(group))
        assert failures == pytest.approx(np.mean([e > 0.1 for e in group]))
        assert auc == pytest.approx(ced_auc(group))


def test_ungrouped_report_is_one_row(run: tuple[Path, str, dict[str, float]]) -> None:
    db, run_id, errors = run
    report = landmark_report(db, run_id, [])
    assert report.columns == ["nme_mean", "nme_median", "failure_rate", "ced_auc", "images"]
    ((mean, _, failures, _, count),) = report.rows
    assert count == len(errors) and mean == pytest.approx(np.mean(list(errors.values())))
    assert failures == pytest.approx(np.mean([e > 0.1 for e in errors.values()]))
    assert 0 < failures < 1


def test_unknown_attribute_and_run_are_refused(run: tuple[Path, str, dict[str, float]]) -> None:
    db, run_id, _ = run
    with pytest.raises(ValueError, match="'Glasses'"):
        landmark_report(db, run_id, ["Male", "Glasses"])
    with pytest.raises(ValueError, match="repeat"):
        landmark_report(db, run_id, ["Male", "Male"])
    with pytest.raises(RunError, match="nope"):
        landmark_report(db, "nope", ["Male"])


def _truth_and_splits(db: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    con = connect(db, read_only=True)
    try:
        truth = {
            r[0]: np.array(r[1:], dtype=np.float64).reshape(5, 2)
            for r in con.execute(
                f"SELECT image_id, {', '.join(LANDMARK_COLUMNS)} FROM landmarks"
            ).fetchall()
        }
        splits = dict(
            con.execute(
                "SELECT image_id, split FROM snapshot_images WHERE snapshot = 's'"
            ).fetchall()
        )
    finally:
        con.close()
    return truth, splits


@pytest.fixture
def shifted(template_db: Path, tmp_path: Path) -> tuple[Path, str, dict[str, np.ndarray]]:
    """A run whose prediction of landmark k is the truth moved k + 1 pixels right."""
    db = tmp_path / "c.duckdb"
    shutil.copyfile(template_db, db)
    truth, splits = _truth_and_splits(db)
    ids = sorted(splits)
    points = np.stack([truth[i] for i in ids])
    points[:, :, 0] += np.arange(1, 6)
    iod = np.linalg.norm(points[:, 1] - points[:, 0] - [1, 0], axis=1)  # true eye distance
    per_landmark = np.arange(1, 6)[None, :] / iod[:, None]
    run_id = start_run(db, "landmarks", {"snapshot": "s"}, "s")
    write_landmark_predictions(
        db, run_id, {"image_id": ids, "landmarks": points, "nme": per_landmark.mean(axis=1)}
    )
    return db, run_id, dict(zip(ids, per_landmark, strict=True))


def test_per_landmark_nme_is_each_point_over_the_eye_distance(shifted) -> None:
    db, run_id, expected = shifted
    errors = landmark_errors(db, run_id)
    assert errors.image_ids == sorted(expected) and errors.groups == ["all"] * len(expected)
    want = np.stack([expected[i] for i in errors.image_ids])
    assert np.allclose(errors.per_landmark, want)
    assert np.allclose(errors.per_landmark.mean(axis=1), errors.nme)  # same normaliser
    report = landmark_report(db, run_id, per_landmark=True)
    assert report.columns[-5:] == [f"nme_{n}" for n in LANDMARK_NAMES]
    assert np.allclose(report.rows[0][-5:], want.mean(axis=0))
    # the nose (3 px) errs less than the right mouth corner (5 px), more than an eye
    assert report.rows[0][-5] < report.rows[0][-3] < report.rows[0][-1]


def test_split_keeps_the_images_of_that_split_only(shifted) -> None:
    db, run_id, expected = shifted
    _, splits = _truth_and_splits(db)
    test_ids = sorted(i for i, s in splits.items() if s == "test")
    assert 0 < len(test_ids) < len(expected)
    assert landmark_errors(db, run_id, split="test").image_ids == test_ids
    ((mean, *_, count),) = landmark_report(db, run_id, split="test").rows
    assert count == len(test_ids)
    assert mean == pytest.approx(np.mean([expected[i].mean() for i in test_ids]))
    with pytest.raises(ValueError, match="no split 'tset'.*test"):
        landmark_report(db, run_id, split="tset")
    # selected images in no split are the 'unused' split, as the Datasets call them
    unused = sorted(i for i, s in splits.items() if s == "train")[:3]
    con = connect(db)
    try:  # (held-out identities' spare images have no split; this fixture has none)
        con.execute(
            "UPDATE snapshot_images SET split = NULL WHERE snapshot = 's' AND "
            "image_id IN (SELECT unnest(?))",
            [unused],
        )
    finally:
        con.close()
    assert landmark_errors(db, run_id, split="unused").image_ids == unused
    with pytest.raises(ValueError, match="it has test, train, unused, val"):
        landmark_report(db, run_id, split="nope")


def test_split_of_a_recreated_snapshot_is_refused(shifted) -> None:
    db, run_id, _ = shifted
    con = connect(db)
    try:
        con.execute("UPDATE snapshots SET hash = 'f00d' || hash WHERE name = 's'")
    finally:
        con.close()
    with pytest.raises(ValueError, match="now has hash f00d"):
        landmark_report(db, run_id, split="test")
    assert landmark_report(db, run_id).rows  # without a split it still reports


def test_ced_plot_is_a_png_with_a_curve_per_group(shifted, tmp_path: Path) -> None:
    db, run_id, _ = shifted
    out = write_ced_plot(db, run_id, tmp_path / "plots" / "ced.png", ["Male"], split="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    empty = start_run(db, "landmarks", {"snapshot": "s"}, "s")
    with pytest.raises(ValueError, match="celebcat align"):
        write_ced_plot(db, empty, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_a_report_without_split_says_which_splits_it_covers(shifted) -> None:
    from collections import Counter

    from catalog.reports import report_scope

    db, run_id, expected = shifted
    _, splits = _truth_and_splits(db)
    counts = Counter(splits[i] for i in expected)
    scope = report_scope(db, run_id)
    assert scope.startswith(f"covers all {len(expected)} images run {run_id} predicted: ")
    order = [s for s in ("train", "val", "test", "query", "distractor") if counts[s]]
    assert ", ".join(f"{s} {counts[s]}" for s in order) in scope  # training images named
    assert "--split test" in scope
    con = connect(db)
    try:
        con.execute("UPDATE snapshots SET hash = 'f00d' || hash WHERE name = 's'")
    finally:
        con.close()
    assert "splits are unknown" in report_scope(db, run_id)
    with pytest.raises(RunError):
        report_scope(db, "nope")


def test_attribute_groups_are_labelled_one_way() -> None:
    """Landmark reports, recognition metrics (test:<group>) and the page share one label."""
    from catalog.reports import group_label

    assert group_label(["Eyeglasses", "Male"], [True, False]) == "Eyeglasses=True,Male=False"
    assert group_label(["Smiling"], [None]) == "Smiling=None"
    assert group_label([], []) == "all"
