"""Reading CelebA annotation files into DuckDB tables, with errors that name file and line.

Two paths, one set of rules:

* The fast path runs in DuckDB. Each file is read as whole lines (DuckDB's CSV
  reader cannot split CelebA's runs of spaces, docs/decisions.md, "Ingest"), every line is
  checked against one regular expression for its layout, then split and cast in
  bulk. This is what makes full-size CelebA load in a fraction of a second.
* When the fast path finds anything wrong, :func:`find_problem` re-reads the file
  line by line in plain Python with the same rules and raises
  :class:`AnnotationError` for the first bad line, so the user learns the file, the
  line number and the problem. The slow path only ever runs on bad input.

The tables and their columns are documented in :data:`TABLE_DOCS` (shown by
``celebcat schema``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from catalog.errors import CatalogError
from catalog.formats import (
    ALL_FILES,
    ANNOTATION_TABLES,
    PARTITION_NAMES,
    FileSpec,
)

if TYPE_CHECKING:
    import duckdb

#: What each annotation table holds, for ``celebcat schema`` and the README.
TABLE_DOCS: dict[str, str] = {
    "attributes": "CelebA's 40 binary attributes per image (-1 -> false, 1 -> true); "
    "names as CelebA spells them, quote \"5_o_Clock_Shadow\" in SQL.",
    "bboxes": "Face box per image: x_1, y_1 (top-left), width, height in pixels of the "
    "in-the-wild image.",
    "landmarks": "5 landmarks (eye centres, nose tip, mouth corners) in pixels of the "
    "in-the-wild image; lefteye is the viewer's left.",
    "landmarks_aligned": "The same 5 landmarks in the 178x218 aligned frame "
    "(img_align_celeba). Never mix with `landmarks`.",
    "identities": "Identity number (person) of each image.",
    "partitions": "CelebA's official split: partition 0/1/2 and partition_name "
    "train/valid/test.",
}

# Longest integer we accept; 9 digits always fits INTEGER, so the bulk cast cannot fail.
_INT = r"[+-]?\d{1,9}"
_VALUE_PATTERNS = {"attr": r"-?1", "int": _INT, "partition": r"[012]"}
_VALUE_SQL_TYPES = {"attr": "BOOLEAN", "int": "INTEGER", "partition": "TINYINT"}
# Kinds whose values are a closed set: an exact CASE maps anything else to NULL, so
# the loaded table itself shows bad lines and the file needs no separate regex pass
# (the attribute file is the largest: this saves a full scan of it). Integers keep
# the regex: DuckDB's cast also takes '1.5', '1e3' and '1_000'.
_CHECKED_IN_TABLE = ("attr", "partition")


class AnnotationError(CatalogError, ValueError):
    """A CelebA annotation file could not be loaded.

    ``path`` is the file, ``line`` the 1-based line number (None when the problem
    is not on one line), ``problem`` what is wrong and, where it helps, what to do.
    """

    def __init__(self, path: str | os.PathLike[str], line: int | None, problem: str) -> None:
        self.path = Path(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}, line {line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class AnnotationFile:
    """A file found on disk and the spec it is read with."""

    spec: FileSpec
    path: Path


@dataclass(frozen=True)
class Preamble:
    """What precedes the rows: the declared row count and the value column order."""

    declared_rows: int | None
    columns: tuple[str, ...]  # value columns in file order


# ---------------------------------------------------------------------------
# Finding files
# ---------------------------------------------------------------------------

_SKIP_DIRS = {"img_celeba", "img_align_celeba", "__pycache__", ".git"}


def find_annotation_files(
    data_dir: str | os.PathLike[str], max_depth: int = 3
) -> tuple[dict[str, AnnotationFile], list[str]]:
    """The annotation file to load for each table, and notes on what was passed over.

    Looks in ``data_dir`` and up to ``max_depth`` folders below it (the official
    download keeps them in ``Anno/`` and ``Eval/``, Kaggle's in ``archive/``),
    without walking into image folders. When both layouts of a table are present the
    official txt wins; the CSV is named in the notes.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    by_name = {spec.name.lower(): spec for spec in ALL_FILES}
    found: dict[str, list[tuple[int, Path]]] = {}
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        dirs[:] = [] if depth >= max_depth else sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in files:
            spec = by_name.get(name.lower())
            if spec is not None:
                found.setdefault(spec.name, []).append((depth, Path(folder) / name))

    notes: list[str] = []
    chosen: dict[str, AnnotationFile] = {}
    for spec in ALL_FILES:  # txt specs come first, so they win
        places = sorted(found.get(spec.name, []))
        if not places:
            continue
        path = places[0][1]
        if len(places) > 1:
            others = ", ".join(str(p) for _, p in places[1:])
            notes.append(f"{spec.name} found more than once; using {path}, ignoring {others}")
        if spec.table in chosen:
            notes.append(f"{path.name} ignored: {chosen[spec.table].path.name} already "
                         f"provides table {spec.table}")
            continue
        chosen[spec.table] = AnnotationFile(spec, path)
    return chosen, notes


# ---------------------------------------------------------------------------
# Preamble (count line, header line) — a few lines, read in Python
# ---------------------------------------------------------------------------


def _clean(line: str) -> str:
    return line.lstrip("\ufeff").rstrip("\r\n")


def _tokens(spec: FileSpec, line: str) -> list[str]:
    if spec.layout == "csv":
        return [t.strip() for t in line.rstrip().split(",")]
    return line.split()


def read_preamble(spec: FileSpec, path: Path) -> Preamble:
    """Check the count and header lines and return the declared count and column order.

    The header may list the value columns in any order (they are matched by name);
    it must name each expected column once.
    """
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        head = [_clean(f.readline()) for _ in range(2)]
    if not head[0].strip() and not head[1].strip():
        raise AnnotationError(path, None, "the file is empty")

    declared = None
    header_no, header = None, None
    if spec.layout == "csv":
        header_no, header = 1, head[0]
    else:
        if spec.count_line:
            text = head[0].strip()
            if not re.fullmatch(r"\d+", text):
                raise AnnotationError(
                    path, 1, f"expected the row count (a whole number), found {text[:60]!r}"
                )
            declared = int(text)
        if spec.header_line:
            header_no, header = 2, head[1]

    if header is None:
        return Preamble(declared, spec.columns)
    names = _tokens(spec, header)
    if names and names[0].lower() == "image_id":
        names = names[1:]
    missing = [c for c in spec.columns if c not in names]
    unknown = [n for n in names if n not in spec.columns]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if missing or unknown or repeated:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        if unknown:
            parts.append("unknown " + ", ".join(repr(u) for u in unknown[:5]))
        if repeated:
            parts.append("repeated " + ", ".join(repeated))
        raise AnnotationError(
            path, header_no,
            f"header does not match {spec.name}'s columns ({'; '.join(parts)})",
        )
    return Preamble(declared, tuple(names))


# ---------------------------------------------------------------------------
# Fast path (DuckDB)
# ---------------------------------------------------------------------------


def line_pattern(spec: FileSpec) -> str:
    """The regular expression (RE2) one data line must match in full."""
    value = _VALUE_PATTERNS[spec.kind]
    if spec.layout == "csv":
        return rf"[^,\s]+(?:,{value}){{{len(spec.columns)}}}\s*"
    return rf"\s*\S+(?:[ \t]+{value}){{{len(spec.columns)}}}\s*"


def table_ddl(table: str) -> str:
    """``CREATE TABLE`` for one annotation table (``image_id`` unique by ingest's check)."""
    kind = {"attributes": "attr", "partitions": "partition"}.get(table, "int")
    sql_type = _VALUE_SQL_TYPES[kind]
    cols = [f'"{c}" {sql_type} NOT NULL' for c in ANNOTATION_TABLES[table]]
    if table == "partitions":
        cols.append("partition_name VARCHAR NOT NULL")
    return f"CREATE TABLE {table} (image_id VARCHAR NOT NULL, {', '.join(cols)})"


def _select_sql(spec: FileSpec, columns: tuple[str, ...], lines: str, tabs: bool) -> str:
    """SQL turning validated lines into typed rows, columns in table order and named."""
    if spec.layout == "csv":
        fields = "string_split(rtrim(line), ',')"
    else:
        # Splitting on single spaces and dropping the empty strings between runs of
        # spaces is the fastest split DuckDB offers here (docs/decisions.md, "Ingest");
        # tabs are rare, so they cost an extra pass only in files that have them.
        text = "replace(line, chr(9), ' ')" if tabs else "line"
        fields = f"list_filter(string_split({text}, ' '), lambda t: t <> '')"
    pos = {name: i + 2 for i, name in enumerate(columns)}  # f[1] is image_id
    exprs = ["f[1] AS image_id"]
    for name in ANNOTATION_TABLES[spec.table]:
        f = f"f[{pos[name]}]"
        if spec.kind == "attr":  # anything but -1/1 becomes NULL, which the caller checks
            exprs.append(f"CASE {f} WHEN '1' THEN true WHEN '-1' THEN false END AS \"{name}\"")
        elif spec.kind == "partition":
            exprs.append(f"CASE {f} WHEN '0' THEN 0 WHEN '1' THEN 1 WHEN '2' THEN 2 END::TINYINT "
                         f"AS \"{name}\"")
        else:  # validated by line_pattern first, so the cast cannot fail
            exprs.append(f"CAST({f} AS {_VALUE_SQL_TYPES[spec.kind]}) AS \"{name}\"")
    if spec.table == "partitions":
        case = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in PARTITION_NAMES.items())
        exprs.append(f"CASE f[2] {case} END AS partition_name")
    if spec.kind in _CHECKED_IN_TABLE:
        exprs.append("len(f) AS _fields")
    return f"SELECT {', '.join(exprs)} FROM (SELECT {fields} AS f FROM {lines})"


def load_annotation(
    con: duckdb.DuckDBPyConnection, found: AnnotationFile, table: str | None = None
) -> int:
    """Create ``table`` (default: the file's own table) from the file; return its rows.

    The table must not exist. Runs inside the caller's transaction. Raises
    :class:`AnnotationError` naming the first bad line when anything is wrong.
    """
    spec, path = found.spec, found.path
    table = table or spec.table
    preamble = read_preamble(spec, path)
    # Integer files are read twice (regex check, then load) rather than staged in a
    # temp table: a second read costs about as much as scanning a staged copy, and
    # the copy would double the memory an ingest needs. chr(1) as the delimiter: no
    # CelebA line contains it, so each line is one field.
    lines = (
        "(SELECT line FROM read_csv(?, columns={'line': 'VARCHAR'}, delim=chr(1), "
        "header=false, skip=?, quote='', escape='', auto_detect=false) "
        "WHERE line IS NOT NULL AND trim(line) <> '')"
    )
    source = [str(path), spec.first_data_line - 1]
    if spec.kind in _CHECKED_IN_TABLE:
        rows = _load_checked_in_table(con, spec, table, path, preamble, lines, source)
    else:
        rows, bad, tabs = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE NOT regexp_full_match(line, ?)), "
            f"count(*) FILTER (WHERE contains(line, chr(9))) FROM {lines}",
            [line_pattern(spec), *source],
        ).fetchone()
        if bad:
            find_problem(spec, path)  # raises with the line
            raise AnnotationError(path, None, f"{bad} lines do not match the {spec.name} layout")
        select = _select_sql(spec, preamble.columns, lines, tabs > 0)
        con.execute(f"CREATE TABLE {table} AS {select}", source)
    if preamble.declared_rows is not None and rows != preamble.declared_rows:
        find_problem(spec, path)
        raise AnnotationError(path, 1, f"line 1 declares {preamble.declared_rows} rows, "
                                       f"the file has {rows}")
    # image_id is unique, checked here where the file can be named. No PRIMARY KEY:
    # its index cost a fifth of ingest's time and made the catalog file 3.8x larger,
    # for point lookups that zone maps over the ordered ids answer in ~2 ms anyway
    # (docs/decisions.md, "Primary keys").
    dupes = con.execute(
        f"SELECT count(*) - count(DISTINCT image_id) FROM {table}"
    ).fetchone()[0]
    if dupes:
        find_problem(spec, path)
        raise AnnotationError(path, None, f"{dupes} duplicate image ids")
    return int(rows)


def _load_checked_in_table(
    con: duckdb.DuckDBPyConnection,
    spec: FileSpec,
    table: str,
    path: Path,
    preamble: Preamble,
    lines: str,
    source: list,
) -> int:
    """Load a closed-set file and check it in the loaded table; return the row count.

    A bad line shows as a wrong field count or a NULL value. Tabs are rare, so the
    first try splits on spaces only and a failed check is retried once with tabs
    turned into spaces before the slow path explains it.
    """
    values = [f'"{c}" IS NULL' for c in ANNOTATION_TABLES[spec.table]]
    check = (
        f"SELECT count(*), count(*) FILTER (WHERE _fields <> {len(spec.columns) + 1} "
        f"OR image_id = '' OR {' OR '.join(values)}) FROM {table}"
    )
    for tabs in (False, True):
        con.execute(
            f"CREATE TABLE {table} AS "
            f"{_select_sql(spec, preamble.columns, lines, tabs)}",
            source,
        )
        rows, bad = con.execute(check).fetchone()
        if not bad:
            con.execute(f"ALTER TABLE {table} DROP COLUMN _fields")
            return int(rows)
        con.execute(f"DROP TABLE {table}")
    find_problem(spec, path)
    raise AnnotationError(path, None, f"{bad} lines do not match {spec.name}")


# ---------------------------------------------------------------------------
# Slow path (plain Python): the first bad line, named
# ---------------------------------------------------------------------------


def _data_lines(path: Path, first: int) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for number, raw in enumerate(f, start=1):
            if number >= first:
                yield number, raw


def find_problem(spec: FileSpec, path: str | os.PathLike[str]) -> None:
    """Re-read ``path`` line by line and raise :class:`AnnotationError` at the first problem.

    Returns normally when the file is fine; the fast path uses this to explain what
    its bulk checks found, and tests use it as the reference reader.
    """
    path = Path(path)
    preamble = read_preamble(spec, path)
    n_values = len(spec.columns)
    value_re = re.compile(_VALUE_PATTERNS[spec.kind])
    what = {"attr": "-1 or 1", "int": "an integer", "partition": "0, 1 or 2"}[spec.kind]
    seen: dict[str, int] = {}
    rows = 0
    last = spec.first_data_line - 1
    for number, raw in _data_lines(path, spec.first_data_line):
        last = number
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        if "\r" in line:
            raise AnnotationError(path, number, "stray carriage return inside the line")
        tokens = _tokens(spec, line)
        if spec.layout == "txt" and "," in line:
            raise AnnotationError(path, number, "commas in a space-separated .txt file")
        if len(tokens) != n_values + 1:
            complete = raw.endswith("\n")
            hint = "" if complete else " (the last line is cut short: is the file truncated?)"
            raise AnnotationError(
                path, number,
                f"expected {n_values + 1} fields (image_id and {n_values} values), "
                f"found {len(tokens)}{hint}",
            )
        image_id = tokens[0]
        for name, token in zip(preamble.columns, tokens[1:], strict=True):
            if not value_re.fullmatch(token):
                raise AnnotationError(
                    path, number, f"{name} of {image_id} is {token!r}, expected {what}"
                )
        if image_id in seen:
            raise AnnotationError(
                path, number, f"duplicate image_id {image_id} (first on line {seen[image_id]})"
            )
        seen[image_id] = number
        rows += 1
    declared = preamble.declared_rows
    if declared is not None and rows != declared:
        if rows < declared:
            problem = (f"line 1 declares {declared} rows but the file has {rows}: "
                       "it looks truncated; re-download or re-extract it")
        else:
            problem = f"line 1 declares {declared} rows but the file has {rows}"
        raise AnnotationError(path, last if rows < declared else 1, problem)

