"""``celebcat demo``, the training half: landmarks, alignment, an ArcFace recognizer,
its evaluation, a face detector, a gallery, identify on a group photo, the report.

The data half (synthesis, ingest, selection, snapshot, the group photo, the plans) is
``catalog.demo``. Each step is the library call its ``celebcat`` command makes, with
the lengths of a :class:`catalog.demo.Plan`; real runs are those commands with more
epochs (``celebcat train landmarks``, ``train recognizer``, ``train detector``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalog.demo import GALLERY, PLANS, SNAPSHOT, DemoFolder, Plan
from catalog.info import QueryResult

#: Epochs of the demo's landmark run (the default plan's).
EPOCHS = PLANS["default"].landmark_epochs
#: Crop side of the demo's alignment, the recognizer's input.
ALIGN_SIZE = PLANS["default"].size

Progress = Callable[[dict[str, Any]], None]


def train(
    folder: DemoFolder,
    *,
    epochs: int = EPOCHS,
    plan: Plan | None = None,
    progress: Progress | None = None,
) -> Any:
    """Step 5: train the small landmark model on the demo snapshot; the TrainResult."""
    from models.landmarks.train import LandmarkTrainConfig, train_landmarks

    config = LandmarkTrainConfig(
        snapshot=SNAPSHOT,
        epochs=plan.landmark_epochs if plan else epochs,
        out_dir=str(Path(folder.checkpoints)),
    )
    return train_landmarks(config, folder.db, progress=progress)


def align_and_report(
    folder: DemoFolder,
    run_id: str,
    *,
    by: tuple[str, ...] = ("Eyeglasses",),
    plan: Plan | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[Any, QueryResult]:
    """Step 6: align the snapshot with the run's landmarks; (AlignResult, the test
    split's NME report grouped ``by`` these attributes)."""
    from catalog.reports import landmark_report
    from models.alignment.snapshot import align_snapshot

    plan = plan or PLANS["default"]
    result = align_snapshot(
        run_id, SNAPSHOT, folder.db, size=plan.size, template=plan.template, progress=progress
    )
    return result, landmark_report(folder.db, run_id, list(by), split="test")


def train_recognizer(folder: DemoFolder, plan: Plan, *, progress: Progress | None = None) -> Any:
    """Step 7: ArcFace on the CPU backbone, on the aligned crops of step 6."""
    from models.recognition.train import RecognizerTrainConfig, train_recognizer

    config = RecognizerTrainConfig(
        snapshot=SNAPSHOT,
        epochs=plan.recognizer_epochs,
        backbone="face_cpu",
        loss="arcface",
        source="aligned",
        size=plan.size,
        embedding_dim=plan.embedding_dim,
        out_dir=str(folder.checkpoints),
    )
    return train_recognizer(config, folder.db, progress=progress)


def evaluate(
    folder: DemoFolder, run_id: str, *, progress: Callable[[str, int, int], None] | None = None
) -> Any:
    """Step 8: embed the snapshot, measure the test and open-set figures (written to
    the catalog: the thresholds identify uses come from here); the RecognitionEval."""
    from models.recognition.evaluate import evaluate_recognizer

    return evaluate_recognizer(run_id, folder.db, progress=progress)


def open_set_table(folder: DemoFolder, run_id: str) -> QueryResult:
    """The run's figures beside the reference's, one row a figure (as
    ``celebcat report compare RUN --reference`` prints them)."""
    from catalog.reports import compare_runs

    table = compare_runs(folder.db, [run_id], reference=True)
    names = ["ours" if r[0] == run_id else r[0].removeprefix("reference: ") for r in table.rows]
    rows = [(c, *(r[i] for r in table.rows)) for i, c in enumerate(table.columns) if i >= 4]
    keep = [k for k, name in enumerate(names) if name in ("ours", "softmax CE", "ArcFace")]
    return QueryResult(
        ["figure", *(f"reference {names[k]}" if names[k] != "ours" else "ours" for k in keep)],
        [
            (r[0], *(r[k + 1] for k in keep))
            for r in rows
            if any(r[k + 1] is not None for k in keep)
        ],
    )


@dataclass
class DetectorOutcome:
    run_id: str
    epochs: int
    test: dict[str, float]


def train_detector(
    folder: DemoFolder, plan: Plan, *, progress: Progress | None = None
) -> DetectorOutcome:
    """Step 9: the small CenterNet on the catalog's boxes, many of its pictures 2 x 2
    mosaics (several small faces, as a group photo has); its test IoU and recall."""
    from models.detection.train import DetectorTrainConfig, evaluate_detector, train_detector

    config = DetectorTrainConfig(
        snapshot=SNAPSHOT,
        epochs=plan.detector_epochs,
        mosaic=plan.detector_mosaic,
        out_dir=str(folder.checkpoints),
    )
    run = train_detector(config, folder.db, progress=progress)
    test = evaluate_detector(run.run_id, folder.db)
    return DetectorOutcome(run.run_id, run.epochs_done, test.metrics)


def build_gallery(folder: DemoFolder, recognizer_run: str) -> Any:
    """Step 10: gallery :data:`catalog.demo.GALLERY` from the snapshot's query split
    (the held-out people, never trained on), replacing an earlier demo's; faces from
    the catalog's boxes, aligned with the landmark run the recognizer's crops used."""
    from models.pipeline.identify import add_gallery

    return add_gallery(
        folder.db, GALLERY, recognizer_run, snapshot=SNAPSHOT, split="query", replace=True
    )


@dataclass
class DemoIdentify:
    result: Any  # models.pipeline.identify.IdentifyResult
    photo: Any  # catalog.synth.group.GroupPhoto
    rows: list[Any]  # models.pipeline.report.TruthRow, one per person
    extra: int  # detections where no one is
    drawn: Path


def identify_photo(
    folder: DemoFolder, plan: Plan, recognizer_run: str, detector_run: str, *, seed: int = 0
) -> DemoIdentify:
    """Step 11: the group photo (``catalog.demo.group_photo``), its faces found by the
    trained detector, named against the gallery at the open-set threshold of
    ``plan.fpr``, drawn to ``folder.identified`` and checked against the truth."""
    from catalog.demo import group_photo
    from models.pipeline.identify import draw_faces, identify
    from models.pipeline.report import identify_rows

    photo = group_photo(folder, plan, seed=seed)
    result = identify(
        [folder.photo],
        GALLERY,
        folder.db,
        run=recognizer_run,
        detector=f"run:{detector_run}",
        fpr=plan.fpr,
    )
    draw_faces(result.images[0], result.faces, folder.identified)
    rows, extra = identify_rows(result, photo)
    return DemoIdentify(result, photo, rows, extra, folder.identified)


def write_report(
    folder: DemoFolder,
    plan: Plan,
    landmark_run: str,
    recognizer_run: str,
    identified: DemoIdentify,
    timings: QueryResult | None = None,
    detector: DetectorOutcome | None = None,
) -> tuple[Path, list[str]]:
    """Step 12: ``folder.report/index.html`` (:func:`models.pipeline.report.write_report`)
    with the identify result and, where given, the detector's figures and the steps'
    timings."""
    from catalog import html_report as H
    from models.pipeline.report import identify_section, write_report

    sections = [
        identify_section(
            identified.result, identified.drawn.read_bytes(), identified.photo, "the group photo"
        )
    ]
    if detector is not None:
        sections[0].paragraphs.append(
            f"Faces found by detector run {detector.run_id} ({detector.epochs} epochs; test "
            f"split IoU {detector.test.get('iou', float('nan')):.3f}, recall at IoU 0.5 "
            f"{detector.test.get('recall@iou=0.5', float('nan')):.3f})."
        )
    if timings is not None:
        sections.append(
            H.Section(
                "How long each step took",
                [
                    "Wall and CPU seconds of this demo's steps up to the report (CPU: this process "
                    "and its workers, all threads)."
                ],
                [H.Table("steps", timings)],
                anchor="timings",
            )
        )
    return write_report(
        folder.db,
        folder.report,
        runs=[landmark_run, recognizer_run],
        snapshot=SNAPSHOT,
        sections=sections,
        title="celebcat demo",
        subtitle=f"the {plan.name} demo: synthetic CelebA of {plan.ids} identities",
    )
