"""The names that enter the catalog from users and files, one check each: run ids
(training writes them into checkpoints, which anyone can edit) and the names of
snapshots and galleries. A name becomes a folder (a run's checkpoints), a file name (a
crop cache) and a key in the tables, so it is a plain word: ASCII letters, digits,
``_``, ``-`` and ``.``, no ``..``, not starting with ``.`` or ``-``.

And what a mistyped name was likely meant to be (:func:`suggest`), for the messages
that refuse an unknown snapshot, run, gallery or attribute.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable

from catalog.errors import CatalogError

_WORD = r"[A-Za-z0-9_][A-Za-z0-9_.-]"
#: ``<kind>-<rest>``: what training makes (``landmarks-20261207-015607-693c``) and what
#: ``celebcat runs import`` records (``recognition-dlib-resnet``).
RUN_ID = re.compile(rf"^[a-z]+-{_WORD}{{0,127}}$")
#: A snapshot's or a gallery's name.
NAME = re.compile(rf"^{_WORD}{{0,63}}$")


class BadNameError(CatalogError, ValueError):
    """A run id or a name that is not a plain word; the message says what is allowed."""


def is_run_id(text: object) -> bool:
    return isinstance(text, str) and bool(RUN_ID.fullmatch(text)) and ".." not in text


def check_run_id(run_id: object, where: str = "") -> str:
    """``run_id`` when it is one, else BadNameError (``where``: what gave it, e.g. a file)."""
    if not is_run_id(run_id):
        source = f" ({where})" if where else ""
        raise BadNameError(
            f"Run id {run_id!r}{source} is not a run id: <kind>-<letters, digits, '_', '-', "
            "'.'>, at most 128 characters after the kind, no '..'"
        )
    return str(run_id)


def check_name(name: object, what: str) -> str:
    """``name`` when it is a plain word of at most 64 characters, else BadNameError
    naming ``what`` it was to be (a snapshot, a gallery)."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise BadNameError(
            f"{what} name {name!r}: use 1-64 letters, digits, '_', '-' or '.' (not first, "
            "and no '..')"
        )
    return name


#: How like a known name a typed one must be (difflib's ratio) to be suggested: one
#: letter wrong in three (``abc`` -> ``abd``, 0.67) is, ``nope`` -> ``people`` (0.6) not.
CUTOFF = 0.65
#: Typed text at least this long may be the start or a part of the name meant (a run
#: id's ``landmarks-20261207``, an attribute's ``Eyeglass`` or ``Hat``).
MIN_PART = 3


def _closeness(typed: str, name: str) -> float:
    return difflib.SequenceMatcher(None, typed, name).ratio()


def _common_start(a: str, b: str) -> int:
    return len(os.path.commonprefix([a, b]))


def close_names(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of the ``known`` names that ``name`` was likely meant to be, best
    first: the same name in another case (``smiling`` -> ``Smiling``); else the names
    that start with it or hold it (at least :data:`MIN_PART` characters typed: a
    truncated run id, ``Hat`` -> ``Wearing_Hat``), those that start with it first, the
    closest first; else the close ones (difflib, :data:`CUTOFF`), closest first. Case
    is ignored throughout; ties keep ``known``'s order."""
    typed = str(name)
    folded = typed.casefold()
    names = [k for k in dict.fromkeys(str(k) for k in known) if k != typed]
    if not folded or not names or n < 1:
        return []
    same = [k for k in names if k.casefold() == folded]
    if same:
        return same[:n]
    if len(folded) >= MIN_PART:
        holding = [k for k in names if folded in k.casefold()]
        if holding:
            return sorted(
                holding,
                key=lambda k: (
                    not k.casefold().startswith(folded),
                    -_closeness(folded, k.casefold()),
                ),
            )[:n]
    scored = [(_closeness(folded, k.casefold()), i) for i, k in enumerate(names)]
    best = sorted(  # equally close: the one whose start was typed right first
        (s for s in scored if s[0] >= CUTOFF),
        key=lambda s: (-s[0], -_common_start(folded, names[s[1]].casefold()), s[1]),
    )
    return [names[i] for _, i in best[:n]]


def suggest(name: str, known: Iterable[str], n: int = 3) -> str:
    """``"; did you mean X?"`` (``X or Y``, ``X, Y or Z``) naming :func:`close_names`,
    or ``""`` where none is close: to follow the unknown name in a message."""
    near = close_names(name, known, n)
    if not near:
        return ""
    listed = near[0] if len(near) == 1 else f"{', '.join(near[:-1])} or {near[-1]}"
    return f"; did you mean {listed}?"


__all__ = [
    "CUTOFF",
    "MIN_PART",
    "NAME",
    "RUN_ID",
    "BadNameError",
    "check_name",
    "check_run_id",
    "close_names",
    "is_run_id",
    "suggest",
]
