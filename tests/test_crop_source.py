"""catalog.crop_source: every crop source string parses to one value and prints back."""

from __future__ import annotations

import pytest

from catalog.crop_source import CropSource, source_kind


@pytest.mark.parametrize(
    "text", ["bbox", "aligned", "aligned/arcface/truth", "aligned/reference/landmarks-20261206-x"]
)
def test_round_trip(text: str) -> None:
    assert str(CropSource.parse(text)) == text


def test_parts() -> None:
    pinned = CropSource.parse("aligned/arcface/truth")
    assert (pinned.kind, pinned.template, pinned.run) == ("aligned", "arcface", "truth")
    assert pinned.pinned and pinned.from_truth
    assert CropSource.aligned("reference", None) == CropSource("aligned", "reference", "truth")
    assert str(CropSource.aligned("reference", "r1")) == "aligned/reference/r1"
    assert not CropSource.parse("aligned").pinned and CropSource.parse("bbox").pinned
    assert not CropSource.parse("aligned/arcface/r1").from_truth


@pytest.mark.parametrize(
    "text",
    ["", "box", "bbox/x/y", "aligned/arcface", "aligned/a/b/c", "aligned/../x", "aligned//x"],
)
def test_refused_with_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match="use bbox, aligned or aligned/<template>"):
        CropSource.parse(text)


def test_kind_of_any_stored_variant() -> None:
    assert source_kind("aligned/x/y/z") == "aligned" and source_kind("bbox") == "bbox"
