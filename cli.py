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
        table.add_row(*("" if v is None else str(v) for v in row))
    console = _console()
    console.print(table)
    if len(shown) < len(rows):
        console.print(f"... {len(rows) - len(shown)} more rows (use --csv or --json for all)")


ProgressTask = Callable[[str, int], Callable[[int, int], None]]


@contextmanager
def _progress() -> Iterator[tuple[ProgressTask, Any]]:
    """A rich progress display on stderr.

    Yields ``(task, console)``: ``task(label, total)`` adds a bar and returns its
    ``update(done, total)``; print notes through ``console`` so they do not tear
    the live display.
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

            def update(done: int, total: int) -> None:
                progress.update(task_id, completed=done, total=total)

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
) -> None:
    """Write a synthetic CelebA: annotation files in the real formats and drawn faces.

    Identities, landmarks, boxes and attributes are known by construction.

    Example: celebcat synth /tmp/celeba-synth --ids 200 --seed 1
    Full-size annotations: celebcat synth /tmp/full --ids 10177 --annotations-only
    """
    from catalog.synth import synthesize

    with _progress() as (task, _):
        update = task("images" if not annotations_only else "annotations", 0)
        summary = synthesize(
            out, ids=ids, seed=seed, layout=layout, max_side=max_side, images=images,
            annotations_only=annotations_only, aligned=aligned, workers=workers,
            progress=update,
        )
    _console().print(
        f"wrote {summary.images} images of {summary.ids} identities to {summary.out} "
        f"in {summary.seconds:.1f} s ({', '.join(summary.files)})"
    )


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
) -> None:
    """Run the whole flow on a synthetic CelebA made on the spot.

    Synthesises a small dataset, ingests it into a catalog next to it, and prints the
    table counts and the problems summary.

    Example: celebcat demo --out ./celebcat-demo
    """
    from catalog.info import list_tables, problem_summary
    from catalog.ingest import IngestProgress
    from catalog.ingest import ingest as run_ingest
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
        if temp is None:
            console.print(f"\nExplore it: celebcat tables --counts --db {db}")
    finally:
        if temp is not None:
            temp.cleanup()


# ---------------------------------------------------------------------------
# Entry point: known errors become one red line, not a traceback
# ---------------------------------------------------------------------------


def _known_errors() -> tuple[type[BaseException], ...]:
    from catalog.annotations import AnnotationError
    from catalog.db import CatalogNotFoundError
    from catalog.ingest import IngestError

    known: list[type[BaseException]] = [
        UserError, AnnotationError, IngestError, CatalogNotFoundError, LookupError,
        FileNotFoundError, ValueError,
    ]
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
