"""'Did you mean': unknown snapshot, run, gallery and attribute names suggest the known
name that was likely meant (catalog.names.suggest), in every message that refuses one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import snapshot_catalog

from catalog import gallery as G
from catalog import results, snapshots
from catalog.formats import ATTRIBUTES
from catalog.names import close_names, suggest
from catalog.quotas import QuotaError, parse_quota
from catalog.reports import ReportError, landmark_report

RUNS = ["landmarks-20261207-015607-693c", "recognition-20261207-101500-0a1b"]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalog with snapshot 'faces_v1' (annotations only: nothing here reads pixels)."""
    root = tmp_path_factory.mktemp("did_you_mean")
    return snapshot_catalog(root, ids=12, seed=3, images=False, name="faces_v1")


# --- the helper ----------------------------------------------------------------------


def test_a_close_name_is_suggested() -> None:
    assert suggest("trian", ["test", "train", "val"]) == "; did you mean train?"
    assert suggest("Mael", ATTRIBUTES) == "; did you mean Male?"


def test_the_same_name_in_another_case_comes_first() -> None:
    assert suggest("smiling", ATTRIBUTES) == "; did you mean Smiling?"
    assert close_names("EYEGLASSES", ATTRIBUTES) == ["Eyeglasses"]


def test_a_unique_run_id_that_starts_with_what_was_typed_is_the_one() -> None:
    assert suggest("landmarks-2026", RUNS) == f"; did you mean {RUNS[0]}?"
    # Two runs start with it: both are named, and no third, farther one.
    two = [*RUNS, "landmarks-20261208-090000-ffff"]
    assert close_names("landmarks-2026", two) == [RUNS[0], two[2]]
    assert suggest("landmarks-2026", two) == f"; did you mean {RUNS[0]} or {two[2]}?"


def test_a_part_of_a_name_finds_it() -> None:
    assert suggest("Hat", ATTRIBUTES) == "; did you mean Wearing_Hat?"
    assert suggest("693c", RUNS) == f"; did you mean {RUNS[0]}?"


def test_up_to_three_are_listed_closest_first() -> None:
    assert close_names("smile", ATTRIBUTES) == ["Smiling", "Male"]
    assert suggest("Hair", ATTRIBUTES).count(",") == 1  # "X, Y or Z"
    assert len(close_names("Hair", ATTRIBUTES, n=2)) == 2


def test_nothing_close_suggests_nothing() -> None:
    assert suggest("nope", ["hollow", "people"]) == ""
    assert suggest("xyz", ATTRIBUTES) == ""
    assert suggest("train", []) == ""
    assert suggest("", ["a"]) == ""
    assert suggest("l", RUNS) == ""  # one letter is not a run id's start


# --- in the messages ---------------------------------------------------------------


def test_a_mistyped_snapshot_is_suggested(db: Path) -> None:
    with pytest.raises(snapshots.SnapshotError) as err:
        snapshots.show("face_v1", db)
    assert str(err.value) == (
        "No snapshot 'face_v1'; did you mean faces_v1? Known: faces_v1 "
        "(celebcat snapshot create NAME)."
    )
    with pytest.raises(snapshots.SnapshotError, match=r"No snapshot 'zzz'\. Known: faces_v1"):
        snapshots.show("zzz", db)  # nothing close: the message as it was


def test_a_truncated_run_id_is_suggested(db: Path) -> None:
    run_id = results.start_run(db, "landmarks", {}, "faces_v1")
    typed = run_id[:20]
    for call in (
        lambda: results.get_run(db, typed),
        lambda: results.finish_run(db, typed, "failed"),
    ):
        with pytest.raises(results.RunError) as err:
            call()
        assert f"No run {typed!r}; did you mean {run_id}? (see `celebcat sql" in str(err.value)


def test_the_store_suggests_the_run_too(db: Path) -> None:
    from models import store

    run_id = results.start_run(db, "landmarks", {}, "faces_v1")
    with pytest.raises(results.RunError, match=f"did you mean {run_id}\\?"):
        store.load_run(run_id[:-2], "landmarks", db)


def test_a_mistyped_gallery_is_suggested(db: Path) -> None:
    vectors = np.eye(2)
    G.write_gallery(db, "people", "run-a", "folder:/x", ["a", "b"], ["1.jpg", "2.jpg"], vectors)
    for call in (G.get_gallery, G.read_entries, G.drop_gallery):
        with pytest.raises(G.GalleryError) as err:
            call(db, "peple")
        assert str(err.value) == (
            "No gallery 'peple'; did you mean people? Known: people "
            "(celebcat gallery add NAME ...)."
        )


def test_a_mistyped_attribute_is_suggested(db: Path) -> None:
    run_id = results.start_run(db, "landmarks", {}, "faces_v1")
    with pytest.raises(
        ReportError, match=r"Unknown attribute 'Eyeglass'; did you mean Eyeglasses\? Use"
    ):
        landmark_report(db, run_id, ["Male", "Eyeglass"])
    with pytest.raises(QuotaError, match=r"unknown attribute 'smiling'; did you mean Smiling\?$"):
        parse_quota("smiling=0.5")


def test_eval_recognizer_suggests_before_loading_anything(db: Path) -> None:
    from models.recognition.evaluate import evaluate_recognizer

    # No such run either: the attributes are checked first, before the model loads.
    with pytest.raises(
        ValueError, match=r"Unknown attribute\(s\) Glases \(did you mean Eyeglasses\?\), Zzz;"
    ):
        evaluate_recognizer("no-such-run", db, by=["Male", "Glases", "Zzz"])
