"""``celebcat``: the command line over the catalog library.

Each command parses its options and calls one library function; presentation
(tables, CSV, JSON, progress bars, error messages) lives here. Library modules are
imported inside the commands so that ``celebcat --help`` stays fast and commands
that need no torch never import it.
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="celebcat",
    help="A SQL catalog for CelebA-format face data: ingest the files into DuckDB, "
    "query them, check them.\n\nExample: celebcat demo",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

DbOption = Annotated[
    Path | None,
    typer.Option(
        "--db",
        envvar="CELEBCAT_DB",
        help="Catalog file (default ./celeba.duckdb; also $CELEBCAT_DB).",
        show_default=False,
    ),
]
CsvOption = Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON rows instead of a table.")]


class UserError(Exception):
    """An error whose message is the whole story (no traceback)."""


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _cell(value: Any) -> str:
    """Table text for one value: floats to 6 significant digits (CSV/JSON keep all)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _print_rows(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    as_csv: bool = False,
    as_json: bool = False,
    title: str | None = None,
    max_rows: int | None = None,
) -> None:
    """Rows as a rich table (default), CSV or JSON on stdout."""
    if as_csv and as_json:
        raise UserError("Choose one of --csv and --json.")
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return
    if as_json:
        data = [{c: _jsonable(v) for c, v in zip(columns, row, strict=True)} for row in rows]
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(str(column), overflow="fold")
    shown = rows if max_rows is None else rows[:max_rows]
    for row in shown:
        table.add_row(*(_cell(v) for v in row))
    console = _console()
    console.print(table)
    if len(shown) < len(rows):
        console.print(f"... {len(rows) - len(shown)} more rows (use --csv or --json for all)")


ProgressTask = Callable[[str, int], Callable[[int, int], None]]


def _staged(task: ProgressTask) -> Callable[[str, int, int], None]:
    """progress(stage, done, total) for work in stages: one bar per stage."""
    bars: dict[str, Callable[[int, int], None]] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            bars[stage] = task(stage, total)
        bars[stage](done, total)

    return update


@contextmanager
def _progress() -> Iterator[tuple[ProgressTask, Any]]:
    """A rich progress display on stderr.

    Yields ``(task, console)``: ``task(label, total)`` adds a bar and returns its
    ``update(done, total, label=None)`` (a label replaces the bar's text; ``done``
    going back restarts the bar, clock included, as a new epoch does); print notes
    through ``console`` so they do not tear the live display.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=_console(stderr=True),
        transient=False,
    ) as progress:

        def task(label: str, total: int) -> Callable[[int, int], None]:
            task_id = progress.add_task(label, total=total or None)

            def update(done: int, total: int, label: str | None = None) -> None:
                text = {} if label is None else {"description": label}
                if done < progress.tasks[task_id].completed:  # a new round: a fresh clock
                    progress.reset(task_id, total=total, completed=done, **text)
                else:
                    progress.update(task_id, completed=done, total=total, **text)

            return update

        yield task, progress.console


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


@app.command()
def ingest(
    data_dir: Annotated[Path, typer.Argument(help="Folder with the CelebA files (any layout).")],
    images: Annotated[
        Path | None,
        typer.Option(help="In-the-wild image folder, if not img_celeba/ under DATA_DIR."),
    ] = None,
    no_images: Annotated[
        bool, typer.Option("--no-images", help="Load annotations only; skip the image scan.")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(help="Processes for the image scan (default: all cores).")
    ] = None,
    db: DbOption = None,
) -> None:
    """Load CelebA annotation files and the image index into the catalog.

    Reads the official txt files and/or the Kaggle CSVs found in DATA_DIR (and its
    Anno/, Eval/ or archive/ subfolders), indexes img_celeba/ and img_align_celeba/,
    and replaces the catalog's data in one transaction: on any error the catalog is
    left exactly as it was.

    Example: celebcat ingest ~/data/celeba --db celeba.duckdb
    """
    from rich.markup import escape

    from catalog.ingest import IngestProgress
    from catalog.ingest import ingest as run_ingest

    err = _console(stderr=True)
    with _progress() as (task, live):
        progress = IngestProgress(step=lambda m: live.print(f"[dim]{escape(m)}[/dim]"), scan=task)
        result = run_ingest(
            data_dir, db, images=images, scan_images=not no_images, workers=workers,
            progress=progress,
        )
    for note in result.notes:
        err.print(f"[yellow]note:[/yellow] {note}")
    rows = [(t, n, str(result.files.get(t, "")) or "-") for t, n in result.rows.items()]
    _print_rows(["table", "rows", "from"], rows, title=f"Catalog {result.db}")
    out = _console()
    total = sum(result.problems.values())
    summary = ", ".join(f"{k} {v}" for k, v in result.problems.items()) or "none"
    out.print(f"problems: {total} ({summary}){'; see `celebcat check`' if total else ''}")
    out.print(
        f"annotations loaded in {result.load_seconds:.2f} s"
        + (f", images scanned in {result.scan_seconds:.2f} s" if result.scan_seconds else "")
    )


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the synthetic CelebA into.")],
    ids: Annotated[int, typer.Option(help="Number of identities.")] = 50,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    layout: Annotated[str, typer.Option(help="Annotation layout: txt, kaggle or both.")] = "txt",
    max_side: Annotated[int, typer.Option(help="Longest image side in pixels.")] = 500,
    images: Annotated[
        int | None, typer.Option(help="Total images (default: CelebA's mean per identity).")
    ] = None,
    aligned: Annotated[
        bool, typer.Option(help="Also write 178x218 aligned crops to img_align_celeba/.")
    ] = False,
    annotations_only: Annotated[
        bool, typer.Option(help="Write only the annotation files (fast, for benchmarks).")
    ] = False,
    workers: Annotated[int | None, typer.Option(help="Processes (default: all cores).")] = None,
    style: Annotated[
        str,
        typer.Option(help="Population: hard (identity in the face's shape; hair, light and "
                     "colours vary per image) or easy (the first population)."),
    ] = "hard",
    preview: Annotated[
        Path | None,
        typer.Option(help="Also write a contact sheet (PNG) of one identity's images and "
                     "its look-alikes."),
    ] = None,
) -> None:
    """Write a synthetic CelebA: annotation files in the real formats and drawn faces.

    Identities, landmarks, boxes and attributes are known by construction.

    Example: celebcat synth /tmp/celeba-synth --ids 200 --seed 1
    Full-size annotations: celebcat synth /tmp/full --ids 10177 --annotations-only
    One person's photos: celebcat synth /tmp/s --ids 20 --preview /tmp/sheet.png
    """
    from catalog.synth import make_population, synthesize
    from catalog.synth.preview import write_contact_sheet

    with _progress() as (task, _):
        update = task("images" if not annotations_only else "annotations", 0)
        summary = synthesize(
            out, ids=ids, seed=seed, layout=layout, max_side=max_side, images=images,
            annotations_only=annotations_only, aligned=aligned, workers=workers,
            progress=update, style=style,
        )  # fmt: skip
    _console().print(
        f"wrote {summary.images} images of {summary.ids} identities to {summary.out} "
        f"in {summary.seconds:.1f} s ({', '.join(summary.files)})"
    )
    if preview is not None:
        pop = make_population(ids, seed, images, max_side, style)
        _console().print(f"contact sheet: {write_contact_sheet(preview, pop)}")


@app.command()
def tables(
    counts: Annotated[bool, typer.Option("--counts", help="Count the rows of each.")] = False,
    as_csv: CsvOption = False,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """List the catalog's tables and views.

    Example: celebcat tables --counts
    """
    from catalog.info import list_tables

    result = list_tables(db, counts=counts)
    _print_rows(result.columns, result.rows, as_csv=as_csv, as_json=as_json)


@app.command()
def schema(
    table: Annotated[str, typer.Argument(help="Table or view name.")],
    as_csv: CsvOption = False,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Show the columns of a table or view.

    Example: celebcat schema attributes
    """
    from catalog.info import table_schema

    doc, result = table_schema(table, db)
    if doc and not (as_csv or as_json):
        _console().print(doc)
    _print_rows(result.columns, result.rows, as_csv=as_csv, as_json=as_json)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="One SQL statement.")],
    as_csv: CsvOption = False,
    as_json: JsonOption = False,
    write: Annotated[
        bool, typer.Option("--write", help="Open the catalog writable (default read-only).")
    ] = False,
    max_rows: Annotated[
        int, typer.Option(help="Rows shown in table output (CSV/JSON print all).")
    ] = 100,
    db: DbOption = None,
) -> None:
    """Run SQL against the catalog (read-only unless --write).

    Example: celebcat sql "select Male, count(*) from attributes group by all"
    """
    from catalog.info import run_query

    result = run_query(query, db, write=write)
    if result.columns:
        _print_rows(
            result.columns, result.rows, as_csv=as_csv, as_json=as_json, max_rows=max_rows
        )


@app.command()
def check(
    as_csv: CsvOption = False,
    as_json: JsonOption = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit with status 1 if any warning was found.")
    ] = False,
    db: DbOption = None,
) -> None:
    """Print the cross-file problems found at ingest, grouped and counted.

    Every problem row is in the `problems` table for SQL, e.g.
    celebcat sql "select * from problems where check_name = 'bbox_outside_image'"

    Example: celebcat check
    """
    from catalog.info import problem_summary

    result = problem_summary(db)
    if not result.rows and not (as_csv or as_json):
        _console().print("No problems found.")
        return
    _print_rows(result.columns, result.rows, as_csv=as_csv, as_json=as_json)
    if strict and any(row[2] == "warning" for row in result.rows):
        raise typer.Exit(1)


@app.command()
def demo(
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the synthetic data and its catalog (default: a temp dir)."),
    ] = None,
    ids: Annotated[int, typer.Option(help="Identities to synthesise.")] = 40,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    train: Annotated[
        bool, typer.Option("--train/--no-train", help="Train, align and report (needs torch).")
    ] = True,
) -> None:
    """Run the whole flow on a synthetic CelebA made on the spot.

    Synthesises a small dataset, ingests it into a catalog next to it, prints the
    table counts and the problems summary, selects with parameters that fit the
    small dataset and freezes the selection as snapshot "demo". Then, where torch is
    installed, trains the small landmark model briefly (8 epochs, about 20 s on 2
    cores), aligns the snapshot with it and reports its test NME from the catalog.

    Example: celebcat demo --out ./celebcat-demo
    """
    from catalog.info import list_tables, problem_summary
    from catalog.ingest import IngestProgress
    from catalog.ingest import ingest as run_ingest
    from catalog.selection import fitted_params, select
    from catalog.snapshots import create as create_snapshot
    from catalog.synth import synthesize

    console = _console()
    temp = None
    if out is None:
        temp = tempfile.TemporaryDirectory(prefix="celebcat-demo-")
        out = Path(temp.name)
    try:
        data_dir, db = out / "data", out / "celeba.duckdb"
        console.rule("1. synthesise")
        with _progress() as (task, _):
            summary = synthesize(data_dir, ids=ids, seed=seed, progress=task("images", 0))
        console.print(f"{summary.images} images of {summary.ids} identities in {data_dir}")
        console.rule("2. ingest")
        with _progress() as (task, _):
            result = run_ingest(data_dir, db, progress=IngestProgress(scan=task))
        console.print(
            f"catalog {db}: annotations {result.load_seconds:.2f} s, "
            f"image scan {result.scan_seconds:.2f} s"
        )
        counts = list_tables(db, counts=True)
        _print_rows(counts.columns[:3], [r[:3] for r in counts.rows], title="tables")
        console.rule("3. check")
        problems = problem_summary(db)
        if problems.rows:
            _print_rows(problems.columns[:5], [r[:5] for r in problems.rows], title="problems")
        else:
            console.print("No problems found.")
        console.rule("4. select and freeze")
        params = fitted_params(db)
        summary = select(db, **params)
        console.print(
            f"{summary.selected_identities} identities x {params['images_per_id']} clean images "
            f"(of {summary.clean_images} clean); parameters: "
            + ", ".join(f"{k}={v}" for k, v in params.items())
        )
        _print_rows(
            ["split", "images", "identities"],
            [(k, n, i) for k, (n, i) in summary.splits.items()],
        )
        snap = create_snapshot("demo", db)
        console.print(f"snapshot demo: {snap.n_images} images, hash {snap.hash[:16]}")
        trained = train and _demo_train(console, db, out)
        if temp is None:
            console.print(
                f"\nExplore it: celebcat views --db {db}\n"
                f"            celebcat snapshot show demo --db {db}"
                + (f"\n            celebcat runs --db {db}" if trained else "")
            )
    finally:
        if temp is not None:
            temp.cleanup()


def _demo_train(console: Any, db: Path, out: Path) -> bool:
    """The demo's steps 5 and 6: a short landmark run, alignment, the test report;
    False (and a note) where torch is not installed."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        console.print("\ntorch is not installed: skipping training (pip install torch==2.13.0).")
        return False
    from catalog.reports import landmark_report
    from models.align_run import align_snapshot
    from models.train_landmarks import LandmarkTrainConfig, train_landmarks

    console.rule("5. train landmarks (briefly: celebcat train landmarks for a real run)")
    config = LandmarkTrainConfig(snapshot="demo", epochs=8, out_dir=str(out / "checkpoints"))
    run = train_landmarks(config, db, progress=lambda e: console.print(
        f"epoch {e['epoch'] + 1}: train loss {e['train_loss']:.5f}, val NME {e['val_nme']:.4f}"
    ))  # fmt: skip
    console.rule("6. align and report")
    with _progress() as (task, _):
        result = align_snapshot(run.run_id, "demo", db, size=112, progress=_staged(task))
    console.print(f"run {run.run_id}: {result.n_predictions} predictions and aligned crops "
                  f"({result.cache.source}) in the catalog")  # fmt: skip
    report = landmark_report(db, run.run_id, ["Eyeglasses"], split="test")
    _print_rows(report.columns, report.rows, title="test NME by Eyeglasses")
    return True


views_app = typer.Typer(
    help="The selection views of sql/ (one per file).\n\nExample: celebcat views",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(views_app, name="views")


@views_app.callback()
def views_list(
    ctx: typer.Context,
    as_csv: CsvOption = False,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """List the selection views with their row counts and what each selects.

    Example: celebcat views
    """
    if ctx.invoked_subcommand is not None:
        return
    from catalog.info import list_views

    result = list_views(db)
    _print_rows(result.columns, result.rows, as_csv=as_csv, as_json=as_json)


@views_app.command("apply")
def views_apply(db: DbOption = None) -> None:
    """(Re)create every view from sql/; running it twice changes nothing.

    Example: celebcat views apply
    """
    from catalog.views import apply_to

    names = apply_to(db)
    _console().print(f"applied {len(names)} views: {', '.join(names)}")


@app.command()
def params(as_csv: CsvOption = False, as_json: JsonOption = False, db: DbOption = None) -> None:
    """Show the selection parameters in force (change them with `celebcat select`).

    Example: celebcat params --json
    """
    from catalog.info import run_query

    result = run_query("SELECT name, value, description FROM params ORDER BY name", db)
    _print_rows(result.columns, result.rows, as_csv=as_csv, as_json=as_json)


@app.command("select")
def select_cmd(
    n_ids: Annotated[int | None, typer.Option(help="Identities to sample (default 1000).")] = None,
    images_per_id: Annotated[
        int | None, typer.Option(help="Clean images per identity (default 25).")
    ] = None,
    min_images_per_id: Annotated[
        int | None, typer.Option(help="Clean images an identity needs (default 25).")
    ] = None,
    min_box: Annotated[
        tuple[int, int] | None,
        typer.Option(help="Minimum face box W H in pixels (default 100 100).", show_default=False),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed (default 21).")] = None,
    keep_blurry: Annotated[
        bool | None, typer.Option("--keep-blurry/--drop-blurry", help="Keep Blurry images.")
    ] = None,
    holdout_ids: Annotated[
        int | None, typer.Option(help="Identities held out for open-set tests (default 200).")
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(help="Images per identity for train/val/test, e.g. 18/4/3.", metavar="T/V/T"),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any parameter as NAME=VALUE (see `celebcat params`)."),
    ] = None,
    quota: Annotated[
        list[str] | None,
        typer.Option(
            help="Attribute share to meet within 1 point, e.g. Male=0.5 (repeat; replaces "
            "the stored quotas)."
        ),
    ] = None,
    clear_quotas: Annotated[
        bool, typer.Option("--clear-quotas", help="Remove every stored quota.")
    ] = False,
    db: DbOption = None,
) -> None:
    """Set selection parameters and quotas; summarise the selection they give.

    Parameters and quotas are stored in the catalog and read by the views; anything
    the data cannot satisfy is refused, naming the parameter or quota and by how much.

    Example: celebcat select --n-ids 500 --min-box 80 80 --seed 7 --quota Male=0.5
    """
    from catalog.quotas import parse_quota
    from catalog.selection import select

    values: dict[str, float] = {}
    for name, value in (
        ("n_ids", n_ids), ("images_per_id", images_per_id),
        ("min_images_per_id", min_images_per_id), ("seed", seed), ("holdout_ids", holdout_ids),
    ):
        if value is not None:
            values[name] = value
    if min_box is not None:
        values["min_box_w"], values["min_box_h"] = min_box
    if keep_blurry is not None:
        values["drop_blurry"] = 0 if keep_blurry else 1
    if split is not None:
        parts = split.split("/")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise UserError(f"--split {split!r}: expected three whole numbers like 18/4/3")
        values["train_per_id"], values["val_per_id"], values["test_per_id"] = map(int, parts)
    for item in set_ or []:
        name, sep, value = item.partition("=")
        try:
            values[name.strip()] = float(value)
        except ValueError:
            raise UserError(f"--set {item!r}: expected NAME=NUMBER") from None
        if not sep:
            raise UserError(f"--set {item!r}: expected NAME=NUMBER")
    quotas = None
    if clear_quotas:
        quotas = {}
    if quota:
        quotas = dict(parse_quota(q) for q in quota)
    summary = select(db, quotas=quotas, **values)
    console = _console()
    console.print(
        f"clean images {summary.clean_images:,}; eligible identities "
        f"{summary.eligible_identities:,}; selected {summary.selected_identities:,} identities, "
        f"{summary.selected_images:,} images"
    )
    _print_rows(
        ["split", "images", "identities"],
        [(k, n, i) for k, (n, i) in summary.splits.items()],
        title="recognition split",
    )
    if summary.quotas:
        _print_rows(["quota", "target", "selected"], summary.quotas, title="quotas")
    _print_rows(
        ["attribute", "share_all", "share_selected", "diff_points"], summary.shift,
        title="largest attribute shifts (selection vs all)",
    )


@app.command()
def stats(
    snapshot: Annotated[
        str | None, typer.Option(help="Only this snapshot's images (default: everything).")
    ] = None,
    plots: Annotated[
        Path | None, typer.Option(help="Also write PNG charts into this folder.")
    ] = None,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Dataset statistics: attribute shares, images per identity, box and image sizes.

    Example: celebcat stats --snapshot base-v1 --plots plots/
    """
    from catalog.stats import compute_stats, write_plots

    result = compute_stats(db, snapshot)
    console = _console()
    if as_json:
        sys.stdout.write(json.dumps(result.as_dict(), indent=2) + "\n")
    else:
        for title, table in result.tables().items():
            _print_rows(table.columns, table.rows, title=title)
        for note in result.notes:
            console.print(f"[yellow]note:[/yellow] {note}")
    if plots is not None:
        try:
            written = write_plots(result, plots)
        except ImportError as exc:
            raise UserError(
                f"Plots need matplotlib ({exc}): pip install -e '.[plots]'"
            ) from None
        for path in written:
            _console(stderr=as_json).print(f"wrote {path}")


@app.command()
def export(
    snapshot: Annotated[str, typer.Argument(help="Snapshot to export.")],
    out: Annotated[Path, typer.Argument(help="Folder to write into (created if missing).")],
    crop: Annotated[
        bool, typer.Option("--crop", help="Crop each image to its face box and resize.")
    ] = False,
    size: Annotated[int, typer.Option(help="Output side in pixels with --crop.")] = 256,
    workers: Annotated[int | None, typer.Option(help="Parallel workers.")] = None,
    db: DbOption = None,
) -> None:
    """Write a snapshot's images (copied, or cropped to the face) and a labels.csv.

    Files go to OUT/<split>/<image_id>; labels.csv holds identity, label, split,
    attributes, box and landmarks (in the exported frame with --crop). An interrupted
    export continues where it stopped when run again.

    Example: celebcat export base-v1 exported/ --crop --size 256
    """
    from catalog.export import export_snapshot

    with _progress() as (task, _):
        result = export_snapshot(
            snapshot, out, db, crop=crop, size=size, workers=workers,
            progress=task("exporting", 0),
        )
    _console().print(
        f"{result.n_images} images of snapshot {result.snapshot} in {result.out} "
        f"({result.n_written} written, {result.n_skipped} already there) "
        f"in {result.seconds:.1f} s; labels in {result.labels}"
    )


cache_app = typer.Typer(
    help="Crop caches: a snapshot's face crops decoded once into a memory-mapped array."
    "\n\nExample: celebcat cache build base-v1 --size 256",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")


@cache_app.command("build")
def cache_build(
    snapshot: Annotated[str, typer.Argument(help="Snapshot to cache.")],
    size: Annotated[int, typer.Option(help="Crop side in pixels (the model input).")] = 256,
    source: Annotated[str, typer.Option(help="Crop source: bbox (face box).")] = "bbox",
    workers: Annotated[int | None, typer.Option(help="Decoding threads.")] = None,
    db: DbOption = None,
) -> None:
    """Decode and crop every image of a snapshot once; Datasets then read the crops.

    The cache is keyed by the snapshot's hash and the crop settings, so a changed
    snapshot never reads stale crops. Building it again does nothing.

    Example: celebcat cache build base-v1 --size 256
    """
    from catalog.cache import build_cache

    with _progress() as (task, _):
        info = build_cache(
            snapshot, db, size=size, source=source, workers=workers, progress=task("crops", 0)
        )
    what = f"built in {info.seconds:.1f} s" if info.built else "already built"
    _console().print(
        f"{info.n_images} crops of {info.size} px for {snapshot}: {what} ({info.path})"
    )


@cache_app.command("list")
def cache_list(as_csv: CsvOption = False, as_json: JsonOption = False, db: DbOption = None):
    """List the crop caches of the catalog.

    Example: celebcat cache list
    """
    from catalog.cache import list_caches

    machine = as_csv or as_json  # full paths there; file names in the table (one folder)
    rows = [
        (c.snapshot, c.hash[:12], c.source, c.size, c.n_images,
         round(c.path.stat().st_size / 2**20, 1) if c.path.exists() else None,
         str(c.path) if machine else c.path.name)
        for c in list_caches(db)
    ]
    _print_rows(["snapshot", "hash", "source", "size", "images", "MiB",
                 "path" if machine else "file"], rows, as_csv=as_csv, as_json=as_json)


@cache_app.command("drop")
def cache_drop(
    snapshot: str,
    size: Annotated[int | None, typer.Option(help="Only caches of this size.")] = None,
    source: Annotated[
        str | None,
        typer.Option(help="Only this source: bbox, aligned (every alignment) or one, "
                     "e.g. aligned/arcface/truth."),
    ] = None,
    db: DbOption = None,
) -> None:
    """Delete a snapshot's crop caches (files and index).

    Example: celebcat cache drop base-v1 --size 112 --source aligned/reference/truth
    """
    from catalog.cache import drop_cache

    dropped = drop_cache(snapshot, db, size=size, source=source)
    _console().print(f"dropped {len(dropped)} cache(s) of {snapshot}")


train_app = typer.Typer(
    help="Train models on a snapshot.\n\nExample: celebcat train landmarks --snapshot demo",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")

PRESETS = {"small": "hourglass_small", "seed": "hourglass_seed", "paper": "hourglass_paper"}


@train_app.command("landmarks")
def train_landmarks_cmd(
    ctx: typer.Context,
    snapshot: Annotated[str, typer.Option(help="Snapshot to train on (train/val splits).")],
    preset: Annotated[
        str, typer.Option(help="Model: small (CPU-friendly), seed (the reference), paper.")
    ] = "small",
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 30,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 16,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    schedule: Annotated[
        str, typer.Option(help="cosine (lr to lr/100 at the last epoch) or constant.")
    ] = "cosine",
    max_minutes: Annotated[
        float | None, typer.Option(help="Time budget: stop before an epoch likely to overrun it.")
    ] = None,
    max_batches: Annotated[
        int | None, typer.Option(help="Batches per epoch (short runs for demos).")
    ] = None,
    workers: Annotated[int, typer.Option(help="DataLoader workers.")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    out: Annotated[Path, typer.Option(help="Checkpoint folder.")] = Path("checkpoints"),
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue from a checkpoint or run folder (with its settings; "
                     "--epochs, --max-minutes, --workers, --out may change)."),
    ] = None,
    db: DbOption = None,
) -> None:
    """Train the stacked-hourglass landmark model; runs and metrics go to the catalog.

    The progress bar and the per-epoch lines go to stderr, the final summary to
    stdout; every epoch's figures are in the catalog (`celebcat sql "select * from
    metrics"`).

    Example: celebcat train landmarks --snapshot demo --preset small --epochs 5
    """
    from models.train_landmarks import LandmarkTrainConfig, train_landmarks

    if preset not in PRESETS:
        raise UserError(f"--preset {preset!r}: use one of {', '.join(PRESETS)}")
    given = dict(
        snapshot=snapshot, model=PRESETS[preset], epochs=epochs, batch_size=batch_size, lr=lr,
        schedule=schedule, max_minutes=max_minutes, max_batches_per_epoch=max_batches,
        num_workers=workers, seed=seed, out_dir=str(out),
    )
    config = LandmarkTrainConfig(**given)
    if resume is not None:
        # The run's own settings, with what was typed on this command line over them
        # (train_landmarks refuses a change to anything a resume may not change).
        from models.train_landmarks import load_checkpoint

        names = {"preset": "model", "max_batches": "max_batches_per_epoch",
                 "workers": "num_workers", "out": "out_dir"}  # fmt: skip
        typed = {
            names.get(p, p): given[names.get(p, p)] for p in ctx.params
            # by name: typer vendors its own click, whose enum is not click's
            if getattr(ctx.get_parameter_source(p), "name", None) == "COMMANDLINE"
            and names.get(p, p) in given
        }  # fmt: skip
        saved = load_checkpoint(resume)["config"]
        config = LandmarkTrainConfig(**{"schedule": "constant", **saved, **typed})
    with _progress() as (task, console):
        bar: list[Callable[..., None]] = []

        def on_batch(epoch: int, done: int, total: int, loss: float) -> None:
            if not bar:
                bar.append(task("training", total))
            bar[0](done, total, label=f"epoch {epoch + 1} loss {loss:.5f}")

        def report(e: dict[str, Any]) -> None:
            console.print(
                f"epoch {e['epoch'] + 1}: train loss {e['train_loss']:.5f}, val NME "
                f"{e['val_nme']:.4f} (argmax {e['val_nme_argmax']:.4f}), "
                f"best {e['best_val_nme']:.4f}"
            )

        result = train_landmarks(config, db, resume=resume, progress=report,
                                 on_batch=on_batch)  # fmt: skip
    console = _console()
    console.print(
        f"run {result.run_id}: {result.epochs_done} epochs, best val NME "
        f"{result.best_val_nme:.4f}, checkpoint {result.best_checkpoint}"
    )


@app.command()
def align(
    snapshot: Annotated[str, typer.Option(help="Snapshot whose images to align.")],
    run: Annotated[
        str | None, typer.Option(help="Landmark run id or checkpoint (not with --source truth).")
    ] = None,
    size: Annotated[int, typer.Option(help="Aligned crop side: 112, 224 or 256.")] = 112,
    template: Annotated[str, typer.Option(help="reference or arcface.")] = "reference",
    source: Annotated[
        str, typer.Option(help="predicted (the run's landmarks) or truth (a control).")
    ] = "predicted",
    batch_size: Annotated[int, typer.Option(help="Prediction batch size.")] = 32,
    workers: Annotated[
        int | None, typer.Option(help="Threads decoding and warping (default: one per CPU).")
    ] = None,
    db: DbOption = None,
) -> None:
    """Predict landmarks, write them to the catalog, and store aligned face crops.

    Predictions go to landmark_predictions (in-the-wild pixels, with NME against
    the annotations) and the test split's NME, argmax NME, failure rate and CED AUC
    to metrics. The aligned crops become the crop cache
    aligned/<template>/<run or truth> that FaceDataset(source="aligned") reads (the
    newest alignment of that size; `celebcat cache list` shows them all).

    Example: celebcat align --run landmarks-20261128-120000-ab12 --snapshot base-v1
    """
    from models.align_run import align_snapshot

    if source == "predicted" and run is None:
        raise UserError("--run is needed with --source predicted (or use --source truth)")
    with _progress() as (task, _):
        result = align_snapshot(
            run, snapshot, db, size=size, template=template, source=source,
            batch_size=batch_size, workers=workers, progress=_staged(task),
        )
    nme = f", mean NME {result.mean_nme:.4f}" if result.n_predictions else ""
    console = _console()
    console.print(
        f"aligned {result.n_images} images of {snapshot} to {size} px ({template} template, "
        f"{source} landmarks{nme}); crops {result.cache.source} in {result.cache.path}"
    )
    if result.test_metrics:
        m = result.test_metrics
        console.print(
            f"test split: NME {m['nme']:.4f} (argmax alone {m['nme_argmax']:.4f}), failure "
            f"rate {m['failure_rate']:.3f}, CED AUC@0.1 {m['ced_auc']:.3f}"
        )
    if result.n_box_fallback:
        console.print(
            f"[yellow]{result.n_box_fallback} faces had collapsed landmark predictions and "
            "were aligned from their face box instead.[/yellow]"
        )


report_app = typer.Typer(
    help="Error analysis as tables.\n\nExample: celebcat report landmarks --run RUN --by Male",
    no_args_is_help=True,
)
app.add_typer(report_app, name="report")


@report_app.command("landmarks")
def report_landmarks(
    run: Annotated[str, typer.Option(help="Landmark run id (after celebcat align).")],
    by: Annotated[str, typer.Option(help="Attributes to group by, comma separated.")] = "",
    split: Annotated[
        str | None, typer.Option(help="Only this split of the run's snapshot, e.g. test.")
    ] = None,
    per_landmark: Annotated[
        bool, typer.Option("--per-landmark", help="Add each landmark's mean NME.")
    ] = False,
    ced: Annotated[
        Path | None, typer.Option(help="Also write the CED plot (one curve per group) here.")
    ] = None,
    threshold: Annotated[float, typer.Option(help="NME above which a face failed.")] = 0.1,
    as_csv: CsvOption = False,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """NME, failure rate and CED AUC of a run's predictions, grouped by attributes.

    NME is normalised by the inter-ocular distance (true eye centres); the failure
    rate is the share above --threshold, the AUC is the area under the cumulative error
    distribution up to it, divided by it.

    Example: celebcat report landmarks --run RUN --split test --by Eyeglasses --ced ced.png
    """
    from catalog.reports import landmark_report, write_ced_plot

    groups = [b.strip() for b in by.split(",") if b.strip()]
    result = landmark_report(db, run, groups, threshold=threshold, split=split,
                             per_landmark=per_landmark)  # fmt: skip
    _print_rows(result.columns, result.rows, as_csv=as_csv, as_json=as_json)
    if ced is not None:
        path = write_ced_plot(db, run, ced, groups, split=split, limit=threshold)
        _console(stderr=True).print(f"wrote {path}")


@report_app.command("alignment")
def report_alignment(
    snapshot: Annotated[str, typer.Option(help="Snapshot whose alignments to measure.")],
    size: Annotated[int | None, typer.Option(help="Only alignments of this size.")] = None,
    as_csv: CsvOption = False,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """How far each alignment of a snapshot puts the true eye centres from the template's.

    One row per aligned crop cache (celebcat align), in output pixels: mean, 95th
    percentile, max, and the share within 2 px.

    Example: celebcat report alignment --snapshot base-v1 --size 112
    """
    from models.align_run import alignment_report

    result = alignment_report(db, snapshot, size)
    _print_rows(result.columns, result.rows, as_csv=as_csv, as_json=as_json)


@app.command()
def runs(as_csv: CsvOption = False, as_json: JsonOption = False, db: DbOption = None) -> None:
    """List training runs with their status and snapshot.

    Example: celebcat runs --json
    """
    from catalog.results import list_runs

    def minutes(r: Any) -> float | None:
        return None if r.ended_at is None else round(
            (r.ended_at - r.started_at).total_seconds() / 60, 1)  # fmt: skip

    rows = [
        (r.run_id, r.kind, r.status, r.snapshot, r.snapshot_hash[:12],
         r.started_at.replace(microsecond=0), minutes(r))
        for r in list_runs(db)
    ]  # fmt: skip
    _print_rows(["run", "kind", "status", "snapshot", "hash", "started (UTC)", "minutes"], rows,
                as_csv=as_csv, as_json=as_json)


snapshot_app = typer.Typer(
    help="Frozen selections: what a model was trained on.\n\nExample: celebcat snapshot list",
    no_args_is_help=True,
)
app.add_typer(snapshot_app, name="snapshot")


@snapshot_app.command("create")
def snapshot_create(
    name: Annotated[str, typer.Argument(help="A new snapshot name.")], db: DbOption = None
) -> None:
    """Freeze the current selection, its split and parameters under NAME.

    Example: celebcat snapshot create base-v1
    """
    from catalog.snapshots import create

    snap = create(name, db)
    _console().print(
        f"snapshot {snap.name}: {snap.n_images:,} images of {snap.n_identities:,} identities, "
        f"hash {snap.hash[:16]}"
    )


@snapshot_app.command("list")
def snapshot_list(as_csv: CsvOption = False, as_json: JsonOption = False, db: DbOption = None):
    """List snapshots.

    Example: celebcat snapshot list
    """
    from catalog.snapshots import list_snapshots

    rows = [
        (s.name, s.created_at, s.n_images, s.n_identities, s.hash[:16]) for s in list_snapshots(db)
    ]
    _print_rows(["name", "created_at", "images", "identities", "hash"], rows,
                as_csv=as_csv, as_json=as_json)


@snapshot_app.command("show")
def snapshot_show(name: str, db: DbOption = None) -> None:
    """Show a snapshot: hash, parameters and split sizes.

    Example: celebcat snapshot show base-v1
    """
    from catalog.snapshots import show

    snap, splits = show(name, db)
    console = _console()
    console.print(f"snapshot {snap.name}, created {snap.created_at} UTC\nhash {snap.hash}")
    _print_rows(["split", "images", "identities"], [(k, *v) for k, v in splits.items()])
    _print_rows(["parameter", "value"], sorted(snap.params.items()))
    if snap.quotas:
        _print_rows(["quota", "share"], sorted(snap.quotas.items()))


@snapshot_app.command("diff")
def snapshot_diff(a: str, b: str, db: DbOption = None) -> None:
    """Compare two snapshots: images only in one, split changes, parameter changes.

    Example: celebcat snapshot diff base-v1 base-v2
    """
    from catalog.snapshots import diff

    d = diff(a, b, db)
    console = _console()
    console.print(
        f"only in {a}: {len(d.only_a)}; only in {b}: {len(d.only_b)}; "
        f"split changed: {len(d.split_changed)}"
    )
    if d.params_changed:
        _print_rows(["parameter", a, b], [(k, *v) for k, v in d.params_changed.items()])
    for title, ids in ((f"only in {a}", d.only_a), (f"only in {b}", d.only_b)):
        if ids:
            more = f" ... (+{len(ids) - 10})" if len(ids) > 10 else ""
            console.print(f"{title}: {', '.join(ids[:10])}{more}")


@snapshot_app.command("drop")
def snapshot_drop(name: str, db: DbOption = None) -> None:
    """Delete a snapshot (the only way one changes).

    Example: celebcat snapshot drop base-v1
    """
    from catalog.snapshots import drop

    drop(name, db)
    _console().print(f"dropped snapshot {name}")


# ---------------------------------------------------------------------------
# Entry point: known errors become one red line, not a traceback
# ---------------------------------------------------------------------------


def _known_errors() -> tuple[type[BaseException], ...]:
    from catalog.annotations import AnnotationError
    from catalog.db import CatalogNotFoundError
    from catalog.ingest import IngestError

    # ValueError covers InfeasibleSelection, SnapshotError and QuotaError.
    known: list[type[BaseException]] = [
        UserError, AnnotationError, IngestError, CatalogNotFoundError, LookupError,
        FileNotFoundError, ValueError,
    ]
    if "catalog.cache" in sys.modules:
        from catalog.cache import CacheError

        known.append(CacheError)
    if "catalog.export" in sys.modules:
        from catalog.export import ExportError

        known.append(ExportError)
    if "duckdb" in sys.modules:
        import duckdb

        known.append(duckdb.Error)
    return tuple(known)


def _explain(exc: BaseException) -> str:
    text = str(exc)
    if "Could not set lock" in text or "Conflicting lock" in text:
        return (
            "The catalog is open in another process (a notebook or another celebcat?). "
            f"Close it, or use another --db.\n{text}"
        )
    return text


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        _console(stderr=True).print("[red]Interrupted; the catalog was left as it was.[/red]")
        sys.exit(130)
    except Exception as exc:
        if not isinstance(exc, _known_errors()):
            raise
        from rich.markup import escape

        _console(stderr=True).print(f"[red]Error:[/red] {escape(_explain(exc))}")
        sys.exit(1)


if __name__ == "__main__":
    main()
