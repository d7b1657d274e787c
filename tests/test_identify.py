"""identify: named or unknown by the threshold the run's open-set evaluation measured."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import duckdb
import numpy as np
import pytest
from conftest import celebcat, one_torch_thread, query
from PIL import Image
from pipeline_helpers import copy_catalog, split_images, trained_catalog
from typer.testing import CliRunner

import cli
from catalog import gallery as G
from models.detection.boxes import iou
from models.pipeline import identify as idf
from models.pipeline.faces import FacePipeline, PipelineError
from models.recognition.metrics import class_centres

runner = CliRunner()
#: The astronaut's face in scikit-image's data.astronaut() (CelebA box convention).
ASTRONAUT_FACE = (180, 50, 270, 168)


#: torch on one thread for every test (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The trained catalog with gallery ``people``: three training identities, one
    catalog photo each, in a folder (named by subfolder, found by the catalog's boxes)."""
    built = trained_catalog(tmp_path_factory)
    root = tmp_path_factory.mktemp("identify")
    db = copy_catalog(built, root)
    folder = root / "people"
    picked: dict[str, Path] = {}
    seen: set[int] = set()
    for image_id, identity, path in split_images(db, "train"):
        if identity in seen or len(seen) == 3:
            continue
        seen.add(identity)
        person = folder / f"person{identity}"
        person.mkdir(parents=True)
        picked[person.name] = Path(shutil.copy(built.images / path, person / image_id))
    with one_torch_thread():
        idf.add_gallery(db, "people", built.run_id, folder=folder, detector="catalog")
    distractors = [built.images / p for _, _, p in split_images(db, "distractor")[:4]]
    blank = root / "wall.png"
    Image.new("RGB", (240, 180), (120, 120, 120)).save(blank)
    notes = root / "notes.jpg"
    notes.write_text("not a photo")
    return SimpleNamespace(
        db=db,
        run_id=built.run_id,
        picked=picked,
        distractors=distractors,
        blank=blank,
        notes=notes,
        root=root,
    )


def _stored_threshold(db: Path, run_id: str, fpr: str) -> tuple[int, float]:
    return query(
        db,
        "SELECT epoch, value FROM metrics WHERE run_id = ? AND split = 'open_set' "
        "AND name = ? ORDER BY epoch DESC",
        [run_id, f"threshold@fpr={fpr}"],
    )[0]


def test_the_threshold_is_the_one_the_evaluation_stored(setup: SimpleNamespace) -> None:
    epoch, value = _stored_threshold(setup.db, setup.run_id, "0.01")
    t = idf.open_set_threshold(setup.db, setup.run_id, 0.01)
    assert (t.value, t.epoch, t.fpr) == (pytest.approx(value), epoch, 0.01)
    text = t.explain()
    assert text.startswith(f"cosine > {value:.4f}") and setup.run_id in text
    assert f"epoch {epoch}" in text and "rate of 0.01" in text
    loose = idf.open_set_threshold(setup.db, setup.run_id, 0.5)
    assert loose.value <= t.value  # a looser FPR, a lower bar
    with pytest.raises(
        idf.IdentifyError, match="thresholds at FPR 0.5, 0.2, 0.1, 0.05, 0.01, 0.001, not 0.3"
    ):
        idf.open_set_threshold(setup.db, setup.run_id, 0.3)
    with pytest.raises(idf.IdentifyError, match="--fpr 0.3: the open-set evaluation measures"):
        idf.identify([setup.blank], "people", setup.db, fpr=0.3)


def test_a_run_never_evaluated_says_what_to_run(setup: SimpleNamespace, tmp_path: Path) -> None:
    db = Path(shutil.copy(setup.db, tmp_path / "c.duckdb"))
    con = duckdb.connect(str(db))
    con.execute("DELETE FROM metrics WHERE split = 'open_set'")
    con.close()
    with pytest.raises(idf.IdentifyError) as err:
        idf.identify([setup.blank], "people", db, detector="haar")
    message = str(err.value)
    assert f"`celebcat eval recognizer --run {setup.run_id}`" in message
    assert "--threshold" in message and "\n" not in message
    # a threshold given instead
    out = idf.identify(
        [setup.picked["person" + next(iter(setup.picked))[6:]]],
        "people",
        db,
        detector="catalog",
        threshold=0.5,
    )
    assert out.threshold.fpr is None and out.threshold.explain() == "cosine > 0.5000 (given)"


def test_known_and_unknown_faces(setup: SimpleNamespace) -> None:
    name, photo = next(iter(setup.picked.items()))
    probes = [photo, *setup.distractors]
    out = idf.identify(probes, "people", setup.db, detector="catalog", top=2)
    limit = out.threshold.value
    assert out.threshold.fpr == 0.01 and limit < 1
    assert [f.image for f in out.faces] == list(range(len(probes)))
    known = out.faces[0]
    # the gallery's own photo: its person's centre is its own embedding
    assert known.known and known.identity == name
    assert known.matches[0].cosine == pytest.approx(1.0, abs=1e-5)
    for face in out.faces:
        assert len(face.matches) == 2
        assert face.matches[0].cosine >= face.matches[1].cosine
        best = face.matches[0]
        assert face.identity == (best.identity if best.cosine > limit else idf.UNKNOWN)
    # people outside the gallery: at an FPR of 0.01, most come out unknown
    assert sum(not f.known for f in out.faces[1:]) >= 2, [f.matches[0] for f in out.faces]
    # the cosines are the faces' with each person's centre, one matrix product
    pipe = FacePipeline("catalog", None, setup.run_id, setup.db)
    embedded = pipe.run(probes).embeddings
    entries = G.read_entries(setup.db, "people")
    centres, names = class_centres(entries.embeddings, entries.identity_name)
    direct = embedded @ centres.T
    for face, row in zip(out.faces, direct, strict=True):
        for m in face.matches:
            assert m.cosine == pytest.approx(float(row[list(names).index(m.identity)]), abs=1e-5)
    by_max = idf.identify(
        probes[:1], "people", setup.db, detector="catalog", how="max", pipeline=pipe
    )
    assert by_max.faces[0].identity == name


def test_gallery_search_is_one_product_per_identity() -> None:
    rng = np.random.default_rng(0)
    names = np.repeat(np.array(["a", "b", "c"]), [3, 1, 2])
    vectors = rng.normal(size=(6, 8)).astype(np.float32)
    gallery = G.Gallery("g", "r", None, "x", 3, 6, None, None)
    entries = G.GalleryEntries(gallery, names, np.arange(6).astype(str), vectors)
    index = idf.GalleryIndex(entries)
    assert len(index) == 3 and index.counts == {"a": 3, "b": 1, "c": 2}
    q = vectors[:2] / np.linalg.norm(vectors[:2], axis=1, keepdims=True)
    rows, cos = index.search(q, top=5)
    assert rows.shape == (2, 3) and (np.diff(cos, axis=1) <= 0).all()
    maxed = idf.GalleryIndex(entries, how="max")
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    want = np.stack([(q @ unit[names == n].T).max(axis=1) for n in ("a", "b", "c")], axis=1)
    np.testing.assert_allclose(maxed.scores(q), want, rtol=1e-5)
    empty = G.GalleryEntries(gallery, names[:0], names[:0], vectors[:0])
    with pytest.raises(idf.IdentifyError, match="Gallery 'g' is empty"):
        idf.GalleryIndex(empty)


def test_bad_input_is_one_clear_line(setup: SimpleNamespace, tmp_path: Path) -> None:
    db = Path(shutil.copy(setup.db, tmp_path / "c.duckdb"))
    con = duckdb.connect(str(db))
    con.execute(
        "INSERT INTO galleries SELECT 'hollow', run_id, created_at, source, 0, 0, "
        "detector, crops FROM galleries WHERE name = 'people'"
    )
    con.close()
    cases = [
        (dict(images=[setup.notes]), PipelineError, "notes.jpg: not an image PIL can read"),
        (dict(gallery="nope"), G.GalleryError, "No gallery 'nope'. Known: hollow, people"),
        (dict(gallery="hollow"), idf.IdentifyError, "Gallery 'hollow' is empty"),
        (
            dict(run="recognition-00000000-000000-beef"),
            idf.IdentifyError,
            "was made by recognizer run .* not recognition-00000000-000000-beef",
        ),
        (dict(images=[]), idf.IdentifyError, "No image given"),
    ]
    for change, kind, message in cases:
        args = {"images": [setup.blank], "gallery": "people", **change}
        with pytest.raises(kind, match=message) as err:
            idf.identify(args.pop("images"), args.pop("gallery"), db, **args)
        assert "\n" not in str(err.value), message
    # no face: an empty result for the library; the CLI says so (below)
    out = idf.identify([setup.blank], "people", db)
    assert out.faces == [] and out.without_faces == ["wall.png"]


def test_cli_errors_are_one_line_without_traceback(setup: SimpleNamespace) -> None:
    code, out = celebcat(
        "identify",
        str(setup.notes),
        "--gallery",
        "people",
        "--db",
        str(setup.db),
        timeout=180,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert code == 1 and "Traceback" not in out, out
    assert "notes.jpg: not an image PIL can read" in " ".join(out.split())
    assert len(out.strip().splitlines()) == 1, out
    # in-process (main() prints the same UserError as one red line)
    for args, message in (
        ([str(setup.blank), "--gallery", "people"], "No face found in wall.png (detector haar)"),
        ([str(setup.blank), "--gallery", "nope"], "No gallery 'nope'. Known: people"),
        (
            [str(setup.blank), "--gallery", "people", "--detector", "magic"],
            "Unknown detector 'magic'",
        ),
    ):
        result = runner.invoke(cli.app, ["identify", *args, "--db", str(setup.db)])
        assert isinstance(result.exception, cli.UserError), result.output
        assert message in str(result.exception) and "\n" not in str(result.exception)


def test_a_real_photograph_end_to_end(setup: SimpleNamespace, tmp_path: Path) -> None:
    """scikit-image's astronaut: Haar finds her face, the pipeline embeds it, --draw
    puts the box on it."""
    from skimage import data

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    drawn = tmp_path / "out" / "drawn.png"
    result = runner.invoke(
        cli.app,
        [
            "identify",
            str(photo),
            "--gallery",
            "people",
            "--top",
            "2",
            "--draw",
            str(drawn),
            "--json",
            "--db",
            str(setup.db),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    faces = report["images"][0]["faces"]
    assert len(faces) == 1 and report["drawn"] == [str(drawn)]
    assert report["threshold"]["fpr"] == 0.01 and "open-set" in report["threshold"]["explanation"]
    face = faces[0]
    assert iou(np.array([face["box"]]), np.array([ASTRONAUT_FACE]))[0, 0] > 0.7
    assert len(face["matches"]) == 2 and face["identity"] in ("unknown", *setup.picked)
    # the drawing: the box's outline in its colour around the face, the face itself untouched
    before = data.astronaut().astype(int)
    after = np.asarray(Image.open(drawn).convert("RGB")).astype(int)
    colour = idf.KNOWN_COLOUR if face["identity"] != "unknown" else idf.UNKNOWN_COLOUR
    painted = (after == colour).all(axis=2) & (before != colour).any(axis=2)
    x1, y1, x2, y2 = (round(v) for v in face["box"])
    assert (
        painted[y1 + 5 : y2 - 5, x1].mean() > 0.95
        and painted[y1 + 5 : y2 - 5, x2 - 1].mean() > 0.95
    )
    assert painted[y2 - 1, x1 + 5 : x2 - 5].mean() > 0.95
    inside = (slice(y1 + 10, y2 - 10), slice(x1 + 10, x2 - 10))
    assert (after[inside] == before[inside]).all()
    text = " ".join(
        runner.invoke(
            cli.app, ["identify", str(photo), "--gallery", "people", "--db", str(setup.db)]
        ).output.split()
    )
    assert "threshold: cosine >" in text and "astronaut.png: 1 face" in text


def test_a_threshold_outside_the_cosines_range_and_a_pipe_are_refused(tmp_path: Path) -> None:
    import os

    from models.pipeline.faces import PipelineError, load_image
    from models.pipeline.identify import IdentifyError, choose_threshold

    for bad in (5.0, -1.5, float("nan")):
        with pytest.raises(IdentifyError, match="a cosine lies between -1 and 1"):
            choose_threshold(None, None, "recognition-x", 3, threshold=bad)  # type: ignore[arg-type]
    assert choose_threshold(None, None, "recognition-x", 3, threshold=0.5).value == 0.5  # type: ignore[arg-type]
    pipe = tmp_path / "photo.jpg"
    os.mkfifo(pipe)  # reading it would block forever
    with pytest.raises(PipelineError, match="not a regular file"):
        load_image(pipe)
