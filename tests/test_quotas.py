"""Attribute quotas: shares met within a point, deterministic, refused when impossible."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import query

from catalog import snapshots
from catalog.ingest import ingest
from catalog.quotas import QuotaError, parse_quota
from catalog.selection import select
from catalog.synth import synthesize

PARAMS = dict(
    n_ids=40,
    min_images_per_id=20,
    images_per_id=20,
    holdout_ids=10,
    query_ids=5,
    distractor_ids=5,
    train_per_id=14,
    val_per_id=3,
    test_per_id=3,
)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("quotas")
    synthesize(root / "data", ids=400, seed=11, annotations_only=True)
    path = root / "c.duckdb"
    ingest(root / "data", path, scan_images=False)
    select(path, quotas={}, **PARAMS)
    return path


def shares(db: Path) -> dict[str, float]:
    row = query(
        db,
        "SELECT avg(Male::int), avg(Eyeglasses::int), avg(Wearing_Hat::int) "
        "FROM selection JOIN attributes USING (image_id)",
    )[0]
    return dict(zip(["Male", "Eyeglasses", "Wearing_Hat"], row, strict=True))


def identity_male_share(db: Path) -> float:
    return query(
        db,
        "SELECT avg(m) FROM (SELECT identity, (avg(Male::int) >= 0.5)::int AS m "
        "FROM selection JOIN attributes USING (image_id) GROUP BY identity)",
    )[0][0]


def test_quotas_are_met_within_one_point(db: Path) -> None:
    plain = shares(db)
    quotas = {"Male": 0.5, "Eyeglasses": 0.15, "Wearing_Hat": 0.10}
    summary = select(db, quotas=quotas)
    got = shares(db)
    for name, target in quotas.items():
        assert abs(got[name] - target) <= 0.01 + 1e-9, (name, got[name])
    assert abs(identity_male_share(db) - 0.5) <= 0.01 + 1e-9
    # the quotas moved things (the plain sample is not already there)
    assert abs(plain["Eyeglasses"] - 0.15) > 0.01 or abs(plain["Male"] - 0.5) > 0.01
    # every selected identity still gives exactly images_per_id images, and the
    # split sizes are those of the parameters
    assert query(db, "SELECT DISTINCT count(*) FROM selection GROUP BY identity") == [(20,)]
    assert summary.selected_identities == 40 and summary.splits["train"] == (14 * 30, 30)
    assert [r[0] for r in summary.quotas] == ["Eyeglasses", "Male", "Wearing_Hat"]


def test_quotas_are_deterministic_and_survive_reingest(db: Path, tmp_path: Path) -> None:
    quotas = {"Male": 0.5, "Eyeglasses": 0.15}
    select(db, quotas=quotas)
    first = query(db, "SELECT image_id FROM selection ORDER BY 1")
    select(db, quotas=quotas)
    assert query(db, "SELECT image_id FROM selection ORDER BY 1") == first
    data = Path(query(db, "SELECT value FROM catalog_info WHERE key = 'data_dir'")[0][0])
    again = tmp_path / "again.duckdb"
    ingest(data, again, scan_images=False)
    select(again, quotas=quotas, **PARAMS)
    assert query(again, "SELECT image_id FROM selection ORDER BY 1") == first


def test_impossible_quota_is_named_and_changes_nothing(db: Path) -> None:
    select(db, quotas={})
    before = query(db, "SELECT image_id FROM selection ORDER BY 1")
    with pytest.raises(QuotaError, match=r"Quota Eyeglasses=0.9 cannot be met: .* reaches"):
        select(db, quotas={"Eyeglasses": 0.9})
    assert query(db, "SELECT image_id FROM selection ORDER BY 1") == before
    assert query(db, "SELECT count(*) FROM quotas") == [(0,)]


def test_clearing_quotas_restores_the_plain_sample(db: Path) -> None:
    select(db, quotas={})
    plain = query(db, "SELECT image_id FROM selection ORDER BY 1")
    select(db, quotas={"Male": 0.5})
    assert query(db, "SELECT image_id FROM selection ORDER BY 1") != plain
    select(db, quotas={})
    assert query(db, "SELECT image_id FROM selection ORDER BY 1") == plain


def test_snapshot_records_quotas(db: Path) -> None:
    select(db, quotas={"Male": 0.5})
    snap = snapshots.create("quota-snap", db)
    assert snap.quotas == {"Male": 0.5}
    select(db, quotas={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Male", "expected ATTRIBUTE=SHARE"),
        ("male=0.5", "did you mean Male"),
        ("Male=half", "not a number"),
        ("Male=1.5", "between 0 and 1"),
    ],
)
def test_quota_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(QuotaError, match=message):
        parse_quota(text)
    assert parse_quota("Wearing_Hat=0.05") == ("Wearing_Hat", 0.05)
