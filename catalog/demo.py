"""``celebcat demo``, the data half: a synthetic CelebA made on the spot, ingested,
selected with parameters that fit it and frozen as snapshot ``demo``; the group
photo the demo identifies; how big a demo is (:data:`PLANS`) and how long each of its
steps took (:class:`StepClock`).

The training half (landmarks, alignment, recognizer, evaluation, detector, gallery,
identify, the HTML report) is ``models.pipeline.demo``; the CLI calls the steps in order and
prints what each returns. Running the demo again into the same folder replaces its
data, catalog tables, snapshot, gallery and report (training runs and checkpoints of
earlier demos stay, as any run does).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

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

    ``holdout_share`` of the identities that have ``images_per_id`` clean images are
    held out (half queries with ``query_images`` images each, the gallery; half
    distractors), the rest split 70/15/15 (``celebcat select --fit``). The group
    photo shows ``known`` query identities (photos the gallery does not hold) and
    ``strangers`` distractor identities (in no gallery), as many as there are.
    """

    name: str
    ids: int
    images_per_id: int
    holdout_share: float
    query_images: int
    landmark_epochs: int
    recognizer_epochs: int
    detector_epochs: int
    size: int = 64  # aligned crops: the recognizer's input side
    template: str = "arcface"
    embedding_dim: int = 128
    detector_mosaic: float = 0.6  # several small faces per training picture, as in a group
    known: int = 3
    strangers: int = 3
    fpr: float = 0.01  # the open-set FPR whose threshold names a face
    #: The synthetic population: "easy", whose people small models tell apart within
    #: the demo's minutes. On the default "hard" one a recognizer needs about 15 CPU
    #: minutes and 800 identities (docs/recognition.md); measured with this plan: test
    #: top-1 0.22 and no known face of the group photo named.
    style: str = "easy"

    def with_ids(self, ids: int | None) -> Plan:
        return self if ids is None else replace(self, ids=int(ids))


#: ``celebcat demo`` and ``celebcat demo --full``. The lengths were chosen by measuring
#: each step's CPU time (README, "Two commands"): 134 s of wall time (226 CPU s) for
#: the default on an idle 2-core machine, 613 s (1,068 CPU s) for --full.
PLANS: dict[str, Plan] = {
    "default": Plan(
        "default",
        ids=120,
        images_per_id=12,
        holdout_share=0.45,
        query_images=3,
        landmark_epochs=10,
        recognizer_epochs=40,
        detector_epochs=20,
    ),
    "full": Plan(
        "full",
        ids=300,
        images_per_id=15,
        holdout_share=0.4,
        query_images=4,
        landmark_epochs=15,
        recognizer_epochs=60,
        detector_epochs=30,
    ),
}
#: Identities of the default demo (``--ids`` in ``celebcat demo --help``).
IDS = PLANS["default"].ids
IMAGES_PER_ID = PLANS["default"].images_per_id


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


def select_and_freeze(
    folder: DemoFolder, *, images_per_id: int = IMAGES_PER_ID, plan: Plan | None = None
) -> tuple[SelectionSummary, Snapshot]:
    """Step 4: select with the parameters that fit the data (``celebcat select --fit``)
    and freeze the selection as snapshot :data:`SNAPSHOT`, replacing an earlier one.

    With a ``plan``: its ``images_per_id``, and its share of held-out identities (at
    least 2 queries and 2 distractors) with ``query_images`` each."""
    from catalog.selection import fitted_params, select
    from catalog.snapshots import SnapshotError, create, drop

    extra: dict[str, int] = {}
    if plan is not None:
        images_per_id = plan.images_per_id
        eligible = fitted_params(folder.db, images_per_id=images_per_id)["n_ids"]
        holdout = max(4, int(eligible * plan.holdout_share) // 2 * 2)
        extra = {
            "holdout_ids": min(holdout, max(eligible - 2, 0) // 2 * 2),
            "query_images": min(plan.query_images, images_per_id),
        }
    summary = select(folder.db, fit=True, images_per_id=images_per_id, **extra)
    try:
        drop(SNAPSHOT, folder.db)
    except SnapshotError:  # the first demo into this folder
        pass
    return summary, create(SNAPSHOT, folder.db)


def group_photo(folder: DemoFolder, plan: Plan, *, seed: int = 0) -> GroupPhoto:
    """The photo to identify (saved as ``folder.photo``): ``plan.known`` query
    identities of the snapshot, the gallery's people, each from an image the snapshot
    does not use (so neither the gallery nor training nor evaluation saw it), and
    ``plan.strangers`` distractor identities (in no gallery), in a seeded order.
    Roles: ``gallery`` or ``stranger``."""
    import numpy as np

    from catalog.db import connect
    from catalog.synth.group import group_photo as compose

    con = connect(folder.db, read_only=True)
    try:

        def ids(split: str) -> list[int]:
            return [
                r[0]
                for r in con.execute(
                    "SELECT DISTINCT identity FROM snapshot_images "
                    "WHERE snapshot = ? AND split = ? "
                    "ORDER BY md5(? || ':' || identity)",
                    [SNAPSHOT, split, str(seed)],
                ).fetchall()
            ]

        known, strangers = ids("query")[: plan.known], ids("distractor")[: plan.strangers]
        used = [
            r[0]
            for r in con.execute(
                "SELECT image_id FROM snapshot_images WHERE snapshot = ? AND split IS NOT NULL",
                [SNAPSHOT],
            ).fetchall()
        ]
    finally:
        con.close()
    people = [(i, "gallery") for i in known] + [(i, "stranger") for i in strangers]
    order = np.random.default_rng(seed).permutation(len(people))
    people = [people[k] for k in order]
    columns = 3 if len(people) > 4 else 2
    photo = compose(
        folder.db,
        [i for i, _ in people],
        roles=[r for _, r in people],
        exclude=used,
        seed=seed,
        columns=columns,
        tile=200,
        face_share=0.8,
    )
    photo.save(folder.photo)
    return photo
