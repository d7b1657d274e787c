"""The celebcat CLI: thin commands, readable output, clear errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import celebcat, query
from typer.testing import CliRunner

import cli

runner = CliRunner()


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
    # square brackets are rich markup: an unescaped "[onnx]" vanishes from the help
    for path, extra in ((["identify"], "[onnx]"), (["report", "html"], "[plots]")):
        assert extra in runner.invoke(cli.app, [*path, "--help"]).output, path


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
    result = runner.invoke(
        cli.app, ["sql", "select count(*) n from attributes", "--json", "--db", str(catalog_db)]
    )
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


def test_a_wrong_db_creates_no_catalog(tmp_path: Path, small_celeba: Path) -> None:
    """Only ingest creates a catalog: a mistyped --db (or one in a group's subcommand)
    says there is none, and leaves no file behind."""
    missing = tmp_path / "missing.duckdb"
    db = tmp_path / "c.duckdb"
    assert celebcat("ingest", str(small_celeba), "--db", str(db))[0] == 0
    for args in (
        ("select", "--seed", "3"),
        ("snapshot", "create", "x"),
        ("views", "apply"),
        ("views",),
        ("runs",),
        ("runs", "import", "dlib"),
        ("params",),
    ):
        code, out = celebcat(*args, "--db", str(missing))
        assert code == 1 and "No catalog at" in out and "Traceback" not in out, (args, out)
        assert not missing.exists(), args
    code, out = celebcat("views", "apply", "--db", str(db))  # the group's own default unused
    assert code == 0, out


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
    result = runner.invoke(
        cli.app,
        [
            "select",
            "--n-ids",
            "6",
            "--min-images-per-id",
            "20",
            "--images-per-id",
            "20",
            "--split",
            "14/3/3",
            "--set",
            "holdout_ids=2",
            "--set",
            "query_ids=1",
            "--set",
            "distractor_ids=1",
            "--quota",
            "Male=0.5",
            "--db",
            db,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "selected 6 identities, 120 images" in " ".join(result.output.split())
    params = {
        p["name"]: p["value"]
        for p in json.loads(runner.invoke(cli.app, ["params", "--json", "--db", db]).output)
    }
    assert params["n_ids"] == 6 and params["train_per_id"] == 14
    assert runner.invoke(cli.app, ["snapshot", "create", "v1", "--db", db]).exit_code == 0
    listed = json.loads(runner.invoke(cli.app, ["snapshot", "list", "--json", "--db", db]).output)
    assert [s["name"] for s in listed] == ["v1"] and listed[0]["images"] == 120
    code, out = celebcat("snapshot", "create", "v1", "--db", db)
    assert code == 1 and "exists" in out
    stats = json.loads(
        runner.invoke(cli.app, ["stats", "--snapshot", "v1", "--json", "--db", db]).output
    )
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
    result = runner.invoke(
        cli.app,
        [
            "train",
            "landmarks",
            "--snapshot",
            "tiny",
            "--epochs",
            "1",
            "--max-batches",
            "2",
            "--batch-size",
            "4",
            "--out",
            str(tmp_path / "ckpt"),
            "--db",
            db,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "epoch 1: train loss" in result.output and "best val NME" in result.output
    runs = json.loads(runner.invoke(cli.app, ["runs", "--json", "--db", db]).output)
    assert [(r["kind"], r["status"], r["snapshot"]) for r in runs] == [
        ("landmarks", "finished", "tiny")
    ]
    assert list((tmp_path / "ckpt").rglob("best.pt"))
    # for scripts: the newest run of a kind, its id alone
    code, out = celebcat("runs", "--kind", "landmarks", "--latest", "--db", db)
    assert code == 0 and out.strip() == runs[0]["run"]
    code, out = celebcat("runs", "--kind", "recognition", "--latest", "--db", db)
    assert code == 1 and "No recognition runs" in out and "Traceback" not in out
    # --resume continues the run with its own settings; --epochs may extend it
    run_dir = next((tmp_path / "ckpt").iterdir())
    result = runner.invoke(
        cli.app,
        [
            "train",
            "landmarks",
            "--snapshot",
            "tiny",
            "--resume",
            str(run_dir),
            "--epochs",
            "2",
            "--db",
            db,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "epoch 2: train loss" in result.output and "epoch 1:" not in result.output
    assert query(Path(db), "SELECT count(*), max(status) FROM runs")[0] == (1, "finished")
    assert query(Path(db), "SELECT max(epoch) FROM metrics")[0][0] == 2  # as printed: 2 epochs
    code, out = celebcat(
        "train",
        "landmarks",
        "--snapshot",
        "tiny",
        "--resume",
        str(run_dir),
        "--lr",
        "0.5",
        "--db",
        db,
    )
    assert code == 1 and "different lr" in out
    code, out = celebcat("train", "landmarks", "--snapshot", "tiny", "--preset", "huge", "--db", db)
    assert code == 2 and "'huge' is not one of" in out and "small" in out  # a usage error

    run_id = runs[0]["run"]
    result = runner.invoke(
        cli.app, ["align", "--run", run_id, "--snapshot", "tiny", "--size", "112", "--db", db]
    )
    assert result.exit_code == 0, result.output
    assert "aligned" in result.output and "mean NME" in result.output
    result = runner.invoke(
        cli.app,
        [
            "report",
            "landmarks",
            "--run",
            run_id,
            "--by",
            "Male",
            "--json",
            "--db",
            db,
        ],
    )
    report = json.loads(result.stdout)
    assert "covers all" in result.stderr and "train" in result.stderr  # says it mixes splits
    n = query(Path(db), "SELECT count(*) FROM landmark_predictions")[0][0]
    assert sum(row["images"] for row in report) == n > 0
    result = runner.invoke(
        cli.app,
        [
            "report",
            "landmarks",
            "--run",
            run_id,
            "--split",
            "test",
            "--per-landmark",
            "--ced",
            str(tmp_path / "ced.png"),
            "--json",
            "--db",
            db,
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ced.png").stat().st_size > 0 and "wrote" in result.output
    code, out = celebcat("report", "landmarks", "--run", run_id, "--split", "nope", "--db", db)
    assert code == 1 and "has no split 'nope'" in out
    code, out = celebcat("align", "--snapshot", "tiny", "--db", db)
    assert code == 2 and "'--run': needed with --source predicted" in out


def test_a_progress_bar_going_back_restarts_its_clock(monkeypatch) -> None:
    from rich.progress import Progress

    resets: list[dict] = []
    reset = Progress.reset
    monkeypatch.setattr(
        Progress,
        "reset",
        lambda self, task_id, **kw: (resets.append(kw), reset(self, task_id, **kw))[1],
    )
    with cli._progress() as (task, _):
        update = task("training", 3)
        for done in (1, 2, 3):
            update(done, 3, label="epoch 1")
        assert resets == []  # forward: plain updates
        update(1, 3, label="epoch 2")  # the next epoch: a fresh bar and clock
    assert resets == [{"total": 3, "completed": 1, "description": "epoch 2"}]


# --- conventions: --version, -h, completion, parse-time choices ------------------------


def test_version_help_alias_and_completion() -> None:
    from catalog import __version__

    result = runner.invoke(cli.app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"celebcat {__version__}"
    for path in (["-h"], ["snapshot", "create", "-h"], ["select", "-h"]):
        result = runner.invoke(cli.app, path)
        assert result.exit_code == 0 and "Usage" in result.output, path
    assert "--install-completion" in runner.invoke(cli.app, ["--help"]).output


def test_choices_are_refused_when_parsed_before_any_work(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.duckdb")  # a command that started would say "No catalog"
    for args in (
        ["align", "--snapshot", "s", "--run", "r", "--template", "nope", "--db", missing],
        ["align", "--snapshot", "s", "--run", "r", "--source", "nope", "--db", missing],
        ["align", "--snapshot", "s", "--run", "r", "--size", "100", "--db", missing],
        ["cache", "build", "--snapshot", "s", "--source", "nope", "--db", missing],
        ["synth", str(tmp_path / "out"), "--layout", "nope"],
        ["train", "recognizer", "--snapshot", "s", "--source", "nope", "--db", missing],
        ["train", "recognizer", "--snapshot", "s", "--source", "aligned/nope/r", "--db", missing],
        ["train", "recognizer", "--snapshot", "s", "--source", "aligned/arcface/", "--db", missing],
        ["runs", "--kind", "nope", "--db", missing],
    ):
        result = runner.invoke(cli.app, args)
        assert result.exit_code == 2, args
        assert "Invalid value" in result.output and "No catalog" not in result.output, args
    assert not (tmp_path / "out").exists()


def test_choices_match_the_library() -> None:
    from catalog.cache import SOURCES as CACHE_SOURCES
    from catalog.synth import LAYOUTS
    from models.alignment.similarity import TEMPLATES
    from models.alignment.snapshot import SOURCES

    assert [c.value for c in cli.Layout] == list(LAYOUTS)
    assert [c.value for c in cli.Template] == list(TEMPLATES)
    assert [c.value for c in cli.LandmarkSource] == list(SOURCES)
    assert [c.value for c in cli.CropSource] == list(CACHE_SOURCES)


# --- errors: the library's are one line, a bug keeps its traceback ---------------------


def _main_with(setup: str, *args: str) -> tuple[int, str]:
    """cli.main() on ``args`` after running ``setup`` (Python) in the same process."""
    code = f"import sys\n{setup}\nimport cli\nsys.argv = ['celebcat', *{list(args)!r}]\ncli.main()"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": "", "PYTHONPATH": str(Path(cli.__file__).parent)},
    )
    return result.returncode, result.stdout + result.stderr


def test_argument_errors_of_library_calls_stay_one_line(tmp_path: Path) -> None:
    code, out = celebcat("synth", str(tmp_path / "s"), "--ids", "0")
    assert code == 1 and "Traceback" not in out and "ids must be at least 1" in out
    code, out = celebcat("ingest", str(tmp_path), "--workers", "0")
    assert code == 2 and "Traceback" not in out


def test_only_library_errors_become_one_line(catalog_db: Path) -> None:
    bug = (
        "import catalog.info\n"
        "def broken(*a, **k):\n    raise ValueError('a bug')\n"
        "catalog.info.list_tables = broken"
    )
    code, out = _main_with(bug, "tables", "--db", str(catalog_db))
    assert code == 1 and "Traceback" in out and "ValueError: a bug" in out
    known = bug.replace(
        "raise ValueError('a bug')",
        "from catalog.snapshots import SnapshotError; raise SnapshotError('told')",
    )
    code, out = _main_with(known, "tables", "--db", str(catalog_db))
    assert code == 1 and "Traceback" not in out and "Error: told" in out


def test_missing_extras_are_named_in_one_line(catalog_db: Path, tmp_path: Path) -> None:
    db = str(catalog_db)
    no_torch = "sys.modules['torch'] = None"
    for args in (
        ["train", "landmarks", "--snapshot", "s", "--db", db],
        ["align", "--snapshot", "s", "--source", "truth", "--db", db],
    ):
        code, out = _main_with(no_torch, *args)
        assert code == 1 and "Traceback" not in out, out
        assert "torch is not installed" in out and ".[torch]" in out, out
        assert len(out.strip().splitlines()) == 1 or "pip install" in out.splitlines()[0]
    no_plots = "sys.modules['matplotlib'] = None"
    for args in (
        ["stats", "--plots", str(tmp_path / "p"), "--db", db],
        ["report", "landmarks", "--run", "r", "--ced", str(tmp_path / "c.png"), "--db", db],
    ):
        code, out = _main_with(no_plots, *args)
        assert code == 1 and "Traceback" not in out, out
        assert "matplotlib is not installed" in out and ".[plots]" in out, out
    assert not (tmp_path / "p").exists()
    help_text = runner.invoke(cli.app, ["train", "--help"]).output
    assert ".[torch]" in help_text
    assert ".[plots]" in runner.invoke(cli.app, ["stats", "--help"]).output
    assert ".[plots]" in " ".join(
        runner.invoke(cli.app, ["report", "landmarks", "--help"]).output.split()
    )


# --- sql, tables, views -----------------------------------------------------------------


def test_sql_runs_several_statements_in_order(catalog_db: Path) -> None:
    db = str(catalog_db)
    result = runner.invoke(
        cli.app, ["sql", "select 1 as a; select 'x;y' as b", "--csv", "--db", db]
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["a", "1", "b", "x;y"]
    code, out = celebcat(
        "sql",
        "create table t (x int); insert into t values (7); select x from t",
        "--write",
        "--csv",
        "--db",
        db,
    )
    assert code == 0 and out.splitlines()[-2:] == ["x", "7"], out
    code, out = celebcat("sql", "select 1; drop table t", "--db", db)
    assert code == 1 and "Statement 2 of 2" in out and "--write" in out
    assert "Traceback" not in out
    code, out = celebcat("sql", "selec 1", "--db", db)
    assert code == 1 and "Traceback" not in out and "syntax error" in out.lower()


def test_tables_and_views_are_all_described(tmp_path: Path) -> None:
    from conftest import snapshot_catalog

    from catalog.cache import build_cache
    from catalog.results import start_run, write_landmark_predictions

    db = snapshot_catalog(tmp_path, ids=6, seed=1)
    build_cache("s", db, size=32, workers=1)
    import numpy as np

    run_id = start_run(db, "landmarks", {"snapshot": "s"}, "s")
    write_landmark_predictions(
        db, run_id, {"image_id": ["x.jpg"], "landmarks": np.zeros((1, 5, 2))}
    )
    rows = json.loads(
        runner.invoke(cli.app, ["tables", "--counts", "--json", "--db", str(db)]).output
    )
    names = {r["name"] for r in rows}
    assert {
        "runs",
        "metrics",
        "landmark_predictions",
        "crop_caches",
        "snapshots",
        "params",
        "quotas",
        "selection",
        "recognition_split",
    } <= names
    undescribed = [r["name"] for r in rows if not r["description"]]
    assert undescribed == []
    views = {
        v["view"]: v["selects"]
        for v in json.loads(runner.invoke(cli.app, ["views", "--json", "--db", str(db)]).output)
    }
    # the whole comment, not its first line
    assert views["recognition_split"].endswith("by its seeded image order.")


def test_every_table_the_library_creates_is_described() -> None:
    import re

    from catalog.formats import ANNOTATION_TABLES
    from catalog.info import DOCS

    root = Path(cli.__file__).parent
    created = set(ANNOTATION_TABLES) | {"images", "images_aligned"}
    for path in [*root.glob("catalog/**/*.py"), *root.glob("models/**/*.py")]:
        created |= set(
            re.findall(r"CREATE (?:OR REPLACE )?TABLE (?:IF NOT EXISTS )?(\w+)", path.read_text())
        )
    created -= {"table", "name"}  # f-string placeholders: {table}, {name}
    assert sorted(created - set(DOCS)) == []


# --- select and parameters ----------------------------------------------------------------


@pytest.fixture(scope="module")
def synth_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from catalog.ingest import ingest
    from catalog.synth import synthesize

    root = tmp_path_factory.mktemp("select")
    synthesize(root / "data", ids=40, seed=2, annotations_only=True)
    db = root / "c.duckdb"
    ingest(root / "data", db, scan_images=False)
    return db


def test_select_refuses_a_parameter_out_of_range(synth_catalog: Path) -> None:
    db = str(synth_catalog)
    before = runner.invoke(cli.app, ["params", "--json", "--db", db]).output
    code, out = celebcat("select", "--set", "box_shrink=5", "--db", db)
    assert code == 1 and "Traceback" not in out
    assert "box_shrink = 5 is out of range" in out and "0 <= box_shrink < 1" in out
    code, out = celebcat("select", "--set", "box_shrink", "--db", db)
    assert code == 1 and "expected NAME=NUMBER" in out
    assert runner.invoke(cli.app, ["params", "--json", "--db", db]).output == before
    params = {p["name"]: p for p in json.loads(before)}
    assert params["box_shrink"]["range"] == "a number with 0 <= box_shrink < 1"
    assert params["n_ids"]["default"] == 1000


def test_select_fit_holdout_and_json(synth_catalog: Path) -> None:
    from catalog.selection import fitted_params

    db = str(synth_catalog)
    result = runner.invoke(cli.app, ["select", "--fit", "--images-per-id", "10", "--db", db])
    assert result.exit_code == 0, result.output
    fitted = fitted_params(db, images_per_id=10)
    assert "fitted to the catalog: " in result.output
    assert f"n_ids={fitted['n_ids']}" in result.output
    params = {
        p["name"]: p["value"]
        for p in json.loads(runner.invoke(cli.app, ["params", "--json", "--db", db]).output)
    }
    assert {k: params[k] for k in fitted} == fitted
    # --holdout-ids alone: half queries, half distractors (used to be refused)
    result = runner.invoke(cli.app, ["select", "--holdout-ids", "2", "--json", "--db", db])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert (out["params"]["query_ids"], out["params"]["distractor_ids"]) == (1, 1)
    assert {s["split"]: s["identities"] for s in out["splits"]}["query"] == 1
    assert out["selected_identities"] == fitted["n_ids"]
    code, msg = celebcat("select", "--set", "query_ids=3", "--db", db)
    assert code == 1 and "--holdout-ids" in msg  # the message names the option to change


# --- --json on the commands that print a summary ------------------------------------------


def test_json_output_of_ingest_snapshot_export_and_cache(tmp_path: Path) -> None:
    from catalog.synth import synthesize

    synthesize(tmp_path / "data", ids=8, seed=5, workers=2, max_side=200)
    db = str(tmp_path / "c.duckdb")
    result = runner.invoke(cli.app, ["ingest", str(tmp_path / "data"), "--json", "--db", db])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # progress goes to stderr
    assert {t["table"]: t["rows"] for t in out["tables"]}["attributes"] > 0
    result = runner.invoke(cli.app, ["ingest", str(tmp_path / "data"), "--csv", "--db", db])
    assert result.stdout.splitlines()[0] == "table,rows,from"
    # --fit counts clean images under the options given with it (small synthetic faces)
    result = runner.invoke(
        cli.app,
        [
            "select",
            "--fit",
            "--images-per-id",
            "5",
            "--min-box",
            "10",
            "10",
            "--keep-blurry",
            "--db",
            db,
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("a", "b"):
        assert runner.invoke(cli.app, ["snapshot", "create", name, "--db", db]).exit_code == 0
    show = json.loads(
        runner.invoke(cli.app, ["snapshot", "show", "a", "--json", "--db", db]).output
    )
    assert show["name"] == "a" and show["params"]["images_per_id"] == 5
    assert [s["split"] for s in show["splits"]][:3] == ["train", "val", "test"]
    diff = json.loads(
        runner.invoke(cli.app, ["snapshot", "diff", "a", "b", "--json", "--db", db]).output
    )
    assert diff["only_a"] == [] and diff["only_b"] == [] and diff["a"] == "a"
    result = runner.invoke(
        cli.app,
        [
            "cache",
            "build",
            "--snapshot",
            "a",
            "--size",
            "32",
            "--workers",
            "1",
            "--db",
            db,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["size"] == 32
    result = runner.invoke(
        cli.app,
        [
            "export",
            "--snapshot",
            "a",
            str(tmp_path / "out"),
            "--workers",
            "1",
            "--db",
            db,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_images"] == show["n_images"]


def test_library_constants_live_in_one_place() -> None:
    import re

    root = Path(cli.__file__).parent
    sources = {
        p.relative_to(root).as_posix(): p.read_text()
        for p in [root / "cli.py", *root.glob("catalog/**/*.py"), *root.glob("models/**/*.py")]
    }
    assert [f for f, t in sources.items() if re.search(r"^DbArg\b.*=", t, re.M)] == [
        "catalog/db.py"
    ]
    # whether a table exists: catalog.db.has_table, not a duckdb_tables() query of its own
    asks = re.compile(r"duckdb_tables\(\)[^;]{0,120}?table_name (=|IN) ", re.S)
    assert [f for f, t in sources.items() if asks.search(t)] == []
    order = '"train", "val", "test", "query", "distractor"'
    assert [f for f, t in sources.items() if order in t] == ["catalog/formats.py"]
    assert "def select_cmd" in sources["cli.py"] and "split.split(" not in sources["cli.py"]


def test_choices_reach_the_library_as_plain_values(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import duckdb

    import models.alignment.snapshot

    db = tmp_path / "c.duckdb"  # --db must name a catalog that exists
    duckdb.connect(str(db)).close()

    seen: dict = {}

    def fake(run, snapshot, db, **kwargs):
        seen.update(kwargs)
        raise cli.UserError("stop")

    monkeypatch.setattr(models.alignment.snapshot, "align_snapshot", fake)
    runner.invoke(
        cli.app,
        ["align", "--snapshot", "s", "--run", "r", "--size", "224", "--template", "arcface"]
        + ["--db", str(db)],
    )
    assert (seen["size"], seen["template"], seen["source"]) == (224, "arcface", "predicted")
    assert type(seen["size"]) is int and type(seen["template"]) is str


def test_ctrl_c_at_any_moment_of_startup_is_one_word(tmp_path: Path, small_celeba: Path) -> None:
    """Ctrl-C from the first instant: while the imports run (a traceback from inside
    typing.py before), while typer parses (a silent exit 130 before), in the command:
    "Interrupted." and exit 130, or the command's own end."""
    import signal
    import subprocess
    import sys
    import time

    import cli

    db = tmp_path / "c.duckdb"
    assert celebcat("ingest", str(small_celeba), "--db", str(db))[0] == 0
    seen = set()
    for delay in [0.02 * k for k in range(1, 26)]:
        process = subprocess.Popen(
            [sys.executable, "-c", "import cli; cli.main()", "tables", "--db", str(db)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={"PYTHONPATH": str(Path(cli.__file__).parent), "COLUMNS": "200", "PATH": ""},
        )
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        frames = [line for line in err.splitlines() if line.lstrip().startswith('File "')]
        ours = [f for f in frames if any(p in f for p in ("cli.py", "/catalog/", "/models/"))]
        if err.startswith("Fatal Python error: init_") or (frames and not ours):
            # the interpreter's own start (init_import_site, a .pth file, loading
            # cli.py's code): no line of ours had run yet
            continue
        assert "Traceback" not in err, (delay, err)
        if process.returncode == 130:
            assert err.strip() == "Interrupted.", (delay, err)
        else:  # it had finished: the table is all there
            assert process.returncode in (0, -signal.SIGINT) and "attributes" in out, (delay, err)
        seen.add(process.returncode)
    assert 130 in seen


def test_ids_never_wrap_and_numbers_have_four_digits_at_80_columns(
    tmp_path: Path, small_celeba: Path
) -> None:
    """At 80 columns a run id (the string a user copies) stays on one line: the table
    folds other columns, or lists the rows one by one when even that cannot fit;
    numbers show 4 significant digits in tables, all of them in --json."""
    from catalog import results

    db = tmp_path / "c.duckdb"
    assert celebcat("ingest", str(small_celeba), "--db", str(db))[0] == 0
    long_id = "recognition-20261207-015706-f673-with-a-long-tail"
    results.register_runs(db, [(long_id, "recognition", {"pretrained": {"source": "x"}})])
    for columns in (80, 60, 200):
        code, out = celebcat("runs", "--db", str(db), columns=columns)
        assert code == 0, out
        assert any(long_id in line for line in out.splitlines()), (columns, out)
    query = "select 0.847222::DOUBLE as x"
    code, out = celebcat("sql", query, "--db", str(db), columns=80)
    assert "0.8472" in out and "0.847222" not in out
    code, out = celebcat("sql", query, "--json", "--db", str(db), columns=80)
    assert json.loads(out)[0]["x"] == 0.847222


def test_help_at_80_columns_shows_no_bool_for_flags_and_keeps_choices_whole() -> None:
    """Every --help: a flag shows no ``<bool>`` (it takes no value), and a list of
    choices wraps between them, never inside one (``tr iplet`` before)."""
    import typer.main

    def walk(group: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
        found = []
        for name, command in sorted(group.commands.items()):  # type: ignore[attr-defined]
            found.append((*path, name))
            if hasattr(command, "commands"):
                found += walk(command, (*path, name))
        return found

    screens = [(), *walk(typer.main.get_command(cli.app))]
    assert len(screens) > 40
    for path in screens:
        out = runner.invoke(cli.app, [*path, "--help"], terminal_width=80).output
        assert "<bool>" not in out, path
    out = runner.invoke(cli.app, ["train", "recognizer", "--help"], terminal_width=80).output
    for choice in ("arcface", "cosface", "triplet", "batch-hard"):
        assert choice in out, out
