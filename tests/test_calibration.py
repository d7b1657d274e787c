"""A gallery's unknown-face threshold, measured on strangers searched in that gallery;
and 1:1 verification with the pair threshold."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import duckdb
import numpy as np
import pytest
from pipeline_helpers import copy_catalog, split_images, trained_catalog
from typer.testing import CliRunner

import cli
from catalog import gallery as G
from models.pipeline import identify as idf
from models.pipeline.calibration import best_scores, named_rate, threshold_at_fpir

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


# --- the maths -----------------------------------------------------------------------------


def test_threshold_at_fpir_has_known_answers() -> None:
    scores = np.arange(100) / 100  # 0.00 ... 0.99, shuffled below
    found = threshold_at_fpir(np.random.default_rng(0).permutation(scores), 0.05)
    assert found.value == pytest.approx(0.94) and (found.named, found.n) == (5, 100)
    assert found.enough and found.measured == 0.05
    assert named_rate(scores, found.value) == 0.05
    # 0.01 of 300 is 3 (not 2: 0.01 x 300 is 3.0000000000000004 in floats)
    assert threshold_at_fpir(np.arange(300) / 300, 0.01).named == 3
    # too few strangers to measure 1 %: the highest score, none named, and it says so
    few = threshold_at_fpir(scores[:50], 0.01)
    assert few.value == pytest.approx(0.49) and few.named == 0 and not few.enough
    with pytest.raises(ValueError, match="fpir"):
        threshold_at_fpir(scores, 0)
    with pytest.raises(ValueError, match="no stranger"):
        threshold_at_fpir(np.zeros(0), 0.01)


def _faces(
    rng: np.random.Generator, centres: np.ndarray, per_id: int, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings of ``per_id`` faces of each identity: its centre plus noise."""
    ids = np.repeat(np.arange(len(centres)), per_id)
    x = centres[ids] + noise * rng.standard_normal((len(ids), centres.shape[1]))
    return x / np.linalg.norm(x, axis=1, keepdims=True), ids


def _index(embeddings: np.ndarray, ids: np.ndarray, how: str = "mean") -> idf.GalleryIndex:
    names = np.array([f"p{i}" for i in ids])
    return idf.GalleryIndex(G.GalleryEntries(None, names, names, embeddings), how)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [10, 100, 400])
def test_the_calibrated_rate_holds_on_other_strangers_at_every_size(size: int) -> None:
    """A synthetic recognizer (faces = their person's direction plus noise, 32-d):
    calibrated on half of the strangers, the other half is named at about the target
    rate for every gallery size, where the pair threshold's rate grows with it."""
    rng = np.random.default_rng(size)
    dim, noise = 32, 0.25
    known = rng.standard_normal((size, dim))
    gallery, ids = _faces(rng, known, 5, noise)
    index = _index(gallery, ids)
    strangers = rng.standard_normal((1200, dim))
    faces, who = _faces(rng, strangers, 4, noise)  # 4,800 faces of 1,200 people
    half = who < 600  # split by person: no one on both sides
    calibrated = threshold_at_fpir(best_scores(index.scores, faces[half]), 0.01)
    counted = named_rate(best_scores(index.scores, faces[~half]), calibrated.value)
    assert 0.005 <= counted <= 0.02, (size, counted)
    # the pair threshold: two faces of different people score above it at 0.01
    a, b = faces[who % 2 == 0][:2000], faces[who % 2 == 1][:2000]
    pair = threshold_at_fpir((a * b).sum(axis=1), 0.01).value
    pair_rate = named_rate(best_scores(index.scores, faces[~half]), pair)
    if size >= 100:
        assert pair_rate > 5 * counted  # what identify promised before this change


def test_best_scores_is_the_best_match_of_each_face() -> None:
    rng = np.random.default_rng(1)
    gallery, ids = _faces(rng, rng.standard_normal((7, 8)), 3, 0.3)
    probes, _ = _faces(rng, rng.standard_normal((5, 8)), 2, 0.3)
    for how in ("mean", "max"):
        index = _index(gallery, ids, how)
        expected = np.sort(index.scores(probes).max(axis=1))
        np.testing.assert_allclose(best_scores(index.scores, probes), expected, rtol=1e-6)


# --- galleries, identify, verify -----------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return trained_catalog(tmp_path_factory)


@pytest.fixture
def db(built: SimpleNamespace, tmp_path: Path) -> Path:
    return copy_catalog(built, tmp_path)


def test_a_snapshot_gallery_is_calibrated_on_its_held_out_strangers(
    db: Path, built: SimpleNamespace
) -> None:
    done = idf.add_gallery(db, "heldout", built.run_id, snapshot="h", split="query")
    distractors = split_images(db, "distractor")
    assert {c.how for c in done.calibrations} == {"mean", "max"}
    mean = G.read_calibration(db, "heldout", "mean")
    assert mean is not None and len(mean) == len(distractors)
    assert mean.n_identities == len({i for _, i, _ in distractors})
    assert mean.strangers.startswith("snapshot:h/query+distractor")
    assert np.all(np.diff(mean.scores) >= 0)
    # identify takes its threshold from the calibration: 9 strangers cannot measure 1 %
    probe = built.images / distractors[0][2]
    out = idf.identify([probe], "heldout", db, detector="catalog")
    t = out.threshold
    assert t.kind == "gallery" and t.value == pytest.approx(float(mean.scores[-1]))
    assert t.n_strangers == len(distractors) and t.named == 0
    assert "cannot measure a rate of 0.01" in t.explain()
    assert "celebcat gallery calibrate heldout --strangers DIR" in t.explain()
    assert t.short() == f"{t.value:.4f} (FPIR 0.01: none of 9 strangers, 0.01 not measurable)"
    assert not out.faces[0].known  # a calibration stranger scores at most the threshold
    # at a rate the strangers can measure, the threshold lets that share through
    loose = idf.identify([probe], "heldout", db, detector="catalog", fpir=0.3)
    assert loose.threshold.named == 2 and "at a rate of at most 0.3" in loose.threshold.explain()
    assert "measured on 9 faces of 3 people not in it: 2 named" in loose.threshold.explain()
    assert loose.threshold.short().endswith("(FPIR 0.3: 2 of 9 strangers)")
    # the page shows it beside each answer
    from models.pipeline.report import draw_png, identify_section

    section = identify_section(loose, draw_png(loose.images[0], loose.faces))
    table = section.tables[0].result
    assert table.columns[-1] == "threshold"
    assert [row[-1] for row in table.rows] == [loose.threshold.short()] * len(loose.faces)


def test_an_old_gallery_falls_back_to_the_pair_threshold_and_says_how_to_calibrate(
    db: Path, built: SimpleNamespace
) -> None:
    idf.add_gallery(db, "heldout", built.run_id, snapshot="h", split="query")
    con = duckdb.connect(str(db))
    con.execute("DROP TABLE gallery_calibrations")  # as a catalog from before calibration
    con.close()
    probe = built.images / split_images(db, "distractor")[0][2]
    out = idf.identify([probe], "heldout", db, detector="catalog")
    assert out.threshold.kind == "pair" and out.threshold.fpr == 0.01
    assert "celebcat gallery calibrate heldout" in out.threshold.explain()
    result = runner.invoke(cli.app, ["gallery", "calibrate", "heldout", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "calibrated on 9 faces of 3 strangers" in " ".join(result.output.split())
    after = idf.identify([probe], "heldout", db, detector="catalog")
    assert after.threshold.kind == "gallery"


def _person_folders(built: SimpleNamespace, root: Path, people: dict[str, list]) -> Path:
    for person, rows in people.items():
        (root / person).mkdir(parents=True)
        for image_id, _, path in rows:  # catalog file names: the catalog detector knows them
            shutil.copy(built.images / path, root / person / image_id)
    return root


def test_folder_strangers_and_their_overlap(
    db: Path, built: SimpleNamespace, tmp_path: Path
) -> None:
    rows = split_images(db, "train")
    by_id: dict[int, list] = {}
    for row in rows:
        by_id.setdefault(row[1], []).append(row)
    people = sorted(by_id)
    gallery = _person_folders(built, tmp_path / "g", {f"p{i}": by_id[i][:2] for i in people[:3]})
    others = people[3:7]  # trained people not in the gallery: 4 x 3 faces
    strangers = _person_folders(built, tmp_path / "s", {f"p{i}": by_id[i][:3] for i in others})
    done = idf.add_gallery(
        db, "friends", built.run_id, folder=gallery, strangers=strangers, detector="catalog"
    )
    assert [len(c) for c in done.calibrations] == [12, 12]
    assert done.calibrations[0].n_identities == len(others) == 4
    assert done.calibrations[0].strangers == f"folder:{strangers.resolve()}"
    # a stranger set holding a person of the gallery is refused, naming them
    overlap = _person_folders(built, tmp_path / "o", {"p" + str(people[0]): by_id[people[0]][2:3]})
    with pytest.raises(idf.IdentifyError, match=f"people of the gallery \\(p{people[0]}\\)"):
        idf.calibrate_gallery(db, "friends", strangers=overlap)
    # a folder gallery without strangers has no calibration, and says so
    result = runner.invoke(
        cli.app,
        ["gallery", "add", "plain", "--run", built.run_id, "--folder", str(gallery)]
        + ["--detector", "catalog", "--db", str(db)],
    )
    assert result.exit_code == 0, result.output
    assert "not calibrated" in result.output and G.read_calibration(db, "plain") is None


def test_identify_json_carries_the_calibration(db: Path, built: SimpleNamespace) -> None:
    idf.add_gallery(db, "heldout", built.run_id, snapshot="h", split="query")
    probe = built.images / split_images(db, "query")[0][2]
    result = runner.invoke(
        cli.app,
        ["identify", str(probe), "--gallery", "heldout", "--detector", "catalog"]
        + ["--fpir", "0.3", "--json", "--db", str(db)],
    )
    assert result.exit_code == 0, result.output
    t = json.loads(result.output)["threshold"]
    assert (t["kind"], t["fpir"], t["strangers"], t["stranger_identities"]) == (
        "gallery",
        0.3,
        9,
        3,
    )
    assert t["measured_fpir"] == pytest.approx(2 / 9, abs=1e-6) and t["enough_strangers"]
    assert t["gallery_identities"] == 3 and "not in this gallery of 3 people" in t["explanation"]
    # --csv: the same answer, one row a face
    faces = json.loads(result.output)["images"][0]["faces"]
    as_csv = runner.invoke(
        cli.app,
        ["identify", str(probe), "--gallery", "heldout", "--detector", "catalog"]
        + ["--fpir", "0.3", "--csv", "--db", str(db)],
    )
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert [r["identity"] for r in rows] == [f["identity"] for f in faces]
    assert float(rows[0]["cosine"]) == pytest.approx(faces[0]["matches"][0]["cosine"], abs=1e-4)
    assert float(rows[0]["threshold"]) == pytest.approx(t["cosine"], abs=1e-6)


def test_verify_compares_two_faces_with_the_pair_threshold(
    db: Path, built: SimpleNamespace
) -> None:
    query = split_images(db, "query")
    a, b = (built.images / query[k][2] for k in (0, 1))
    same = idf.verify(a, a, db, run=built.run_id, detector="catalog")
    assert same.cosine == pytest.approx(1, abs=1e-5) and same.same
    assert same.threshold.kind == "pair" and same.threshold.fpr == 0.01
    assert "two faces of different people score above it at a rate of 0.01" in same.explain()
    strict = idf.verify(a, b, db, run=built.run_id, detector="catalog", threshold=0.99999)
    assert not strict.same and strict.explain().startswith("different people: cosine")
    result = runner.invoke(
        cli.app,
        ["verify", str(a), str(b), "--run", built.run_id, "--detector", "catalog"]
        + ["--fpr", "0.1", "--json", "--db", str(db)],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["threshold"]["fpr"] == 0.1 and data["same"] == (
        data["cosine"] > data["threshold"]["cosine"]
    )
    with pytest.raises(idf.IdentifyError, match="No face found in"):
        idf.verify(a, a, db, run=built.run_id, detector="haar")


def test_a_truth_aligned_recognizer_builds_a_snapshot_gallery_from_stored_crops(
    db: Path, built: SimpleNamespace
) -> None:
    """Crops aligned with the catalog's true landmarks cannot be made from a photo, but
    a snapshot's images have them: its gallery is embedded from the stored crops."""
    from models.alignment.snapshot import align_snapshot
    from models.recognition import train as tr

    align_snapshot(None, "h", db, size=32, template="arcface", source="truth", workers=1)
    config = tr.RecognizerTrainConfig(
        snapshot="h",
        source="aligned/arcface/truth",
        size=32,
        embedding_dim=16,
        batch_size=16,
        epochs=1,
        max_batches_per_epoch=1,
        loss="ce",
        out_dir=str(db.parent / "ck"),
    )
    run = tr.train_recognizer(config, db)
    done = idf.add_gallery(db, "aligned", run.run_id, snapshot="h", split="query")
    g = done.gallery
    assert (g.crops, g.detector, g.n_images) == (
        "aligned/arcface/truth",
        "catalog",
        len(split_images(db, "query")),
    )
    assert [len(c) for c in done.calibrations] == [len(split_images(db, "distractor"))] * 2
    image_id, _, path = split_images(db, "train")[0]
    folder = _person_folders(built, db.parent / "s", {"somebody": [(image_id, 0, path)]})
    with pytest.raises(idf.IdentifyError, match="photos of strangers do not have"):
        idf.add_gallery(
            db, "x", run.run_id, snapshot="h", split="query", strangers=folder, replace=True
        )
