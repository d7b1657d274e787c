"""One check for run ids and for snapshot and gallery names (catalog/names.py)."""

from __future__ import annotations

import pytest

from catalog.names import BadNameError, check_name, check_run_id, is_run_id


@pytest.mark.parametrize(
    "run_id",
    [
        "landmarks-20261207-015607-693c",
        "recognition-dlib-resnet",
        "detector-onnx-det_10g",
        "recognition-onnx-w600k_r50.v2",
    ],
)
def test_the_ids_we_make_are_run_ids(run_id: str) -> None:
    assert check_run_id(run_id) == run_id


@pytest.mark.parametrize(
    "run_id",
    [
        "landmarks-has space",
        "recognition-/../../tmp/x",
        "recognition-<script>alert(1)</script>",
        "landmarks-..",
        "landmarks-.hidden",
        "landmarks-[/x]",
        "Landmarks-x",
        "landmarks",
        "",
        None,
        42,
        "landmarks-" + "x" * 200,
        "landmarks-é",
        "landmarks-a\nb",
        "landmarks-x\n",
    ],
)
def test_anything_else_is_refused_naming_where_it_came_from(run_id: object) -> None:
    assert not is_run_id(run_id)
    with pytest.raises(BadNameError, match=r"\(checkpoint x.pt\) is not a run id"):
        check_run_id(run_id, "checkpoint x.pt")


def test_names() -> None:
    for good in ("s", "base-v1", "demo", "a.b_c-1"):
        assert check_name(good, "Snapshot") == good
    for bad in ("", ".x", "-x", "a..b", "a b", "a/b", "<b>", "x" * 65, "[/x]"):
        with pytest.raises(BadNameError, match="Gallery name"):
            check_name(bad, "Gallery")
