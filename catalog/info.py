"""Read-only questions about a catalog: which tables, their columns, ad-hoc SQL.

Each function opens its own connection (read-only unless told otherwise) and
closes it, so the CLI commands over them stay one call each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from catalog.annotations import TABLE_DOCS
from catalog.db import DbArg, connect, has_table, resolve_db
from catalog.errors import CatalogError, QueryError, UnknownTableError

if TYPE_CHECKING:
    import duckdb

#: What every table of a catalog holds, in one place (``celebcat tables``, ``celebcat
#: schema``): the annotation tables (:data:`~catalog.annotations.TABLE_DOCS`), the
#: image index and checks (ingest), parameters and quotas (views, select), snapshots,
#: crop caches and results. The views describe themselves: the comment at the top of
#: their ``sql/`` file (:func:`view_docs`).
DOCS: dict[str, str] = {
    **TABLE_DOCS,
    "images": "In-the-wild image files: path relative to the image root, size in bytes, "
    "width and height from the header, error if unreadable.",
    "images_aligned": "Aligned 178x218 image files (img_align_celeba), same columns as images.",
    "problems": "Cross-file inconsistencies found at ingest (see `celebcat check`).",
    "catalog_info": "Where the data came from: data folder, image roots, ingest time.",
    "ingested_files": "Which annotation file loaded each table, its layout and row count.",
    "params": "Selection parameters in force (name, value, description), read by the "
    "views through param('name'); see `celebcat params`, change with `celebcat select`.",
    "quotas": "Attribute shares the selection must meet within one point "
    "(`celebcat select --quota Male=0.5`).",
    "quota_identities": "The quota-balanced identity sample the selected_identities view "
    "reads when not empty (identity, pick).",
    "quota_images": "The quota-balanced image sample the selection view reads when not "
    "empty (image_id, pick_in_id).",
    "snapshots": "Frozen selections: name, hash of their rows, parameters and quotas, "
    "image and identity counts (`celebcat snapshot list`).",
    "snapshot_images": "Each snapshot's images: identity, split, label and face box "
    "(x_2/y_2 exclusive).",
    "snapshot_labels": "Each snapshot's identity <-> contiguous label (0..C-1) of the "
    "train/val/test identities.",
    "crop_caches": "Crop caches: snapshot hash, source (bbox or aligned/<template>/<run>), "
    "size, .npy path (`celebcat cache list`).",
    "crop_cache_rows": "Each cached crop: its row in the .npy array, the box cut and the "
    "matrix from in-the-wild pixels to crop pixels.",
    "runs": "Training runs: kind, config, snapshot name and hash, code version, status, "
    "start and end (`celebcat runs`).",
    "metrics": "Per-epoch and final figures of each run (run_id, epoch, split, name, value); "
    "epoch as training prints it, 1 the first (0: a pretrained run).",
    "results_info": "What the results tables' layout is (e.g. that epochs count from 1).",
    "landmark_predictions": "Landmarks a run predicted (celebcat align), in in-the-wild "
    "pixels, with their NME against the annotations and its normaliser.",
    "embeddings": "Face embeddings a recognition run computed: run, image, the crops "
    "embedded (bbox or aligned/<template>/<run>), the L2-normalised vector.",
    "galleries": "Identification galleries: name, the recognition run that embedded them, "
    "where the faces came from, counts (`celebcat gallery list`).",
    "gallery_entries": "Each gallery face: gallery, identity name, the image (id or path), "
    "its L2-normalised embedding.",
    "gallery_calibrations": "How each gallery's search (how: mean or max) scores faces of "
    "people it does not hold: where they came from, how many people, each face's best "
    "cosine; identify's unknown-face threshold.",
}


class NotIngestedError(CatalogError, LookupError):
    """The catalog file exists but no ingest has completed into it."""


def view_docs() -> dict[str, str]:
    """Each view's description: the comment block of its ``sql/`` file, whole, without
    the leading ``name:``."""
    from catalog.views import view_files

    out = {}
    for view in view_files():
        text = " ".join(view.comment.split())
        prefix = f"{view.name}:"
        out[view.name] = text[len(prefix) :].strip() if text.startswith(prefix) else text
    return out


def describe(name: str) -> str:
    """What a table or view holds ("" for one the project does not know)."""
    return DOCS.get(name) or view_docs().get(name, "")


@dataclass(frozen=True)
class QueryResult:
    """Column names and rows of a query (rows as tuples)."""

    columns: list[str]
    rows: list[tuple[Any, ...]]


def list_tables(db: DbArg = None, *, counts: bool = False) -> QueryResult:
    """Tables and views of the catalog (name, kind, rows if ``counts``, description)."""
    views = view_docs()
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
            rows.append(row + (DOCS.get(name) or views.get(name, ""),))
    finally:
        con.close()
    columns = ["name", "kind"] + (["rows"] if counts else []) + ["description"]
    return QueryResult(columns, rows)


def table_schema(table: str, db: DbArg = None) -> tuple[str, QueryResult]:
    """(description, columns with type, nullability and key) of one table or view."""
    con = connect(db, read_only=True)
    try:
        if not has_table(con, table, views=True):
            names = [r[0] for r in list_tables(db).rows]
            raise UnknownTableError(f"No table or view {table!r}. Known: {', '.join(names)}")
        cur = con.execute(f'DESCRIBE "{table}"')
        columns = [d[0] for d in cur.description]
        rows = cur.fetchall()
    finally:
        con.close()
    return describe(table), QueryResult(columns, rows)


def run_query(sql: str, db: DbArg = None, *, write: bool = False) -> QueryResult:
    """Run one SQL statement (the last result where ``sql`` holds several); read-only
    unless ``write``."""
    results = run_statements(sql, db, write=write)
    return results[-1] if results else QueryResult([], [])


def run_statements(sql: str, db: DbArg = None, *, write: bool = False) -> list[QueryResult]:
    """Run each statement of ``sql`` (``;``-separated) in order, on one connection;
    one result per statement (no columns for a statement that returns no rows).

    Read-only unless ``write``, and then sandboxed (:func:`catalog.db.connect`): the SQL
    reads the catalog and nothing else, no file, network or extension (``COPY ... TO``,
    ``read_text``, ``ATTACH``, ``INSTALL`` are refused). ``write`` opens the catalog
    as the library does, with all of DuckDB. A failing statement raises
    :class:`~catalog.errors.QueryError` naming it (its number where there are
    several) and, for a write on the read-only catalog, the ``--write`` option; the
    statements before it have run (with ``write``, each commits on its own, as in the
    duckdb shell).
    """
    import duckdb

    con = connect(db, read_only=not write, sandboxed=not write)
    try:
        statements = _split_statements(con, sql)
        results = []
        for i, statement in enumerate(statements, start=1):
            try:
                cur = con.execute(statement)
            except duckdb.Error as exc:
                raise QueryError(_query_error(exc, i, len(statements), write)) from exc
            if cur.description is None:
                results.append(QueryResult([], []))
            else:
                results.append(QueryResult([d[0] for d in cur.description], cur.fetchall()))
        return results
    finally:
        con.close()


def _split_statements(con: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    """The statements of ``sql``, split by DuckDB's own parser (semicolons inside
    strings and comments stay where they are)."""
    import duckdb

    try:
        return [str(s.query) for s in con.extract_statements(sql)]
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from exc


def _query_error(exc: Exception, i: int, n: int, write: bool) -> str:
    text = str(exc)
    where = f"Statement {i} of {n} failed: " if n > 1 else ""
    if not write and "read-only" in text.lower():
        text += "\nThe catalog is opened read-only; add --write to change it."
    elif not write and "configuration" in text and ("disabled" in text or "locked" in text):
        text += (
            "\nWithout --write, SQL reads the catalog only: no other files, network, "
            "extensions or settings."
        )
    return where + text


def problem_summary(db: DbArg = None) -> QueryResult:
    """``problems`` grouped by check and source, with counts and examples."""
    from catalog.problems import describe, summary

    con = connect(db, read_only=True)
    try:
        if not has_table(con, "problems"):
            raise NotIngestedError(
                f"The catalog {resolve_db(db)} holds no ingested data (an ingest that did not "
                "finish leaves it so). Run `celebcat ingest DIR` first."
            )
        groups = summary(con)
    finally:
        con.close()
    docs = describe()
    columns = ["check", "source", "severity", "count", "examples", "what it means"]
    rows = [
        (
            g["check_name"],
            g["source"],
            g["severity"],
            g["n"],
            g["examples"],
            docs.get((g["check_name"], g["source"]), ""),
        )
        for g in groups
    ]
    return QueryResult(columns, rows)


def list_views(db: DbArg = None) -> QueryResult:
    """The views of ``sql/`` with row counts, dependencies and their whole description."""
    from catalog.views import view_files

    docs = view_docs()
    con = connect(db, read_only=True)
    try:
        rows = []
        for view in view_files():
            try:
                n: Any = con.execute(f"SELECT count(*) FROM {view.name}").fetchone()[0]
            except Exception as exc:  # noqa: BLE001 - show the view, say why it fails
                n = f"error: {str(exc).splitlines()[0][:60]}"
            rows.append((view.name, n, ", ".join(view.depends_on), docs[view.name]))
    finally:
        con.close()
    return QueryResult(["view", "rows", "depends on", "selects"], rows)
