"""Parsing the CelebA annotation files: real formats in, clear errors for bad input."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import duckdb
import pytest
from conftest import attr_row, attr_txt, bbox_txt, pairs_txt, write

import catalog.annotations as parser  # `annotations` is the __future__ import
from catalog.annotations import (
    AnnotationError,
    AnnotationFile,
    find_annotation_files,
    find_problem,
    line_pattern,
    load_annotation,
)
from catalog.formats import ALL_FILES, ANNOTATION_TABLES, ATTRIBUTES, TXT_FILES, FileSpec
from catalog.ingest import ingest

ATTR_SPEC = TXT_FILES[0]


def load(folder: Path, tmp_path: Path) -> duckdb.DuckDBPyConnection:
    db = tmp_path / "cat.duckdb"
    ingest(folder, db, scan_images=False)
    return duckdb.connect(str(db), read_only=True)


def test_official_txt_files_load_with_their_spacing(small_celeba: Path, tmp_path: Path) -> None:
    con = load(small_celeba, tmp_path)
    assert con.execute("SELECT count(*) FROM attributes").fetchone()[0] == 3
    male, smiling, young = con.execute(
        "SELECT Male, Smiling, Young FROM attributes WHERE image_id = '000001.jpg'"
    ).fetchone()
    assert (male, smiling, young) == (True, True, False)
    assert (
        con.execute(
            "SELECT \"5_o_Clock_Shadow\" FROM attributes WHERE image_id = '000003.jpg'"
        ).fetchone()[0]
        is True
    )
    assert con.execute("SELECT * FROM bboxes ORDER BY image_id LIMIT 1").fetchone() == (
        "000001.jpg",
        95,
        71,
        226,
        313,
    )
    assert con.execute(
        "SELECT lefteye_x, rightmouth_y FROM landmarks WHERE image_id = '000002.jpg'"
    ).fetchone() == (140, 289)
    assert con.execute(
        "SELECT lefteye_x FROM landmarks_aligned WHERE image_id = '000001.jpg'"
    ).fetchone() == (69,)
    assert con.execute("SELECT identity FROM identities ORDER BY image_id").fetchall() == [
        (2880,),
        (2937,),
        (2880,),
    ]
    assert con.execute(
        "SELECT partition, partition_name FROM partitions ORDER BY image_id"
    ).fetchall() == [(0, "train"), (1, "valid"), (2, "test")]
    # 40 BOOLEAN attribute columns plus the key, in CelebA's order.
    cols = con.execute("DESCRIBE attributes").fetchall()
    assert [c[0] for c in cols] == ["image_id", *ATTRIBUTES]
    assert {c[1] for c in cols[1:]} == {"BOOLEAN"}
    assert cols[0][3] is None  # no key index: ingest checks uniqueness itself (see below)


def test_crlf_blank_lines_tabs_and_trailing_whitespace(tmp_path: Path) -> None:
    rows = [attr_row("a.jpg", {"Male"}) + "  ", attr_row("b.jpg").replace(" ", "\t", 1)]
    text = attr_txt(rows, eol="\r\n") + "\r\n"  # a blank line at the end too
    folder = write(tmp_path / "d", {"list_attr_celeba.txt": text})
    con = load(folder, tmp_path)
    assert con.execute("SELECT image_id, Male FROM attributes ORDER BY 1").fetchall() == [
        ("a.jpg", True),
        ("b.jpg", False),
    ]


def test_crlf_file_cut_after_its_last_cr_loads_on_both_paths(tmp_path: Path) -> None:
    """Found by the property tests: a CR LF file that lost its final LF. DuckDB's
    reader takes it; the line-by-line reader (which explains refusals) agrees."""
    text = attr_txt([attr_row("a.jpg", {"Male"}), attr_row("b.jpg")], eol="\r\n")[:-1]
    folder = write(tmp_path / "d", {"list_attr_celeba.txt": text})
    find_problem(ATTR_SPEC, folder / "list_attr_celeba.txt")  # no error
    con = load(folder, tmp_path)
    assert con.execute("SELECT image_id, Male FROM attributes ORDER BY 1").fetchall() == [
        ("a.jpg", True),
        ("b.jpg", False),
    ]
    # a CR alone anywhere else is still refused, by line
    a_row = attr_row("a.jpg")
    cut = attr_txt([a_row, attr_row("b.jpg")], eol="\r\n").replace(a_row + "\r\n", a_row + "\r")
    bad = write(tmp_path / "e", {"list_attr_celeba.txt": cut})
    with pytest.raises(AnnotationError, match="line 3: the line ends with a CR alone"):
        find_problem(ATTR_SPEC, bad / "list_attr_celeba.txt")


def test_header_order_is_matched_by_name(tmp_path: Path) -> None:
    text = "2\nimage_id width height x_1 y_1\na.jpg 10 20 1 2\nb.jpg 30 40 3 4\n"
    folder = write(tmp_path / "d", {"list_bbox_celeba.txt": text})
    con = load(folder, tmp_path)
    assert con.execute("SELECT x_1, y_1, width, height FROM bboxes ORDER BY 1").fetchall() == [
        (1, 2, 10, 20),
        (3, 4, 30, 40),
    ]


def test_kaggle_csvs_and_a_mix_of_layouts(tmp_path: Path) -> None:
    header = "image_id," + ",".join(ATTRIBUTES)
    row = "000001.jpg," + ",".join("1" if a == "Eyeglasses" else "-1" for a in ATTRIBUTES)
    folder = write(
        tmp_path / "d",
        {
            "list_attr_celeba.csv": f"{header}\n{row}\n",
            "list_bbox_celeba.csv": "image_id,x_1,y_1,width,height\n000001.jpg,95,71,226,313\n",
            "list_eval_partition.csv": "image_id,partition\r\n000001.jpg,2\r\n",
            "list_landmarks_align_celeba.csv": "image_id,lefteye_x,lefteye_y,righteye_x,"
            "righteye_y,nose_x,nose_y,leftmouth_x,leftmouth_y,rightmouth_x,rightmouth_y\n"
            "000001.jpg,69,109,106,113,77,142,73,152,108,154\n",
            "identity_CelebA.txt": "000001.jpg 2880\n",  # official txt beside the CSVs
        },
    )
    con = load(folder, tmp_path)
    assert con.execute("SELECT Eyeglasses, Male FROM attributes").fetchone() == (True, False)
    assert con.execute("SELECT width FROM bboxes").fetchone() == (226,)
    assert con.execute("SELECT partition_name FROM partitions").fetchone() == ("test",)
    assert con.execute("SELECT rightmouth_y FROM landmarks_aligned").fetchone() == (154,)
    assert con.execute("SELECT identity FROM identities").fetchone() == (2880,)
    layouts = dict(con.execute("SELECT table_name, layout FROM ingested_files").fetchall())
    assert layouts == {
        "attributes": "csv",
        "bboxes": "csv",
        "partitions": "csv",
        "landmarks_aligned": "csv",
        "identities": "txt",
    }


def test_txt_wins_over_csv_and_the_csv_is_named(small_celeba: Path) -> None:
    (small_celeba / "list_eval_partition.csv").write_text("image_id,partition\na.jpg,0\n")
    found, notes = find_annotation_files(small_celeba)
    assert found["partitions"].path.name == "list_eval_partition.txt"
    assert any("list_eval_partition.csv" in n for n in notes)


def test_files_in_official_subfolders_are_found(small_celeba: Path, tmp_path: Path) -> None:
    root = tmp_path / "official"
    (root / "Anno").mkdir(parents=True)
    (root / "Eval").mkdir()
    for f in small_celeba.iterdir():
        sub = "Eval" if "partition" in f.name else "Anno"
        (root / sub / f.name).write_bytes(f.read_bytes())
    found, _ = find_annotation_files(root)
    assert set(found) == {
        "attributes",
        "bboxes",
        "landmarks",
        "landmarks_aligned",
        "identities",
        "partitions",
    }


def test_absent_files_leave_empty_tables(tmp_path: Path) -> None:
    folder = write(tmp_path / "d", {"identity_CelebA.txt": pairs_txt({"a.jpg": 1})})
    con = load(folder, tmp_path)
    assert con.execute("SELECT count(*) FROM identities").fetchone() == (1,)
    for table in ("attributes", "bboxes", "landmarks", "landmarks_aligned", "partitions"):
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    assert [c[0] for c in con.execute("DESCRIBE attributes").fetchall()][:2] == [
        "image_id",
        "5_o_Clock_Shadow",
    ]


# --- bad input: file, line and problem named ------------------------------------------


def _error(tmp_path: Path, name: str, text: str) -> AnnotationError:
    folder = write(Path(tempfile.mkdtemp(dir=tmp_path)), {name: text})
    with pytest.raises(AnnotationError) as info:
        ingest(folder, tmp_path / "cat.duckdb", scan_images=False)
    err = info.value
    assert err.path.name == name
    assert name in str(err)
    return err


def test_wrong_column_count_names_the_line(tmp_path: Path) -> None:
    rows = [attr_row("a.jpg"), attr_row("b.jpg").rsplit(" ", 2)[0], attr_row("c.jpg")]
    err = _error(tmp_path, "list_attr_celeba.txt", attr_txt(rows))
    assert err.line == 4
    assert "expected 41 fields" in err.problem and "found 39" in err.problem
    assert "line 4" in str(err)


def test_non_numeric_value(tmp_path: Path) -> None:
    text = bbox_txt({"a.jpg": (1, 2, 3, 4)}) + "b.jpg 1 2 x3 4\n"
    text = text.replace("\n", "\n", 1).replace("1\nimage_id", "2\nimage_id")
    err = _error(tmp_path, "list_bbox_celeba.txt", text)
    assert err.line == 4
    assert "width of b.jpg is 'x3', expected an integer" in err.problem


@pytest.mark.parametrize("value", ["0", "2", "-2", "1.0", "+1"])
def test_attribute_values_other_than_minus_one_and_one(tmp_path: Path, value: str) -> None:
    row = attr_row("b.jpg").split(" ")
    row[-1] = value  # Young
    err = _error(tmp_path, "list_attr_celeba.txt", attr_txt([attr_row("a.jpg"), " ".join(row)]))
    assert err.line == 4
    assert f"Young of b.jpg is '{value}', expected -1 or 1" in err.problem


def test_duplicate_image_id_names_both_lines(tmp_path: Path) -> None:
    text = pairs_txt({"a.jpg": 1, "b.jpg": 2}) + "a.jpg 3\n"
    err = _error(tmp_path, "identity_CelebA.txt", text)
    assert err.line == 3
    assert "duplicate image_id a.jpg (first on line 1)" in err.problem


def test_truncated_file_by_count_line(tmp_path: Path) -> None:
    err = _error(tmp_path, "list_attr_celeba.txt", attr_txt([attr_row("a.jpg")], count=5))
    assert "declares 5 rows but the file has 1" in err.problem
    assert "truncated" in err.problem


def test_truncated_file_cut_mid_line(tmp_path: Path) -> None:
    text = attr_txt([attr_row("a.jpg"), attr_row("b.jpg")])[:-40]
    err = _error(tmp_path, "list_attr_celeba.txt", text)
    assert err.line == 4
    assert "cut short" in err.problem


def test_bad_count_line_header_and_partition(tmp_path: Path) -> None:
    err = _error(tmp_path, "list_attr_celeba.txt", "lots\n" + attr_txt([])[2:])
    assert err.line == 1 and "row count" in err.problem
    bad_header = attr_txt([attr_row("a.jpg")]).replace("Smiling", "Smiley")
    err = _error(tmp_path, "list_attr_celeba.txt", bad_header)
    assert err.line == 2 and "missing Smiling" in err.problem and "'Smiley'" in err.problem
    err = _error(tmp_path, "list_eval_partition.txt", "a.jpg 0\nb.jpg 3\n")
    assert err.line == 2 and "expected 0, 1 or 2" in err.problem


def test_empty_file(tmp_path: Path) -> None:
    err = _error(tmp_path, "list_bbox_celeba.txt", "")
    assert "empty" in err.problem


def test_reference_reader_accepts_good_files(small_celeba: Path) -> None:
    # find_problem is the slow path's reader: on a good file it must find nothing.
    find_problem(ATTR_SPEC, small_celeba / "list_attr_celeba.txt")
    text = (small_celeba / "list_bbox_celeba.txt").read_text()
    (small_celeba / "list_bbox_celeba.txt").write_text(text + "000004.jpg 1 2 3\n")
    with pytest.raises(AnnotationError, match="line 6"):
        find_problem(TXT_FILES[1], small_celeba / "list_bbox_celeba.txt")


# --- the fast path: one read, tabs, one-space lines ----------------------------------------

BBOX_SPEC = TXT_FILES[1]
SPECS = {spec.name: spec for spec in ALL_FILES}


def _load_rows(path: Path, spec: FileSpec) -> list[tuple]:
    """Load ``path`` with the fast path into an in-memory table; its rows, sorted."""
    con = duckdb.connect()
    try:
        load_annotation(con, AnnotationFile(spec, path), "t")
        cols = ", ".join(f'"{c}"' for c in spec.columns)
        return con.execute(f"SELECT image_id, {cols} FROM t ORDER BY 1").fetchall()
    finally:
        con.close()


class _Counting:
    """A connection that counts the statements reading the file."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con, self.reads = con, 0

    def execute(self, sql: str, *args: object) -> duckdb.DuckDBPyConnection:
        self.reads += "read_csv" in sql
        return self.con.execute(sql, *args)

    def sql(self, sql: str, **kwargs: object) -> duckdb.DuckDBPyRelation:
        self.reads += "read_csv" in sql
        return self.con.sql(sql, **kwargs)

    def from_arrow(self, data: object) -> duckdb.DuckDBPyRelation:
        return self.con.from_arrow(data)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.con.cursor()


@pytest.mark.parametrize("fixed", [True, False], ids=["fixed-width", "split"])
@pytest.mark.parametrize("name", ["list_attr_celeba.txt", "list_bbox_celeba.txt"])
def test_a_good_file_is_read_once(
    small_celeba: Path, monkeypatch: pytest.MonkeyPatch, name: str, fixed: bool
) -> None:
    # by one DuckDB statement (the split), or by numpy alone (a fixed-width file)
    monkeypatch.setattr(parser, "_looks_fixed", lambda *_: fixed)
    con = _Counting(duckdb.connect())
    assert load_annotation(con, AnnotationFile(SPECS[name], small_celeba / name), "t") == 3
    assert con.reads == (0 if fixed else 1)


def test_tabs_in_integer_files_load_like_spaces(tmp_path: Path) -> None:
    text = "2\nimage_id x_1 y_1 width height\n\ta.jpg\t10 \t20  30\t40\t\nb.jpg 1 2 3 4\n"
    path = tmp_path / "list_bbox_celeba.txt"
    path.write_text(text)
    find_problem(BBOX_SPEC, path)  # the reference reader takes it too
    assert _load_rows(path, BBOX_SPEC) == [("a.jpg", 10, 20, 30, 40), ("b.jpg", 1, 2, 3, 4)]
    pairs = tmp_path / "identity_CelebA.txt"
    pairs.write_text("a.jpg\t7\nb.jpg 8\n")
    assert _load_rows(pairs, SPECS["identity_CelebA.txt"]) == [("a.jpg", 7), ("b.jpg", 8)]


def test_a_bad_line_in_a_file_with_tabs_is_named(tmp_path: Path) -> None:
    text = bbox_txt({"a.jpg": (1, 2, 3, 4)}).replace(" ", "\t") + "b.jpg 1 2 1.5 4\n"
    err = _error(tmp_path, "list_bbox_celeba.txt", text.replace("1\nimage_id", "2\nimage_id"))
    assert err.line == 4
    assert "width of b.jpg is '1.5', expected an integer" in err.problem


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("list_attr_celeba.txt", attr_txt([attr_row("a.jpg"), attr_row("a.jpg")]), 4),
        ("list_eval_partition.txt", "a.jpg 0\nb.jpg 1\nb.jpg 2\n", 3),
        ("list_eval_partition.txt", "a.jpg\t0\nb.jpg 1\na.jpg 2\n", 3),  # after the retry
    ],
)
def test_duplicate_ids_in_closed_set_files_are_named(
    tmp_path: Path, name: str, text: str, line: int
) -> None:
    err = _error(tmp_path, name, text)
    assert err.line == line
    assert "duplicate image_id" in err.problem


# DuckDB's line reader ends a line of one space at any line end (and only such a line):
# the fast path must refuse what the reference reader refuses.
ONE_SPACE_ODD_ENDS = [
    ("\n", " \r\n", "mixed line ends"),
    ("\n", " \r", "CR alone"),
    ("\r\n", " \n", "mixed line ends"),
]


@pytest.mark.parametrize("name", ["list_attr_celeba.txt", "list_bbox_celeba.txt"])
@pytest.mark.parametrize(("eol", "blank", "problem"), ONE_SPACE_ODD_ENDS)
def test_a_one_space_line_with_another_line_end_is_refused(
    tmp_path: Path, name: str, eol: str, blank: str, problem: str
) -> None:
    rows = [attr_row("a.jpg"), attr_row("b.jpg")]
    text = (
        attr_txt(rows, eol=eol)
        if name.startswith("list_attr")
        else bbox_txt({"a.jpg": (1, 2, 3, 4), "b.jpg": (5, 6, 7, 8)}, eol=eol)
    )
    lines = text.split(eol)
    text = eol.join(lines[:3]) + eol + blank + eol.join(lines[3:])  # after the first row
    err = _error(tmp_path, name, text)
    assert err.line == 4
    assert problem in err.problem
    with pytest.raises(AnnotationError, match="line 4"):
        find_problem(SPECS[name], err.path)


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_one_space_blank_lines_are_blank(tmp_path: Path, eol: str) -> None:
    text = bbox_txt({"a.jpg": (1, 2, 3, 4), "b.jpg": (5, 6, 7, 8)}, eol=eol)
    text = text.replace(f"{eol}b.jpg", f"{eol} {eol} {eol}b.jpg") + f" {eol}"
    path = tmp_path / "list_bbox_celeba.txt"
    path.write_bytes(text.encode())
    find_problem(BBOX_SPEC, path)
    assert _load_rows(path, BBOX_SPEC) == [("a.jpg", 1, 2, 3, 4), ("b.jpg", 5, 6, 7, 8)]
    attrs = tmp_path / "list_attr_celeba.txt"
    attrs.write_bytes((attr_txt([attr_row("a.jpg", {"Male"})], eol=eol) + f" {eol}").encode())
    assert [r[0] for r in _load_rows(attrs, ATTR_SPEC)] == ["a.jpg"]
    pairs = tmp_path / "list_eval_partition.txt"
    pairs.write_bytes(f" {eol}a.jpg 2{eol} {eol}".encode())
    assert _load_rows(pairs, SPECS["list_eval_partition.txt"]) == [("a.jpg", 2)]


@pytest.mark.parametrize("spec", ALL_FILES, ids=lambda s: s.name)
def test_the_space_only_pattern_is_part_of_the_grammar(spec: FileSpec) -> None:
    full, spaces = line_pattern(spec), line_pattern(spec, tabs=False)
    sep = "," if spec.layout == "csv" else "  "
    line = "a.jpg" + "".join(sep + ("1" if spec.kind != "int" else "-12") for _ in spec.columns)
    for candidate in (line, " " + line + " ", line.replace("  ", "\t", 1)):
        if re.fullmatch(spaces, candidate):
            assert re.fullmatch(full, candidate)
            assert "\t" not in candidate or spec.layout == "csv"
    assert re.fullmatch(spaces, line) and re.fullmatch(full, line)


# DuckDB's reader takes any line end in the lines it skips (the count and header lines),
# and swallows a CR just after them: the fast path must refuse these as the reference does.
BBOX_HEADER = "image_id x_1 y_1 width height"


@pytest.mark.parametrize(
    ("name", "text", "line", "problem"),
    [
        ("list_bbox_celeba.txt", f"1\r\n{BBOX_HEADER}\r a.jpg 1 2 3 4\r\n", 2, "CR"),
        ("list_bbox_celeba.txt", f"1\n{BBOX_HEADER}\n\ra.jpg 1 2 3 4\n", 3, "CR"),
        ("list_bbox_celeba.txt", f"1\r\n{BBOX_HEADER}\r\ra.jpg 1 2 3 4\r\n", 2, "CR"),
        ("list_eval_partition.csv", "image_id,partition\n\ra.jpg,0\nb.jpg,1\n", 2, "CR"),
        ("list_eval_partition.csv", "image_id,partition\r\na.jpg,0\nb.jpg,1\n", 2, "mixed"),
        ("list_eval_partition.csv", "image_id,partition\na.jpg,0\r\nb.jpg,1\n", 2, "mixed"),
    ],
)
def test_odd_line_ends_around_the_header_are_refused(
    tmp_path: Path, name: str, text: str, line: int, problem: str
) -> None:
    err = _error(tmp_path, name, text)
    assert err.line == line
    assert problem in err.problem
    with pytest.raises(AnnotationError, match=f"line {line}:"):
        find_problem(SPECS[name], err.path)


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("list_bbox_celeba.txt", f"2\r\n{BBOX_HEADER}\r\na.jpg 1 2 3 4\r b.jpg 5 6 7 8\r\n", 3),
        ("identity_CelebA.txt", "c.jpg 3\r\na.jpg 1\r b.jpg 2\r\n", 2),
    ],
)
def test_a_cr_before_a_space_in_a_crlf_file_is_refused(
    tmp_path: Path, name: str, text: str, line: int
) -> None:
    # In a file of CR LFs DuckDB's reader ends a line at a CR followed by a space (and
    # drops the space): one line would make two good rows.
    err = _error(tmp_path, name, text)
    assert err.line == line
    assert "CR alone" in err.problem


# --- the fixed-width try: the same files accepted, the same tables, the same errors -------

LANDMARKS_SPEC = SPECS["list_landmarks_celeba.txt"]


def _fixed_width_text(spec: FileSpec, n: int = 4) -> str:
    """A clean file of ``spec`` in the official fixed-width layout (``n`` rows)."""
    ids = [f"{k + 1:06d}.jpg" for k in range(n)]
    if spec.kind == "attr":
        return attr_txt([attr_row(i, set(ATTRIBUTES[k % 7 :: 3])) for k, i in enumerate(ids)])
    if spec.kind == "partition":
        return pairs_txt({i: k % 3 for k, i in enumerate(ids)})
    if spec.table == "identities":
        return pairs_txt({i: 2880 + 37 * k for k, i in enumerate(ids)})
    rows = [
        f"{i}"
        + "".join(f"{(-1) ** (k + j) * (3 * k + 11 * j + 5):>5d}" for j in range(len(spec.columns)))
        for k, i in enumerate(ids)
    ]
    return "\n".join([str(n), " ".join(["image_id", *spec.columns]), *rows]) + "\n"


def _outcome(
    monkeypatch: pytest.MonkeyPatch, path: Path, spec: FileSpec, fixed: bool
) -> tuple[object, ...]:
    """Load ``path`` with the fixed-width try forced on (whatever the file's size says)
    or off (the split alone, as before it). ("rows", rows, whether the fixed try made
    the table) or ("error", line, problem)."""
    made: list[bool] = []
    create = parser._create_fixed

    def spy(*args: object) -> bool:
        made.append(create(*args))
        return made[-1]

    monkeypatch.setattr(parser, "_looks_fixed", lambda *_: fixed)
    monkeypatch.setattr(parser, "_create_fixed", spy)
    con = duckdb.connect()
    try:
        load_annotation(con, AnnotationFile(spec, path), "t")
    except AnnotationError as err:
        return ("error", err.line, err.problem)
    finally:
        monkeypatch.undo()
    try:
        cols = ", ".join(f'"{c}"' for c in ANNOTATION_TABLES[spec.table])
        extra = ", partition_name" if spec.table == "partitions" else ""
        rows = con.execute(f"SELECT image_id, {cols}{extra} FROM t").fetchall()  # file order
        return ("rows", rows, any(made), con.execute("DESCRIBE t").fetchall())
    finally:
        con.close()


def _both_ways(monkeypatch: pytest.MonkeyPatch, path: Path, spec: FileSpec) -> tuple[object, ...]:
    """The outcome with the fixed-width try, asserted equal to the split's alone."""
    fixed, split = (_outcome(monkeypatch, path, spec, f) for f in (True, False))
    assert fixed[0] == split[0]
    if fixed[0] == "error":
        assert fixed == split
        with pytest.raises(AnnotationError) as info:  # the reference reader, the same
            find_problem(spec, path)
        assert (info.value.line, info.value.problem) == fixed[1:]
    else:
        assert fixed[1] == split[1] and fixed[3] == split[3]  # rows (in order), types
        assert not split[2]
        find_problem(spec, path)
    return fixed


def _respaced(line: str, k: int) -> str:
    """``line`` spaced irregularly: blanks around it, each run of spaces 1-3 spaces
    (``k`` even) or a space, a tab and a space (``k`` odd)."""
    sep = " \t " if k % 2 else " " * (k % 3 + 1)
    return "  " + re.sub(" +", sep, line) + " "


@pytest.mark.parametrize("spec", TXT_FILES, ids=lambda s: s.name)
def test_clean_fixed_width_files_take_the_fixed_try_with_the_splits_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: FileSpec
) -> None:
    path = write(tmp_path / "fixed", {spec.name: _fixed_width_text(spec)}) / spec.name
    assert parser._looks_fixed(spec, path)
    fixed = _both_ways(monkeypatch, path, spec)
    assert fixed[2]  # the table came from the fixed-width try
    # the same content spaced irregularly (runs of spaces and tabs): the split's, equal
    lines = path.read_text().splitlines()
    first = spec.first_data_line - 1
    lines[first:] = [_respaced(line, k) for k, line in enumerate(lines[first:])]
    other = write(tmp_path / "irregular", {spec.name: "\n".join(lines) + "\n"}) / spec.name
    irregular = _both_ways(monkeypatch, other, spec)
    assert not irregular[2]  # the fixed try gave way to the split
    assert irregular[1] == fixed[1] and irregular[3] == fixed[3]


def _damage(spec: FileSpec, line: int, old: str, new: str, count: int = 1) -> str:
    """A clean fixed-width file with ``old`` replaced by ``new`` in its ``line``."""
    lines = _fixed_width_text(spec).split("\n")
    assert old in lines[line - 1], (lines[line - 1], old)
    lines[line - 1] = lines[line - 1].replace(old, new, count)
    return "\n".join(lines)


# (spec, line, old, new): damage to one line of a clean fixed-width file. Some keep the
# line's length (the fixed try must refuse the line itself), some change it; some make
# a line the split refuses, some one it takes (then the file loads by the split).
FIXED_WIDTH_DAMAGE = [
    (ATTR_SPEC, 4, "  1", "  2"),
    (ATTR_SPEC, 4, "  1", " +1"),
    (ATTR_SPEC, 4, " -1", " 01"),
    (ATTR_SPEC, 4, " -1", " 1-"),
    (ATTR_SPEC, 4, " -1 -1", "-1  -1"),  # shifted one column left, same length
    (ATTR_SPEC, 4, " -1 -1", " -1-1 "),  # shifted one column right
    (ATTR_SPEC, 4, "  1", "1  "),
    (ATTR_SPEC, 4, "  1", "   1"),  # one char longer, still good
    (ATTR_SPEC, 4, "  1", " 1"),  # one char shorter, still good
    (ATTR_SPEC, 4, " -1", "-1"),  # one char shorter: glued to the value before
    (ATTR_SPEC, 4, " -1", "\t-1"),  # a tab inside, same length: good
    (ATTR_SPEC, 4, " -1", " -\t"),
    (ATTR_SPEC, 4, "000002.jpg", "000002.jp\x01"),
    (ATTR_SPEC, 4, "000002.jpg", "00000,.jpg"),
    (ATTR_SPEC, 4, "000002.jpg", "000001.jpg"),  # a duplicate id, same length
    (ATTR_SPEC, 4, "000002.jpg", "00000é.jpg"),  # non-ASCII: longer in bytes, good
    (ATTR_SPEC, 5, "000003.jpg", " 00003.jpg"),
    (BBOX_SPEC, 3, "   5", "  +5"),  # good
    (BBOX_SPEC, 3, "   5", "  -5"),  # good
    (BBOX_SPEC, 3, "   5", "  05"),  # good
    (BBOX_SPEC, 3, "   5", "  -0"),  # good
    (BBOX_SPEC, 3, "   5", " +-5"),
    (BBOX_SPEC, 3, "   5", "  5-"),
    (BBOX_SPEC, 3, "   5", "  - 5"),
    (BBOX_SPEC, 3, "   5", " 1.5"),
    (BBOX_SPEC, 3, "   5", " 1e3"),
    (BBOX_SPEC, 3, "   5", "0x10"),
    (BBOX_SPEC, 3, "   5", " 1_0"),
    (BBOX_SPEC, 3, "   5", "  \u0663"),
    (BBOX_SPEC, 3, "   5", "5   "),  # left-aligned: good for the split
    (BBOX_SPEC, 3, "   5", "  5 "),
    (BBOX_SPEC, 3, "   5", "   5 "),  # a trailing space: good
    (BBOX_SPEC, 3, "   5", "  5"),  # one char shorter: good
    (BBOX_SPEC, 3, "000001.jpg", "00001.jpg "),  # id shifted, same length
    (BBOX_SPEC, 4, "  -8", "9999999999"),  # 10 digits: over the grammar
    (BBOX_SPEC, 4, "  -8", " 123456789"),  # 9 digits: good
    (LANDMARKS_SPEC, 3, "   5", "   \t"),
    (LANDMARKS_SPEC, 3, "   5", "   3"),  # a good value changed: the new value
    (SPECS["list_eval_partition.txt"], 2, " 1", " 3"),
    (SPECS["list_eval_partition.txt"], 2, " 1", "-1"),
    (SPECS["list_eval_partition.txt"], 2, " 1", "+1"),
    (SPECS["list_eval_partition.txt"], 2, " 1", "  1"),  # good
    (SPECS["identity_CelebA.txt"], 3, " 2954", "+2954"),
    (SPECS["identity_CelebA.txt"], 3, " 2954", "  954"),  # good
]


@pytest.mark.parametrize(
    ("spec", "line", "old", "new"),
    FIXED_WIDTH_DAMAGE,
    ids=[f"{s.table}-{line}-{old!r}-{new!r}" for s, line, old, new in FIXED_WIDTH_DAMAGE],
)
def test_a_damaged_line_in_a_fixed_width_file_is_taken_or_named_as_by_the_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: FileSpec, line: int, old: str, new: str
) -> None:
    path = write(tmp_path, {spec.name: _damage(spec, line, old, new)}) / spec.name
    _both_ways(monkeypatch, path, spec)


@pytest.mark.parametrize(
    ("spec", "old", "new"),
    [
        (BBOX_SPEC, "    5", "   +5"),
        (BBOX_SPEC, "    5", "   05"),
        (BBOX_SPEC, "    5", "   -0"),
        (BBOX_SPEC, "   27", "  -27"),
        (BBOX_SPEC, "   27", "  +27"),
        (LANDMARKS_SPEC, "    5", "    3"),
        (SPECS["identity_CelebA.txt"], "2880", "0007"),
    ],
)
def test_good_values_that_keep_the_layout_take_the_fixed_try(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: FileSpec, old: str, new: str
) -> None:
    # values in the grammar but not as the writer spells them: their value, as split
    text = _damage(spec, spec.first_data_line, old, new)
    path = write(tmp_path, {spec.name: text}) / spec.name
    outcome = _both_ways(monkeypatch, path, spec)
    assert outcome[0] == "rows" and outcome[2]
    assert outcome[1][0][1:].count(int(new)) >= 1


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
@pytest.mark.parametrize("bad", ["", " ", "\t", "  \r", "\r ", "\n \n"])
def test_blank_and_odd_lines_in_fixed_width_files_as_by_the_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, eol: str, bad: str
) -> None:
    # blank lines, lines of one space, CRs where they do not belong; LF and CR LF
    text = _fixed_width_text(BBOX_SPEC).replace("\n", eol)
    lines = text.split(eol)
    lines.insert(4, bad)
    path = write(tmp_path, {BBOX_SPEC.name: eol.join(lines)}) / BBOX_SPEC.name
    _both_ways(monkeypatch, path, BBOX_SPEC)


def test_a_cr_before_a_space_in_a_fixed_width_crlf_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DuckDB's reader makes two lines of equal length of 'a\r b': the fixed try would
    # take both; the line-end check after it refuses the file as after the split
    text = f"2\r\n{BBOX_HEADER}\r\na.jpg 1 2 3 4\r b.jpg 5 6 7 8\r\n"
    path = write(tmp_path, {BBOX_SPEC.name: text}) / BBOX_SPEC.name
    assert _both_ways(monkeypatch, path, BBOX_SPEC)[:2] == ("error", 3)


def test_a_fixed_width_file_over_several_arrow_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DuckDB hands 131,072 lines to a batch: the layout of the first holds for all
    spec = SPECS["list_eval_partition.txt"]
    n = 140_000
    text = "".join(f"{k:07d}.jpg {k % 3}\n" for k in range(n))
    path = write(tmp_path / "good", {spec.name: text}) / spec.name
    rows = _both_ways(monkeypatch, path, spec)
    assert rows[2] and len(rows[1]) == n
    assert rows[1][-1] == (f"{n - 1:07d}.jpg", (n - 1) % 3, "valid")
    line = f"0139990.jpg {139_990 % 3}\n"
    bad = write(tmp_path / "bad", {spec.name: text.replace(line, line[:-2] + "5\n")})
    assert _both_ways(monkeypatch, bad / spec.name, spec)[:2] == ("error", 139_991)


@pytest.mark.parametrize("spec", [ATTR_SPEC, BBOX_SPEC], ids=lambda s: s.name)
def test_ids_out_of_order_in_a_fixed_width_file_are_counted_by_a_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: FileSpec
) -> None:
    # ids in ascending order need no query for repeats; others are counted as before
    lines = _fixed_width_text(spec).split("\n")
    first = spec.first_data_line - 1
    lines[first], lines[first + 2] = lines[first + 2], lines[first]  # unique, unordered
    path = write(tmp_path / "unique", {spec.name: "\n".join(lines)}) / spec.name
    outcome = _both_ways(monkeypatch, path, spec)
    assert outcome[2] and outcome[1][0][0] == "000003.jpg"  # taken, in file order
    lines[first + 1] = lines[first + 1].replace("000002.jpg", "000003.jpg")  # a repeat
    path = write(tmp_path / "repeated", {spec.name: "\n".join(lines)}) / spec.name
    assert _both_ways(monkeypatch, path, spec)[0] == "error"


def _line_ends(text: str, how: str) -> str:
    """A clean fixed-width file with its line ends changed."""
    crlf = text.replace("\n", "\r\n")
    at = text.rindex(".jpg ") + 4  # the space after the last line's id

    def instead_of_the_space(ch: str) -> str:
        return text[:at] + ch + text[at + 1 :]

    return {
        "crlf": crlf,
        "crlf, none at the end": crlf[:-2],
        "crlf, cut after the last CR": crlf[:-1],
        "lf, none at the end": text[:-1],
        "lf, a blank line at the end": text + "\n",
        "lf, a CR LF at the end": text[:-1] + "\r\n",
        "lf, a NUL for a space": instead_of_the_space("\x00"),
        "lf, a CR for a space": instead_of_the_space("\r"),
        "lf, a line end for a space": instead_of_the_space("\n"),
    }[how]


@pytest.mark.parametrize(
    ("how", "taken"),
    [
        ("crlf", True),
        ("crlf, none at the end", True),
        ("crlf, cut after the last CR", False),
        ("lf, none at the end", True),
        ("lf, a blank line at the end", False),
        ("lf, a CR LF at the end", False),
        ("lf, a NUL for a space", False),
        ("lf, a CR for a space", False),
        ("lf, a line end for a space", False),
    ],
)
def test_a_fixed_width_file_read_by_numpy_ends_its_lines_as_duckdbs_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, taken: bool
) -> None:
    # numpy reads the lines straight from the file (not through DuckDB's reader): it
    # takes only files whose lines all end alike, and otherwise leaves them to the split
    for spec in (BBOX_SPEC, SPECS["list_eval_partition.txt"]):  # with a preamble, without
        text = _line_ends(_fixed_width_text(spec), how)
        path = write(tmp_path / spec.table, {spec.name: text}) / spec.name
        outcome = _both_ways(monkeypatch, path, spec)
        assert (outcome[0] == "rows" and outcome[2]) is taken, (spec.name, outcome)


# --- one value per line, lines of differing length (identity_CelebA.txt) ---------------

IDENTITY_SPEC = SPECS["identity_CelebA.txt"]
#: identity_CelebA.txt as the official file spells it: one space, 1 to 5 digits.
RAGGED = "000001.jpg 2880\n000002.jpg 7\n000003.jpg 10177\n000004.jpg 45\n"


def test_identities_of_differing_widths_take_the_numpy_try_with_the_splits_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, {IDENTITY_SPEC.name: RAGGED}) / IDENTITY_SPEC.name
    assert parser._looks_fixed(IDENTITY_SPEC, path)
    outcome = _both_ways(monkeypatch, path, IDENTITY_SPEC)
    assert outcome[2]  # the table came from the numpy try
    assert [r[1] for r in outcome[1]] == [2880, 7, 10177, 45]  # file order
    partitions = SPECS["list_eval_partition.txt"]  # the other file of one value a line
    text = "000001.jpg 0\n000002.jpg  1\n000003.jpg   2\n"
    path = write(tmp_path / "p", {partitions.name: text}) / partitions.name
    outcome = _both_ways(monkeypatch, path, partitions)
    assert outcome[2] and [r[1:] for r in outcome[1]] == [(0, "train"), (1, "valid"), (2, "test")]


# (taken, old, new, ...): damage to RAGGED, and whether the numpy try takes the file;
# it must take exactly what the split takes (then the same table), or give way (then
# the split loads or refuses the file: its error)
RAGGED_DAMAGE = [
    (True, "\n", "\r\n"),  # CR LF throughout: good
    (False, "000002.jpg 7\n", "000002.jpg 7\r\n"),  # one CR LF among LFs
    (False, "000002.jpg 7\n", "000002.jpg 7\r"),  # a CR alone
    (True, "000002.jpg 7", "000002.jpg    7"),  # more spaces: good
    (False, "000002.jpg 7", "000002.jpg\t7"),  # a tab: good for the split
    (False, "000002.jpg 7", "000002.jpg7"),  # glued to the id
    (False, "000002.jpg 7", "00002.jpg 7"),  # a shorter id: good for the split
    (False, "000002.jpg 7", "0000002.jpg 7"),  # a longer id: good for the split
    (False, "000002.jpg 7", " 000002.jpg 7"),  # a space before the id: good for the split
    (False, "000002.jpg 7", "000002.jpg 7 "),  # a space after the value: good for the split
    (True, "000002.jpg 7", "000002.jpg -7"),  # signed: good
    (True, "000002.jpg 7", "000002.jpg +7"),  # good
    (False, "000002.jpg 7", "000002.jpg 7 8"),  # a field too many
    (False, "000002.jpg 7", "000002.jpg"),  # a field too few
    (False, "000002.jpg 7", "000002.jpg 1.5"),
    (True, "000002.jpg 7", "000002.jpg " + "7" * 9),  # 9 digits: good
    (False, "000002.jpg 7", "000002.jpg " + "7" * 10),  # 10: over the grammar
    (False, "000002.jpg 7", "000002.jpg " + "7" * 40),  # over the numpy try's widest
    (False, "000002.jpg 7", "000002.jpg 7\n"),  # a blank line
    (False, "000002.jpg 7", "000002.jpg 7\n "),  # a line of one space
    (False, "000002.jpg 7", "000001.jpg 7"),  # a duplicate id (taken, then refused)
    (False, "000002.jpg 7", "000002.jpé 7"),  # non-ASCII in the id: good for the split
    (False, "000002.jpg 7", "000002.jpg \u0663"),  # a non-ASCII digit
    (True, "000004.jpg 45\n", "000004.jpg 45"),  # no line end at the end: good
    (False, "000004.jpg 45\n", "000004.jpg 45\r"),  # a CR alone at the end
    (True, "\n", "\r\n", "000004.jpg 45\r\n", "000004.jpg 45"),  # CR LF, none at the end
    (False, "\n", "\r\n", "000004.jpg 45\r\n", "000004.jpg 45\r"),  # cut after the CR
    (False, "000001.jpg", "\ufeff000001.jpg"),  # a byte order mark: good for the split
]


@pytest.mark.parametrize("damage", RAGGED_DAMAGE, ids=[repr(d[1:]) for d in RAGGED_DAMAGE])
def test_a_damaged_identity_file_is_taken_or_named_as_by_the_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: tuple[object, ...]
) -> None:
    taken, *edits = damage
    text = RAGGED
    for old, new in zip(edits[::2], edits[1::2], strict=True):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / IDENTITY_SPEC.name
    path.write_bytes(text.encode())
    outcome = _both_ways(monkeypatch, path, IDENTITY_SPEC)
    assert (outcome[0] == "rows" and outcome[2]) is taken
