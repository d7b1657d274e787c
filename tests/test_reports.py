"""`celebcat report landmarks`: a landmark run's NME grouped by CelebA attributes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import snapshot_catalog

from catalog.db import connect
from catalog.reports import landmark_report
from catalog.results import RunError, start_run, write_landmark_predictions


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_catalog(tmp_path_factory.mktemp("reports"), ids=12, seed=3)


@pytest.fixture
def run(template_db: Path, tmp_path: Path) -> tuple[Path, str, dict[str, float]]:
    """A catalog copy with a run whose predictions have known NMEs (some failures)."""
    db = tmp_path / "c.duckdb"
    shutil.copyfile(template_db, db)
    con = connect(db, read_only=True)
    try:
        ids = [r[0] for r in con.execute(
            "SELECT image_id FROM snapshot_images WHERE snapshot = 's' ORDER BY 1"
        ).fetchall()]  # fmt: skip
    finally:
        con.close()
    run_id = start_run(db, "landmarks", {"snapshot": "s"}, "s")
    errors = {i: 0.02 + 0.2 * (k % 4 == 0) + 0.001 * k for k, i in enumerate(ids)}
    write_landmark_predictions(db, run_id, {
        "image_id": ids, "landmarks": np.zeros((len(ids), 5, 2)),
        "nme": [errors[i] for i in ids],
    })  # fmt: skip
    return db, run_id, errors


def _attrs(db: Path) -> dict[str, tuple[int, int]]:
    con = connect(db, read_only=True)
    try:
        return {r[0]: (r[1], r[2]) for r in con.execute(
            'SELECT image_id, "Male", "Eyeglasses" FROM attributes'
        ).fetchall()}  # fmt: skip
    finally:
        con.close()


def test_grouped_by_male_and_eyeglasses(run: tuple[Path, str, dict[str, float]]) -> None:
    db, run_id, errors = run
    report = landmark_report(db, run_id, ["Male", "Eyeglasses"])
    assert report.columns == ["Male", "Eyeglasses", "nme_mean", "nme_median", "failure_rate",
                              "images"]  # fmt: skip
    assert sum(r[-1] for r in report.rows) == len(errors)
    assert len({r[:2] for r in report.rows}) == len(report.rows) >= 2
    attrs = _attrs(db)
    for male, glasses, mean, median, failures, count in report.rows:
        group = [e for i, e in errors.items() if attrs.get(i) == (male, glasses)]
        assert count == len(group)
        assert mean == pytest.approx(np.mean(group))
        assert median == pytest.approx(np.median(group))
        assert failures == pytest.approx(np.mean([e > 0.1 for e in group]))


def test_ungrouped_report_is_one_row(run: tuple[Path, str, dict[str, float]]) -> None:
    db, run_id, errors = run
    report = landmark_report(db, run_id, [])
    assert report.columns == ["nme_mean", "nme_median", "failure_rate", "images"]
    ((mean, _, failures, count),) = report.rows
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
