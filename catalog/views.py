"""The selection views: ``sql/*.sql`` applied in dependency order, and their parameters.

Each file in ``sql/`` holds one ``SELECT`` and is created as the view named after
the file. The order of creation comes from the files themselves: a view that names
another view in its text is created after it, so nobody keeps a numbered list.
Applying the views twice changes nothing (``CREATE OR REPLACE VIEW``).

Parameters live in the ``params`` table (name, value, description), read by the
views through the ``param(name)`` macro; changing one changes every view at once,
without editing SQL. This module owns ``params`` and the macro.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from catalog.db import DbArg
from catalog.errors import ParameterError
from sql import sql_files

if TYPE_CHECKING:
    import duckdb


#: The largest whole number a parameter may be: parameters are stored as DOUBLE, which
#: holds every integer up to 2^53 exactly (and the views cast the seed to BIGINT).
MAX_INTEGER = 2**53


@dataclass(frozen=True)
class Param:
    """A selection parameter: its default, what it means and the values it may take
    (``low <= value <= high``, or ``< high`` where ``high_open``; ``high`` None: up to
    :data:`MAX_INTEGER` for whole numbers, else no upper bound)."""

    name: str
    default: float
    description: str
    integer: bool = True
    low: float = 0
    high: float | None = None
    high_open: bool = False

    def range_text(self) -> str:
        """The valid range as people write it, e.g. ``0 <= box_shrink < 1``."""
        kind = "whole number" if self.integer else "number"
        if self.high is None:
            most = f" and <= 2^53 ({MAX_INTEGER})" if self.integer else ""
            return f"a {kind} >= {self.low:g}{most}"
        return (
            f"a {kind} with {self.low:g} <= {self.name} {'<' if self.high_open else '<='} "
            f"{self.high:g}"
        )

    def check(self, value: float) -> None:
        """Raise :class:`~catalog.errors.ParameterError` when ``value`` is out of range."""
        value = float(value)
        ok = value == value and value >= self.low  # NaN fails
        if ok and self.high is not None:
            ok = value < self.high if self.high_open else value <= self.high
        elif ok and self.integer:
            ok = value <= MAX_INTEGER
        if ok and self.integer:
            ok = value == int(value)
        if not ok:
            raise ParameterError(
                f"Parameter {self.name} = {value:g} is out of range: it must be "
                f"{self.range_text()} ({self.description})"
            )

    def help(self, text: str | None = None) -> str:
        """Help text for an option setting this parameter: what it means, its default."""
        return (
            f"{(text or self.description)[0].upper()}{(text or self.description)[1:]} "
            f"(default {self.default:g})."
        )


#: The selection parameters, their defaults (the reference workflow's) and valid ranges.
PARAMS: tuple[Param, ...] = (
    Param("drop_blurry", 1, "1: drop images marked Blurry; 0: keep them", high=1),
    Param("min_box_w", 100, "minimum face box width in pixels"),
    Param("min_box_h", 100, "minimum face box height in pixels"),
    Param("min_images_per_id", 25, "clean images an identity needs to be eligible", low=1),
    Param("n_ids", 1000, "identities to sample from the eligible ones", low=1),
    Param("images_per_id", 25, "clean images to sample per selected identity", low=1),
    Param("seed", 21, "seed of every sampling step (md5 of seed and key, never random())"),
    Param(
        "box_shrink",
        0.05,
        "shrink each face box by this share about its centre",
        False,
        high=1,
        high_open=True,
    ),
    Param("holdout_ids", 200, "selected identities held out of training for open-set tests"),
    Param("query_ids", 100, "held-out identities used as queries"),
    Param("query_images", 2, "images per query identity"),
    Param("distractor_ids", 100, "held-out identities used as distractors"),
    Param("distractor_images", 5, "images per distractor identity"),
    Param("train_per_id", 18, "training images per (non-held-out) identity"),
    Param("val_per_id", 4, "validation images per identity"),
    Param("test_per_id", 3, "test images per identity"),
)
PARAM_NAMES = {p.name: p for p in PARAMS}
DEFAULTS: dict[str, float] = {p.name: p.default for p in PARAMS}

PARAMS_DDL = """
CREATE TABLE IF NOT EXISTS params (
    name VARCHAR PRIMARY KEY, value DOUBLE NOT NULL, description VARCHAR
);
CREATE TABLE IF NOT EXISTS quotas (
    attribute VARCHAR PRIMARY KEY, share DOUBLE NOT NULL
);
-- The quota-balanced sample (catalog/quotas.py); empty when there are no quotas.
CREATE TABLE IF NOT EXISTS quota_identities (identity INTEGER PRIMARY KEY, pick INTEGER);
CREATE TABLE IF NOT EXISTS quota_images (image_id VARCHAR PRIMARY KEY, pick_in_id INTEGER);
CREATE OR REPLACE MACRO param(key) AS (SELECT value FROM params WHERE name = key);
"""


@dataclass(frozen=True)
class ViewFile:
    name: str
    sql: str
    comment: str  # the leading comment block: what the view selects and why
    depends_on: tuple[str, ...]


def view_files() -> list[ViewFile]:
    """Every view in ``sql/``, in an order where dependencies come first."""
    raw = {f.name[: -len(".sql")]: f.read_text(encoding="utf-8") for f in sql_files()}
    views = {}
    for name, text in raw.items():
        body = _strip_comments(text)
        deps = tuple(
            sorted(other for other in raw if other != name and re.search(rf"\b{other}\b", body))
        )
        comment = "\n".join(
            line.strip()[2:].strip() for line in text.splitlines() if line.strip().startswith("--")
        )
        views[name] = ViewFile(name, text.strip().rstrip(";"), comment, deps)
    ordered: list[ViewFile] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ValueError("views depend on each other in a cycle: " + " -> ".join(chain))
        state[name] = "visiting"
        for dep in views[name].depends_on:
            visit(dep, chain + (dep,))
        state[name] = "done"
        ordered.append(views[name])

    for name in sorted(views):
        visit(name, (name,))
    return ordered


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in text.splitlines())


def ensure_params(con: duckdb.DuckDBPyConnection) -> None:
    """Create ``params``/``quotas`` and the macro; fill in defaults for missing params."""
    con.execute(PARAMS_DDL)
    con.executemany(
        "INSERT INTO params VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
        [(p.name, float(p.default), p.description) for p in PARAMS],
    )


def apply_views(con: duckdb.DuckDBPyConnection, *, quotas: bool = True) -> list[str]:
    """(Re)create every view of ``sql/``; with ``quotas``, recompute the quota sample.

    Returns the view names in creation order. Raises ``QuotaError`` when the stored
    quotas cannot be met on the current data and parameters.
    """
    ensure_params(con)
    names = []
    for view in view_files():
        con.execute(f"CREATE OR REPLACE VIEW {view.name} AS\n{view.sql}")
        names.append(view.name)
    if quotas:
        from catalog.quotas import refresh

        refresh(con)
    return names


def get_params(con: duckdb.DuckDBPyConnection) -> dict[str, float]:
    """Parameters in force (integers as int)."""
    values = dict(con.execute("SELECT name, value FROM params").fetchall())
    return {
        name: int(value) if PARAM_NAMES.get(name, Param(name, 0, "")).integer else value
        for name, value in values.items()
    }


def check_params(values: dict[str, float]) -> None:
    """Refuse unknown names and values outside their range, naming the parameter."""
    for name, value in values.items():
        if name not in PARAM_NAMES:
            raise ParameterError(f"Unknown parameter {name!r}. Known: {', '.join(PARAM_NAMES)}")
        PARAM_NAMES[name].check(value)


def set_params(con: duckdb.DuckDBPyConnection, **values: float) -> None:
    """Change parameters (unknown names and values out of range are refused, naming
    the parameter and its range)."""
    check_params(values)
    ensure_params(con)
    if not values:
        return
    con.executemany(
        "UPDATE params SET value = ? WHERE name = ?",
        [(float(v), k) for k, v in values.items()],
    )


def apply_to(db: DbArg = None) -> list[str]:
    """Open the catalog, apply the views in one transaction, close it."""
    from catalog.db import connect, transaction

    con = connect(db)
    try:
        with transaction(con):
            return apply_views(con)
    finally:
        con.close()
