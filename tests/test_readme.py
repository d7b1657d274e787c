"""The README runs as written: every fenced example marked runnable is run, in order.

A fenced block whose info string says ``runnable`` (```` ```bash runnable ````,
```` ```python runnable ````) runs against a synthetic CelebA laid out like the real
one (``celebcat synth celeba/`` first), in one temporary folder, with ``CELEBCAT_DB``
set: shell blocks with bash (``celebcat`` is this checkout's CLI), Python blocks with
this interpreter, the folder as working directory. Blocks build on each other as a
reader's session would (ingest, select, snapshot, train, align, report). A block that
cannot run anywhere but on a real, full-size CelebA or that installs packages says
``norun``; every shell or Python block must say one or the other, so no example goes
untested by accident. Indented blocks are not examples.
"""

from __future__ import annotations

import os
import re
import resource
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: The synthetic CelebA the examples run on (the hidden setup step).
SETUP = "celebcat synth celeba/ --ids 12 --seed 1 --workers 2"
CODE_LANGUAGES = {"bash", "sh", "shell", "console", "python", "py"}


def blocks(text: str) -> list[tuple[int, str, set[str], str]]:
    """Fenced blocks of ``text``: (line number, language, other info words, code)."""
    found = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"^```(\S*)\s*(.*)$", lines[i])
        if match and match.group(1):
            start, language, words = i + 1, match.group(1), set(match.group(2).split())
            i += 1
            body = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            found.append((start, language, words, "\n".join(body) + "\n"))
        i += 1
    return found


def test_every_code_block_says_whether_it_runs() -> None:
    undecided = [
        (line, language)
        for line, language, words, _ in blocks(README.read_text())
        if language in CODE_LANGUAGES and not words & {"runnable", "norun"}
    ]
    assert undecided == [], "mark each README code block 'runnable' or 'norun'"
    runnable = [b for b in blocks(README.read_text()) if "runnable" in b[2]]
    assert len(runnable) >= 8  # the tour, parameters, snapshots, Datasets, caches, models


def _shim(folder: Path) -> Path:
    """A ``celebcat`` on PATH that runs this checkout's cli.py with this interpreter."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    script = bin_dir / "celebcat"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT / "cli.py"}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_readme_examples_run(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "PATH": f"{_shim(tmp_path)}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "CELEBCAT_DB": str(work / "celeba.duckdb"),
        "COLUMNS": "120",
    }
    timings = []

    def run(line: int, language: str, code: str) -> None:
        if language in {"python", "py"}:
            command = [sys.executable, "-c", code]
        else:
            command = ["bash", "-euo", "pipefail", "-c", code]
        start, cpu = time.perf_counter(), _children_cpu()
        result = subprocess.run(
            command, cwd=work, env=env, capture_output=True, text=True, timeout=300
        )
        timings.append((line, time.perf_counter() - start, _children_cpu() - cpu))
        assert result.returncode == 0, (
            f"README.md block at line {line} failed ({result.returncode}):\n{code}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )

    run(0, "bash", SETUP)
    for line, language, words, code in blocks(README.read_text()):
        if "runnable" in words:
            run(line, language, code)
    # what the examples left behind is what they say
    assert (work / "celeba.duckdb").exists() and (work / "out" / "labels.csv").exists()
    assert (work / "ced.png").stat().st_size > 0 and (work / "stats.json").stat().st_size > 0
    assert list((work / "plots").glob("*.png"))
    print(
        "README blocks (line, wall s, CPU s):",
        [(n, round(w, 1), round(c, 1)) for n, w, c in timings],
    )
