"""Read-only questions about a catalog: which tables, their columns, ad-hoc SQL.

Each function opens its own connection (read-only unless told otherwise) and
closes it, so the CLI commands over them stay one call each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from catalog.annotations import TABLE_DOCS
from catalog.db import connect

DbArg = str | os.PathLike[str] | None

#: One line on each table ingest makes; annotation tables are described in TABLE_DOCS.
DOCS: dict[str, str] = {
    **TABLE_DOCS,
    "images": "In-the-wild image files: path relative to the image root, size in bytes, "
    "width and height from the header, error if unreadable.",
    "images_aligned": "Aligned 178x218 image files (img_align_celeba), same columns as images.",
    "problems": "Cross-file inconsistencies found at ingest (see `celebcat check`).",
    "catalog_info": "Where the data came from: data folder, image roots, ingest time.",
    "ingested_files": "Which annotation file loaded each table, its layout and row count.",
}


@dataclass(frozen=True)
class QueryResult:
    """Column names and rows of a query (rows as tuples)."""

    columns: list[str]
    rows: list[tuple[Any, ...]]


def list_tables(db: DbArg = None, *, counts: bool = False) -> QueryResult:
    """Tables and views of the catalog (name, kind, rows if ``counts``, description)."""
    con = connect(db, read_only=True)
    try:
        objects = con.execute(
            "SELECT table_name, 'table' FROM duckdb_tables() WHERE NOT internal "
            "AND schema_name = 'main' UNION ALL "
            "SELECT view_name, 'view' FROM duckdb_views() WHERE NOT internal "
            "AND schema_name = 'main' ORDER BY 2, 1"
        ).fetchall()
        rows = []
        for name, kind in objects:
            row: tuple[Any, ...] = (name, kind)
            if counts:
                row += (con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0],)
            rows.append(row + (DOCS.get(name, ""),))
    finally:
        con.close()
    columns = ["name", "kind"] + (["rows"] if counts else []) + ["description"]
    return QueryResult(columns, rows)


def table_schema(table: str, db: DbArg = None) -> tuple[str, QueryResult]:
    """(description, columns with type, nullability and key) of one table or view."""
    con = connect(db, read_only=True)
    try:
        exists = con.execute(
            "SELECT count(*) FROM (SELECT table_name AS n FROM duckdb_tables() UNION ALL "
            "SELECT view_name FROM duckdb_views()) WHERE n = ?",
            [table],
        ).fetchone()[0]
        if not exists:
            names = [r[0] for r in list_tables(db).rows]
            raise LookupError(f"No table or view {table!r}. Known: {', '.join(names)}")
        cur = con.execute(f'DESCRIBE "{table}"')
        columns = [d[0] for d in cur.description]
        rows = cur.fetchall()
    finally:
        con.close()
    return DOCS.get(table, ""), QueryResult(columns, rows)


def run_query(sql: str, db: DbArg = None, *, write: bool = False) -> QueryResult:
    """Run one SQL statement; read-only unless ``write``."""
    con = connect(db, read_only=not write)
    try:
        cur = con.execute(sql)
        if cur.description is None:
            return QueryResult([], [])
        return QueryResult([d[0] for d in cur.description], cur.fetchall())
    finally:
        con.close()


def problem_summary(db: DbArg = None) -> QueryResult:
    """``problems`` grouped by check and source, with counts and examples."""
    from catalog.problems import describe, summary

    con = connect(db, read_only=True)
    try:
        groups = summary(con)
    finally:
        con.close()
    docs = describe()
    columns = ["check", "source", "severity", "count", "examples", "what it means"]
    rows = [
        (
            g["check_name"], g["source"], g["severity"], g["n"], g["examples"],
            docs.get((g["check_name"], g["source"]), ""),
        )
        for g in groups
    ]
    return QueryResult(columns, rows)


def list_views(db: DbArg = None) -> QueryResult:
    """The views of ``sql/`` with row counts and the first line of their comment."""
    from catalog.views import view_files

    con = connect(db, read_only=True)
    try:
        rows = []
        for view in view_files():
            try:
                n: Any = con.execute(f"SELECT count(*) FROM {view.name}").fetchone()[0]
            except Exception as exc:  # noqa: BLE001 - show the view, say why it fails
                n = f"error: {str(exc).splitlines()[0][:60]}"
            first = view.comment.splitlines()[0].split(":", 1)[-1].strip() if view.comment else ""
            rows.append((view.name, n, ", ".join(view.depends_on), first))
    finally:
        con.close()
    return QueryResult(["view", "rows", "depends on", "selects"], rows)
