"""``celebcat demo`` in one place: how big a demo is (:data:`PLANS`), where it writes
(:class:`DemoFolder`), its steps, the order it runs them in (:func:`run`), how long
each took (:class:`StepClock`) and the summary it ends with (:func:`summary`).

The data half: a synthetic CelebA made on the spot, ingested, selected with
parameters that fit it and frozen as snapshot ``demo``; the group photo the demo
identifies. The training half: landmarks, alignment, an ArcFace recognizer, its
evaluation, a face detector, a gallery, identify on the group photo, the HTML report.
Each step is the library call its ``celebcat`` command makes, with the lengths of a
:class:`Plan`; real runs are those commands with more epochs (``celebcat train
landmarks``, ``train recognizer``, ``train detector``).

:func:`run` says what to show on a :class:`Screen` (the CLI's console shows it), so
the CLI only parses the options and prints. Nothing here imports torch at module
level: ``celebcat demo --no-train`` and a missing torch stop at the snapshot without
it. Running the demo again into the same folder replaces its data, catalog tables,
snapshot, gallery and report (training runs and checkpoints of earlier demos stay, as
any run does).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from catalog.metric_names import MetricName, at_fpr

if TYPE_CHECKING:
    from catalog.info import QueryResult
    from catalog.ingest import IngestProgress, IngestResult
    from catalog.selection import SelectionSummary
    from catalog.snapshots import Snapshot
    from catalog.synth import SynthSummary
    from catalog.synth.group import GroupPhoto

#: The snapshot the demo freezes, and the gallery it builds (both replaced when run again).
SNAPSHOT = "demo"
GALLERY = "demo"
#: The demo's folder when none is given (kept: the report is in it).
DEFAULT_OUT = Path("celebcat-demo")


@dataclass(frozen=True)
class Plan:
    """How big a demo is: its data, selection, training lengths and group photo.

    Of the identities that have ``images_per_id`` clean images, ``query_share`` are
    held out as queries with ``query_images`` images each (the gallery's people) and
    ``distractor_share`` as distractors (strangers, in no gallery), the rest split
    70/15/15 (``celebcat select --fit``). The gallery's unknown-face threshold is
    measured on the distractors, and a rate measured on few people is noisy (stranger
    scores cluster by person), so there are many. The group photo shows ``known``
    query identities (photos the gallery does not hold) and ``strangers`` distractor
    identities (whom the threshold never saw), as many as there are.
    """

    name: str
    ids: int
    images_per_id: int
    query_share: float
    distractor_share: float
    query_images: int
    landmark_epochs: int
    recognizer_epochs: int
    detector_epochs: int
    size: int = 64  # aligned crops: the recognizer's input side
    template: str = "arcface"
    embedding_dim: int = 128
    detector_mosaic: float = 0.6  # several small faces per training picture, as in a group
    #: Batches per epoch of the landmark and detector trainings (None: the whole train
    #: split): their minutes stay the same however many people the data has.
    train_batches: int | None = None
    #: Images of each distractor (held-out, not in the gallery) person: the strangers
    #: the gallery's threshold is measured on (None: all ``images_per_id``).
    distractor_images: int | None = None
    known: int = 3
    strangers: int = 3
    fpir: float = 0.01  # the rate at which the gallery may name a stranger
    #: The synthetic population: "easy", whose people small models tell apart within
    #: the demo's minutes. On the default "hard" one a recognizer needs about 15 CPU
    #: minutes and 800 identities (docs/recognition.md); measured with this plan: test
    #: top-1 0.22 and no known face of the group photo named.
    style: str = "easy"

    def with_ids(self, ids: int | None) -> Plan:
        return self if ids is None else replace(self, ids=int(ids))


#: ``celebcat demo`` and ``celebcat demo --full``. The lengths were chosen by measuring
#: each step's CPU time (README, "Two commands"): 142 s of wall time (242 CPU s) for
#: the default on an idle 2-core machine, 645 s (1,132 CPU s) for --full.
PLANS: dict[str, Plan] = {
    "default": Plan(
        "default",
        ids=240,
        images_per_id=12,
        query_share=0.11,
        distractor_share=0.6,
        query_images=3,
        landmark_epochs=10,
        recognizer_epochs=40,
        detector_epochs=20,
    ),
    "full": Plan(
        "full",
        ids=500,
        images_per_id=15,
        query_share=0.12,
        distractor_share=0.5,
        query_images=4,
        landmark_epochs=15,
        recognizer_epochs=60,
        detector_epochs=30,
    ),
}
#: Identities of the default demo (``--ids`` in ``celebcat demo --help``).
IDS = PLANS["default"].ids
IMAGES_PER_ID = PLANS["default"].images_per_id
#: Epochs of the demo's landmark run (the default plan's).
EPOCHS = PLANS["default"].landmark_epochs
#: Crop side of the demo's alignment, the recognizer's input.
ALIGN_SIZE = PLANS["default"].size

#: A training step's per-epoch callback: the epoch's figures.
Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class DemoFolder:
    """Where a demo writes: ``data/`` (the synthetic CelebA), ``celeba.duckdb`` (its
    catalog), ``checkpoints/`` (the runs), ``group.png`` (the photo it identifies,
    ``identified.png`` with the answer drawn) and ``report/index.html``."""

    out: Path

    @property
    def data_dir(self) -> Path:
        return self.out / "data"

    @property
    def db(self) -> Path:
        return self.out / "celeba.duckdb"

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"

    @property
    def photo(self) -> Path:
        return self.out / "group.png"

    @property
    def identified(self) -> Path:
        return self.out / "identified.png"

    @property
    def report(self) -> Path:
        return self.out / "report"


@contextmanager
def demo_folder(out: str | os.PathLike[str] | None = None) -> Iterator[DemoFolder]:
    """``out`` (kept), or a temporary folder removed on exit when ``out`` is None."""
    if out is not None:
        yield DemoFolder(Path(out))
        return
    with tempfile.TemporaryDirectory(prefix="celebcat-demo-") as temp:
        yield DemoFolder(Path(temp))


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (synth's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class StepClock:
    """Wall and CPU seconds of each step of a demo, in order."""

    steps: list[tuple[str, float, float]] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), _cpu_seconds()
        try:
            yield
        finally:
            self.steps.append((name, time.perf_counter() - wall, _cpu_seconds() - cpu))

    def table(self) -> QueryResult:
        from catalog.info import QueryResult

        rows = [(n, round(w, 1), round(c, 1)) for n, w, c in self.steps]
        rows.append(
            (
                "total",
                round(sum(s[1] for s in self.steps), 1),
                round(sum(s[2] for s in self.steps), 1),
            )
        )
        return QueryResult(["step", "wall s", "CPU s"], rows)


# --- the data half: steps 1 to 4, and the group photo of step 11 --------------------


def synthesize_data(
    folder: DemoFolder,
    *,
    ids: int = IDS,
    seed: int = 0,
    style: str = "easy",
    progress: Callable[[int, int], None] | None = None,
) -> SynthSummary:
    """Step 1: ``ids`` identities of synthetic CelebA (population ``style``) into
    ``folder.data_dir`` (an earlier demo's files there are replaced)."""
    from catalog.synth import synthesize

    return synthesize(folder.data_dir, ids=ids, seed=seed, style=style, progress=progress)


def ingest_data(folder: DemoFolder, *, progress: IngestProgress | None = None) -> IngestResult:
    """Step 2: the synthetic files into ``folder.db`` (replacing an earlier demo's)."""
    from catalog.ingest import IngestProgress, ingest

    return ingest(folder.data_dir, folder.db, progress=progress or IngestProgress())


def loaded(folder: DemoFolder) -> tuple[QueryResult, QueryResult]:
    """Step 3: (tables with their row counts, the problems found at ingest)."""
    from catalog.info import list_tables, problem_summary

    return list_tables(folder.db, counts=True), problem_summary(folder.db)


def held_out(eligible: int, plan: Plan) -> tuple[int, int]:
    """(query, distractor) identities of ``eligible`` ones: the plan's shares, at least
    2 each, and at least 2 identities left to train on (distractors give way first)."""
    query = max(2, int(eligible * plan.query_share))
    distractor = max(2, int(eligible * plan.distractor_share))
    distractor = max(min(distractor, eligible - 2 - query), 0)
    return max(min(query, eligible - 2 - distractor), 0), distractor


def select_and_freeze(
    folder: DemoFolder, *, images_per_id: int = IMAGES_PER_ID, plan: Plan | None = None
) -> tuple[SelectionSummary, Snapshot]:
    """Step 4: select with the parameters that fit the data (``celebcat select --fit``)
    and freeze the selection as snapshot :data:`SNAPSHOT`, replacing an earlier one.

    With a ``plan``: its ``images_per_id``, and its queries and distractors
    (:func:`held_out`) with ``query_images`` and ``distractor_images`` each."""
    from catalog.selection import fitted_params, select
    from catalog.snapshots import SnapshotError, create, drop

    extra: dict[str, int] = {}
    if plan is not None:
        images_per_id = plan.images_per_id
        eligible = fitted_params(folder.db, images_per_id=images_per_id)["n_ids"]
        query, distractor = held_out(eligible, plan)
        extra = {
            "holdout_ids": query + distractor,
            "query_ids": query,
            "distractor_ids": distractor,
            "query_images": min(plan.query_images, images_per_id),
            "distractor_images": min(plan.distractor_images or images_per_id, images_per_id),
        }
    summary = select(folder.db, fit=True, images_per_id=images_per_id, **extra)
    try:
        drop(SNAPSHOT, folder.db)
    except SnapshotError:  # the first demo into this folder
        pass
    return summary, create(SNAPSHOT, folder.db)


#: The images of snapshot ``?`` that it uses (a split: trained on, evaluated on, in a
#: gallery or its calibration).
_USED = "SELECT image_id FROM snapshot_images WHERE snapshot = ? AND split IS NOT NULL"


def photo_people(folder: DemoFolder, plan: Plan, *, seed: int = 0) -> tuple[list[int], list[int]]:
    """Who the group photo shows: ``plan.known`` query identities (the gallery's
    people) and ``plan.strangers`` distractor identities, each chosen by a hash of
    (seed, identity) among those with a clean image the snapshot does not use."""
    from catalog.db import connect

    con = connect(folder.db, read_only=True)
    try:

        def ids(split: str) -> list[int]:
            # only people with a clean image the snapshot does not use: one whose
            # images are all in the gallery or the calibration cannot be in the photo
            return [
                r[0]
                for r in con.execute(
                    "SELECT DISTINCT s.identity FROM snapshot_images s "
                    "WHERE s.snapshot = ? AND s.split = ? AND EXISTS (SELECT 1 FROM "
                    "clean_images c JOIN images i USING (image_id) "
                    "WHERE c.identity = s.identity AND i.error IS NULL "
                    f"AND c.image_id NOT IN ({_USED})) "
                    "ORDER BY md5(? || ':' || s.identity)",
                    [SNAPSHOT, split, SNAPSHOT, str(seed)],
                ).fetchall()
            ]

        return ids("query")[: plan.known], ids("distractor")[: plan.strangers]
    finally:
        con.close()


def group_photo(folder: DemoFolder, plan: Plan, *, seed: int = 0) -> GroupPhoto:
    """The photo to identify (saved as ``folder.photo``): ``plan.known`` query
    identities of the snapshot, the gallery's people, each from an image the snapshot
    does not use (so neither the gallery nor training nor evaluation saw it), and
    ``plan.strangers`` distractor identities (in no gallery), in a seeded order.
    Roles: ``gallery`` or ``stranger``."""
    import numpy as np

    from catalog.synth.group import group_photo as compose

    known, strangers = photo_people(folder, plan, seed=seed)
    people = [(i, "gallery") for i in known] + [(i, "stranger") for i in strangers]
    order = np.random.default_rng(seed).permutation(len(people))
    people = [people[k] for k in order]
    photo = compose(
        folder.db,
        [i for i, _ in people],
        roles=[r for _, r in people],
        exclude=used_images(folder),
        seed=seed,
        **photo_layout(len(people)),
    )
    photo.save(folder.photo)
    return photo


def used_images(folder: DemoFolder) -> list[str]:
    """The images the demo snapshot uses (trained on, evaluated on, in the gallery or
    its calibration): none of them is in the group photo."""
    from catalog.db import connect

    con = connect(folder.db, read_only=True)
    try:
        return [r[0] for r in con.execute(_USED, [SNAPSHOT]).fetchall()]
    finally:
        con.close()


def photo_layout(people: int) -> dict[str, Any]:
    """How the demo's group photos lay out ``people`` faces: 200 px portraits, the face
    box 0.8 of each, in rows of 3 (of 2 for four or fewer)."""
    return {"columns": 3 if people > 4 else 2, "tile": 200, "face_share": 0.8}


# --- the training half: steps 5 to 12 ----------------------------------------------


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
        max_batches_per_epoch=plan.train_batches if plan else None,
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


#: The recognizer this package ships (:mod:`models.pretrained.synthetic`): trained
#: beforehand on synthetic people of the demo's style whom no demo draws.
SHIPPED = "recognition-synthetic-easy"
#: And the face detector it ships, trained on that population's pictures.
SHIPPED_DETECTOR = "detector-synthetic-easy"
#: What chooses the recognizer identify uses: its open-set identification rate (TPIR)
#: at this rate of strangers named (FPIR) on the demo snapshot's held-out people, the
#: search identify makes.
CHOOSE_FPIR = 0.01


def evaluate_shipped(
    folder: DemoFolder, *, progress: Callable[[str, int, int], None] | None = None
) -> Any:
    """Step 8, second half: the recognizer this package ships, imported as a run of the
    demo's catalog (``celebcat runs import synthetic``) and measured on the demo
    snapshot as the one trained here is, on crops aligned as it was trained (the true
    landmarks: ``celebcat align --source truth``); its RecognitionEval. PretrainedError
    where its file is missing or not the one this version ships."""
    from catalog.crop_source import CropSource
    from models.alignment.snapshot import align_snapshot
    from models.pretrained import import_source
    from models.recognition.evaluate import evaluate_recognizer

    model, config = next(
        (m, c) for m, c in import_source(folder.db, "synthetic") if m.kind == "recognition"
    )
    source = CropSource.parse(str(config["source"]))
    assert source.template is not None
    align_snapshot(
        None,
        SNAPSHOT,
        folder.db,
        size=int(config["size"]),
        template=source.template,
        source="truth",
        progress=progress,
    )
    return evaluate_recognizer(model.run_id, folder.db, snapshot=SNAPSHOT, progress=progress)


def choose_recognizer(own: Any, shipped: Any | None) -> tuple[str, str]:
    """The run identify uses and why, measured: of the recognizer trained here
    (``own``, its RecognitionEval) and the shipped one (None where it could not be
    loaded), the one with the higher open-set TPIR at FPIR :data:`CHOOSE_FPIR` on the
    demo snapshot (the trained one on a tie)."""
    key = str(MetricName("tpir", "fpir", CHOOSE_FPIR))

    def tpir(e: Any) -> float:
        return float(e.metrics.get("open_set", {}).get(key, float("nan")))

    mine = tpir(own)
    what = f"open-set TPIR at FPIR {CHOOSE_FPIR} on this snapshot"
    # a figure missing (NaN) loses: the shipped one's never wins, the trained one's always
    if shipped is None or not tpir(shipped) > (-1.0 if math.isnan(mine) else mine):
        other = "" if shipped is None else f", the shipped one's {tpir(shipped):.3f}"
        return own.run_id, f"identify uses {own.run_id}, trained here ({what} {mine:.3f}{other})"
    return shipped.run_id, (
        f"identify uses {shipped.run_id}, the recognizer shipped with celebcat (trained "
        f"beforehand on synthetic people no demo draws): {what} {tpir(shipped):.3f}, "
        f"against {mine:.3f} for the one trained here in the demo's seconds"
    )


def open_set_table(folder: DemoFolder, run_id: str, shipped: str | None = None) -> QueryResult:
    """The run's figures (and the shipped recognizer's, where given) beside the
    reference's, one row a figure (as ``celebcat report compare --run RUN --reference``
    prints them)."""
    from catalog.info import QueryResult
    from catalog.reports import compare_runs

    runs = [run_id] + ([shipped] if shipped else [])
    table = compare_runs(folder.db, runs, reference=True)
    own = {run_id: "ours", shipped: "shipped"}
    names = [own.get(r[0]) or r[0].removeprefix("reference: ") for r in table.rows]
    rows = [(c, *(r[i] for r in table.rows)) for i, c in enumerate(table.columns) if i >= 4]
    keep = [
        k for k, name in enumerate(names) if name in ("ours", "shipped", "softmax CE", "ArcFace")
    ]
    return QueryResult(
        [
            "figure",
            *(
                names[k] if names[k] in ("ours", "shipped") else f"reference {names[k]}"
                for k in keep
            ),
        ],
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
        max_batches_per_epoch=plan.train_batches,
        out_dir=str(folder.checkpoints),
    )
    run = train_detector(config, folder.db, progress=progress)
    test = evaluate_detector(run.run_id, folder.db)
    return DetectorOutcome(run.run_id, run.epochs_done, test.metrics)


#: Group photos of the snapshot's test people the demo's detectors are measured on
#: (at most: as many as its test people make).
CHECK_PHOTOS = 6


@dataclass
class DetectorCheck:
    """How many of the faces of group photos a detector found (IoU >= 0.5 with the
    truth), how many of its boxes covered no face, and the mean IoU of those found."""

    run_id: str
    found: int
    faces: int
    extra: int
    photos: int
    iou: float


def check_detector(
    folder: DemoFolder, plan: Plan, detector_run: str, *, seed: int = 0
) -> DetectorCheck:
    """Step 9, second half: ``detector_run`` on :data:`CHECK_PHOTOS` group photos laid
    out as the demo's (:func:`photo_layout`), each of ``plan.known + plan.strangers``
    of the snapshot's test people from their test images: people and pictures that the
    photo to identify does not show, faces no detector here trained on."""
    import numpy as np

    from catalog.db import connect
    from catalog.synth.group import group_photo as compose
    from models.detection.boxes import match
    from models.store import load_detector

    con = connect(folder.db, read_only=True)
    try:
        rows = con.execute(
            "SELECT t.identity, list(i.image_id) FILTER (WHERE i.image_id NOT IN "
            "(SELECT image_id FROM snapshot_images WHERE snapshot = ? AND split = 'test')) "
            "FROM (SELECT DISTINCT identity FROM snapshot_images "
            "WHERE snapshot = ? AND split = 'test') t JOIN identities i USING (identity) "
            "GROUP BY t.identity ORDER BY md5(? || ':' || t.identity)",
            [SNAPSHOT, SNAPSHOT, str(seed)],
        ).fetchall()
    finally:
        con.close()
    detector = load_detector(f"run:{detector_run}", folder.db)
    size = plan.known + plan.strangers
    faces = extra = 0
    overlaps: list[float] = []
    photos = min(CHECK_PHOTOS, len(rows) // max(size, 1))
    for k in range(photos):
        people = rows[k * size : (k + 1) * size]
        photo = compose(
            folder.db,
            [int(i) for i, _ in people],
            exclude=[image for _, others in people for image in others or []],
            seed=seed * 100 + k,
            **photo_layout(size),
        )
        boxes = detector.detect([np.asarray(photo.image)])[0]
        matched = match(np.array([f.box for f in photo.faces]), boxes)
        overlaps += [overlap for _, overlap in matched.values()]
        faces, extra = faces + size, extra + len(boxes) - len(matched)
    mean = float(np.mean(overlaps)) if overlaps else 0.0
    return DetectorCheck(detector_run, len(overlaps), faces, extra, photos, mean)


def choose_detector(own: DetectorCheck, shipped: DetectorCheck | None) -> tuple[str, str]:
    """The detector identify uses and why, measured (:func:`check_detector`): the one
    that found more faces, then the one with fewer boxes on no face, then the one whose
    boxes fit the faces better (mean IoU: a loose box is a face a little off, and so
    a crop); the one trained here on a tie or where none is shipped."""

    def said(c: DetectorCheck) -> str:
        return (
            f"{c.found} of {c.faces} faces found, mean IoU {c.iou:.3f}, {c.extra} boxes on no face"
        )

    def rank(c: DetectorCheck) -> tuple[int, int, float]:
        return c.found, -c.extra, round(c.iou, 3)

    what = f"on {own.photos} group photos of the snapshot's test people"
    if shipped is None or rank(shipped) <= rank(own):
        other = "" if shipped is None else f"; the shipped one: {said(shipped)}"
        return own.run_id, (
            f"identify uses detector {own.run_id}, trained here ({what}: {said(own)}{other})"
        )
    return shipped.run_id, (
        f"identify uses {shipped.run_id}, the detector shipped with celebcat (trained "
        f"beforehand on synthetic pictures no demo draws; {what}: {said(shipped)}; the one "
        f"trained here: {said(own)})"
    )


def build_gallery(
    folder: DemoFolder,
    recognizer_run: str,
    plan: Plan,
    *,
    seed: int = 0,
    landmark_run: str | None = None,
) -> Any:
    """Step 10: gallery :data:`GALLERY` from the snapshot's query split
    (the held-out people, never trained on), replacing an earlier demo's; faces from
    the catalog's boxes, aligned with ``landmark_run`` (default: the landmark run the
    recognizer's crops used), as the photo's faces will be. Calibrated on the
    snapshot's other held-out people except those the group photo shows, so the
    photo's strangers are people the calibration never saw."""
    from models.pipeline.identify import add_gallery

    _, strangers = photo_people(folder, plan, seed=seed)
    return add_gallery(
        folder.db,
        GALLERY,
        recognizer_run,
        snapshot=SNAPSHOT,
        split="query",
        replace=True,
        unseen=[str(i) for i in strangers],
        landmark_run=landmark_run,
    )


@dataclass
class DemoIdentify:
    result: Any  # models.pipeline.identify.IdentifyResult
    photo: Any  # catalog.synth.group.GroupPhoto
    rows: list[Any]  # models.pipeline.report.TruthRow, one per person
    extra: int  # detections where no one is
    drawn: Path


def identify_photo(
    folder: DemoFolder,
    plan: Plan,
    recognizer_run: str,
    detector_run: str,
    *,
    seed: int = 0,
    landmark_run: str | None = None,
) -> DemoIdentify:
    """Step 11: the group photo (:func:`group_photo`), its faces found by the
    trained detector, aligned with ``landmark_run`` (as :func:`build_gallery`'s), named
    against the gallery at its calibrated threshold for ``plan.fpir``, drawn to
    ``folder.identified`` and checked against the truth."""
    from models.pipeline.identify import draw_faces, identify
    from models.pipeline.report import identify_rows

    photo = group_photo(folder, plan, seed=seed)
    result = identify(
        [folder.photo],
        GALLERY,
        folder.db,
        run=recognizer_run,
        detector=f"run:{detector_run}",
        landmark_run=landmark_run,
        fpir=plan.fpir,
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
    detector_choice: str | None = None,
) -> tuple[Path, list[str]]:
    """Step 12: ``folder.report/index.html`` (:func:`models.pipeline.report.write_report`)
    with the identify result and, where given, the trained detector's figures, which
    detector identify used and why, and the steps' timings."""
    from catalog import html_report as H
    from models.detection.boxes import RECALL
    from models.pipeline.report import identify_section, write_report

    sections = [
        identify_section(
            identified.result, identified.drawn.read_bytes(), identified.photo, "the group photo"
        )
    ]
    if detector is not None:
        sections[0].paragraphs.append(
            f"The detector trained here: run {detector.run_id} ({detector.epochs} epochs; test "
            f"split IoU {detector.test.get('iou', float('nan')):.3f}, recall at IoU 0.5 "
            f"{detector.test.get(RECALL, float('nan')):.3f})."
        )
    if detector_choice is not None:
        sections[0].paragraphs.append(detector_choice[0].upper() + detector_choice[1:] + ".")
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


# --- the demo in order: what it shows, step by step --------------------------------

#: ``bar(label, total)``: a progress bar, and its ``update(done, total, label=None)`` (a
#: label replaces the bar's text).
Bars = Callable[[str, int], Callable[..., None]]


class Screen(Protocol):
    """Where :func:`run` shows the demo (the CLI's console): the demo says what, the
    screen how."""

    def rule(self, title: str) -> None:
        """A step's heading."""

    def line(self, text: str) -> None:
        """Text (a line, or several)."""

    def note(self, text: str) -> None:
        """A note the report left (an image it could not draw, ...)."""

    def table(
        self, columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None
    ) -> None:
        """Rows under their column names."""

    def bars(self) -> AbstractContextManager[Bars]:
        """Progress bars for one step."""

    def stages(self) -> AbstractContextManager[Callable[[str, int, int], None]]:
        """Progress of a step in stages: ``progress(stage, done, total)``, a bar a stage."""


def run(
    folder: DemoFolder,
    plan: Plan,
    screen: Screen,
    *,
    seed: int = 0,
    training: bool = True,
    install_torch: str = "",
) -> None:
    """The demo on ``screen``: steps 1 to 4 (the data, up to the snapshot); then, with
    ``training`` and where torch is installed, steps 5 to 12 (the models, identify, the
    report) and each step's times; where torch is missing, that it stops, and
    ``install_torch`` (how to install it). Last, the commands to explore it with."""
    import importlib.util

    from catalog.ingest import IngestProgress

    clock = StepClock()
    screen.rule("1. synthesise")
    with clock.step("synthesise"), screen.bars() as bar:
        made = synthesize_data(
            folder, ids=plan.ids, seed=seed, style=plan.style, progress=bar("images", 0)
        )
    screen.line(f"{made.images} images of {made.ids} identities in {folder.data_dir}")
    screen.rule("2. ingest")
    with clock.step("ingest"), screen.bars() as bar:
        result = ingest_data(folder, progress=IngestProgress(scan=bar))
    screen.line(
        f"catalog {folder.db}: annotations {result.load_seconds:.2f} s, "
        f"image scan {result.scan_seconds:.2f} s"
    )
    counts, problems = loaded(folder)
    screen.table(counts.columns[:3], [r[:3] for r in counts.rows], title="tables")
    screen.rule("3. check")
    if problems.rows:
        screen.table(problems.columns[:5], [r[:5] for r in problems.rows], title="problems")
    else:
        screen.line("No problems found.")
    screen.rule("4. select and freeze")
    with clock.step("select and freeze"):
        selected, snap = select_and_freeze(folder, plan=plan)
    params = selected.params
    screen.line(
        f"{selected.selected_identities} identities x {params['images_per_id']} clean images "
        f"(of {selected.clean_images} clean); parameters (celebcat select --fit): "
        + ", ".join(f"{k}={v}" for k, v in params.items())
    )
    screen.table(
        ["split", "images", "identities"],
        [(k, n, i) for k, (n, i) in selected.splits.items()],
    )
    screen.line(f"snapshot {snap.name}: {snap.n_images} images, hash {snap.hash[:16]}")
    if training and importlib.util.find_spec("torch") is None:
        screen.line(f"\ntorch is not installed: the demo stops here. {install_torch}".rstrip())
    elif training:
        _train(screen, folder, plan, clock, seed)
    screen.line(
        f"\nExplore it: celebcat views --db {folder.db}\n"
        f"            celebcat snapshot show demo --db {folder.db}"
        + (f"\n            celebcat runs --db {folder.db}" if training else "")
    )


def _epoch_bar(
    bar: Bars, label: str, total: int, text: Callable[[dict[str, Any]], str]
) -> Progress:
    """An epoch bar for a training step, labelled with the epoch's figures."""
    update = bar(label, total)

    def progress(e: dict[str, Any]) -> None:
        update(e["epoch"], total, label=f"{label}: {text(e)}")

    return progress


def _train(screen: Screen, folder: DemoFolder, plan: Plan, clock: StepClock, seed: int) -> None:
    """Steps 5 to 12, from landmarks to the report; then the time per step and the
    summary."""
    from models.detection.boxes import RECALL
    from models.pretrained import PretrainedError

    screen.rule("5. train landmarks (briefly: celebcat train landmarks for a real run)")
    with clock.step("train landmarks"):
        landmarks = train(
            folder,
            plan=plan,
            progress=lambda e: screen.line(
                f"epoch {e['epoch']}: train loss {e['train_loss']:.5f}, val NME {e['val_nme']:.4f}"
            ),
        )
    screen.rule(f"6. align ({plan.size} px, {plan.template} template) and report")
    with clock.step("align"), screen.stages() as stages:
        aligned, report = align_and_report(folder, landmarks.run_id, plan=plan, progress=stages)
    screen.line(
        f"run {landmarks.run_id}: {aligned.n_predictions} predictions and aligned crops "
        f"({aligned.cache.source}) in the catalog"
    )
    screen.table(report.columns, report.rows, title="test NME by Eyeglasses")
    screen.rule("7. train the recognizer (ArcFace, face_cpu backbone)")
    with clock.step("train recognizer"), screen.bars() as bar:
        rec = train_recognizer(
            folder,
            plan,
            progress=_epoch_bar(
                bar,
                "epochs",
                plan.recognizer_epochs,
                lambda e: f"loss {e['train_loss']:.3f}, val top-1 {e['val_top1']:.3f}",
            ),
        )
    screen.line(f"run {rec.run_id}: {rec.epochs_done} epochs, best val top-1 {rec.best:.3f}")
    screen.rule("8. evaluate: test and open-set figures")
    with clock.step("evaluate recognizer"), screen.stages() as stages:
        evaluated = evaluate(folder, rec.run_id, progress=stages)
        shipped = None
        try:
            shipped = evaluate_shipped(folder, progress=stages)
        except PretrainedError as err:
            screen.note(f"the shipped recognizer and detector are left out: {err}")
    figures = open_set_table(folder, rec.run_id, shipped.run_id if shipped else None)
    screen.table(
        figures.columns,
        figures.rows,
        title="ours (trained here), the shipped recognizer (trained beforehand on synthetic "
        "people), the reference's (real CelebA, ResNet-50)",
    )
    identify_run, why = choose_recognizer(evaluated, shipped)
    screen.line(why)
    screen.rule("9. train the face detector (CenterNet, the catalog's boxes)")
    with clock.step("train detector"), screen.bars() as bar:
        det = train_detector(
            folder,
            plan,
            progress=_epoch_bar(
                bar,
                "epochs",
                plan.detector_epochs,
                lambda e: f"loss {e['train_loss']:.3f}, val IoU {e['val_iou']:.3f}",
            ),
        )
    screen.line(
        f"run {det.run_id}: test IoU {det.test['iou']:.3f}, recall at IoU 0.5 "
        f"{det.test[RECALL]:.3f}"
    )
    with clock.step("check detectors"):
        own_check = check_detector(folder, plan, det.run_id, seed=seed)
        shipped_check = None
        if shipped is not None:
            shipped_check = check_detector(folder, plan, SHIPPED_DETECTOR, seed=seed)
    detector_run, why = choose_detector(own_check, shipped_check)
    screen.line(why)
    screen.rule("10. gallery: the held-out query people")
    with clock.step("gallery"):
        built = build_gallery(folder, identify_run, plan, seed=seed, landmark_run=landmarks.run_id)
    g = built.gallery
    screen.line(
        f"gallery {g.name}: {g.n_identities} people, {g.n_images} images "
        f"({g.source}, crops {g.crops})"
    )
    screen.rule("11. identify the faces of a group photo")
    with clock.step("identify"):
        found = identify_photo(
            folder, plan, identify_run, detector_run, seed=seed, landmark_run=landmarks.run_id
        )
    screen.line(
        f"photo {folder.photo}: {len(found.photo.faces)} people; {found.result.threshold.explain()}"
    )
    screen.table(
        ["who (truth)", "in gallery", "found (IoU)", "named", "closest", "cosine", "right"],
        [
            (
                r.identity,
                "yes" if r.role == "gallery" else "no",
                f"{r.iou:.2f}" if r.named is not None else "not found",
                r.named or "",
                r.closest or "",
                r.cosine,
                "yes" if r.right else "no",
            )
            for r in found.rows
        ],
    )
    screen.rule("12. report")
    with clock.step("report"):
        page, notes = write_report(
            folder, plan, landmarks.run_id, identify_run, found, clock.table(), det, why
        )
    for note in notes:
        screen.note(note)
    timings = clock.table()  # now with the report's own step
    screen.table(timings.columns, timings.rows, title="time per step")
    used = shipped if identify_run != rec.run_id else None
    screen.line(f"\n{summary(aligned, evaluated, found, used)}")
    screen.line(f"Report: {page.resolve()} (one file: open it in a browser)")


def summary(aligned: Any, evaluated: Any, found: DemoIdentify, used: Any | None = None) -> str:
    """The demo's last word: the landmarks' test NME, the recognizer's test top-1 and
    open-set TPRs (``aligned``: step 6's AlignResult, ``evaluated``: step 8's
    RecognitionEval), the shipped recognizer's open-set TPRs where identify used it
    (``used``: its RecognitionEval) and how the group photo's faces (step 11) were
    answered."""
    right = sum(r.right for r in found.rows)
    known = [r for r in found.rows if r.role == "gallery"]
    strangers = [r for r in found.rows if r.role != "gallery"]
    named = sum(r.right for r in known)
    unknown = sum(r.right for r in strangers)
    found_known = [r for r in known if r.named is not None]
    closest = sum(r.closest == str(r.identity) for r in found_known)
    test, open_set = evaluated.metrics.get("test", {}), evaluated.metrics.get("open_set", {})

    def tprs(figures: dict[str, float]) -> str:
        return (
            f"open-set TPR {figures.get(at_fpr('tpr', 0.1), float('nan')):.3f} at FPR 0.1 and "
            f"{figures.get(at_fpr('tpr', 0.01), float('nan')):.3f} at FPR 0.01"
        )

    shipped = (
        ""
        if used is None
        else f"; the shipped recognizer identify used: {tprs(used.metrics.get('open_set', {}))}"
    )
    return (
        f"Summary: landmarks test NME {aligned.test_metrics.get('nme', float('nan')):.4f}; "
        f"recognizer trained here: test top-1 {test.get('top1', float('nan')):.3f}, "
        f"{tprs(open_set)}{shipped}; the photo: "
        f"{sum(r.named is not None for r in found.rows)} of {len(found.rows)} faces found, "
        f"{right} answered right: {named} of the {len(known)} gallery people named, "
        f"{unknown} of the {len(strangers)} strangers called unknown; the closest gallery "
        f"person of {closest} of the {len(found_known)} gallery people found was themselves."
    )
