"""Hostile annotation files, generated: every parser, both layouts, any damage.

Each example takes a good file of one layout (the six official txt files, the four
Kaggle CSVs) and damages it: byte edits, truncation, other encodings, huge or
non-ASCII numbers, CR/CRLF line ends, a BOM, tabs, control bytes, blank and repeated
lines, fields shifted a column and digits changed (which keep a fixed-width line's
length, for the fixed-width try). The only outcomes allowed:

* a clean load: the table holds exactly the rows the reference reader
  (:func:`catalog.annotations.find_problem`'s rules, in plain Python) reads, or
* one :class:`AnnotationError` naming the file, the line (every problem that sits on a
  line) and the problem, which the reference reader finds too.

Nothing else: no other exception (a traceback for the user), no partial table.

``test_any_damage_loads_cleanly_or_names_file_and_line`` checks the parser itself on
an in-memory database (many examples: it is fast). ``test_a_refused_file_leaves_the_
catalog_byte_for_byte`` runs whole ingests into a catalog (fewer examples: each is an
ingest) and checks that a refusal leaves the catalog file byte for byte as it was.
Example counts are bounded for the suite's time; ``HYPOTHESIS_EXAMPLES`` raises them
(``HYPOTHESIS_EXAMPLES=2000 pytest tests/test_hostile_annotations.py`` for a long run).
"""

from __future__ import annotations

import hashlib
import os
import re
from contextlib import nullcontext
from pathlib import Path
from unittest.mock import patch

import duckdb
import pytest
from conftest import attr_row, attr_txt, bbox_txt, landmarks_txt, pairs_txt

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import catalog.annotations as parser  # noqa: E402 - `annotations`: the __future__ import
from catalog.annotations import (  # noqa: E402
    AnnotationError,
    AnnotationFile,
    find_problem,
    load_annotation,
    read_preamble,
)
from catalog.formats import ALL_FILES, ATTRIBUTES, FileSpec  # noqa: E402
from catalog.ingest import ingest  # noqa: E402

IDS = ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"]
SPECS = {spec.name: spec for spec in ALL_FILES}

#: Examples per file layout; the parser test runs 3x as many (it is cheaper).
EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "12"))
#: Examples that ran, per test (printed at the end of the module, with -s).
RAN: dict[str, int] = {}


def good_file(spec: FileSpec) -> bytes:
    """A small valid file of ``spec`` (4 rows), in the real spacing of its layout."""
    n = len(spec.columns)
    if spec.layout == "csv":
        if spec.kind == "attr":
            rows = [
                ",".join([i, *("1" if (k + j) % 3 == 0 else "-1" for j in range(n))])
                for k, i in enumerate(IDS)
            ]
        elif spec.kind == "partition":
            rows = [f"{i},{k % 3}" for k, i in enumerate(IDS)]
        else:
            rows = [
                ",".join([i, *(str(10 * k + j - 3) for j in range(n))]) for k, i in enumerate(IDS)
            ]
        return ("\n".join([",".join(["image_id", *spec.columns]), *rows]) + "\n").encode()
    if spec.kind == "attr":
        return attr_txt([attr_row(i, {ATTRIBUTES[k], "Young"}) for k, i in enumerate(IDS)]).encode()
    if spec.table == "bboxes":
        return bbox_txt({i: (95 + k, 71, 226, 313 - k) for k, i in enumerate(IDS)}).encode()
    if spec.table.startswith("landmarks"):
        return landmarks_txt(
            {i: tuple(100 + 7 * j + k for j in range(10)) for k, i in enumerate(IDS)}
        ).encode()
    if spec.kind == "partition":
        return pairs_txt({i: k % 3 for k, i in enumerate(IDS)}).encode()
    return pairs_txt({i: 2880 + k for k, i in enumerate(IDS)}).encode()


# --- damage ------------------------------------------------------------------------------

#: Values a number can be replaced with: huge, signed, non-ASCII digits (Python's \d
#: takes them, RE2's does not), other notations DuckDB's cast would take, empty.
ODD_NUMBERS = [
    "9" * 10,
    "9" * 40,
    "-" + "9" * 12,
    "2147483648",
    "+1",
    "-0",
    "1.5",
    "1e3",
    "0x10",
    "1_000",
    "\u0663",
    "\uff11",
    "\u00b2",
    "",
    "NaN",
    "inf",
    "--1",
    "1-",
    "\u22121",
]
#: Bytes the readers must survive anywhere: NUL, DuckDB's line-reader delimiter chr(1),
#: quotes, a lone CR, invalid UTF-8, a BOM in the middle, non-breaking space, tab.
ODD_BYTES = [
    b"\x00",
    b"\x01",
    b'"',
    b"'",
    b"\r",
    b"\xff",
    b"\xc3",
    b"\xef\xbb\xbf",
    b"\xc2\xa0",
    b"\t",
    b",",
    b" ",
    b"\n",
    b"\\",
    b"\x1a",
]


@st.composite
def damaged(draw: st.DrawFn, base: bytes) -> bytes:
    data = base
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(
                [
                    "edit",
                    "edit",
                    "insert",
                    "delete",
                    "truncate",
                    "number",
                    "encoding",
                    "crlf",
                    "cr",
                    "bom",
                    "tabs",
                    "blank",
                    "repeat",
                    "long",
                    "shift",
                    "shift",
                    "digit",
                ]
            )
        )
        pos = draw(st.integers(0, len(data)))
        if kind == "edit" and data:
            pos = min(pos, len(data) - 1)
            odd = draw(st.sampled_from(ODD_BYTES) | st.binary(min_size=1, max_size=3))
            data = data[:pos] + odd + data[pos + 1 :]
        elif kind == "insert":
            odd = draw(st.sampled_from(ODD_BYTES) | st.binary(min_size=1, max_size=4))
            data = data[:pos] + odd + data[pos:]
        elif kind == "delete":
            data = data[:pos] + data[pos + draw(st.integers(1, 12)) :]
        elif kind == "truncate":
            data = data[:pos]
        elif kind == "number":
            numbers = list(re.finditer(rb"(?<![\w.])-?\d+(?![\w.])", data))
            if numbers:
                m = numbers[draw(st.integers(0, len(numbers) - 1))]
                odd = draw(st.sampled_from(ODD_NUMBERS)).encode()
                data = data[: m.start()] + odd + data[m.end() :]
        elif kind == "encoding":
            text = data.decode("utf-8", errors="replace").replace("000002", "0000é2")
            data = text.encode(
                draw(st.sampled_from(["utf-16", "utf-16-le", "latin-1", "utf-8-sig", "utf-32"])),
                errors="replace",
            )
        elif kind == "crlf":
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        elif kind == "cr":
            data = data.replace(b"\n", b"\r")
        elif kind == "bom":
            data = b"\xef\xbb\xbf" + data
        elif kind == "tabs":
            data = data.replace(b" ", b"\t", draw(st.integers(1, 50)))
        elif kind == "blank":
            blank = draw(st.sampled_from([b"\n", b"\n\n", b" \n", b"\t\n"]))
            data = data[:pos] + blank + data[pos:]
        elif kind == "repeat":
            lines = data.splitlines(keepends=True)
            if lines:
                k = draw(st.integers(0, len(lines) - 1))
                data = b"".join(lines[: k + 1] + [lines[k]] + lines[k + 1 :])
        elif kind == "long":
            data = data[:pos] + b"7" * draw(st.sampled_from([1000, 70_000])) + data[pos:]
        elif kind == "shift":  # a field a column left or right: the line keeps its length
            spots = [m.start() for m in re.finditer(rb" [^ \r\n]|[^ \r\n] ", data)]
            if spots:
                at = spots[draw(st.integers(0, len(spots) - 1))]
                data = data[:at] + data[at + 1 : at + 2] + data[at : at + 1] + data[at + 2 :]
        elif kind == "digit":  # another digit: the line keeps its length and layout
            digits = [m.start() for m in re.finditer(rb"[0-9]", data)]
            if digits:
                at = digits[draw(st.integers(0, len(digits) - 1))]
                data = data[:at] + str(draw(st.integers(0, 9))).encode() + data[at + 1 :]
    return data


# --- the reference reader ----------------------------------------------------------------


def reference_rows(spec: FileSpec, path: Path) -> list[tuple]:
    """The rows of a file that :func:`find_problem` accepts, read in plain Python by the
    same rules (the reader the fast path must agree with)."""
    preamble = read_preamble(spec, path)
    convert = {
        "attr": lambda t: t == "1",
        "int": int,
        "partition": int,
    }[spec.kind]
    rows = []
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for number, raw in enumerate(f, start=1):
            if number < spec.first_data_line:
                continue
            line = raw.rstrip("\r\n")
            if number == 1 and line.startswith("\ufeff"):
                line = line[1:]  # before the blank test: a first line of only a BOM is blank
            if not line.strip():
                continue
            # the grammar: csv fields split at commas (blanks after the last one go),
            # txt fields at runs of spaces and tabs, nothing else
            tokens = (
                line.rstrip(" \t").split(",")
                if spec.layout == "csv"
                else re.split(r"[ \t]+", line.strip(" \t"))
            )
            values = dict(zip(preamble.columns, tokens[1:], strict=True))
            rows.append((tokens[0], *(convert(values[c]) for c in spec.columns)))
    return sorted(rows)


def check_outcome(spec: FileSpec, path: Path, load) -> AnnotationError | None:
    """Run ``load()``; assert its outcome is one of the two allowed; return the error."""
    try:
        got = load()
    except AnnotationError as err:
        assert err.path == path, err
        assert err.problem, err
        assert str(path) in str(err)
        # Every problem on a line names the line; only whole-file ones (empty, no rows
        # at all) may not, and then they say so.
        if err.line is None:
            assert re.search(r"empty|no rows", err.problem), err
        else:
            assert err.line >= 1
            assert f"line {err.line}" in str(err)
        if "no rows" in err.problem:  # refused by ingest (allow_empty), not by the reader
            find_problem(spec, path)
            assert reference_rows(spec, path) == []
        else:
            with pytest.raises(AnnotationError):  # the reference reader refuses it too
                find_problem(spec, path)
        return err
    # a clean load: the reference reader accepts the file and reads the same rows
    find_problem(spec, path)
    assert got == reference_rows(spec, path)
    return None


def table_rows(con: duckdb.DuckDBPyConnection, table: str, spec: FileSpec) -> list[tuple]:
    cols = ", ".join(f'"{c}"' for c in spec.columns)
    return sorted(con.execute(f"SELECT image_id, {cols} FROM {table}").fetchall())


# --- the properties ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.mark.parametrize("name", sorted(SPECS))
@settings(
    max_examples=3 * EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_damage_loads_cleanly_or_names_file_and_line(
    name: str, workdir: Path, data: st.DataObject
) -> None:
    spec = SPECS[name]
    RAN[f"parser {name}"] = RAN.get(f"parser {name}", 0) + 1
    path = workdir / f"parse-{name}" / spec.name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data.draw(damaged(good_file(spec))))
    # The txt files are fixed-width: the fixed-width try (catalog/annotations.py) runs
    # first where the file's size fits its first line; forced here on half the examples,
    # so that its own line checks meet every kind of damage, not only the size guess.
    force_fixed = spec.layout == "txt" and data.draw(st.booleans(), label="force fixed try")
    con = duckdb.connect()
    try:

        def load() -> list[tuple]:
            con.execute("BEGIN")
            with (
                patch.object(parser, "_looks_fixed", lambda *_: True)
                if force_fixed
                else nullcontext()
            ):
                load_annotation(con, AnnotationFile(spec, path), "t")
            rows = table_rows(con, "t", spec)
            con.execute("COMMIT")
            return rows

        if check_outcome(spec, path, load) is not None:
            con.execute("ROLLBACK")
            # no partial table: the failed load left nothing behind
            assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchone() == (0,)
    finally:
        con.close()


@pytest.fixture(scope="module")
def catalogs(workdir: Path) -> dict[str, Path]:
    """Per layout, a catalog ingested from good files of that layout."""
    out = {}
    for layout in ("txt", "csv"):
        data = workdir / f"good-{layout}"
        data.mkdir()
        for spec in ALL_FILES:
            if spec.layout == layout:
                (data / spec.name).write_bytes(good_file(spec))
        db = workdir / f"good-{layout}.duckdb"
        ingest(data, db, scan_images=False)
        out[layout] = db
    return out


@pytest.mark.parametrize("name", sorted(SPECS))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_refused_file_leaves_the_catalog_byte_for_byte(
    name: str, workdir: Path, catalogs: dict[str, Path], data: st.DataObject
) -> None:
    spec = SPECS[name]
    RAN[f"ingest {name}"] = RAN.get(f"ingest {name}", 0) + 1
    before = catalogs[spec.layout].read_bytes()
    path = workdir / f"ingest-{name}" / spec.name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data.draw(damaged(good_file(spec))))
    db = workdir / f"ingest-{name}.duckdb"
    db.write_bytes(before)
    wal = db.with_name(db.name + ".wal")
    wal.unlink(missing_ok=True)

    def load() -> list[tuple]:
        ingest(path.parent, db, scan_images=False)
        con = duckdb.connect(str(db), read_only=True)
        try:
            return table_rows(con, spec.table, spec)
        finally:
            con.close()

    if check_outcome(spec, path, load) is not None:
        assert hashlib.sha256(db.read_bytes()).digest() == hashlib.sha256(before).digest()
        assert not wal.exists()


def test_report_examples_run() -> None:
    """Not a check: how many examples each property ran (shown with pytest -s)."""
    print(
        f"\nhypothesis examples run: {sum(RAN.values())} "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(RAN.items()))})"
    )
