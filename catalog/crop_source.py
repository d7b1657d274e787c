"""Where a face crop comes from, as one value: ``bbox``, ``aligned`` or
``aligned/<template>/<landmark run | truth | detector>``.

The same string names a crop cache's source (``crop_caches.source``), the crops an
embedding was made from (``embeddings.source``), a gallery's crops, a recognizer's
``--source`` and a Dataset's ``source``. It is built and read here only:
:meth:`CropSource.parse` and ``str()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BBOX, ALIGNED = "bbox", "aligned"
KINDS: tuple[str, ...] = (BBOX, ALIGNED)
#: The run part of an alignment made from the catalog's true landmarks.
TRUTH = "truth"
#: The run part of an alignment on the five points the face detector itself gives
#: (a detector with landmarks, e.g. SCRFD): photos only, a snapshot has no detections.
DETECTOR = "detector"
#: A template or run name: no slash, not starting with a dot (a cache file is named by it).
_PART = re.compile(r"[\w-][\w.-]*")
FORMS = "bbox, aligned or aligned/<template>/<landmark run | truth>"


@dataclass(frozen=True)
class CropSource:
    """``kind`` bbox or aligned; an aligned source may pin its ``template`` and the
    landmark ``run`` (a run id, or ``truth``) that predicted the points; a bare
    ``aligned`` means the newest alignment of the snapshot at the crop size."""

    kind: str
    template: str | None = None
    run: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"crop source kind {self.kind!r}: use {FORMS}")
        parts = (self.template, self.run)
        if self.kind == BBOX and parts != (None, None):
            raise ValueError("a bbox crop source names no template or run")
        if self.kind == ALIGNED and (self.template is None) != (self.run is None):
            raise ValueError("an aligned crop source names both its template and run, or neither")
        for part in parts:
            if part is not None and not _PART.fullmatch(part):
                raise ValueError(f"crop source part {part!r}: letters, digits, '_', '-', '.'")

    @classmethod
    def parse(cls, text: str) -> CropSource:
        """The source ``text`` names; ValueError saying the forms where it names none."""
        kind, *rest = str(text).split("/")
        try:
            if kind == ALIGNED and len(rest) == 2:
                return cls(ALIGNED, rest[0], rest[1])
            if not rest:
                return cls(kind)
        except ValueError:
            pass
        raise ValueError(f"crop source {text!r}: use {FORMS}")

    @classmethod
    def aligned(cls, template: str, run: str | None) -> CropSource:
        """An alignment onto ``template`` with points of landmark ``run`` (None: truth)."""
        return cls(ALIGNED, template, run or TRUTH)

    @property
    def pinned(self) -> bool:
        """Whether it names one alignment (or is bbox): nothing left to look up."""
        return self.kind == BBOX or self.template is not None

    @property
    def from_detector(self) -> bool:
        """Aligned on the detector's own five points."""
        return self.run == DETECTOR

    @property
    def from_truth(self) -> bool:
        """An alignment made with the catalog's true landmarks (a photo has none)."""
        return self.run == TRUTH

    def __str__(self) -> str:
        if self.template is None:
            return self.kind
        return f"{self.kind}/{self.template}/{self.run}"


def source_kind(source: str) -> str:
    """``aligned`` for ``aligned/arcface/truth``: the kind of a source string, whatever
    its variant (a crop cache may store variants other than the standard ones)."""
    return source.split("/", 1)[0]


__all__ = [
    "ALIGNED",
    "BBOX",
    "DETECTOR",
    "FORMS",
    "KINDS",
    "TRUTH",
    "CropSource",
    "source_kind",
]
