"""Every `--help` screen reads well at 80 columns: no stray word left on a line of its
own inside a paragraph, no text cut off, nothing wider than the terminal, and flags
that take no value show none."""

from __future__ import annotations

import pytest
from typer.main import get_command
from typer.testing import CliRunner

import cli

WIDTH = 80
BOX = set("─╭╮╰╯│ ")


def _commands() -> list[list[str]]:
    found: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        found.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            if not getattr(sub, "hidden", False):
                walk(sub, [*path, name])

    walk(get_command(cli.app), [])
    return found


COMMANDS = _commands()


def problems(screen: str) -> list[str]:
    """What is wrong with one rendered help screen."""
    found = []
    lines = screen.splitlines()
    for i, line in enumerate(lines):
        if len(line) > WIDTH:
            found.append(f"wider than {WIDTH}: {line!r}")
        if "…" in line:
            found.append(f"cut off: {line!r}")
        if "<bool>" in line:
            found.append(f"a flag shown as taking a value: {line!r}")
        # prose (outside the option boxes): a lone word with more of its paragraph
        # after it is a hand-wrapped line wrapped again
        if not line.startswith("│") and not set(line) <= BOX:
            words = line.split()
            following = lines[i + 1].strip() if i + 1 < len(lines) else ""
            if len(words) == 1 and following and not set(following) <= BOX:
                found.append(f"stray word: {line.strip()!r} before {following!r}")
    return found


def test_the_walk_finds_every_command() -> None:
    names = {" ".join(c) for c in COMMANDS}
    assert {"", "export", "train recognizer", "gallery calibrate", "runs import"} <= names
    assert len(COMMANDS) > 40


def test_the_checks_catch_what_they_look_for() -> None:
    assert problems(" one two\n stray\n three four\n")  # a stray word mid-paragraph
    assert not problems(" one two\n end.\n\n next\n")  # a paragraph's last word is fine
    assert problems("│ aligned/<template>/<lan… │")
    assert problems("│ --json  <bool>  Print JSON. │")
    assert problems("x" * 81)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "celebcat")
def test_help_at_80_columns(command: list[str]) -> None:
    result = CliRunner().invoke(
        cli.app, [*command, "--help"], env={"COLUMNS": str(WIDTH), "TERM": "dumb"}
    )
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert problems(result.output) == []
