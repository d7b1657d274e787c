"""The CLI's conventions, checked over every command: --json and --csv wherever a
table is printed, --device wherever a model runs, one export command, and stats
--csv as one long table that pivots back."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from conftest import snapshot_catalog
from typer.main import get_command
from typer.testing import CliRunner

import cli

runner = CliRunner()


def _options() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}

    def walk(command: object, path: list[str]) -> None:
        subs = getattr(command, "commands", {})
        if not subs:
            opts = {o for p in getattr(command, "params", []) for o in getattr(p, "opts", [])}
            found[" ".join(path)] = opts
        for name, sub in subs.items():
            walk(sub, [*path, name])

    walk(get_command(cli.app), [])
    return found


OPTIONS = _options()

#: Commands that print a table (or rows) on stdout.
TABLES = (
    "ingest", "tables", "schema", "sql", "check", "params", "stats", "cache list",
    "report landmarks", "report alignment", "report compare", "eval recognizer",
    "snapshot list", "snapshot show", "snapshot diff", "gallery list", "gallery show",
    "identify",
)  # fmt: skip
#: Commands that load or train a model.
MODELS = (
    "align", "embed", "identify", "verify", "train landmarks", "train recognizer",
    "train detector", "eval recognizer", "gallery add", "gallery calibrate", "report html",
)  # fmt: skip


@pytest.mark.parametrize("command", TABLES)
def test_every_table_has_json_and_csv(command: str) -> None:
    assert {"--json", "--csv"} <= OPTIONS[command], command


@pytest.mark.parametrize("command", MODELS)
def test_every_model_runs_where_device_says(command: str) -> None:
    assert "--device" in OPTIONS[command], command


def test_one_export_command() -> None:
    assert [c for c in OPTIONS if "export" in c] == ["export"]


def test_a_gpu_asked_for_where_there_is_none_is_a_usage_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = runner.invoke(cli.app, ["embed", "--run", "x", "--device", "cuda"])
    assert result.exit_code == 2 and "no CUDA device" in result.output
    result = runner.invoke(cli.app, ["embed", "--run", "x", "--device", "gpu0"])
    assert result.exit_code == 2 and "use cpu, cuda, cuda:N or auto" in result.output


def test_stats_csv_is_one_long_table_that_pivots_back(tmp_path: Path) -> None:
    db = snapshot_catalog(tmp_path, ids=4, seed=5, images=False)
    as_json = runner.invoke(cli.app, ["stats", "--json", "--db", str(db)])
    as_csv = runner.invoke(cli.app, ["stats", "--csv", "--db", str(db)])
    assert as_json.exit_code == 0 and as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert list(rows[0]) == ["table", "row", "column", "value"]
    summary = [r for r in rows if r["table"].endswith("summary")]
    cells = {}
    for r in summary:
        cells.setdefault(r["row"], {})[r["column"]] = r["value"]
    by_name = {c["statistic"]: c["value"] for c in cells.values()}
    assert int(by_name["identities"]) == json.loads(as_json.output)["identities"]
    both = runner.invoke(cli.app, ["stats", "--csv", "--json", "--db", str(db)])
    assert both.exit_code == 2 and "choose one of them" in both.output  # a usage error


def test_snapshots_and_runs_are_options_outside_their_own_groups() -> None:
    """`--snapshot S` and `--run R` everywhere; only `snapshot show NAME` and the like,
    whose group is the object, name it positionally."""
    positional: list[str] = []

    def walk(command: object, path: list[str]) -> None:
        for p in getattr(command, "params", []):
            if getattr(p, "param_type_name", "") == "argument" and p.name in (
                "snapshot",
                "run",
                "runs_",
            ):
                positional.append(f"{' '.join(path)} {p.name}")
        for name, sub in getattr(command, "commands", {}).items():
            if name not in ("snapshot", "runs"):
                walk(sub, [*path, name])

    walk(get_command(cli.app), [])
    assert positional == []
    assert {"--snapshot", "--run"} <= OPTIONS["embed"] and "--snapshot" in OPTIONS["export"]
    assert "--run" in OPTIONS["report compare"] and "--snapshot" in OPTIONS["cache build"]
