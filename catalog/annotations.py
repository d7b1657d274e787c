"""Reading CelebA annotation files into DuckDB tables, with errors that name file and line.

Two paths, one set of rules:

* The fast path runs in DuckDB. Each file is read once, as whole lines (DuckDB's CSV
  reader cannot split CelebA's runs of spaces, docs/decisions.md, "Ingest"), and split
  and cast in bulk by one ``INSERT ... SELECT``; the same statement checks every line
  (against one regular expression for its layout, or for files of closed value sets,
  by the values themselves) and leaves a NULL image_id where a line is bad, which one
  query over the new table counts. This is what makes full-size CelebA load in a
  fraction of a second. Files whose lines all have the layout of their first line
  (the official txt files; identity_CelebA.txt with its value right-aligned) are
  tried first without DuckDB's reader or the split: numpy reads the lines from the
  file and cuts the fields at fixed byte offsets (:func:`_create_fixed`); any line
  that does not fit makes that try give way to the split, so it decides exactly what
  the split would.
* When the fast path finds anything wrong, :func:`find_problem` re-reads the file
  line by line in plain Python with the same rules and raises
  :class:`AnnotationError` for the first bad line, so the user learns the file, the
  line number and the problem. The slow path only ever runs on bad input.

The tables and their columns are documented in :data:`TABLE_DOCS` (shown by
``celebcat schema``).
"""

from __future__ import annotations

import mmap
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from catalog.errors import CatalogError
from catalog.formats import (
    ALL_FILES,
    ANNOTATION_TABLES,
    PARTITION_NAMES,
    FileSpec,
)

if TYPE_CHECKING:
    import duckdb
    import numpy as np

#: What each annotation table holds, for ``celebcat schema`` and the README.
TABLE_DOCS: dict[str, str] = {
    "attributes": "CelebA's 40 binary attributes per image (-1 -> false, 1 -> true); "
    'names as CelebA spells them, quote "5_o_Clock_Shadow" in SQL.',
    "bboxes": "Face box per image: x_1, y_1 (top-left), width, height in pixels of the "
    "in-the-wild image.",
    "landmarks": "5 landmarks (eye centres, nose tip, mouth corners) in pixels of the "
    "in-the-wild image; lefteye is the viewer's left.",
    "landmarks_aligned": "The same 5 landmarks in the 178x218 aligned frame "
    "(img_align_celeba). Never mix with `landmarks`.",
    "identities": "Identity number (person) of each image.",
    "partitions": "CelebA's official split: partition 0/1/2 and partition_name train/valid/test.",
}

# The grammar of a data line, shared by the fast path (RE2 in DuckDB) and the slow
# path (Python's re), so that both accept exactly the same lines. Digits are ASCII
# ([0-9], not \d: Python's \d takes any script's digits); fields are separated by
# spaces and tabs only (Python's split() also splits at other Unicode spaces); an
# image_id is anything but separators, commas and control characters.
# Longest integer we accept; 9 digits always fits INTEGER, so the bulk cast cannot fail.
_INT = r"[+-]?[0-9]{1,9}"
_ID = r"[^, \t\x00-\x1f\x7f]+"
_BLANK = " \t"  # what a blank line holds, and what surrounds the fields of a txt line
#: Longest line read (bytes); DuckDB's reader refuses longer ones, the slow path names them.
MAX_LINE_BYTES = 1 << 20
_VALUE_PATTERNS = {"attr": r"-?1", "int": _INT, "partition": r"[012]"}
_VALUE_SQL_TYPES = {"attr": "BOOLEAN", "int": "INTEGER", "partition": "TINYINT"}
# Kinds whose values are a closed set: an exact CASE maps anything else to NULL, and
# the field count and the image_id are checked on the split line, so these files need
# no regex over the whole line (the attribute file is the largest: the regex would
# cost a sixth of its load). Integers are checked by the line's regex: DuckDB's cast
# also takes '1.5', '1e3' and '1_000'.
_CHECKED_BY_VALUES = ("attr", "partition")


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
            notes.append(
                f"{path.name} ignored: {chosen[spec.table].path.name} already "
                f"provides table {spec.table}"
            )
            continue
        chosen[spec.table] = AnnotationFile(spec, path)
    return chosen, notes


# ---------------------------------------------------------------------------
# Preamble (count line, header line) — a few lines, read in Python
# ---------------------------------------------------------------------------


def _clean(line: str) -> str:
    return line.lstrip("\ufeff").rstrip("\r\n")


def _header_tokens(spec: FileSpec, line: str) -> list[str]:
    if spec.layout == "csv":
        return [t.strip() for t in line.rstrip().split(",")]
    return line.split()


def _tokens(spec: FileSpec, line: str) -> list[str]:
    """A data line's fields, split as the fast path splits them."""
    if spec.layout == "csv":
        return line.rstrip(_BLANK).split(",")
    return re.split(r"[ \t]+", line.strip(_BLANK))


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
            if not re.fullmatch(r"[0-9]{1,12}", text):
                raise AnnotationError(
                    path, 1, f"expected the row count (a whole number), found {text[:60]!r}"
                )
            declared = int(text)
        if spec.header_line:
            header_no, header = 2, head[1]

    if header is None:
        return Preamble(declared, spec.columns)
    names = _header_tokens(spec, header)
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
            path,
            header_no,
            f"header does not match {spec.name}'s columns ({'; '.join(parts)})",
        )
    return Preamble(declared, tuple(names))


# ---------------------------------------------------------------------------
# Fast path (DuckDB)
# ---------------------------------------------------------------------------


def line_pattern(spec: FileSpec, tabs: bool = True) -> str:
    """The regular expression (RE2) one data line must match in full.

    With ``tabs`` False, the same with spaces as the only blanks of a txt line: a
    subset of the grammar, which the fast path tries first (a space-only line splits
    on spaces alone, the cheapest split) before it retries with tabs.
    """
    value = _VALUE_PATTERNS[spec.kind]
    if spec.layout == "csv":
        return rf"{_ID}(?:,{value}){{{len(spec.columns)}}}[ \t]*"
    blank = r"[ \t]" if tabs else " "
    return rf"{blank}*{_ID}(?:{blank}+{value}){{{len(spec.columns)}}}{blank}*"


#: How the columns of the annotation tables are compressed in the catalog file, where
#: the database offers it (DuckDB's storage of 1.2 and later; elsewhere DuckDB chooses).
#: Left to choose, DuckDB tries every method on every column at commit and keeps the
#: smallest: for the BOOLEAN attribute columns mostly bit packing, where roaring alone
#: takes half the commit time in a smaller file. The image ids keep DuckDB's choice
#: (DICT_FSST): ZSTD would save 0.02 s a table once, at ingest, for a file 10 % larger
#: and point lookups by image_id 1.6x slower every time (docs/decisions.md, "Ingest").
#: Keyed by column name or by type.
_COMPRESSION: dict[str, str] = {"BOOLEAN": "roaring"}


def table_ddl(
    table: str, name: str | None = None, *, nullable: bool = False, compression: bool = False
) -> str:
    """``CREATE TABLE`` for one annotation table (``image_id`` unique by ingest's check),
    named ``name`` (default ``table``). ``nullable``: without NOT NULL, for a load whose
    bad lines show as NULLs until they are counted; ``compression``: with
    :data:`_COMPRESSION`, which older storage versions refuse (:func:`create_table`)."""
    kind = {"attributes": "attr", "partitions": "partition"}.get(table, "int")
    sql_type = _VALUE_SQL_TYPES[kind]
    null = "" if nullable else " NOT NULL"

    def using(key: str) -> str:
        method = _COMPRESSION.get(key) if compression else None
        return f" USING COMPRESSION {method}" if method else ""

    cols = [f"image_id VARCHAR{null}{using('image_id')}"]
    cols += [f'"{c}" {sql_type}{null}{using(sql_type)}' for c in ANNOTATION_TABLES[table]]
    if table == "partitions":
        cols.append(f"partition_name VARCHAR{null}")
    return f"CREATE TABLE {name or table} ({', '.join(cols)})"


def create_table(
    con: duckdb.DuckDBPyConnection, table: str, name: str | None = None, *, nullable: bool = False
) -> None:
    """Create the annotation table ``table`` as ``name`` (:func:`table_ddl`), with
    :data:`_COMPRESSION` where the database takes it, else with DuckDB's own choice."""
    con.execute(
        table_ddl(table, name, nullable=nullable, compression=_takes_compression(con, table, name))
    )


def _takes_compression(con: duckdb.DuckDBPyConnection, table: str, name: str | None) -> bool:
    """Whether the database of ``name`` takes :data:`_COMPRESSION` (a catalog of an
    older storage version refuses roaring). Asked with a table created and
    rolled back on a cursor of its own: a refused CREATE aborts the transaction it
    runs in, which must not be the caller's. (About 0.3 ms.)"""
    import duckdb

    database = (name or table).rpartition(".")[0]
    probe = f"_celebcat_probe_{uuid.uuid4().hex}"  # of its own: loads probe side by side
    probe = f"{database}.{probe}" if database else probe
    cursor = con.cursor()
    try:
        cursor.execute("BEGIN TRANSACTION")
        try:
            cursor.execute(table_ddl(table, probe, compression=True))
        except duckdb.BinderException:  # "Can't compress ... using ...": DuckDB chooses
            return False
        finally:
            cursor.execute("ROLLBACK")
    finally:
        cursor.close()
    return True


def _select_sql(spec: FileSpec, columns: tuple[str, ...], lines: str, tabs: bool) -> str:
    """SQL turning lines into typed rows, columns in table order and named.

    A line that breaks the grammar gets a NULL image_id (a NULL value too, where one
    is not in its closed set), which :func:`_load_fast` counts; a line of one space
    gets the image_id ''. With ``tabs`` False a txt line is split at spaces alone, and
    a line holding a tab counts as bad: the caller then tries again with tabs.
    """
    csv = spec.layout == "csv"
    if csv:
        # trailing spaces and tabs off (a regex: rtrim with a character list is slower)
        fields = "string_split(regexp_replace(line, '[ \\t]+$', ''), ',')"
    else:
        # Splitting on single spaces and dropping the empty strings between runs of
        # spaces is the fastest split DuckDB offers here (docs/decisions.md, "Ingest");
        # tabs are rare, so they cost a second try only in files that have them.
        text = "replace(line, chr(9), ' ')" if tabs else "line"
        fields = f"list_filter(string_split({text}, ' '), lambda t: t <> '')"
    if spec.kind in _CHECKED_BY_VALUES:
        # a bad value shows as a NULL; the field count and the image_id are checked here
        ok = f"len(f) = {len(columns) + 1} AND regexp_full_match(f[1], '{_ID}')"
    else:  # the whole line against the grammar (tab-free lines only on the first try)
        ok = f"regexp_full_match(line, '{line_pattern(spec, tabs)}')"
    pos = {name: i + 2 for i, name in enumerate(columns)}  # f[1] is image_id
    # '' (which no image_id can be) marks a line of one space: see _line_end_slipped
    exprs = [f"CASE WHEN line = ' ' THEN '' WHEN {ok} THEN f[1] END AS image_id"]
    for name in ANNOTATION_TABLES[spec.table]:
        f = f"f[{pos[name]}]"
        if spec.kind == "attr":  # anything but -1/1 becomes NULL, which the caller counts
            exprs.append(f"CASE {f} WHEN '1' THEN true WHEN '-1' THEN false END AS \"{name}\"")
        elif spec.kind == "partition":
            exprs.append(
                f"CASE {f} WHEN '0' THEN 0 WHEN '1' THEN 1 WHEN '2' THEN 2 END::TINYINT "
                f'AS "{name}"'
            )
        else:  # TRY_: a bad line must not stop the statement; where the line's regex
            # matched, the value is 1 to 9 ASCII digits and the cast cannot fail
            exprs.append(f'TRY_CAST({f} AS {_VALUE_SQL_TYPES[spec.kind]}) AS "{name}"')
    if spec.table == "partitions":
        case = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in PARTITION_NAMES.items())
        exprs.append(f"CASE f[2] {case} END AS partition_name")
    return f"SELECT {', '.join(exprs)} FROM (SELECT line, {fields} AS f FROM {lines})"


def load_annotation(
    con: duckdb.DuckDBPyConnection, found: AnnotationFile, table: str | None = None
) -> int:
    """Create ``table`` (default: the file's own table) from the file; return its rows.

    The table must not exist. Runs inside the caller's transaction. Raises
    :class:`AnnotationError` naming the first bad line when anything is wrong.
    """
    import duckdb

    from catalog.db import is_interrupt

    spec, path = found.spec, found.path
    table = table or spec.table
    preamble = read_preamble(spec, path)
    try:
        rows, dupes = _load_fast(con, spec, table, path, preamble)
    except duckdb.Error as exc:
        # DuckDB's line reader refuses some damage outright (bytes that are not UTF-8,
        # control characters, mixed line ends, a line over MAX_LINE_BYTES): the slow
        # path names the line.
        if is_interrupt(exc):
            raise
        find_problem(spec, path)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AnnotationError(
            path, None, f"the file cannot be read as {spec.name}: {reason}"
        ) from exc
    if preamble.declared_rows is not None and rows != preamble.declared_rows:
        find_problem(spec, path)
        raise AnnotationError(
            path, 1, f"line 1 declares {preamble.declared_rows} rows, the file has {rows}"
        )
    # image_id is unique, checked here where the file can be named (counted by the
    # fast path's check of the new table). No PRIMARY KEY: its index cost a fifth of
    # ingest's time and made the catalog file 3.8x larger, for point lookups that zone
    # maps over the ordered ids answer in ~2 ms anyway (docs/decisions.md, "Primary keys").
    if dupes:
        find_problem(spec, path)
        raise AnnotationError(path, None, f"{dupes} duplicate image ids")
    return rows


def _load_fast(
    con: duckdb.DuckDBPyConnection, spec: FileSpec, table: str, path: Path, preamble: Preamble
) -> tuple[int, int]:
    """The fast path of :func:`load_annotation`: create ``table``; return its rows and
    how many of its image ids are repeats.

    Each file is read once: one ``INSERT ... SELECT`` reads, checks, splits and casts
    (:func:`_select_sql`), and one query over the new table counts its rows, its
    bad lines (NULL image_id or value) and its repeated ids. (The integer files used
    to be read twice, a regex pass and then the load, and every table scanned again
    for duplicates: this takes 10-15% off the integer files' load, ``python
    bench/ingest.py``.) Tabs are rare, so the first split of a txt file is at spaces
    alone and takes no line with a tab; a failed check is retried once with tabs
    turned into spaces before the slow path explains it. A txt file that looks
    fixed-width (:func:`_looks_fixed`) is tried before both without any split
    (:func:`_create_fixed`), which leaves the split to decide on any line that does
    not fit; what follows the table's creation (the check query, the line-end checks)
    is the same for every try, but that the check query is not needed where every
    line fit and the ids are in ascending order (no bad line, no repeated id).
    """
    # chr(1) as the delimiter: a control character, which no line may hold, so each
    # line is one field. A line holding it in the middle makes the reader raise (the
    # slow path then names it); at its end the reader would drop it silently, so a
    # second column catches what follows it ('' then, NULL without it: nullstr is a
    # newline, which no field holds) and the line is put back together.
    # The line end is the first line's, given to the reader: it then refuses any other
    # (its own detection let a stray LF through in a file of CRs), but for the few it
    # lets slip, looked for by _preamble_end_differs and _line_end_slipped. Lines
    # ending in a CR alone are not read at all: the slow path refuses them.
    new_line = _line_end(path)
    if new_line is None:
        find_problem(spec, path)
        raise AnnotationError(
            path, 1, "lines end with a CR alone: save the file with LF or CR LF line ends"
        )
    if spec.first_data_line > 1 and _preamble_end_differs(path, spec.first_data_line - 1):
        find_problem(spec, path)  # raises with the line
    lines = (
        "(SELECT line FROM (SELECT CASE WHEN rest IS NULL THEN line "
        "ELSE concat(line, chr(1), rest) END AS line "
        "FROM read_csv(?, columns={'line': 'VARCHAR', 'rest': 'VARCHAR'}, delim=chr(1), "
        "header=false, skip=?, quote='', escape='', auto_detect=false, null_padding=true, "
        f"nullstr=chr(10), new_line='{new_line}', max_line_size={MAX_LINE_BYTES})) "
        # blank: spaces and tabs only (a regex: trim with a character list is 3x slower);
        # a line of one space is kept, to be counted (below)
        "WHERE line IS NOT NULL AND (line = ' ' OR NOT regexp_full_match(line, '[ \\t]*')))"
    )
    source = [str(path), spec.first_data_line - 1]
    nulls = ["image_id IS NULL"]
    if spec.kind in _CHECKED_BY_VALUES:
        nulls += [f'"{c}" IS NULL' for c in ANNOTATION_TABLES[spec.table]]
    check = (
        f"SELECT count(*), count(*) FILTER (WHERE {' OR '.join(nulls)}), "
        f"count(image_id) - count(DISTINCT image_id), count(*) FILTER (WHERE image_id = '') "
        f"FROM {table}"
    )
    searched = False
    tries: list[Literal["fixed", "spaces", "tabs"]] = ["tabs"]
    if spec.layout == "txt":
        tries = ["fixed", "spaces", "tabs"] if _looks_fixed(spec, path) else ["spaces", "tabs"]
    for how in tries:
        if how == "fixed":
            made = _create_fixed(con, spec, table, path, preamble.columns)
            if made is None:
                continue  # a line does not fit the first line's layout: the split decides
            # every line fit: none is bad or blank, and ids in ascending order are unique
            rows, ascending = made
            counts = (rows, 0, 0, 0) if ascending else con.execute(check).fetchone()
        else:
            select = _select_sql(spec, preamble.columns, lines, tabs=how == "tabs")
            create_table(con, spec.table, table, nullable=True)
            con.execute(f"INSERT INTO {table} {select}", source)
            counts = con.execute(check).fetchone()
        rows, bad, dupes, spaces = counts
        if not searched:
            searched = True
            if _line_end_slipped(path, new_line, spaces > 0):
                find_problem(spec, path)  # raises with the line
        if spaces:  # lines of one space with the file's line end: blank lines, they go
            con.execute(f"DELETE FROM {table} WHERE image_id = ''")
            rows, bad, dupes, spaces = con.execute(check).fetchone()
        if not bad:
            return int(rows), int(dupes)
        con.execute(f"DROP TABLE {table}")
    find_problem(spec, path)  # raises with the line
    what = f"the {spec.name} layout" if spec.kind == "int" else spec.name
    raise AnnotationError(path, None, f"{bad} lines do not match {what}")


# ---------------------------------------------------------------------------
# Fast path, fixed-width txt files (numpy over the file's bytes)
# ---------------------------------------------------------------------------
#
# The official txt files (and the synthetic writer's) are fixed-width: every data line
# is as long as the first and has its fields at the same byte offsets ("000001.jpg -1
# 1 ..." with each attribute in 3 characters, boxes and landmarks right-aligned in 5).
# Such lines need no split: numpy reads the data lines straight from the file as rows
# of bytes, checks them all at the first line's field offsets at once and cuts the
# values there. The attribute file loads in under half the split's CPU
# (docs/decisions.md, "Ingest"). Cutting with DuckDB's substr() instead was slower
# than the split (0.73 s against 0.48 s): substr() walks the UTF-8 from the line's
# start on every call; reading the lines with DuckDB's reader for numpy, as this try
# first did, cost more than numpy's own read (0.039-0.057 s against 0.007-0.019 s for
# the attribute file).
#
# A line fits when it is as long as the first (in bytes) and ends as it does, its
# image id is printable ASCII without spaces or commas (a subset of _ID), and each
# value field is spaces then one value in the grammar of _VALUE_PATTERNS (right-
# aligned, at least one space before it). Such a line is ASCII without control
# characters, which DuckDB's line reader reads as it is; it matches line_pattern(),
# and its fields are the split's tokens and its values theirs. Files of one value per
# line whose lines differ in length (identity_CelebA.txt: the identity has 1 to 5
# digits) fit the same way with the value right-aligned in the rest of the line
# (:func:`_ragged_columns`). Any line that does not fit (blank-ish, tabs, non-ASCII,
# shifted, another length, another line end, a value out of the grammar) makes the
# whole try give way to the split, which loads or refuses the file as it always did.

_SPACE, _PLUS, _MINUS, _ZERO = (ord(c) for c in " +-0")


def _looks_fixed(spec: FileSpec, path: Path) -> bool:
    """Whether ``path`` may be fixed-width: it has one value per line (then its lines
    may differ in length, :func:`_ragged_columns`), or its size after the preamble is
    a whole number of lines as long as its first data line (the last one may lack its
    line end). A guess from one line, so that other files of lines of varying length
    are not read twice; :func:`_create_fixed` checks every line.
    """
    if len(spec.columns) == 1:
        return True
    with open(path, "rb") as f:
        start, raw = 0, b""
        for _ in range(spec.first_data_line):
            start = f.tell()
            raw = f.readline(MAX_LINE_BYTES)
        size = os.fstat(f.fileno()).st_size
    line = raw.rstrip(b"\r\n")
    if not line or line == raw:  # no data line, or one without a line end
        return False
    return (size - start) % len(raw) in (0, len(line))


def _fixed_fields(first: bytes, n_values: int) -> list[tuple[int, int]] | None:
    """Byte offsets (start, end) of the image id and each value field of a line laid
    out as ``first``, a value field with the spaces before it; None where ``first``
    has blanks before its id or after its last value, or other than 1 + ``n_values``
    fields between its runs of spaces (the split then decides the file)."""
    ends = [m.end() for m in re.finditer(rb"[^ ]+", first)]
    if first[:1] == b" " or len(ends) != n_values + 1 or ends[-1] != len(first):
        return None
    return list(zip([0, *ends[:-1]], ends, strict=True))


def _fixed_values(kind: str, block: np.ndarray, width: int) -> np.ndarray | None:
    """The values of a block of value fields of one ``width``, ``block[line, byte]``
    (ASCII bytes, the fields side by side), as ``values[line, field]``; None unless
    every field is spaces then a value of ``kind``: at least one space, the value
    right-aligned, in the grammar of :data:`_VALUE_PATTERNS`. (Rows of bytes rather
    than [line, field, byte]: numpy is 5x slower over an innermost axis of 3 or 5.)"""
    import numpy as np

    fields = block.shape[1] // width
    if kind == "attr":
        # '  1' or ' -1' (in 3 characters): the two differ in one byte only, so a check
        # byte by byte (each byte as in either) is the check field by field
        fits = block == np.frombuffer((b" " * (width - 1) + b"1") * fields, np.uint8)
        if width >= 3:
            fits |= block == np.frombuffer((b" " * (width - 2) + b"-1") * fields, np.uint8)
        if not fits.all():
            return None
        return block[:, width - 2 :: width] == _SPACE  # '  1': the value 1, true
    digit = block - np.uint8(_ZERO)  # uint8: bytes below '0' wrap round to 208 and up
    is_digit = digit < 10
    is_space = block == _SPACE
    last = slice(width - 1, None, width)  # the last byte of each field
    if kind == "partition":  # one digit 0, 1 or 2 after spaces only
        if not ((is_space | (np.arange(block.shape[1]) % width == width - 1)).all()):
            return None
        if not (digit[:, last] < 3).all():
            return None
        return digit[:, last].astype(np.int8)
    # kind "int": ' +[+-]?[0-9]{1,9}', which is: a space first, a digit last, and (below)
    if not (is_space[:, ::width].all() and is_digit[:, last].all()):
        return None
    is_minus = None
    if (is_space | is_digit).all():
        # no signs (the official files have none): spaces then digits, which is a digit
        # followed by a space nowhere but where a field ends and the next begins (a
        # third of the checks below, for a landmark file 18 ms against 51)
        if np.count_nonzero(is_digit[:, :-1] & is_space[:, 1:]) != len(block) * (fields - 1):
            return None
    else:
        # nothing but spaces, signs and digits, and a space before every space or sign
        # but a field's first
        is_minus = block == _MINUS
        is_sign = is_minus | (block == _PLUS)
        after_space = (np.arange(1, block.shape[1]) % width != 0) & ~is_space[:, :-1]
        if not (
            (is_space | is_sign | is_digit).all()
            and not ((is_space | is_sign)[:, 1:] & after_space).any()
        ):
            return None
    if width > 10 and (is_digit.reshape(-1, width).sum(axis=1) > 9).any():
        return None  # more than 9 digits (narrower fields cannot hold them)
    digit *= is_digit  # spaces and the sign count as 0 (np.where is 20x slower here)
    values = np.zeros((block.shape[0], fields), np.int32)  # 9 digits fit
    for k in range(width):
        values *= 10
        values += digit[:, k::width]
    if is_minus is not None:
        negative = np.zeros(values.shape, bool)
        for k in range(width):
            negative |= is_minus[:, k::width]
        np.negative(values, out=values, where=negative)
    return values


def _fixed_lines(spec: FileSpec, path: Path) -> np.ndarray | None:
    """The data lines of ``path`` as rows of bytes, ``lines[line, byte]``, their line
    ends off; None unless every line is as long as the first data line and ends as it
    does (the last one may lack its line end). Read straight from the file: the
    preamble before them was checked by :func:`read_preamble` and
    :func:`_preamble_end_differs`, so they start where DuckDB's reader, skipping it,
    would start, and lines of ASCII that end alike are lines that reader reads as they
    are."""
    import numpy as np

    with open(path, "rb") as f:
        start, raw = 0, b""
        for _ in range(spec.first_data_line):
            start = f.tell()
            raw = f.readline(MAX_LINE_BYTES)
        if not raw.endswith(b"\n"):  # no data line, one without a line end, or too long
            return None
        end = b"\r\n" if raw.endswith(b"\r\n") else b"\n"
        width, length = len(raw), len(raw) - len(end)
        n, rest = divmod(os.fstat(f.fileno()).st_size - start, width)
        if not length or rest not in (0, length):
            return None
        data = bytearray((n + (rest > 0)) * width)
        f.seek(start)
        if f.readinto(data) != n * width + rest:
            return None  # the file changed meanwhile
    if rest:
        data[-len(end) :] = end  # the last line's missing end, so that all rows are alike
    lines = np.frombuffer(data, np.uint8).reshape(-1, width)
    if not (lines[:, length:] == np.frombuffer(end, np.uint8)).all():
        return None
    return lines[:, :length]


def _fixed_columns(
    kind: str, fields: list[tuple[int, int]], lines: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """``lines`` (:func:`_fixed_lines`) cut at ``fields``: the image ids (one row of
    bytes each, a copy) and the values in file order; None unless every line fits."""
    import numpy as np

    ids = np.ascontiguousarray(lines[:, : fields[0][1]])  # checked whole: faster
    if not _printable_ids(ids):
        return None
    values: list[np.ndarray] = []
    # value fields in runs of one width, each run checked and cut in one block
    k = 1
    while k < len(fields):
        start, end = fields[k]
        run = 1
        while k + run < len(fields) and fields[k + run][1] - fields[k + run][0] == end - start:
            run += 1
        block = _fixed_values(kind, lines[:, start : start + run * (end - start)], end - start)
        if block is None:
            return None
        values += [block[:, j] for j in range(run)]
        k += run
    return ids, values


def _printable_ids(ids: np.ndarray) -> bool:
    """Whether the image ids (rows of bytes) are printable ASCII without spaces or
    commas (a subset of _ID)."""
    return bool(((ids > _SPACE) & (ids < 0x7F) & (ids != ord(","))).all())


#: The widest value field :func:`_ragged_columns` takes (spaces included); a file with
#: a longer line is left to the split, rather than cut into a block that large.
_MAX_RAGGED = 32


def _ragged_columns(spec: FileSpec, path: Path) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """A file of one value per line whose lines differ in length, as
    :func:`_fixed_columns` gives a fixed-width one: every line is an image id as long
    as the first line's, then the value with the spaces before it, right-aligned at the
    line's end (the rest of each line is taken as one value field as wide as the
    longest, with spaces before its start). None unless every line fits: it ends as the
    first line does, its id is printable, a space follows it, the field is spaces
    then a value of ``spec.kind``, and no field is over :data:`_MAX_RAGGED` bytes.
    The preamble is skipped as :func:`_fixed_lines` skips it."""
    import numpy as np

    with open(path, "rb") as f:
        for _ in range(spec.first_data_line - 1):
            f.readline(MAX_LINE_BYTES)
        data = np.frombuffer(f.read(), np.uint8)
    if not len(data):
        return None
    breaks = np.flatnonzero(data == ord("\n"))
    starts = np.append(0, breaks + 1)
    ends = np.append(breaks, len(data))  # the last line may lack its line end
    if data[-1] == ord("\n"):
        starts, ends = starts[:-1], ends[:-1]
    if breaks.size and breaks[0] and data[breaks[0] - 1] == ord("\r"):  # CR LF files
        if not (data[breaks - 1] == ord("\r")).all():
            return None
        ends[: len(breaks)] -= 1  # a CR anywhere else is in a line: not printable
    fields = _fixed_fields(data[starts[0] : ends[0]].tobytes(), 1)
    if fields is None:
        return None
    id_end = fields[0][1]
    width = int((ends - starts).max()) - id_end
    if (ends - starts <= id_end).any() or width > _MAX_RAGGED:
        return None  # a line too short for an id and a value (a blank one), or too long
    ids = data[starts[:, None] + np.arange(id_end)]
    if not (_printable_ids(ids) and (data[starts + id_end] == _SPACE).all()):
        return None
    at = ends[:, None] + np.arange(-width, 0)
    block = data[np.maximum(at, 0)]
    block[at < (starts + id_end)[:, None]] = _SPACE  # before the value's line: spaces
    values = _fixed_values(spec.kind, block, width)
    return None if values is None else (ids, [values[:, 0]])


def _ascending(ids: np.ndarray) -> bool:
    """Whether the image ids (rows of bytes, all of one length) are in strictly
    ascending order, as in every official file: then no id is repeated."""
    import numpy as np

    keys = ids.view(f"S{ids.shape[1]}").ravel()  # no NUL bytes in them: compared whole
    return bool(np.all(keys[1:] > keys[:-1]))


def _create_fixed(
    con: duckdb.DuckDBPyConnection,
    spec: FileSpec,
    table: str,
    path: Path,
    columns: tuple[str, ...],
) -> tuple[int, bool] | None:
    """Create ``table`` from a fixed-width txt file, as :func:`_select_sql` would, but
    with the fields cut at the first line's byte offsets in numpy rather than split in
    DuckDB; None, having created nothing, where any line does not fit (see above).
    Else its rows, and whether its ids are in ascending order (so none is repeated,
    and no query needs to count them)."""
    import numpy as np
    import pyarrow as pa

    lines = _fixed_lines(spec, path)
    cut = None
    if lines is not None:
        fields = _fixed_fields(lines[0].tobytes(), len(columns))
        cut = None if fields is None else _fixed_columns(spec.kind, fields, lines)
    elif len(columns) == 1:
        cut = _ragged_columns(spec, path)
    if cut is None:
        return None
    ids, values = cut
    n, id_end = ids.shape
    # the ids as one Arrow array over their bytes (64-bit offsets: any size)
    id_offsets = np.arange(n + 1, dtype=np.int64) * id_end
    id_array = pa.Array.from_buffers(
        pa.large_string(), n, [None, pa.py_buffer(id_offsets), pa.py_buffer(ids)]
    )
    arrow = pa.Table.from_arrays(
        [id_array, *(pa.array(v) for v in values)],
        ["image_id", *(f"v{j}" for j in range(len(values)))],
    )
    sql_type = _VALUE_SQL_TYPES[spec.kind]
    exprs = ["image_id"]
    exprs += [
        f'v{columns.index(name)}::{sql_type} AS "{name}"' for name in ANNOTATION_TABLES[spec.table]
    ]
    if spec.table == "partitions":
        case = " ".join(f"WHEN {k} THEN '{v}'" for k, v in PARTITION_NAMES.items())
        exprs.append(f"CASE v0 {case} END AS partition_name")
    create_table(con, spec.table, table, nullable=True)
    # a relation over the Arrow data, not a registered view: a view would have to be
    # dropped again, which an interrupted (aborted) transaction refuses
    con.from_arrow(arrow).project(", ".join(exprs)).insert_into(table)
    return n, _ascending(ids)


def _preamble_end_differs(path: Path, skip: int) -> bool:
    """Whether one of the first ``skip`` + 1 lines ends otherwise than the first line.

    DuckDB's reader, skipping the preamble (``skip``), takes any line end there and
    swallows a CR just after it, where it refuses a mixed line end anywhere else; so
    the preamble lines and the first data line are checked here (a few lines read)."""
    first = None
    for number, _line, end in _lines(path):
        if number > skip + 1:
            break
        if end:
            first = first or end
            if end != first:
                return True
    return False


def _line_end_slipped(path: Path, new_line: str, spaces: bool) -> bool:
    """Whether a line end unlike the file's (``new_line`` as :func:`_line_end` spells
    it) got past DuckDB's reader, which refuses every other: in a file of LFs, a CR
    after a line of one space; in a file of CR LFs, a CR followed by a space (the
    reader ends the line there and drops the space) or an LF alone after a line of one
    space. ``spaces``: whether the file has lines of one space (the fast path counts
    them); files of LFs without any are not read here, the others by a byte search."""
    if new_line == "\\n":
        odd = [b"\n \r"] if spaces else []
    else:
        odd = [b"\r ", b"\n \n"] if spaces else [b"\r "]
    if not odd:
        return False
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return False
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return any(data.find(needle) >= 0 for needle in odd)


def _line_end(path: Path) -> str | None:
    """How the file's first line ends, as read_csv's ``new_line`` spells it (``\\n``,
    ``\\r\\n``; ``\\n`` for a file of one line without an end); None for a CR alone."""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            cut = re.search(rb"[\r\n]", chunk)
            if cut is None:
                continue
            if chunk[cut.start() : cut.start() + 1] == b"\n":
                return "\\n"
            after = chunk[cut.start() + 1 : cut.start() + 2] or f.read(1)
            return "\\r\\n" if after == b"\n" else None
    return "\\n"


# ---------------------------------------------------------------------------
# Slow path (plain Python): the first bad line, named
# ---------------------------------------------------------------------------


_EOL_NAMES = {"\r\n": "CR LF (Windows)", "\n": "LF", "\r": "CR alone (old Mac)"}
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_NOT_UTF8 = re.compile(r"[\udc80-\udcff]")  # bytes that are not UTF-8, surrogate-escaped


def _lines(path: Path) -> Iterator[tuple[int, str, str]]:
    """(number, line without its end, the end) for every line of the file; bytes that
    are not UTF-8 come through as lone surrogates (``surrogateescape``). The last line
    of a CR LF file cut after its CR reads as ending in CR LF, as DuckDB's reader
    takes it."""
    first_end = ""
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        for number, raw in enumerate(f, start=1):
            line = raw.rstrip("\r\n")
            end = raw[len(line) :]
            first_end = first_end or end
            if end == "\r" and first_end == "\r\n" and not f.read(1):
                end = "\r\n"
            yield number, line, end


def find_problem(spec: FileSpec, path: str | os.PathLike[str]) -> None:
    """Re-read ``path`` line by line and raise :class:`AnnotationError` at the first problem.

    Returns normally when the file is fine; the fast path uses this to explain what
    its bulk checks found, and tests use it as the reference reader. It holds the
    same rules as the fast path (the grammar at the top of this module), and also
    names what DuckDB's reader refuses before any rule applies: bytes that are not
    UTF-8, control characters, mixed line ends, overlong lines.
    """
    path = Path(path)
    preamble = read_preamble(spec, path)
    n_values = len(spec.columns)
    value_re = re.compile(_VALUE_PATTERNS[spec.kind])
    id_re = re.compile(_ID)
    what = {"attr": "-1 or 1", "int": "an integer", "partition": "0, 1 or 2"}[spec.kind]
    seen: dict[str, int] = {}
    rows = 0
    last = spec.first_data_line - 1
    first_end: tuple[str, int] | None = None
    for number, line, end in _lines(path):
        if end == "\r":
            raise AnnotationError(
                path,
                number,
                "the line ends with a CR alone (old Mac line "
                "ends, or a stray carriage return): lines must "
                "end with LF or CR LF",
            )
        if end:
            if first_end is None:
                first_end = (end, number)
            elif end != first_end[0]:
                raise AnnotationError(
                    path,
                    number,
                    f"the line ends with {_EOL_NAMES.get(end, repr(end))}, line {first_end[1]} "
                    f"with {_EOL_NAMES.get(first_end[0], repr(first_end[0]))}: mixed line "
                    "ends; convert the file to one kind (e.g. dos2unix)",
                )
        if number < spec.first_data_line:
            continue  # the preamble, checked by read_preamble
        last = number
        if number == 1 and line.startswith("\ufeff"):
            line = line[1:]  # a byte order mark: DuckDB's reader drops it (one, not more)
        size = len(line.encode("utf-8", errors="surrogateescape"))
        if size > MAX_LINE_BYTES:
            raise AnnotationError(
                path,
                number,
                f"the line is {size:,} bytes long: not a "
                f"{spec.name} line (is this the right file?)",
            )
        if _NOT_UTF8.search(line):
            raise AnnotationError(
                path,
                number,
                "bytes that are not UTF-8: is the file in "
                "another encoding (UTF-16, Latin-1)? Save it "
                "as UTF-8",
            )
        control = _CONTROL.search(line)
        if control:
            raise AnnotationError(
                path, number, f"control character U+{ord(control.group()):04X} in the line"
            )
        if not line.strip(_BLANK):
            continue
        if spec.layout == "txt" and "," in line:
            raise AnnotationError(path, number, "commas in a space-separated .txt file")
        tokens = _tokens(spec, line)
        if len(tokens) != n_values + 1:
            hint = "" if end else " (the last line is cut short: is the file truncated?)"
            raise AnnotationError(
                path,
                number,
                f"expected {n_values + 1} fields (image_id and {n_values} values), "
                f"found {len(tokens)}{hint}",
            )
        image_id = tokens[0]
        if not id_re.fullmatch(image_id):
            raise AnnotationError(
                path,
                number,
                f"image_id {image_id!r}: spaces, tabs and commas are not allowed in it",
            )
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
            problem = (
                f"line 1 declares {declared} rows but the file has {rows}: "
                "it looks truncated; re-download or re-extract it"
            )
        else:
            problem = f"line 1 declares {declared} rows but the file has {rows}"
        raise AnnotationError(path, last if rows < declared else 1, problem)
