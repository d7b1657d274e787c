"""The names that enter the catalog from users and files, one check each: run ids
(training writes them into checkpoints, which anyone can edit) and the names of
snapshots and galleries. A name becomes a folder (a run's checkpoints), a file name (a
crop cache) and a key in the tables, so it is a plain word: ASCII letters, digits,
``_``, ``-`` and ``.``, no ``..``, not starting with ``.`` or ``-``.
"""

from __future__ import annotations

import re

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


__all__ = ["NAME", "RUN_ID", "BadNameError", "check_name", "check_run_id", "is_run_id"]
