"""The celebcat CLI: thin commands, readable output, clear errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import query
from typer.testing import CliRunner

import cli

runner = CliRunner()


def celebcat(*args: str) -> tuple[int, str]:
    """Run a command through the same entry point users get (errors included)."""
    result = subprocess.run(
        [sys.executable, "-c", "import cli; cli.main()", *args],
        capture_output=True, text=True, timeout=120,
        env={"COLUMNS": "200", "PATH": "", "PYTHONPATH": str(Path(cli.__file__).parent)},
    )
    return result.returncode, result.stdout + result.stderr


@pytest.fixture
def catalog_db(small_celeba: Path, tmp_path: Path) -> Path:
    db = tmp_path / "c.duckdb"
    result = runner.invoke(cli.app, ["ingest", str(small_celeba), "--db", str(db), "--no-images"])
    assert result.exit_code == 0, result.output
    assert "attributes" in result.output and "problems: 0" in result.output
    return db


def test_help_is_fast_and_imports_no_heavy_modules() -> None:
    code = (
        "import sys, cli\n"
        "try:\n    cli.app(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'duckdb', 'pandas', 'numpy') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "HEAVY []" in out
    assert "ingest" in out and "synth" in out and "demo" in out


def _all_commands() -> list[list[str]]:
    """Every command path of the app, sub-apps included (e.g. ['snapshot', 'create'])."""
    import typer.main

    group = typer.main.get_command(cli.app)
    paths = []
    for name, command in group.commands.items():
        paths.append([name])
        for sub in getattr(command, "commands", {}):
            paths.append([name, sub])
    return paths


def test_every_command_has_help_with_an_example() -> None:
    paths = _all_commands()
    assert ["snapshot", "create"] in paths and ["ingest"] in paths and ["views", "apply"] in paths
    for path in paths:
        result = runner.invoke(cli.app, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Example" in result.output, path


def test_tables_counts_and_formats(catalog_db: Path) -> None:
    result = runner.invoke(cli.app, ["tables", "--counts", "--csv", "--db", str(catalog_db)])
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(result.output))}
    assert rows["attributes"]["rows"] == "3" and rows["images"]["rows"] == "0"
    assert rows["partitions"]["kind"] == "table"


def test_sql_json_csv_and_read_only(catalog_db: Path) -> None:
    q = "select image_id, Male from attributes order by 1"
    result = runner.invoke(cli.app, ["sql", q, "--json", "--db", str(catalog_db)])
    assert json.loads(result.output)[0] == {"image_id": "000001.jpg", "Male": True}
    result = runner.invoke(cli.app, ["sql", q, "--csv", "--db", str(catalog_db)])
    assert result.output.splitlines()[:2] == ["image_id,Male", "000001.jpg,True"]
    code, out = celebcat("sql", "delete from attributes", "--db", str(catalog_db))
    assert code == 1 and "read-only" in out.lower()
    code, out = celebcat("sql", "delete from attributes", "--write", "--db", str(catalog_db))
    assert code == 0
    result = runner.invoke(cli.app, ["sql", "select count(*) n from attributes", "--json",
                                     "--db", str(catalog_db)])
    assert json.loads(result.output) == [{"n": 0}]


def test_schema_and_unknown_table(catalog_db: Path) -> None:
    result = runner.invoke(cli.app, ["schema", "bboxes", "--json", "--db", str(catalog_db)])
    names = [c["column_name"] for c in json.loads(result.output)]
    assert names == ["image_id", "x_1", "y_1", "width", "height"]
    code, out = celebcat("schema", "nope", "--db", str(catalog_db))
    assert code == 1 and "No table or view 'nope'" in out and "attributes" in out


def test_check_groups_problems(small_celeba: Path, tmp_path: Path) -> None:
    ident = small_celeba / "identity_CelebA.txt"
    ident.write_text(ident.read_text() + "zzz.jpg 7\nyyy.jpg 8\n")
    db = tmp_path / "c.duckdb"
    runner.invoke(cli.app, ["ingest", str(small_celeba), "--db", str(db), "--no-images"])
    result = runner.invoke(cli.app, ["check", "--json", "--db", str(db)])
    groups = json.loads(result.output)
    by_source = {(g["check"], g["source"]): g for g in groups}
    assert by_source[("missing_annotation", "attributes")]["count"] == 2
    assert by_source[("missing_annotation", "attributes")]["examples"] == "yyy.jpg, zzz.jpg"
    assert runner.invoke(cli.app, ["check", "--strict", "--db", str(db)]).exit_code == 1


def test_errors_are_one_clear_line(tmp_path: Path, small_celeba: Path) -> None:
    code, out = celebcat("tables", "--db", str(tmp_path / "none.duckdb"))
    assert code == 1 and "No catalog at" in out and "celebcat ingest" in out
    assert "Traceback" not in out
    attr = small_celeba / "list_attr_celeba.txt"
    attr.write_text(attr.read_text().replace("000002.jpg -1", "000002.jpg  0", 1))
    code, out = celebcat("ingest", str(small_celeba), "--db", str(tmp_path / "c.duckdb"))
    assert code == 1 and "Traceback" not in out
    assert "list_attr_celeba.txt, line 4" in " ".join(out.split())


def test_db_from_environment(catalog_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELEBCAT_DB", str(catalog_db))
    result = runner.invoke(cli.app, ["sql", "select count(*) n from identities", "--json"])
    assert json.loads(result.output) == [{"n": 3}]


def test_select_snapshot_views_and_stats_commands(tmp_path: Path) -> None:
    from catalog.synth import synthesize

    synthesize(tmp_path / "data", ids=40, seed=2, annotations_only=True)
    db = str(tmp_path / "c.duckdb")
    assert runner.invoke(cli.app, ["ingest", str(tmp_path / "data"), "--db", db]).exit_code == 0
    views = json.loads(runner.invoke(cli.app, ["views", "--json", "--db", db]).output)
    assert {v["view"] for v in views} >= {"clean_images", "selection", "recognition_split"}
    code, out = celebcat("select", "--n-ids", "5000", "--db", db)
    assert code == 1 and "n_ids = 5000 but only" in " ".join(out.split())
    result = runner.invoke(cli.app, [
        "select", "--n-ids", "6", "--min-images-per-id", "20", "--images-per-id", "20",
        "--split", "14/3/3", "--set", "holdout_ids=2", "--set", "query_ids=1",
        "--set", "distractor_ids=1", "--quota", "Male=0.5", "--db", db,
    ])
    assert result.exit_code == 0, result.output
    assert "selected 6 identities, 120 images" in " ".join(result.output.split())
    params = {p["name"]: p["value"] for p in json.loads(
        runner.invoke(cli.app, ["params", "--json", "--db", db]).output)}
    assert params["n_ids"] == 6 and params["train_per_id"] == 14
    assert runner.invoke(cli.app, ["snapshot", "create", "v1", "--db", db]).exit_code == 0
    listed = json.loads(runner.invoke(cli.app, ["snapshot", "list", "--json", "--db", db]).output)
    assert [s["name"] for s in listed] == ["v1"] and listed[0]["images"] == 120
    code, out = celebcat("snapshot", "create", "v1", "--db", db)
    assert code == 1 and "exists" in out
    stats = json.loads(runner.invoke(cli.app, ["stats", "--snapshot", "v1", "--json",
                                               "--db", db]).output)
    assert stats["images"] == 120 and stats["identities"] == 6
    code, out = celebcat("stats", "--snapshot", "nope", "--db", db)
    assert code == 1 and "No snapshot 'nope'. Known: v1" in " ".join(out.split())


def test_train_landmarks_and_runs_commands(tmp_path: Path) -> None:
    from catalog.selection import fitted_params, select
    from catalog.snapshots import create
    from catalog.synth import synthesize

    synthesize(tmp_path / "data", ids=12, seed=4, workers=2)
    db = str(tmp_path / "c.duckdb")
    assert runner.invoke(cli.app, ["ingest", str(tmp_path / "data"), "--db", db]).exit_code == 0
    select(db, **fitted_params(db, images_per_id=10))
    create("tiny", db)
    result = runner.invoke(cli.app, [
        "train", "landmarks", "--snapshot", "tiny", "--epochs", "1", "--max-batches", "2",
        "--batch-size", "4", "--out", str(tmp_path / "ckpt"), "--db", db,
    ])
    assert result.exit_code == 0, result.output
    assert "epoch 1: train loss" in result.output and "best val NME" in result.output
    runs = json.loads(runner.invoke(cli.app, ["runs", "--json", "--db", db]).output)
    assert [(r["kind"], r["status"], r["snapshot"]) for r in runs] == [
        ("landmarks", "finished", "tiny")
    ]
    assert list((tmp_path / "ckpt").rglob("best.pt"))
    # --resume continues the run with its own settings; --epochs may extend it
    run_dir = next((tmp_path / "ckpt").iterdir())
    result = runner.invoke(cli.app, [
        "train", "landmarks", "--snapshot", "tiny", "--resume", str(run_dir), "--epochs", "2",
        "--db", db,
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "epoch 2: train loss" in result.output and "epoch 1:" not in result.output
    assert query(Path(db), "SELECT count(*), max(status) FROM runs")[0] == (1, "finished")
    assert query(Path(db), "SELECT max(epoch) FROM metrics")[0][0] == 1  # 0-based: 2 epochs
    code, out = celebcat("train", "landmarks", "--snapshot", "tiny", "--resume", str(run_dir),
                         "--lr", "0.5", "--db", db)  # fmt: skip
    assert code == 1 and "different lr" in out
    code, out = celebcat("train", "landmarks", "--snapshot", "tiny", "--preset", "huge",
                         "--db", db)
    assert code == 1 and "use one of small, seed, paper" in out

    run_id = runs[0]["run"]
    result = runner.invoke(cli.app, ["align", "--run", run_id, "--snapshot", "tiny",
                                     "--size", "64", "--db", db])
    assert result.exit_code == 0, result.output
    assert "aligned" in result.output and "mean NME" in result.output
    report = json.loads(runner.invoke(cli.app, [
        "report", "landmarks", "--run", run_id, "--by", "Male", "--json", "--db", db,
    ]).output)
    n = query(Path(db), "SELECT count(*) FROM landmark_predictions")[0][0]
    assert sum(row["images"] for row in report) == n > 0
    result = runner.invoke(cli.app, [
        "report", "landmarks", "--run", run_id, "--split", "test", "--per-landmark",
        "--ced", str(tmp_path / "ced.png"), "--json", "--db", db,
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ced.png").stat().st_size > 0 and "wrote" in result.output
    code, out = celebcat("report", "landmarks", "--run", run_id, "--split", "nope", "--db", db)
    assert code == 1 and "has no split 'nope'" in out
    code, out = celebcat("align", "--snapshot", "tiny", "--db", db)
    assert code == 1 and "--run is needed" in out


def test_demo_runs_the_whole_flow_and_keeps_its_catalog(tmp_path: Path) -> None:
    result = runner.invoke(cli.app, ["demo", "--ids", "20", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for step in ("1. synthesise", "2. ingest", "4. select and freeze", "5. train landmarks",
                 "6. align and report", "test NME by Eyeglasses"):
        assert step in result.output, step
    db = tmp_path / "celeba.duckdb"
    ((kind, status),) = query(db, "SELECT kind, status FROM runs")
    assert (kind, status) == ("landmarks", "finished")
    n = query(db, "SELECT count(*) FROM snapshot_images WHERE snapshot = 'demo'")[0][0]
    assert query(db, "SELECT count(*) FROM landmark_predictions")[0][0] == n > 0
    assert query(db, "SELECT count(*) FROM metrics WHERE split = 'test'")[0][0] == 4
    skipped = runner.invoke(cli.app, ["demo", "--ids", "20", "--no-train",
                                      "--out", str(tmp_path / "again")])  # fmt: skip
    assert skipped.exit_code == 0 and "5. train" not in skipped.output


def test_a_progress_bar_going_back_restarts_its_clock(monkeypatch) -> None:
    from rich.progress import Progress

    resets: list[dict] = []
    reset = Progress.reset
    monkeypatch.setattr(Progress, "reset", lambda self, task_id, **kw: (
        resets.append(kw), reset(self, task_id, **kw))[1])  # fmt: skip
    with cli._progress() as (task, _):
        update = task("training", 3)
        for done in (1, 2, 3):
            update(done, 3, label="epoch 1")
        assert resets == []  # forward: plain updates
        update(1, 3, label="epoch 2")  # the next epoch: a fresh bar and clock
    assert resets == [{"total": 3, "completed": 1, "description": "epoch 2"}]
