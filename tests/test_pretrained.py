"""Pretrained models as runs (models/pretrained/): import, the model store, and dlib's
models on real photographs.

The photographs are the test images of the face_recognition 1.3.0 source package,
which ``.ci/fetch-test-photos`` takes from the package registry into
``.cache/test-photos`` (or ``$CELEBCAT_TEST_PHOTOS``), and scikit-image's astronaut.
Outside CI the tests that need dlib or the photos skip where they are missing; on CI
(CI=true) they fail, as ``.ci/run`` installs and fetches both.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from catalog import results
from catalog.synth import synthesize
from models import pretrained, store
from models.detection.detectors import celeba_to_squares, squares_to_celeba
from tests.conftest import celebcat

ROOT = Path(__file__).resolve().parent.parent
ON_CI = os.environ.get("CI", "").lower() == "true"


def _need(what: str, hint: str) -> None:
    if ON_CI:
        pytest.fail(f"{what} is missing on CI: {hint}")
    pytest.skip(f"{what} is missing ({hint})")


def need_dlib() -> None:
    if not all(importlib.util.find_spec(m) for m in ("dlib", "face_recognition_models")):
        _need("dlib", "pip install -e '.[dlib]'")


def photos() -> Path:
    folder = Path(os.environ.get("CELEBCAT_TEST_PHOTOS", ROOT / ".cache" / "test-photos"))
    if not (folder / "obama.jpg").is_file():
        _need("the test photographs", "bash .ci/fetch-test-photos")
    return folder


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small catalog to record runs in."""
    from catalog.ingest import ingest

    folder = tmp_path_factory.mktemp("pretrained")
    synthesize(folder / "data", ids=4, seed=3, annotations_only=True)
    ingest(folder / "data", folder / "c.duckdb")
    return folder / "c.duckdb"


# --- without dlib -------------------------------------------------------------------------


def test_squares_and_celeba_boxes_are_inverse() -> None:
    mapping = {"dx": 0.02, "dy": -0.18, "sw": 1.08, "sh": 1.42}
    squares = np.array([[10.0, 20.0, 80.0, 80.0], [0.0, 0.0, 33.0, 33.0]])
    boxes = squares_to_celeba(squares, mapping)
    assert boxes[0, 2] - boxes[0, 0] == pytest.approx(1.08 * 80)
    assert boxes[0, 3] - boxes[0, 1] == pytest.approx(1.42 * 80)
    np.testing.assert_allclose(celeba_to_squares(boxes, mapping), squares, atol=1e-9)


def test_celeba_points_from_68() -> None:
    from models.pretrained.dlib import celeba_points

    parts = np.zeros((68, 2))
    parts[36:42] = [[10, 0], [12, 0], [14, 0], [10, 2], [12, 2], [14, 2]]  # mean (12, 1)
    parts[42:48] = [[30, 5]] * 6
    parts[30], parts[48], parts[54] = [20, 10], [11, 20], [29, 21]
    np.testing.assert_allclose(
        celeba_points(parts), [[12, 1], [30, 5], [20, 10], [11, 20], [29, 21]]
    )


def test_a_missing_package_is_one_line_naming_the_extra(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    source = pretrained.SOURCES["dlib"]
    monkeypatch.setitem(pretrained.SOURCES, "dlib", replace(source, runtime="no_such_module_here"))
    with pytest.raises(pretrained.PretrainedError, match=r"celeba-catalog\[dlib\]"):
        pretrained.import_source(db, "dlib")
    assert results.list_runs(db) == []  # nothing recorded
    for name in ("nope", "onnx"):
        with pytest.raises(pretrained.PretrainedError, match=f"No pretrained source '{name}'"):
            pretrained.import_source(db, name)


def test_register_runs_replaces_the_same_ids(db: Path) -> None:
    results.register_runs(db, [("recognition-x", "recognition", {"pretrained": {"a": 1}})])
    results.register_runs(db, [("recognition-x", "recognition", {"pretrained": {"a": 2}})])
    runs = results.list_runs(db)
    assert [(r.run_id, r.status, r.snapshot, r.config) for r in runs] == [
        ("recognition-x", "finished", "", {"pretrained": {"a": 2}})
    ]


# --- dlib's models ---------------------------------------------------------------------------


def test_import_dlib_records_provenance_and_the_store_loads_each(db: Path) -> None:
    need_dlib()
    code, out = celebcat("runs", "import", "dlib", "--db", str(db))
    assert code == 0, out
    runs = {r.run_id: r for r in results.list_runs(db)}
    assert set(runs) == {
        "detector-dlib-hog",
        "landmarks-dlib-5",
        "landmarks-dlib-68",
        "recognition-dlib-resnet",
    }
    info = runs["recognition-dlib-resnet"].config["pretrained"]
    assert info["sha256"] == pretrained.sha256(info["file"])
    assert info["package"].startswith("face_recognition_models ")
    assert info["runtime"].startswith("dlib-bin ")
    assert "commercial" in runs["landmarks-dlib-68"].config["pretrained"]["licence"]

    recognizer = store.load_recognizer("recognition-dlib-resnet", db)
    assert str(recognizer.recipe.source) == "aligned/dlib/landmarks-dlib-5"
    emb = recognizer.embed(np.full((2, 150, 150, 3), 128, np.uint8))
    assert emb.shape == (2, 128)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert store.load_landmarks("landmarks-dlib-68", db).input_size == 192
    assert "commercial" not in runs["landmarks-dlib-5"].config["pretrained"]["licence"]
    detector = store.load_detector("run:detector-dlib-hog", db)
    assert detector.detect([np.zeros((64, 64, 3), np.uint8)])[0].shape == (0, 5)
    with pytest.raises(ValueError, match="is a recognition run, not a landmarks run"):
        store.load_landmarks("recognition-dlib-resnet", db)


def test_a_file_that_is_not_the_recorded_one_is_refused(db: Path) -> None:
    need_dlib()
    pretrained.import_source(db, "dlib")
    run = results.get_run(db, "recognition-dlib-resnet")
    config = {**run.config, "pretrained": {**run.config["pretrained"], "sha256": "0" * 64}}
    results.register_runs(db, [(run.run_id, run.kind, config)])
    with pytest.raises(pretrained.PretrainedError, match="dlib_face_recognition_resnet_model_v1"):
        store.load_recognizer("recognition-dlib-resnet", db)


# --- on real photographs ---------------------------------------------------------------------


def test_dlib_names_the_people_of_real_photos_and_not_a_stranger(db: Path, tmp_path: Path) -> None:
    """A gallery of obama.jpg and biden.jpg: obama2, obama3 and the RGBA 32bit.png are
    named obama, biden.jpg biden, and neither face of scikit-image's astronaut is
    named (the published operating point, the gallery having no strangers)."""
    need_dlib()
    folder = photos()
    from skimage import data

    from models.pipeline.identify import add_gallery, identify

    pretrained.import_source(db, "dlib")
    people = tmp_path / "people"
    for who in ("obama", "biden"):
        (people / who).mkdir(parents=True)
        shutil.copy(folder / f"{who}.jpg", people / who)
    hog = "run:detector-dlib-hog"
    built = add_gallery(db, "people", "recognition-dlib-resnet", folder=people, detector=hog)
    assert built.gallery.n_identities == 2
    probes = [folder / n for n in ("obama2.jpg", "obama3.jpg", "32bit.png", "biden.jpg")]
    found = identify([*probes, data.astronaut()], "people", db, detector=hog)
    assert [found.faces_of(i)[0].identity for i in range(4)] == [
        "obama",
        "obama",
        "obama",
        "biden",
    ]
    for i in range(4):  # the right person first, and by a wide margin
        best, second = found.faces_of(i)[0].matches[:2]
        assert best.cosine - second.cosine > 0.05
    astronaut = found.faces_of(4)
    assert astronaut and all(not f.known for f in astronaut)
    assert found.threshold.kind == "published"
    assert "not measured on this catalog" in found.threshold.explain()

    from models.pipeline.identify import verify

    for other, same in (("obama3.jpg", True), ("biden.jpg", False)):
        answer = verify(
            folder / "obama.jpg", folder / other, db, run="recognition-dlib-resnet", detector=hog
        )
        assert answer.same is same and "published" in answer.explain()
        assert answer.as_dict()["threshold"]["kind"] == "published"


def test_the_pipeline_reproduces_dlibs_own_descriptors(db: Path) -> None:
    """Through the whole pipeline (the detector's box mapped to CelebA's and back, the
    face box crop, landmarks-dlib-5, our warp onto the dlib template), each face's
    descriptor lies within 0.15 (raw, Euclidean) of the one dlib computes on its own
    chip of the detector's square; through landmarks-dlib-68 it lies farther (the
    68's points are not the ones the chip was placed by). Same man: 0.24 and more."""
    need_dlib()
    import dlib
    from PIL import Image
    from skimage import data

    from models.pipeline.faces import FacePipeline

    folder = photos()
    pretrained.import_source(db, "dlib")
    images = [np.asarray(Image.open(folder / n).convert("RGB")) for n in ("obama.jpg", "biden.jpg")]
    images.append(data.astronaut())
    models_dir = pretrained._package_dir(pretrained.SOURCES["dlib"])
    sp5 = dlib.shape_predictor(str(models_dir / "shape_predictor_5_face_landmarks.dat"))
    net = dlib.face_recognition_model_v1(
        str(models_dir / "dlib_face_recognition_resnet_model_v1.dat")
    )
    detector = dlib.get_frontal_face_detector()
    theirs = [
        np.array(net.compute_face_descriptor(im, sp5(im, detector(im, 1)[0]))) for im in images
    ]
    far = {}
    for landmarks in ("landmarks-dlib-5", "landmarks-dlib-68"):
        out = FacePipeline("run:detector-dlib-hog", landmarks, "recognition-dlib-resnet", db).run(
            images
        )
        far[landmarks] = [
            float(np.linalg.norm(out.faces_of(k)[0].embedding * np.linalg.norm(t) - t))
            for k, t in enumerate(theirs)
        ]
    assert max(far["landmarks-dlib-5"]) < 0.15, far
    assert np.mean(far["landmarks-dlib-5"]) < np.mean(far["landmarks-dlib-68"]), far


def test_the_dlib_template_reproduces_dlibs_own_face_chips() -> None:
    """Aligned on DLIB_TEMPLATE_150 with CelebA's five points (from the 68), each face's
    descriptor lies close to the one of dlib's own chip (made from its 5-point
    predictor), far closer than two photos of the same man (0.24 and more)."""
    need_dlib()
    import cv2
    import dlib
    from PIL import Image
    from skimage import data

    from models.alignment.similarity import DLIB_TEMPLATE_150, alignment_matrix
    from models.pretrained.dlib import celeba_points

    folder = photos()
    models_dir = pretrained._package_dir(pretrained.SOURCES["dlib"])
    detector = dlib.get_frontal_face_detector()
    sp5 = dlib.shape_predictor(str(models_dir / "shape_predictor_5_face_landmarks.dat"))
    sp68 = dlib.shape_predictor(str(models_dir / "shape_predictor_68_face_landmarks.dat"))
    net = dlib.face_recognition_model_v1(
        str(models_dir / "dlib_face_recognition_resnet_model_v1.dat")
    )
    images = [np.asarray(Image.open(folder / n).convert("RGB")) for n in ("obama.jpg", "biden.jpg")]
    distances = []
    for image in [*images, data.astronaut()]:
        rect = detector(image, 1)[0]
        theirs = np.array(net.compute_face_descriptor(image, sp5(image, rect)))
        parts = np.array([(p.x, p.y) for p in sp68(image, rect).parts()], np.float64)
        matrix = alignment_matrix(celeba_points(parts), DLIB_TEMPLATE_150, 150)
        chip = cv2.warpAffine(image, matrix[:2], (150, 150), flags=cv2.INTER_AREA)
        ours = np.array(net.compute_face_descriptor(np.ascontiguousarray(chip)))
        distances.append(float(np.linalg.norm(ours - theirs)))
    assert max(distances) < 0.2, distances


def test_a_pretrained_recognizer_is_measured_on_a_named_snapshot(tmp_path: Path) -> None:
    """align with landmarks-dlib-5 on the dlib template, then eval recognizer --snapshot:
    the figures go to metrics under the pretrained run, and identify's pair threshold
    is then the one measured here, no longer the published one."""
    need_dlib()
    from tests.conftest import holdout_snapshot, snapshot_catalog

    db = snapshot_catalog(tmp_path, ids=30, seed=5, style="easy")
    holdout_snapshot(db, images_per_id=8, train_per_id=4, name="h")
    pretrained.import_source(db, "dlib")
    code, out = celebcat("eval", "recognizer", "--run", "recognition-dlib-resnet", "--db", str(db))
    assert code != 0 and "--snapshot" in out
    code, out = celebcat(
        "align", "--run", "landmarks-dlib-5", "--snapshot", "h", "--template", "dlib",
        "--size", "150", "--db", str(db),
    )  # fmt: skip
    assert code == 0, out
    code, out = celebcat(
        "eval", "recognizer", "--run", "recognition-dlib-resnet", "--snapshot", "h",
        "--json", "--db", str(db),
    )  # fmt: skip
    assert code == 0, out
    stored = results.get_metrics(db, "recognition-dlib-resnet")
    assert (0, "open_set", "threshold@fpr=0.01") in stored
    assert (0, "test", "top1") in stored

    from catalog.reports import compare_runs

    compared = compare_runs(db, ["recognition-dlib-resnet"])
    row = dict(zip(compared.columns, compared.rows[0], strict=True))
    assert row["model"] == "dlib_face_recognition_resnet_model_v1"
    assert row["loss"] == "pretrained (dlib)" and row["epochs"] is None
    assert row["open_set tpr@fpr=0.01"] == stored[(0, "open_set", "tpr@fpr=0.01")]

    from models.pipeline.identify import open_set_threshold

    threshold = open_set_threshold(db, "recognition-dlib-resnet", 0.01)
    assert threshold.kind == "pair"
    assert threshold.value == stored[(0, "open_set", "threshold@fpr=0.01")]


# --- ONNX files --------------------------------------------------------------------------------

PROJECTION = np.linspace(-1, 1, 24, dtype=np.float32).reshape(3, 8)


def onnx_recognizer(path: Path, size: int | None = 112) -> Path:
    """A tiny recognizer in insightface's layout: input (N, 3, S, S), the embedding the
    per-channel mean of the normalised crop times PROJECTION (3 x 8)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    side = size if size else "s"
    nodes = [
        helper.make_node("ReduceMean", ["input.1"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_recognizer",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["n", 3, side, side])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", 8])],
        [numpy_helper.from_array(PROJECTION, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def reference_embedding(crops: np.ndarray, bgr: bool = False) -> np.ndarray:
    x = (crops.astype(np.float64) - 127.5) / 127.5
    if bgr:
        x = x[..., ::-1]
    e = x.mean(axis=(1, 2)) @ PROJECTION
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_an_onnx_recognizer_in_insightfaces_layout(db: Path, tmp_path: Path) -> None:
    path = onnx_recognizer(tmp_path / "tiny-r.onnx")
    code, out = celebcat("runs", "import", f"onnx:{path}", "--db", str(db))
    assert code != 0 and "--kind" in out
    code, out = celebcat(
        "runs", "import", f"onnx:{path}?landmarks=landmarks-x", "--kind", "recognition",
        "--db", str(db),
    )  # fmt: skip
    assert code == 0, out
    run = results.get_run(db, "recognition-onnx-tiny-r")
    assert run.config["size"] == 112 and run.config["embedding_dim"] == 8
    assert run.config["source"] == "aligned/arcface/landmarks-x"
    assert run.config["pretrained"]["sha256"] == pretrained.sha256(path)

    crops = np.random.default_rng(0).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    recognizer = store.load_recognizer("recognition-onnx-tiny-r", db)
    np.testing.assert_allclose(recognizer.embed(crops, 2), reference_embedding(crops), atol=1e-5)
    assert str(recognizer.recipe.source) == "aligned/arcface/landmarks-x"

    pretrained.import_source(db, f"onnx:{path}?channels=bgr", "recognition")
    bgr = store.load_recognizer("recognition-onnx-tiny-r", db).embed(crops)
    np.testing.assert_allclose(bgr, reference_embedding(crops, bgr=True), atol=1e-5)

    path.write_bytes(path.read_bytes() + b"\0")  # the file changed since its import
    with pytest.raises(pretrained.PretrainedError, match="tiny-r.onnx: not the"):
        store.load_recognizer("recognition-onnx-tiny-r", db)


def test_onnx_import_errors_are_one_line(db: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    for spec, kind, message in (
        (f"onnx:{junk}", "recognition", "not an ONNX model onnxruntime can run"),
        (f"onnx:{tmp_path / 'none.onnx'}", "recognition", "No ONNX file at"),
        (f"onnx:{onnx_recognizer(tmp_path / 'r.onnx')}?size=96", "recognition", "not size=96"),
        (f"onnx:{tmp_path / 'r.onnx'}?template=nope", "recognition", "template='nope'"),
        (f"onnx:{tmp_path / 'r.onnx'}?colour=1", "recognition", "option 'colour'"),
    ):
        with pytest.raises(pretrained.PretrainedError, match=message):
            pretrained.import_source(db, spec, kind)
    assert results.list_runs(db) == []


def test_the_pipeline_aligns_on_the_detectors_own_points(db: Path, tmp_path: Path) -> None:
    """An SCRFD-style ONNX detector gives five points; a recognizer imported with
    landmarks=detector is fed crops aligned on them, no landmark run in between."""
    from models.pipeline.faces import FacePipeline, PipelineError
    from tests.test_detectors import SCRFD_POINTS, _onnx_model, scrfd_outputs

    det = _onnx_model(tmp_path / "scrfd.onnx", scrfd_outputs(), (64, 64))
    pretrained.import_source(db, f"onnx:{det}", "detector")
    rec = onnx_recognizer(tmp_path / "r.onnx")
    pretrained.import_source(db, f"onnx:{rec}?landmarks=detector", "recognition")
    photo = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    pipe = FacePipeline("run:detector-onnx-scrfd", None, "recognition-onnx-r", db)
    out = pipe.run([photo])
    assert len(out.faces) == 1
    np.testing.assert_allclose(out.faces[0].landmarks, SCRFD_POINTS, atol=1e-4)
    assert out.faces[0].embedding.shape == (8,)
    from skimage import data

    with pytest.raises(PipelineError, match="gives none"):  # Haar finds her, without points
        FacePipeline("haar", None, "recognition-onnx-r", db).run([data.astronaut()])


def test_chip_to_image_is_where_dlib_cuts_its_face_chip() -> None:
    """Warping the photo through chip_to_image's inverse gives dlib's own chip (the
    astronaut: small enough that dlib cuts it without a pyramid), pixel for pixel up to
    interpolation; the other turn's sign would not."""
    need_dlib()
    import cv2
    import dlib
    from skimage import data

    from models.pretrained.dlib import CHIP, CHIP_PADDING, chip_to_image

    image = data.astronaut()
    models_dir = pretrained._package_dir(pretrained.SOURCES["dlib"])
    sp5 = dlib.shape_predictor(str(models_dir / "shape_predictor_5_face_landmarks.dat"))
    shape = sp5(image, dlib.get_frontal_face_detector()(image, 1)[0])
    theirs = np.asarray(dlib.get_face_chip(image, shape, CHIP, CHIP_PADDING), np.float64)
    details = dlib.get_face_chip_details(shape, CHIP, CHIP_PADDING)
    matrix = np.linalg.inv(chip_to_image(details))[:2]
    ours = cv2.warpAffine(image, matrix, (CHIP, CHIP), flags=cv2.INTER_LINEAR)
    assert np.abs(ours - theirs).mean() < 2.0
    assert details.angle != 0  # her head is turned: the sign of the turn is tested
