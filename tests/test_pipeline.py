"""FacePipeline: detected faces cropped exactly as training cropped them, batched, timed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import duckdb
import numpy as np
import pytest
from conftest import one_torch_thread, query
from PIL import Image
from pipeline_helpers import copy_catalog, split_images, trained_catalog

from catalog import results
from catalog import transforms as T
from catalog.views import PARAM_NAMES
from models import store
from models.pipeline.faces import STAGES, FacePipeline, PipelineError, crop_plan, load_image


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return trained_catalog(tmp_path_factory)


#: torch on one thread for every test (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_shrink_boxes_is_the_face_boxes_view(built: SimpleNamespace) -> None:
    """The pipeline's crop box of a catalog face is the snapshot's box, to the pixel."""
    rows = query(
        built.db,
        """
        SELECT b.x_1, b.y_1, b.x_1 + b.width, b.y_1 + b.height, i.width, i.height,
               s.x_1, s.y_1, s.x_2, s.y_2
        FROM snapshot_images s JOIN bboxes b USING (image_id) JOIN images i USING (image_id)
        WHERE s.snapshot = 'h'""",
    )
    shrink = PARAM_NAMES["box_shrink"].default
    for *raw, w, h, x1, y1, x2, y2 in rows:
        got = T.shrink_boxes(np.array([raw]), shrink, w, h)[0]
        assert got.tolist() == [x1, y1, x2, y2]
    # the rounding of halves and the clamping, against DuckDB's own arithmetic
    rng = np.random.default_rng(0)
    raw = np.round(rng.uniform(-20, 400, (200, 2)), 1)
    boxes = np.concatenate([raw, raw + np.round(rng.uniform(1, 200, (200, 2)), 1)], axis=1)
    con = duckdb.connect()
    sql = (
        "SELECT greatest(round(x + w * 0.05 / 2), 0), greatest(round(y + h * 0.05 / 2), 0), "
        "least(round(x + w * (1 - 0.05 / 2)), 300), least(round(y + h * (1 - 0.05 / 2)), 250) "
        "FROM (SELECT ?::DOUBLE x, ?::DOUBLE y, ?::DOUBLE w, ?::DOUBLE h)"
    )
    for b in boxes:
        want = con.execute(sql, [b[0], b[1], b[2] - b[0], b[3] - b[1]]).fetchone()
        assert T.shrink_boxes(b[None], 0.05, 300, 250)[0].tolist() == list(want)


def test_bbox_recognizer_embeddings_match_the_evaluations(built: SimpleNamespace) -> None:
    """A catalog image through the pipeline (catalog boxes) embeds as embed_snapshot did."""
    images = split_images(built.db, "test")[:6] + split_images(built.db, "query")
    ids, stored = results.read_embeddings(built.db, built.run_id, [i for i, _, _ in images])
    pipe = FacePipeline("catalog", None, built.run_id, built.db, batch_size=4)
    assert pipe.plan.kind == "bbox" and str(pipe.plan.source) == "bbox" and pipe.landmarks is None
    out = pipe.run([built.images / p for _, _, p in images], chunk=5)
    assert [f.image for f in out.faces] == list(range(len(images)))
    np.testing.assert_allclose(out.embeddings, stored, atol=1e-5)
    # pixels given directly: the same crops where the file would be decoded in full;
    # where training decoded a large JPEG at reduced scale (libjpeg's DCT scaling), the
    # full decode shrunk by a box filter is near it
    arrays = [np.asarray(Image.open(built.images / p).convert("RGB")) for _, _, p in images]
    again = pipe.run(arrays, [i for i, _, _ in images])
    cos = (again.embeddings * stored).sum(axis=1)
    assert cos.min() > 0.99, cos


def test_every_stage_is_timed_and_bad_input_is_one_line(
    built: SimpleNamespace, tmp_path: Path
) -> None:
    pipe = FacePipeline("catalog", None, built.run_id, built.db)
    image_id, _, path = split_images(built.db, "test")[0]
    out = pipe.run([built.images / path])
    assert set(STAGES) <= set(out.timings) and out.timings["total"] >= out.timings["embed"] > 0
    assert out.timings["landmarks"] == 0  # a face-box recognizer: no landmarks
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    with pytest.raises(PipelineError, match="notes.jpg: not an image PIL can read") as err:
        pipe.run([built.images / path, bad])
    assert "\n" not in str(err.value)
    with pytest.raises(PipelineError, match="no such file"):
        load_image(tmp_path / "missing.png")
    skipped = pipe.run([bad, built.images / path], skip_bad=True)
    assert skipped.images[0] is None and skipped.skipped[0][0] == 0
    assert [f.image for f in skipped.faces] == [1]


def test_a_photo_turned_by_exif_is_cropped_upright(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "turned.jpg"
    image.save(path, exif=exif)
    loaded = load_image(path)
    assert (loaded.height, loaded.width) == (40, 20) and loaded.path is None


@pytest.fixture(scope="module")
def aligned(built: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A brief landmark run, the snapshot aligned with it (arcface, 32 px), and a brief
    recognizer on those aligned crops, embedded."""
    from models.alignment.snapshot import align_snapshot
    from models.landmarks.train import LandmarkTrainConfig, train_landmarks
    from models.recognition import evaluate as ev
    from models.recognition import train as tr

    root = tmp_path_factory.mktemp("aligned")
    db = copy_catalog(built, root)
    with one_torch_thread():
        marks = train_landmarks(
            LandmarkTrainConfig(
                snapshot="h",
                epochs=1,
                max_batches_per_epoch=2,
                batch_size=8,
                out_dir=str(root / "ck"),
            ),
            db,
        )
        done = align_snapshot(marks.run_id, "h", db, size=32, template="arcface", workers=2)
        config = tr.RecognizerTrainConfig(
            snapshot="h",
            source="aligned",
            size=32,
            embedding_dim=16,
            batch_size=16,
            epochs=1,
            max_batches_per_epoch=2,
            loss="ce",
            out_dir=str(root / "ck"),
        )
        run = tr.train_recognizer(config, db)
        ev.embed_snapshot(store.load_recognizer(run.run_id, db), db=db)
    return SimpleNamespace(
        db=db, run_id=run.run_id, landmarks=marks.run_id, align=done, images=built.images
    )


def test_aligned_recognizer_embeddings_match_the_evaluations(aligned: SimpleNamespace) -> None:
    """Detector box -> shrink -> landmarks -> arcface similarity -> warp: the crops
    celebcat align stored, so the embeddings embed_snapshot stored."""
    images = split_images(aligned.db, "test")[:5] + split_images(aligned.db, "distractor")[:3]
    ids, stored = results.read_embeddings(aligned.db, aligned.run_id, [i for i, _, _ in images])
    pipe = FacePipeline("catalog", None, aligned.run_id, aligned.db, batch_size=3)
    plan = pipe.plan
    assert (plan.kind, plan.template, plan.landmark_run) == (
        "aligned",
        "arcface",
        aligned.landmarks,
    )
    assert "embeddings' source" in plan.why
    out = pipe.run([aligned.images / p for _, _, p in images], keep_crops=True)
    assert all(f.landmarks is not None and f.landmarks.shape == (5, 2) for f in out.faces)
    assert out.timings["landmarks"] > 0
    # the landmarks are the ones align wrote to the catalog
    marks = {
        r[0]: r[1:]
        for r in query(
            aligned.db,
            "SELECT * EXCLUDE (run_id, nme, normaliser) FROM landmark_predictions WHERE run_id = ?",
            [aligned.landmarks],
        )
    }
    for face, (image_id, _, _) in zip(out.faces, images, strict=True):
        np.testing.assert_allclose(face.landmarks.ravel(), marks[image_id], atol=1e-3)
    cos = (out.embeddings * stored).sum(axis=1)
    assert cos.min() > 0.9999, cos


def test_crop_plan_finds_the_alignment_or_says_what_to_pass(aligned: SimpleNamespace) -> None:
    from models.store import load_recognizer

    recognizer = load_recognizer(aligned.run_id, aligned.db)
    # without the embeddings, from the newest aligned crops of its snapshot
    con = duckdb.connect(str(aligned.db))
    con.execute("DELETE FROM embeddings WHERE run_id = ?", [aligned.run_id])
    con.close()
    plan = crop_plan(recognizer, aligned.db)
    assert str(plan.source) == f"aligned/arcface/{aligned.landmarks}" and "newest" in plan.why
    override = crop_plan(recognizer, aligned.db, landmark_run="other", template="reference")
    assert str(override.source) == "aligned/reference/other" and "overridden" in override.why
    recognizer.config.source = "aligned/arcface/truth"
    with pytest.raises(PipelineError, match="true landmarks.*--landmarks RUN"):
        crop_plan(recognizer, aligned.db)
    recognizer.config.source = "aligned"
    recognizer.config.size = 48  # no crops of that size, no embeddings: nothing recorded
    with pytest.raises(PipelineError, match="does not record which alignment"):
        crop_plan(recognizer, aligned.db)


def test_a_huge_photo_is_decoded_reduced_and_its_faces_reported_in_its_pixels(
    built: SimpleNamespace, tmp_path: Path
) -> None:
    """A 7,000 x 7,000 JPEG (49 MP): decoded at half size by libjpeg, no Pillow warning,
    and the face Haar finds is where it is in the photo itself (the 512 px astronaut's
    box scaled up), as drawn on the reduced picture."""
    import warnings

    from PIL import Image
    from skimage import data

    from models.pipeline.faces import MAX_PHOTO_PIXELS, load_image
    from models.pipeline.identify import IdentifiedFace, Match, draw_faces

    small = Image.fromarray(data.astronaut())
    big = tmp_path / "big.jpg"
    small.resize((7000, 7000), Image.Resampling.BILINEAR).save(big, quality=90)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning: none
        loaded = load_image(big)
    assert loaded.scale == 2 and loaded.width * loaded.height <= MAX_PHOTO_PIXELS
    pipe = FacePipeline("haar", None, built.run_id, built.db)
    face_big = max(pipe.run([big]).faces, key=lambda f: f.score)
    face_small = max(pipe.run([small]).faces, key=lambda f: f.score)
    np.testing.assert_allclose(face_big.box, face_small.box * 7000 / 512, rtol=0.1)
    answer = IdentifiedFace(0, face_big.box, 1.0, None, [Match("x", 0.9)], "x")
    drawn = Image.open(draw_faces(loaded, [answer], tmp_path / "drawn.png"))
    assert drawn.size == (loaded.width, loaded.height)
