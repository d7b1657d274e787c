"""A fuzz test of the whole command line: every command, options drawn from a hostile
alphabet (markup brackets, ``..``, slashes, quotes, HTML, unicode, huge and negative
numbers, NaN, empty strings) and odd paths. Whatever it is given, a command ends with
exit code 0, 1 or 2, prints no traceback, and one that fails leaves every table of
the catalog as it was.

``CELEBCAT_FUZZ_EXAMPLES`` sets how many command lines hypothesis tries (default 60 in
the suite, the same ones every run); ``CELEBCAT_FUZZ_RANDOM=1`` draws new ones.
Commands that train or make data at length (``train``, ``demo``, ``synth``,
``ingest``), and ``serve``, which runs until stopped, are left out: their options are
checked by their own tests.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import io
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

import duckdb
import pytest
import typer
from conftest import snapshot_catalog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cli

EXAMPLES = int(os.environ.get("CELEBCAT_FUZZ_EXAMPLES", "60"))
#: serve runs until it is stopped (tests/test_serve.py starts and stops it).
SKIP = {"train", "demo", "synth", "ingest", "serve"}

HOSTILE_TEXT = [
    "",
    " ",
    "[/x]",
    "[bold]B[/bold]",
    "<script>alert(1)</script>",
    "..",
    "../..",
    "a/b",
    "'",
    '"',
    "x'; drop table images; --",
    "é ü 漢字",
    "\u202e",
    "s",
    "demo",
    "landmarks-x",
    "recognition-/../../tmp/x",
    "%s%n",
    "-",
    "--",
    "a" * 300,
]
HOSTILE_NUMBERS = ["0", "-1", "1", "2", "1e30", "-1e30", "nan", "inf", "9223372036854775807", "0.5"]
HOSTILE_PATHS = ["", ".", "..", "x[/y]", "<b>.jpg", "a b", "missing/deep/file.jpg", "-", "é.png"]


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every (command path, command) of the app; a group counts too (it may run alone)."""
    out = []
    for name, command in sorted(group.commands.items()):
        if name in SKIP:
            continue
        out.append(((*path, name), command))
        if hasattr(command, "commands"):
            out.extend(_commands(command, (*path, name)))
    return out


COMMANDS = _commands(typer.main.get_command(cli.app))


def _kind(param: Any) -> Any:
    """The Python type a parameter takes (list[Path] -> Path)."""
    annotation = param.type_descriptor.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return (
        args[0]
        if typing.get_origin(annotation) in (list, typing.Union, types.UnionType) and args
        else annotation
    )


def _value(draw: st.DrawFn, param: Any) -> str:
    kind = _kind(param)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return draw(st.sampled_from([*(str(e.value) for e in kind), *HOSTILE_TEXT[:6]]))
    if kind in (int, float):
        return draw(st.sampled_from(HOSTILE_NUMBERS + HOSTILE_TEXT[:3]))
    if kind is Path:
        return draw(st.sampled_from(HOSTILE_PATHS))
    return draw(st.sampled_from(HOSTILE_TEXT + HOSTILE_NUMBERS[:3]))


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    path, command = draw(st.sampled_from(COMMANDS))
    argv = list(path)
    for param in command.params:
        if param.name in ("db", "help") or param.hidden:
            continue
        if param.param_type_name == "argument":
            n = 1 if param.nargs == 1 else draw(st.integers(1, 2))
            argv += [_value(draw, param) for _ in range(n)]
            continue
        if not (param.required or draw(st.booleans())):
            continue
        if param.is_flag:
            argv.append(param.opts[0])
        else:
            argv += [param.opts[0], *(_value(draw, param) for _ in range(max(param.nargs, 1)))]
    return argv


def fingerprint(db: Path) -> str:
    """A hash of every table's rows (an empty bookkeeping table a command creates before
    it fails holds no data, and changes nothing)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        digest = hashlib.sha256()
        for (table,) in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall():
            rows = con.execute(f'SELECT * FROM "{table}"').fetchall()
            if not rows:
                continue
            digest.update(table.encode())
            digest.update(repr(sorted(map(repr, rows))).encode())
        return digest.hexdigest()
    finally:
        con.close()


def run(argv: list[str], db: Path) -> tuple[int, str]:
    """``celebcat ARGV --db DB`` in this process, as the console script runs it."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["celebcat", *argv, "--db", str(db)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old
    return code, out.getvalue() + err.getvalue()


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_catalog(tmp_path_factory.mktemp("fuzz"), ids=12, seed=3, images=True)


def test_every_command_is_listed() -> None:
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"sql", "select", "snapshot create", "gallery add", "identify", "runs import"} <= names


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=os.environ.get("CELEBCAT_FUZZ_RANDOM") is None,
)
@given(argv=command_lines())
def test_no_command_line_ends_in_a_traceback(
    argv: list[str], catalog: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch
) -> None:
    work = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(work)
    before = fingerprint(catalog)
    code, out = run(argv, catalog)
    assert code in (0, 1, 2), (argv, code, out)
    assert "Traceback" not in out, (argv, out)
    if code != 0:
        assert fingerprint(catalog) == before, (argv, out)
