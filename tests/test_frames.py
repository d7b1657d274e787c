"""A notebook's first two calls: a snapshot as a DataFrame, a run's embeddings as numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import query, snapshot_catalog

import catalog
from catalog import results
from catalog.formats import ATTRIBUTES, LANDMARK_COLUMNS
from catalog.frames import COLUMNS, embeddings, snapshot_frame
from catalog.results import RunError
from catalog.snapshots import SnapshotError


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_catalog(tmp_path_factory.mktemp("frames"), ids=6, seed=3)


def test_snapshot_frame_has_every_image_with_its_annotations(db: Path) -> None:
    frame = catalog.snapshot_frame("s", db)
    assert tuple(frame.columns) == COLUMNS
    stored = query(
        db, "SELECT image_id, split FROM snapshot_images WHERE snapshot = 's' ORDER BY 1"
    )
    assert list(zip(frame.image_id, frame.split, strict=True)) == stored
    row = frame.iloc[3]
    truth = query(
        db,
        f'SELECT {", ".join(LANDMARK_COLUMNS)}, "Smiling", "Male" FROM landmarks '
        "JOIN attributes USING (image_id) WHERE image_id = ?",
        [row.image_id],
    )[0]
    assert tuple(row[list(LANDMARK_COLUMNS)]) + (row.Smiling, row.Male) == truth
    assert frame[list(ATTRIBUTES)].dtypes.eq(bool).all()
    # absolute paths to files that exist; the root beside them
    assert all(Path(p).is_absolute() and Path(p).exists() for p in frame.path)
    assert frame.attrs["image_root"] and frame.attrs["snapshot"] == "s"
    relative = snapshot_frame("s", db, relative_paths=True)
    assert (Path(frame.attrs["image_root"]) / relative.path[0]) == Path(frame.path[0])
    # one split
    test = snapshot_frame("s", db, split="test")
    assert len(test) == (frame.split == "test").sum() > 0 and set(test.split) == {"test"}
    with pytest.raises(SnapshotError, match=r"no split 'query'. Available: test \(\d+\)"):
        snapshot_frame("s", db, split="query")
    with pytest.raises(SnapshotError, match="nope"):
        snapshot_frame("nope", db)


def test_embeddings_as_numpy_line_up_with_the_frame(db: Path) -> None:
    frame = snapshot_frame("s", db, split="val")
    run = results.start_run(db, "recognition", {"x": 1}, "s")
    every = [r[0] for r in query(db, "SELECT image_id FROM images ORDER BY 1")]
    vectors = np.random.default_rng(0).normal(size=(len(every), 4))
    results.write_embeddings(db, run, every, vectors, "bbox")
    ids, got = catalog.embeddings(run, db, snapshot="s", split="val")
    assert list(ids) == list(frame.image_id) and got.shape == (len(frame), 4)
    assert got.dtype == np.float32
    expected = vectors[[every.index(i) for i in ids]]
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    all_ids, _ = embeddings(run, db)  # every embedded image, outside the snapshot too
    assert list(all_ids) == every
    with pytest.raises(RunError):
        embeddings("no-such-run", db)
    with pytest.raises(ValueError, match="split needs a snapshot"):
        embeddings(run, db, split="val")
    empty = results.start_run(db, "recognition", {"x": 2}, "s")
    with pytest.raises(ValueError, match="celebcat embed"):
        embeddings(empty, db, snapshot="s")
