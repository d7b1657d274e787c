"""Face detectors: the catalog's boxes, OpenCV's Haar cascade, a trained CenterNet, ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import query, snapshot_catalog
from PIL import Image

from catalog import transforms as T
from catalog.detection import DetectionDataset, letterbox_matrix, map_boxes
from models.detection import centernet as cn
from models.detection.boxes import iou
from models.detection.detectors import (
    CatalogDetector,
    DetectorError,
    HaarDetector,
    OnnxDetector,
    TrainedDetector,
    haar_to_celeba,
)
from models.store import load_detector

#: The astronaut's face in scikit-image's data.astronaut(), in the CelebA box
#: convention (hair line to chin), measured by eye on the 512 x 512 photo.
ASTRONAUT_FACE = (180, 50, 270, 168)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_catalog(tmp_path_factory.mktemp("detectors"), ids=12, seed=3)


#: torch on one thread for every test (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def _image(db: Path, image_id: str) -> np.ndarray:
    root = query(db, "SELECT value FROM catalog_info WHERE key = 'image_root'")[0][0]
    path = query(db, "SELECT path FROM images WHERE image_id = ?", [image_id])[0][0]
    return np.asarray(Image.open(Path(root) / path).convert("RGB"))


# --- load_detector ------------------------------------------------------------------------


def test_specs_and_unknown_ones(db: Path) -> None:
    assert isinstance(load_detector("haar"), HaarDetector)
    assert load_detector("haar?max_side=640&min_neighbors=6").spec == (
        "haar?min_neighbors=6&max_side=640"
    )
    assert isinstance(load_detector("catalog", db), CatalogDetector)
    for bad in ("nope", "run:", "onnx:", "haar:x", ""):
        with pytest.raises(ValueError, match="Unknown detector.*catalog, haar.*run:.*onnx:"):
            load_detector(bad)
    with pytest.raises(DetectorError, match="option 'size'"):
        load_detector("haar?size=3")
    with pytest.raises(DetectorError, match="No ONNX model"):
        load_detector("onnx:/no/such/model.onnx")


# --- the catalog's boxes ------------------------------------------------------------------


def test_catalog_detector_gives_the_bboxes_row(db: Path) -> None:
    rows = query(db, "SELECT image_id, x_1, y_1, width, height FROM bboxes ORDER BY 1 LIMIT 3")
    detector = load_detector("catalog", db)
    images = [np.zeros((4, 4, 3), np.uint8)] * 3
    out = detector.detect(images, [r[0] for r in rows])
    for dets, (_, x, y, w, h) in zip(out, rows, strict=True):
        assert dets.dtype == np.float32 and dets.shape == (1, 5)
        np.testing.assert_array_equal(dets[0], [x, y, x + w, y + h, 1.0])
    with pytest.raises(DetectorError, match="'photo.jpg' is not an image of the catalog"):
        detector.detect(images[:1], ["photo.jpg"])
    with pytest.raises(DetectorError, match="needs each image's name"):
        detector.detect(images[:1])


# --- Haar ---------------------------------------------------------------------------------


def test_haar_box_maps_onto_the_celeba_convention() -> None:
    square = np.array([[100.0, 200.0, 80.0, 80.0]])
    m = {"dx": 0.1, "dy": -0.05, "sw": 0.9, "sh": 1.2}
    box = haar_to_celeba(square, m)[0]
    np.testing.assert_allclose((box[:2] + box[2:]) / 2, [140 + 8, 240 - 4])
    np.testing.assert_allclose(box[2:] - box[:2], [72, 96])


def test_haar_finds_the_astronauts_face_and_nothing_in_a_blank() -> None:
    from skimage import data

    detector = HaarDetector()
    photo, blank = data.astronaut(), np.full((300, 400, 3), 128, np.uint8)
    faces, none = detector.detect([photo, blank])
    assert none.shape == (0, 5)
    assert len(faces) == 1 and faces.dtype == np.float32
    assert iou(faces[:1, :4], np.array([ASTRONAUT_FACE]))[0, 0] > 0.7
    # a larger working scale finds the same face
    again = HaarDetector(max_side=512).detect([photo])[0]
    assert iou(again[:1, :4], faces[:1, :4])[0, 0] > 0.8


# --- the Dataset and the CenterNet maths --------------------------------------------------


def test_letterbox_and_box_mapping_keep_boxes_on_the_pixels() -> None:
    m = letterbox_matrix(200, 100, 64)  # scale 0.32, 50 px of padding above at full scale
    np.testing.assert_allclose(
        map_boxes(m, np.array([[0, 50, 200, 150]]))[0], [0, 32, 64, 64 + 0], atol=1e-9
    )
    back = map_boxes(T.invert(m), map_boxes(m, np.array([[10.0, 20, 60, 90]])))
    np.testing.assert_allclose(back[0], [10, 20, 60, 90], atol=1e-9)


def test_targets_decode_back_to_their_boxes() -> None:
    config = cn.CenterNetConfig(input_size=64)
    boxes = torch.tensor([[[8.0, 12, 40, 52], [0, 0, 0, 0]], [[30, 2, 62, 30], [4, 36, 20, 60]]])
    n = torch.tensor([1, 2])
    t = cn.render_targets(boxes, n, config)
    assert t["heat"].shape == (2, 1, 16, 16) and float(t["heat"].max()) == 1.0
    assert int((t["heat"] == 1).sum()) == 3
    # a perfect prediction: the targets as outputs decode to the boxes
    m = 16
    size = torch.zeros(2, 2, m, m)
    offset = torch.zeros(2, 2, m, m)
    for b in range(2):
        for k in range(int(n[b])):
            x, y = t["cell"][b, k].tolist()
            size[b, :, y, x] = t["size"][b, k]
            offset[b, :, y, x] = t["offset"][b, k]
    logits = torch.where(t["heat"] == 1, 10.0, -10.0)
    dets = cn.decode({"heat": logits, "size": size, "offset": offset}, config, top_k=2)
    np.testing.assert_allclose(dets[0, 0, :4], boxes[0, 0].numpy(), atol=1e-4)
    found = sorted(dets[1, :, :4].tolist())
    np.testing.assert_allclose(found, sorted(boxes[1].tolist()), atol=1e-4)
    loss = cn.detection_loss({"heat": logits, "size": size, "offset": offset}, t)
    assert float(loss) < 0.01


def test_detection_dataset_samples(db: Path) -> None:
    from models.detection.train import DETECTOR_AUGMENT

    plain = DetectionDataset(db, "s", "val", 64)
    sample = plain[0]
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.uint8
    assert int(sample["n_boxes"]) == 1
    # the box through the affine back to the original is the catalog's box
    affine = np.vstack([sample["affine"].double().numpy(), [0, 0, 1]])
    back = map_boxes(affine, sample["boxes"][:1].double().numpy())[0]
    np.testing.assert_allclose(back, plain.boxes[0], atol=0.05)
    mosaic = DetectionDataset(db, "s", "train", 64, augment=DETECTOR_AUGMENT, mosaic=1.0)
    counts = [int(mosaic[i]["n_boxes"]) for i in range(4)]
    assert max(counts) >= 3  # four faces, a few may fall below the visibility rule
    assert torch.equal(mosaic[1]["image"], mosaic[1]["image"])  # reproducible


# --- training -----------------------------------------------------------------------------


def test_trained_detector_learns_and_reports_test_iou(db: Path, tmp_path: Path) -> None:
    from models.detection.train import DetectorTrainConfig, evaluate_detector, train_detector

    seen: list[dict] = []
    config = DetectorTrainConfig(
        snapshot="s", input_size=64, batch_size=8, epochs=6, lr=4e-3, out_dir=str(tmp_path / "ck")
    )
    result = train_detector(config, db, progress=seen.append)
    ious = [e["val_iou"] for e in seen]
    assert ious[-1] > ious[0] + 0.15 and result.best_val_iou == max(ious), ious
    test = evaluate_detector(result.run_id, db)
    assert 0 <= test.metrics["iou"] <= 1 and "recall@iou=0.5" in test.metrics
    stored = query(
        db, "SELECT name, value FROM metrics WHERE run_id = ? AND split = 'test'", [result.run_id]
    )
    assert dict(stored)["iou"] == pytest.approx(test.metrics["iou"])
    # as a pipeline detector: boxes in the image's pixels
    detector = load_detector(f"run:{result.run_id}", db)
    assert isinstance(detector, TrainedDetector) and detector.spec == f"run:{result.run_id}"
    image_id = query(db, "SELECT image_id FROM snapshot_images WHERE split = 'test' LIMIT 1")[0][0]
    image = _image(db, image_id)
    detector.score_threshold = 0.0  # whatever five epochs learnt: the top box
    dets = detector.detect([image, image])
    assert dets[0].shape[1] == 5 and len(dets[0]) >= 1
    np.testing.assert_allclose(dets[0], dets[1])
    assert (dets[0][:, 2] > dets[0][:, 0]).all()


# --- ONNX ---------------------------------------------------------------------------------


def _onnx_model(path: Path, outputs: dict[str, np.ndarray], fixed: tuple[int, int] | None) -> Path:
    """A tiny ONNX model: each output a constant (plus 0 x the input's mean, so the graph
    reads its input), the input (1, 3, H, W) float32, H and W fixed or dynamic."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    h, w = fixed if fixed else ("h", "w")
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
    ]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    graph_outputs = []
    for name, value in outputs.items():
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}_value"))
        nodes.append(helper.make_node("Add", [f"{name}_value", "nothing"], [name]))
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, value.shape))
    graph = helper.make_graph(
        nodes,
        "tiny_detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, h, w])],
        graph_outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_onnx_one_output_normalised_boxes(tmp_path: Path) -> None:
    dets = np.array(
        [[[0.25, 0.1, 0.75, 0.6, 0.9], [0.26, 0.11, 0.74, 0.61, 0.8], [0.0, 0.0, 0.1, 0.1, 0.2]]]
    )
    path = _onnx_model(tmp_path / "one.onnx", {"dets": dets}, None)
    detector = load_detector(f"onnx:{path}")
    assert isinstance(detector, OnnxDetector) and detector.fixed is None
    out = detector.detect([np.zeros((200, 400, 3), np.uint8)])[0]
    # the low score dropped, the overlapping second box suppressed, scaled to 400 x 200
    np.testing.assert_allclose(out, [[100, 20, 300, 120, 0.9]], rtol=1e-5)
    lower = load_detector(f"onnx:{path}?score=0.1&nms=0.99").detect(
        [np.zeros((200, 400, 3), np.uint8)]
    )[0]
    assert len(lower) == 3


def test_onnx_two_outputs_fixed_input_in_pixels(tmp_path: Path) -> None:
    # UltraFace's layout: a fixed 240 x 320 input, boxes (1, N, 4), scores (1, N, 2)
    boxes = np.array([[[32.0, 24, 96, 120], [160, 100, 320, 240]]])
    scores = np.array([[[0.1, 0.9], [0.7, 0.3]]])
    path = _onnx_model(tmp_path / "two.onnx", {"boxes": boxes, "scores": scores}, (240, 320))
    detector = load_detector(f"onnx:{path}?mean=127&std=128&coords=pixels")
    assert detector.fixed == (240, 320) and detector.mean == 127
    out = detector.detect([np.zeros((480, 640, 3), np.uint8)])[0]
    np.testing.assert_allclose(out, [[64, 48, 192, 240, 0.9]], rtol=1e-5)


def test_onnx_errors_are_one_line(tmp_path: Path) -> None:
    path = _onnx_model(tmp_path / "bad.onnx", {"dets": np.zeros((1, 3, 6))}, None)
    with pytest.raises(DetectorError, match=r"\(N, 5\).*got shape \(1, 3, 6\)") as err:
        load_detector(f"onnx:{path}").detect([np.zeros((10, 10, 3), np.uint8)])
    assert "\n" not in str(err.value)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(DetectorError, match="not an ONNX model onnxruntime can run") as err:
        load_detector(f"onnx:{junk}")
    assert "\n" not in str(err.value)
    with pytest.raises(DetectorError, match="onnx option 'size'"):
        load_detector(f"onnx:{junk}?size=3")


def test_train_detector_command_prints_the_test_figures(db: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import cli

    result = CliRunner().invoke(
        cli.app,
        [
            "train",
            "detector",
            "--snapshot",
            "s",
            "--epochs",
            "1",
            "--max-batches",
            "1",
            "--input-size",
            "64",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "ck"),
            "--db",
            str(db),
        ],
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "test split (" in text and "recall@IoU0.5" in text and "--detector run:detector-" in text
    bad = CliRunner().invoke(
        cli.app, ["train", "detector", "--snapshot", "s", "--input-size", "50", "--db", str(db)]
    )
    assert isinstance(bad.exception, cli.UserError)
    assert "input_size must be a multiple of 32" in str(bad.exception)


def scrfd_outputs(size: int = 64, *, points: bool = True) -> dict[str, np.ndarray]:
    """SCRFD-shaped heads for a ``size`` x ``size`` input (2 anchors a place): one face,
    at stride 16's place (1, 1), anchor 0: centre (16, 16), box distances 1 (x 16),
    five points at offsets of the centre; every other score 0."""
    outputs: dict[str, np.ndarray] = {}
    sizes = {s: (size // s) ** 2 * 2 for s in (8, 16, 32)}
    for s, k in sizes.items():
        score = np.zeros((k, 1), np.float32)
        if s == 16:
            score[(1 * (size // 16) + 1) * 2] = 0.9
        outputs[f"score_{s}"] = score
    for s, k in sizes.items():
        outputs[f"bbox_{s}"] = np.ones((k, 4), np.float32)
    if points:
        offsets = np.array([-0.5, -0.4, 0.5, -0.4, 0.0, 0.1, -0.4, 0.6, 0.4, 0.6], np.float32)
        for s, k in sizes.items():
            outputs[f"kps_{s}"] = np.tile(offsets, (k, 1))
    return outputs


#: The face scrfd_outputs puts in its input: box, then five points (input pixels).
SCRFD_BOX = [0, 0, 32, 32]
SCRFD_POINTS = [[8, 9.6], [24, 9.6], [16, 17.6], [9.6, 25.6], [22.4, 25.6]]


def test_onnx_scrfd_heads_with_points_stretched_and_letterboxed(tmp_path: Path) -> None:
    path = _onnx_model(tmp_path / "scrfd.onnx", scrfd_outputs(), (64, 64))
    dets = load_detector(f"onnx:{path}").detect([np.zeros((64, 64, 3), np.uint8)])[0]
    assert dets.shape == (1, 15)
    np.testing.assert_allclose(dets[0, :4], SCRFD_BOX, atol=1e-4)
    assert dets[0, 4] == pytest.approx(0.9)
    np.testing.assert_allclose(dets[0, 5:].reshape(5, 2), SCRFD_POINTS, atol=1e-4)
    # a 128 x 256 photo: stretched, x and y scale apart; letterboxed, both by 4
    photo = [np.zeros((128, 256, 3), np.uint8)]
    stretched = load_detector(f"onnx:{path}").detect(photo)[0]
    np.testing.assert_allclose(stretched[0, :4], [0, 0, 128, 64], atol=1e-3)
    boxed = load_detector(f"onnx:{path}?resize=letterbox").detect(photo)[0]
    np.testing.assert_allclose(boxed[0, :4], [0, 0, 128, 128], atol=1e-3)
    np.testing.assert_allclose(boxed[0, 5:].reshape(5, 2), np.array(SCRFD_POINTS) * 4, atol=1e-3)
    # a dynamic input fed a fixed side: the same as a fixed 64 x 64 input
    dynamic = _onnx_model(tmp_path / "dyn.onnx", scrfd_outputs(), None)
    fed = load_detector(f"onnx:{dynamic}?input=64&resize=letterbox").detect(photo)[0]
    np.testing.assert_allclose(fed, boxed, atol=1e-3)
    # the 6-output form: boxes alone
    plain = _onnx_model(tmp_path / "plain.onnx", scrfd_outputs(points=False), (64, 64))
    assert load_detector(f"onnx:{plain}").detect([np.zeros((64, 64, 3), np.uint8)])[0].shape == (
        1,
        5,
    )


def test_onnx_three_outputs_carry_points_through_nms(tmp_path: Path) -> None:
    boxes = np.array([[10, 10, 50, 50], [12, 12, 52, 52], [60, 60, 90, 90]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    points = np.arange(30, dtype=np.float32).reshape(3, 5, 2)
    path = _onnx_model(
        tmp_path / "three.onnx", {"boxes": boxes, "scores": scores, "kps": points}, (100, 100)
    )
    dets = load_detector(f"onnx:{path}?coords=pixels").detect([np.zeros((100, 100, 3), np.uint8)])[
        0
    ]
    assert dets.shape == (2, 15)  # the second box overlaps the first: suppressed
    np.testing.assert_allclose(dets[:, 5:], points[[0, 2]].reshape(2, 10))
    bad = _onnx_model(
        tmp_path / "bad3.onnx", {"boxes": boxes, "scores": scores, "kps": points[:, :3]}, None
    )
    with pytest.raises(DetectorError, match="five points"):
        load_detector(f"onnx:{bad}").detect([np.zeros((10, 10, 3), np.uint8)])
