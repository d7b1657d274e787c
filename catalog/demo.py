"""``celebcat demo``, the data half: a synthetic CelebA made on the spot, ingested,
selected with parameters that fit it and frozen as snapshot ``demo``.

The training half (a short landmark run, alignment, the test report) is
``models.demo``; the CLI calls the steps in order and prints what each returns.
Running the demo again into the same folder replaces its data, catalog tables and
snapshot (training runs and checkpoints of earlier demos stay, as any run does).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from catalog.info import QueryResult
    from catalog.ingest import IngestProgress, IngestResult
    from catalog.selection import SelectionSummary
    from catalog.snapshots import Snapshot
    from catalog.synth import SynthSummary

#: The snapshot the demo freezes (and replaces when run again).
SNAPSHOT = "demo"
#: Identities synthesised by default, and clean images selected per identity.
IDS = 40
IMAGES_PER_ID = 20


@dataclass(frozen=True)
class DemoFolder:
    """Where a demo writes: ``data/`` (the synthetic CelebA), ``celeba.duckdb`` (its
    catalog) and ``checkpoints/`` (the landmark run)."""

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


@contextmanager
def demo_folder(out: str | os.PathLike[str] | None = None) -> Iterator[DemoFolder]:
    """``out`` (kept), or a temporary folder removed on exit when ``out`` is None."""
    if out is not None:
        yield DemoFolder(Path(out))
        return
    with tempfile.TemporaryDirectory(prefix="celebcat-demo-") as temp:
        yield DemoFolder(Path(temp))


def synthesize_data(
    folder: DemoFolder,
    *,
    ids: int = IDS,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> SynthSummary:
    """Step 1: ``ids`` identities of synthetic CelebA into ``folder.data_dir`` (an
    earlier demo's files there are replaced)."""
    from catalog.synth import synthesize

    return synthesize(folder.data_dir, ids=ids, seed=seed, progress=progress)


def ingest_data(folder: DemoFolder, *, progress: IngestProgress | None = None) -> IngestResult:
    """Step 2: the synthetic files into ``folder.db`` (replacing an earlier demo's)."""
    from catalog.ingest import IngestProgress, ingest

    return ingest(folder.data_dir, folder.db, progress=progress or IngestProgress())


def loaded(folder: DemoFolder) -> tuple[QueryResult, QueryResult]:
    """Step 3: (tables with their row counts, the problems found at ingest)."""
    from catalog.info import list_tables, problem_summary

    return list_tables(folder.db, counts=True), problem_summary(folder.db)


def select_and_freeze(
    folder: DemoFolder, *, images_per_id: int = IMAGES_PER_ID
) -> tuple[SelectionSummary, Snapshot]:
    """Step 4: select with the parameters that fit the data (``celebcat select --fit``)
    and freeze the selection as snapshot :data:`SNAPSHOT`, replacing an earlier one."""
    from catalog.selection import select
    from catalog.snapshots import SnapshotError, create, drop

    summary = select(folder.db, fit=True, images_per_id=images_per_id)
    try:
        drop(SNAPSHOT, folder.db)
    except SnapshotError:  # the first demo into this folder
        pass
    return summary, create(SNAPSHOT, folder.db)
