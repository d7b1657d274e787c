"""The selection rules: one view per ``.sql`` file, file name = view name.

This folder is a package only so that the ``.sql`` files ship inside the wheel and
can be found with :mod:`importlib.resources` in editable and normal installs alike.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable


def sql_files() -> list[Traversable]:
    """Every ``*.sql`` file of this folder, sorted by name."""
    return sorted(
        (f for f in files(__name__).iterdir() if f.name.endswith(".sql")), key=lambda f: f.name
    )
