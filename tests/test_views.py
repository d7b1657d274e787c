"""The selection views, each checked against a plain-Python computation."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import duckdb
import pytest
from conftest import attr_row, attr_txt, bbox_txt, pairs_txt, query, write

from catalog.ingest import ingest
from catalog.selection import InfeasibleSelection, select
from catalog.synth import synthesize
from catalog.views import apply_views, view_files

PARAMS = dict(
    n_ids=12,
    min_images_per_id=20,
    images_per_id=20,
    holdout_ids=4,
    query_ids=2,
    distractor_ids=2,
    query_images=2,
    distractor_images=5,
    train_per_id=14,
    val_per_id=3,
    test_per_id=3,
    seed=7,
)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def synth_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("views")
    synthesize(root / "data", ids=60, seed=3, annotations_only=True)
    db = root / "c.duckdb"
    ingest(root / "data", db, scan_images=False)
    select(db, **PARAMS)
    return db


def reference(db: Path, p: dict) -> dict[str, object]:
    """The selection recomputed in plain Python from the raw tables."""
    blurry = dict(query(db, "SELECT image_id, Blurry FROM attributes"))
    identity = dict(query(db, "SELECT image_id, identity FROM identities"))
    boxes = {r[0]: r[1:] for r in query(db, "SELECT image_id, width, height FROM bboxes")}
    clean = sorted(
        i
        for i in blurry
        if not blurry[i]
        and i in identity
        and i in boxes
        and boxes[i][0] >= 100
        and boxes[i][1] >= 100
    )
    per_id: dict[int, list[str]] = defaultdict(list)
    for i in clean:
        per_id[identity[i]].append(i)
    eligible = {k for k, v in per_id.items() if len(v) >= p["min_images_per_id"]}
    seed = p["seed"]
    chosen = sorted(eligible, key=lambda k: (md5(f"{seed}:id:{k}"), k))[: p["n_ids"]]
    selection = {}
    for k in chosen:
        ordered = sorted(per_id[k], key=lambda i: (md5(f"{seed}:img:{i}"), i))
        for rank, i in enumerate(ordered[: p["images_per_id"]], start=1):
            selection[i] = (k, rank)
    holdout = sorted(chosen, key=lambda k: (md5(f"{seed}:holdout:{k}"), k))
    role = {}
    for n, k in enumerate(holdout, start=1):
        if n <= p["query_ids"]:
            role[k] = "query"
        elif n <= p["query_ids"] + p["distractor_ids"]:
            role[k] = "distractor"
        elif n <= p["holdout_ids"]:
            role[k] = "unused"
        else:
            role[k] = "closed"
    split = {}
    t, v, s = p["train_per_id"], p["val_per_id"], p["test_per_id"]
    for i, (k, rank) in selection.items():
        r = role[k]
        if r == "query" and rank <= p["query_images"]:
            split[i] = "query"
        elif r == "distractor" and rank <= p["distractor_images"]:
            split[i] = "distractor"
        elif r == "closed":
            split[i] = (
                "train"
                if rank <= t
                else "val"
                if rank <= t + v
                else "test"
                if rank <= t + v + s
                else None
            )
    return {
        "clean": clean,
        "eligible": sorted((k, len(per_id[k])) for k in eligible),
        "selected": sorted(chosen),
        "selection": sorted((i, k, r) for i, (k, r) in selection.items()),
        "split": sorted((i, s_) for i, s_ in split.items() if s_ is not None),
    }


def test_views_match_a_python_reference(synth_db: Path) -> None:
    ref = reference(synth_db, PARAMS)
    assert [r[0] for r in query(synth_db, "SELECT image_id FROM clean_images ORDER BY 1")] == (
        ref["clean"]
    )
    assert (
        query(synth_db, "SELECT identity, n_clean FROM eligible_identities ORDER BY 1")
        == (ref["eligible"])
    )
    assert [
        r[0] for r in query(synth_db, "SELECT identity FROM selected_identities ORDER BY 1")
    ] == ref["selected"]
    assert (
        query(synth_db, "SELECT image_id, identity, pick_in_id FROM selection ORDER BY 1")
        == (ref["selection"])
    )
    assert (
        query(synth_db, "SELECT image_id, split FROM recognition_split ORDER BY 1")
        == (ref["split"])
    )
    assert len(ref["selected"]) == PARAMS["n_ids"]


def test_split_sizes_and_no_identity_crosses_into_the_holdout(synth_db: Path) -> None:
    sizes = dict(
        query(synth_db, "SELECT split, count(DISTINCT identity) FROM recognition_split GROUP BY 1")
    )
    assert sizes == {"train": 8, "val": 8, "test": 8, "query": 2, "distractor": 2}
    per_id = query(
        synth_db, "SELECT identity, split, count(*) FROM recognition_split GROUP BY 1, 2"
    )
    counts = {(k, s): n for k, s, n in per_id}
    for (k, s), n in counts.items():
        assert n == {"train": 14, "val": 3, "test": 3, "query": 2, "distractor": 5}[s], (k, s)
    mixed = query(
        synth_db,
        "SELECT identity FROM recognition_split GROUP BY 1 HAVING "
        "count(DISTINCT CASE WHEN split IN ('query', 'distractor') THEN 'open' ELSE 'closed' END)"
        " > 1",
    )
    assert mixed == []


def test_attribute_shift_matches_python(synth_db: Path) -> None:
    shift = {r[0]: r[1:] for r in query(synth_db, "SELECT * FROM attribute_shift")}
    assert len(shift) == 40
    male_all = query(synth_db, "SELECT avg(Male::int) FROM attributes")[0][0]
    selected = {r[0] for r in query(synth_db, "SELECT image_id FROM selection")}
    male = dict(query(synth_db, "SELECT image_id, Male FROM attributes"))
    male_sel = sum(male[i] for i in selected) / len(selected)
    assert shift["Male"][0] == pytest.approx(male_all, abs=1e-4)
    assert shift["Male"][1] == pytest.approx(male_sel, abs=1e-4)
    assert shift["Male"][2] == pytest.approx(100 * (male_sel - male_all), abs=0.01)
    assert shift["Blurry"][1] == 0  # blurry images never reach the selection
    diffs = [abs(r[3]) for r in query(synth_db, "SELECT * FROM attribute_shift")]
    assert diffs == sorted(diffs, reverse=True)


def test_same_parameters_same_rows_after_reingest(synth_db: Path, tmp_path: Path) -> None:
    before = query(synth_db, "SELECT * FROM recognition_split ORDER BY 1")
    db = tmp_path / "again.duckdb"
    data = Path(query(synth_db, "SELECT value FROM catalog_info WHERE key = 'data_dir'")[0][0])
    ingest(data, db, scan_images=False)
    select(db, **PARAMS)
    assert query(db, "SELECT * FROM recognition_split ORDER BY 1") == before
    select(db, seed=8)
    assert query(db, "SELECT * FROM recognition_split ORDER BY 1") != before


def test_applying_views_twice_changes_nothing(synth_db: Path) -> None:
    con = duckdb.connect(str(synth_db))
    try:
        first = [
            (v, con.execute(f"SELECT * FROM {v} ORDER BY ALL").fetchall()) for v in apply_views(con)
        ]
        second = [
            (v, con.execute(f"SELECT * FROM {v} ORDER BY ALL").fetchall()) for v in apply_views(con)
        ]
    finally:
        con.close()
    assert first == second


def test_view_order_comes_from_dependencies() -> None:
    order = [v.name for v in view_files()]
    for view in view_files():
        for dep in view.depends_on:
            assert order.index(dep) < order.index(view.name)
    assert {
        "clean_images",
        "eligible_identities",
        "selected_identities",
        "selection",
        "face_boxes",
        "recognition_split",
        "attribute_shift",
    } <= set(order)


def test_boundaries_24_25_images_and_100px_boxes(tmp_path: Path) -> None:
    # identity 1: 25 clean images; identity 2: 24 clean + 1 blurry; identity 3: 25 images
    # but one box is 99 px wide; boxes of exactly 100 px count as clean.
    ids, attrs, boxes, ident = [], [], {}, {}
    n = 0
    for identity, count in ((1, 25), (2, 25), (3, 25)):
        for k in range(count):
            n += 1
            name = f"{n:06d}.jpg"
            ids.append(name)
            blurry = identity == 2 and k == 0
            attrs.append(attr_row(name, {"Blurry"} if blurry else set()))
            width = 99 if identity == 3 and k == 0 else 100
            boxes[name] = (0, 0, width, 100)
            ident[name] = identity
    folder = write(
        tmp_path / "d",
        {
            "list_attr_celeba.txt": attr_txt(attrs),
            "list_bbox_celeba.txt": bbox_txt(boxes),
            "identity_CelebA.txt": pairs_txt(ident),
        },
    )
    db = tmp_path / "c.duckdb"
    ingest(folder, db, scan_images=False)
    assert query(db, "SELECT identity, n_clean FROM eligible_identities") == [(1, 25)]
    assert query(db, "SELECT count(*) FROM clean_images")[0][0] == 25 + 24 + 24
    select(db, min_box_w=99, n_ids=2, holdout_ids=0, query_ids=0, distractor_ids=0)
    assert query(db, "SELECT identity FROM eligible_identities ORDER BY 1") == [(1,), (3,)]


def test_infeasible_parameters_name_the_parameter_and_change_nothing(synth_db: Path) -> None:
    before = query(synth_db, "SELECT * FROM params ORDER BY 1")
    with pytest.raises(InfeasibleSelection, match=r"n_ids = 100000 but only \d+ identities"):
        select(synth_db, n_ids=100000)
    with pytest.raises(InfeasibleSelection, match=r"exceeds images_per_id = 20 \(by 5\)"):
        select(synth_db, train_per_id=20, val_per_id=3, test_per_id=2)
    with pytest.raises(InfeasibleSelection, match="holdout_ids"):
        select(synth_db, query_ids=3, distractor_ids=2)
    with pytest.raises(ValueError, match="Unknown parameter 'n_idz'"):
        select(synth_db, n_idz=3)
    assert query(synth_db, "SELECT * FROM params ORDER BY 1") == before


def test_every_parameter_has_a_range_checked_on_set(synth_db: Path) -> None:
    from catalog.errors import CatalogError, ParameterError
    from catalog.views import PARAMS

    before = query(synth_db, "SELECT * FROM params ORDER BY 1")
    # box_shrink=5 used to store inverted boxes (x_2 < x_1) without a word
    out_of_range = r"box_shrink = 5 is out of range: .*0 <= box_shrink < 1"
    with pytest.raises(ParameterError, match=out_of_range):
        select(synth_db, box_shrink=5)
    for bad in (
        {"box_shrink": 1},
        {"box_shrink": -0.1},
        {"drop_blurry": 2},
        {"n_ids": 0},
        {"images_per_id": 1.5},
        {"seed": -1},
        {"min_box_w": float("nan")},
        # stored as DOUBLE, cast to BIGINT by the views: beyond 2^53 the catalog broke
        {"seed": 9223372036854775807},
        {"seed": 1e30},
        {"n_ids": 2**53 + 2},
    ):
        with pytest.raises(ParameterError, match=next(iter(bad))):
            select(synth_db, **bad)
    assert query(synth_db, "SELECT * FROM params ORDER BY 1") == before
    for p in PARAMS:  # every default lies in its own range, and the range reads well
        p.check(p.default)
        assert p.name in p.range_text() or ">=" in p.range_text()
    assert issubclass(ParameterError, CatalogError) and issubclass(ParameterError, ValueError)
    select(synth_db, box_shrink=0.2)
    bad_boxes = query(synth_db, "SELECT count(*) FROM face_boxes WHERE x_2 <= x_1 OR y_2 <= y_1")
    assert bad_boxes == [(0,)]
    select(synth_db, box_shrink=0.05)
    select(synth_db, seed=2**53)  # the largest: the views still run
    assert query(synth_db, "SELECT count(*) > 0 FROM selection") == [(True,)]
    select(synth_db, seed=21)


def test_holdout_ids_alone_is_divided_between_queries_and_distractors(synth_db: Path) -> None:
    from catalog.selection import derive_holdout

    assert derive_holdout({"holdout_ids": 200}) == {
        "holdout_ids": 200,
        "query_ids": 100,
        "distractor_ids": 100,
    }
    assert derive_holdout({"holdout_ids": 5}) == {
        "holdout_ids": 5,
        "query_ids": 3,
        "distractor_ids": 2,
    }
    assert derive_holdout({"holdout_ids": 6, "query_ids": 1})["distractor_ids"] == 5
    assert derive_holdout({"holdout_ids": 6, "query_ids": 1, "distractor_ids": 1}) == {
        "holdout_ids": 6,
        "query_ids": 1,
        "distractor_ids": 1,
    }
    assert derive_holdout({"n_ids": 3}) == {"n_ids": 3}
    summary = select(synth_db, holdout_ids=2)  # used to be refused: query_ids 2 + 2 > 2
    assert (summary.params["query_ids"], summary.params["distractor_ids"]) == (1, 1)
    assert summary.splits["query"][1] == 1 and summary.splits["distractor"][1] == 1
    select(synth_db, **PARAMS)


def test_fit_applies_the_parameters_that_fit_the_catalog(synth_db: Path) -> None:
    from catalog.selection import fitted_params

    expected = fitted_params(synth_db, images_per_id=10)
    summary = select(synth_db, fit=True, images_per_id=10)
    assert {k: summary.params[k] for k in expected} == expected
    assert summary.selected_identities == expected["n_ids"] > 0
    # other parameters apply on top of the fitted ones
    summary = select(synth_db, fit=True, images_per_id=10, seed=3, holdout_ids=2)
    assert summary.params["seed"] == 3 and summary.params["query_ids"] == 1
    select(synth_db, **PARAMS)


def test_fit_says_what_it_fitted_and_what_it_kept_and_reset_returns_to_defaults(
    tmp_path: Path,
) -> None:
    """The README tour: --seed 7, then box_shrink 0.1, then --fit: the fit says it kept
    both from before; --reset --fit starts from the defaults."""
    import shutil

    from catalog.selection import FIT_HINT, InfeasibleSelection, selection_problems
    from catalog.views import DEFAULTS

    root = tmp_path / "r"
    synthesize(root / "data", ids=12, seed=3, annotations_only=True)
    db = root / "c.duckdb"
    result = ingest(root / "data", db, scan_images=False)
    # the defaults ask for 1,000 identities of 12: ingest says so, and how to fit
    assert selection_problems(db) and any("select --fit" in n for n in result.notes)
    with pytest.raises(InfeasibleSelection, match=r"select --fit"):
        select(db, seed=7)
    assert FIT_HINT.startswith("(options of `celebcat select`")
    select(db, fit=True, images_per_id=5)
    select(db, seed=7)
    select(db, box_shrink=0.1)
    fitted = select(db, fit=True, images_per_id=5)
    assert fitted.kept == {"seed": 7, "box_shrink": 0.1}
    assert "n_ids" in fitted.fitted and "seed" not in fitted.fitted
    again = select(db, fit=True, reset=True, images_per_id=5)
    assert again.kept == {} and again.params["seed"] == DEFAULTS["seed"]
    assert again.params["box_shrink"] == DEFAULTS["box_shrink"]
    assert not selection_problems(db)
    shutil.rmtree(root / "data")
