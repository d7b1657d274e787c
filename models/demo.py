"""``celebcat demo``, the training half: a short landmark run on the demo snapshot,
alignment of its images with it, and the test split's NME by attribute.

The data half is ``catalog.demo``. A real run is ``celebcat train landmarks``; the
demo's is :data:`EPOCHS` epochs of the small preset, enough to show the NME falling.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from catalog.demo import SNAPSHOT, DemoFolder
from catalog.info import QueryResult

#: Epochs of the demo's landmark run.
EPOCHS = 8
#: Crop side of the demo's alignment.
ALIGN_SIZE = 112


def train(
    folder: DemoFolder,
    *,
    epochs: int = EPOCHS,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> Any:
    """Step 5: train the small landmark model on the demo snapshot; the TrainResult."""
    from models.train_landmarks import LandmarkTrainConfig, train_landmarks

    config = LandmarkTrainConfig(
        snapshot=SNAPSHOT, epochs=epochs, out_dir=str(Path(folder.checkpoints))
    )
    return train_landmarks(config, folder.db, progress=progress)


def align_and_report(
    folder: DemoFolder,
    run_id: str,
    *,
    by: tuple[str, ...] = ("Eyeglasses",),
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[Any, QueryResult]:
    """Step 6: align the snapshot with the run's landmarks; (AlignResult, the test
    split's NME report grouped ``by`` these attributes)."""
    from catalog.reports import landmark_report
    from models.align_run import align_snapshot

    result = align_snapshot(run_id, SNAPSHOT, folder.db, size=ALIGN_SIZE, progress=progress)
    return result, landmark_report(folder.db, run_id, list(by), split="test")
