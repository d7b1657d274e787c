"""``celebcat``: the command line over the catalog library.

Each command parses its options and calls one library function; presentation
(tables, CSV, JSON, progress bars, error messages) lives here. Library modules are
imported inside the commands so that ``celebcat --help`` stays fast and commands
that need no torch never import it.
"""

from __future__ import annotations

import _signal  # built in: its import runs no Python code a Ctrl-C could land in
import os
import sys


def _interrupted_while_starting(signum: int, frame: Any) -> None:
    """Ctrl-C before the commands exist (the imports below take a few tenths of a
    second) or after one ended (the interpreter shutting down): one word and exit 130,
    not a traceback from inside an import; what was printed is flushed first."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken stream: nothing more to save
            pass
    sys.stderr.write("Interrupted.\n")
    sys.stderr.flush()
    os._exit(130)


_signal.signal(_signal.SIGINT, _interrupted_while_starting)

import csv  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402  (its enums take a moment to build: after the handler)
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from enum import Enum  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated, Any  # noqa: E402

import typer  # noqa: E402
import typer.core  # noqa: E402

#: What the commands that need an optional dependency say in --help (rich markup: "\\["
#: is a literal bracket).
NEEDS_TORCH = "Needs torch: pip install torch==2.13.0 && pip install -e '.\\[torch]'."
NEEDS_PLOTS = "Needs matplotlib: pip install -e '.\\[plots]'."


class _Interrupted(Exception):
    """Ctrl-C, carried past typer (which would turn it into a silent exit 130) to
    :func:`main`; the message is the library's where it says what the interrupt left
    (``IngestInterrupted``), else a plain "Interrupted."."""


class _Group(typer.core.TyperGroup):
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except BaseException as exc:
            from catalog.db import is_interrupt  # light: no duckdb import

            if not is_interrupt(exc):
                raise
            # DuckDB reports a Ctrl-C that lands inside a statement as a RuntimeError
            message = str(exc) if isinstance(exc, KeyboardInterrupt) else ""
            raise _Interrupted(message or "Interrupted.") from exc


def _flags_take_no_value() -> None:
    """typer (0.29) shows every flag's type in --help as ``<bool>``, as if it took a
    value: a flag (``--json``, ``--fit``) shows none; and folds a list of choices
    inside a word (``<ce|arcface|cosface|tr iplet>``): spaced, it wraps between them."""
    option = getattr(typer.core, "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if option is None or shown is None or getattr(shown, "_celebcat", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False):
            return None
        text = shown(self, ctx)
        return text.replace("|", " | ") if isinstance(text, str) else text

    display_type_rich._celebcat = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich


_flags_take_no_value()


def _paragraphs_rewrap() -> None:
    """typer (0.29) keeps a docstring's line breaks inside a paragraph and then wraps
    the lines again to the terminal, so a line wrapped by hand at 88 columns leaves
    its last word alone on a line at 80. Join each paragraph's lines (a line starting
    ``- `` starts a list item, a line after one ending ``:`` starts anew, a paragraph
    starting ``Example`` or ``\\b`` is kept as written) and let the terminal wrap
    them once."""
    try:
        import typer.rich_utils as rich_utils
    except ImportError:  # typer without rich: click wraps paragraphs itself
        return
    fix = getattr(rich_utils, "_fix_linebreaks", None)
    if fix is None or getattr(fix, "_celebcat", False):
        return

    def joined(paragraph: str) -> str:
        if paragraph.startswith(("\b", "Example")):  # examples: one a line
            return paragraph
        out: list[str] = []
        for line in paragraph.splitlines():
            if out and not line.lstrip().startswith("- ") and not out[-1].endswith(":"):
                out[-1] = f"{out[-1]} {line.strip()}"
            else:
                out.append(line.rstrip())
        return "\n".join(out)

    def fix_linebreaks(paragraphs: list[str], markup_mode: Any) -> str:
        return fix([joined(p) for p in paragraphs], markup_mode)

    fix_linebreaks._celebcat = True  # type: ignore[attr-defined]
    rich_utils._fix_linebreaks = fix_linebreaks


_paragraphs_rewrap()

app = typer.Typer(
    name="celebcat",
    cls=_Group,
    help="A SQL catalog for CelebA-format face data: ingest the files into DuckDB, "
    "query them, check them.\n\n"
    "Optional extras: \\[torch] for train, align and demo's training; \\[plots] for "
    "stats --plots and report landmarks --ced.\n\nExample: celebcat demo",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from catalog import __version__

        typer.echo(f"celebcat {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


def _existing_catalog(value: Path | None) -> Path | None:
    """--db of every command but ingest: the catalog must exist, or the command would
    leave an empty one behind under a name no one chose (a mistyped path)."""
    from catalog.db import CatalogNotFoundError, resolve_db

    path = resolve_db(value)
    if not path.exists():
        raise CatalogNotFoundError(
            f"No catalog at {path}. Create one with `celebcat ingest DIR` (or point --db / "
            "$CELEBCAT_DB at an existing catalog)."
        )
    return value


def _db_option(text: str, callback: Callable[..., Any] | None = None) -> Any:
    """A --db option: the catalog file, ``$CELEBCAT_DB`` too."""
    return Annotated[
        Path | None,
        typer.Option(
            "--db", envvar="CELEBCAT_DB", help=text, show_default=False, callback=callback
        ),
    ]


_DB_HELP = "Catalog file (default ./celeba.duckdb; also $CELEBCAT_DB)."
#: The catalog a command reads or changes (it must exist: only ingest creates one).
DbOption = _db_option(_DB_HELP, _existing_catalog)
#: A group's own --db (``celebcat views``, ``celebcat runs``): parsed before its
#: subcommand's, so it is checked only where the group itself runs.
GroupDbOption = _db_option(_DB_HELP)
#: The catalog ingest writes (created where there is none).
NewDbOption = _db_option(
    "Catalog file, created if missing (default ./celeba.duckdb; also $CELEBCAT_DB)."
)
CsvOption = Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON rows instead of a table.")]

# Options several commands share: workers (the trainers, embed, eval), seed (the
# trainers, demo), detector (identify, report html), landmarks and template (identify,
# gallery add), device (identify, gallery add, train detector), skip-bad (export, align,
# cache build; embed and eval keep their shorter help).
WorkersOption = Annotated[int, typer.Option(help="DataLoader workers.", min=0)]
SeedOption = Annotated[int, typer.Option(help="Random seed.")]
DetectorOption = Annotated[
    str,
    typer.Option(
        "--detector",
        help="haar (OpenCV's cascade, frontal faces), catalog (the "
        "catalog's boxes, by file name), run:<detector run> (celebcat train "
        "detector) or onnx:<model.onnx> (needs the \\[onnx] extra).",
    ),
]
StrangersOption = Annotated[
    Path | None,
    typer.Option(
        help="A folder of people NOT in the gallery (one subfolder per person) to "
        "calibrate its unknown-face threshold on; a snapshot gallery defaults to the "
        "snapshot's held-out people not in it."
    ),
]
LandmarksOption = Annotated[
    str | None,
    typer.Option(
        "--landmarks",
        help="Landmark run for the alignment (default: the one the "
        "recognizer's aligned crops were made with).",
    ),
]
TemplateOption = Annotated[
    str | None,
    typer.Option(
        "--template", help="Alignment template, reference or arcface (default: the recognizer's)."
    ),
]


def _device(value: str) -> str:
    """--device: cpu, auto, cuda or cuda:N, and CUDA only where there is a GPU."""
    import re

    if value in ("cpu", "auto"):
        return value
    if not re.fullmatch(r"cuda(:\d{1,2})?", value or ""):
        raise typer.BadParameter(f"{value!r}: use cpu, cuda, cuda:N or auto")
    import torch

    if not torch.cuda.is_available():
        raise typer.BadParameter(f"{value!r}: this machine has no CUDA device (use cpu or auto)")
    return value


#: Every command that runs a model takes it; auto: a GPU where there is one, else the CPU.
DeviceOption = Annotated[
    str, typer.Option(help="cpu, cuda, cuda:N or auto (a GPU if any).", callback=_device)
]
SkipBadOption = Annotated[
    bool,
    typer.Option(
        "--skip-bad",
        help="Leave out images that cannot be read (named, with "
        "why, in the output) instead of stopping.",
    ),
]


class UserError(Exception):
    """An error whose message is the whole story (no traceback)."""


def _bad_usage(message: str, *options: str) -> typer.BadParameter:
    """A bad value or combination of options: a usage error (exit 2, the usage line
    and the message in one style), like every value the parser itself refuses."""
    return typer.BadParameter(message, param_hint=" / ".join(f"'{o}'" for o in options) or None)


# --- choices, checked when the command line is parsed (before any work starts) --------


class _Choice(str, Enum):
    def __str__(self) -> str:
        return str(self.value)


def _plain(value: Any) -> Any:
    """A choice's plain value (str, or int for an _IntChoice); anything else as it is."""
    if isinstance(value, _Choice):
        return int(value.value) if isinstance(value, _IntChoice) else value.value
    return value


def _plain_choices(command: Callable[..., Any]) -> Callable[..., Any]:
    """Hand the command plain values for its choice options, so the library never sees
    the Enum members typer parses them into."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        return command(*map(_plain, args), **{k: _plain(v) for k, v in kwargs.items()})

    return run


class _IntChoice(_Choice):
    pass


class Template(_Choice):
    reference = "reference"
    arcface = "arcface"
    dlib = "dlib"


# --- helpers the commands share: errors, output, progress ---------------------------


def _user_errors(*types: type[BaseException]) -> Callable[[Callable[..., Any]], Any]:
    """For commands over library code that still raises builtin errors for bad input:
    those (and only in that command) become one red line instead of a traceback."""

    def wrap(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return command(*args, **kwargs)
            except types as exc:
                raise UserError(str(exc)) from exc

        return run

    return wrap


def _needs(module: str) -> None:
    """Stop with one line naming what to install when ``module`` is missing."""
    from catalog.errors import require

    require(module)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    # markup off: what is printed is data (file names, ids, SQL results), never markup;
    # the few styled words are Text (_styled)
    return Console(stderr=stderr, highlight=False, markup=False)


def _styled(*parts: str | tuple[str, str]) -> Any:
    """One line of plain strings and ``(text, style)`` pairs, none read as markup."""
    from rich.text import Text

    return Text.assemble(*parts)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _cell(value: Any) -> str:
    """Table text for one value: floats to 4 significant digits (CSV/JSON keep all)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


#: Columns whose values a user copies (ids, names, paths): never wrapped in a table.
KEY_COLUMNS = frozenset(
    {"run", "run_id", "image_id", "name", "gallery", "snapshot", "path", "file", "source",
     "crops", "table", "view", "image", "person", "identity_name", "detector"}
)  # fmt: skip


def _print_rows(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    as_csv: bool = False,
    as_json: bool = False,
    title: str | None = None,
    max_rows: int | None = None,
    labels: bool = False,
) -> None:
    """Rows as a rich table (default), CSV or JSON on stdout. ``labels``: the first
    column names the rows, and is never folded (the others fold to fit)."""
    if as_csv and as_json:
        raise _bad_usage("choose one of them", "--csv", "--json")
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

    shown = rows if max_rows is None else rows[:max_rows]
    cells = [[_cell(v) for v in row] for row in shown]
    names = [str(c) for c in columns]
    keys = [i for i, c in enumerate(names) if c in KEY_COLUMNS or (labels and i == 0)]
    widest = {i: max([len(names[i]), *(len(r[i]) for r in cells)]) for i in keys}
    # a header folds at its longest word at the narrowest, never inside one
    words = [max(len(w) for w in (c.split() or [""])) for c in names]
    console = _console()
    needed = sum(widest.values()) + sum(w for i, w in enumerate(words) if i not in widest)
    if len(names) > 1 and needed + 3 * len(names) + 1 > console.width:
        _print_records(console, names, cells, title)  # too narrow for a table: one by one
    else:
        table = Table(title=title, title_justify="left")
        for i, column in enumerate(names):
            table.add_column(
                column, overflow="fold", no_wrap=i in widest, min_width=widest.get(i, words[i])
            )
        for row in cells:
            table.add_row(*row)
        console.print(table)
    if len(shown) < len(rows):
        console.print(f"... {len(rows) - len(shown)} more rows (use --csv or --json for all)")


def _print_records(
    console: Any, names: Sequence[str], cells: Sequence[Sequence[str]], title: str | None
) -> None:
    """Rows one under the other, ``column: value`` a line: what a terminal too narrow
    for the table gets, so that no id is broken over lines."""
    if title:
        console.print(title)
    pad = max(len(n) for n in names)
    for k, row in enumerate(cells):
        if k:
            console.print()
        for name, value in zip(names, row, strict=True):
            console.print(f"{name.rjust(pad)}: {value}", overflow="fold")


#: --csv of a command that prints several tables: one long table, a row per cell.
TIDY_COLUMNS = ("table", "row", "column", "value")


def _print_tables_csv(tables: dict[str, tuple[Sequence[str], Sequence[Sequence[Any]]]]) -> None:
    """Several tables as one CSV: ``table, row, column, value`` (row counts from 0), which
    pandas pivots back (``df[df.table == T].pivot(index="row", columns="column")``)."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(TIDY_COLUMNS)
    for title, (columns, rows) in tables.items():
        for n, row in enumerate(rows):
            writer.writerows((title, n, c, v) for c, v in zip(columns, row, strict=True))


def _fields(result: Any) -> dict[str, Any]:
    """A result dataclass as a dict, for --json."""
    import dataclasses

    return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}


def _print_json(data: Any) -> None:
    """One JSON document on stdout (paths, dates and the like as strings)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


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
        TextColumn("{task.description}", markup=False),
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


def _print_skipped(console: Any, skipped: Sequence[Any], where: str) -> None:
    """The images a --skip-bad run left out, with why (the first few; all in ``where``)."""
    if not skipped:
        return

    console.print(
        _styled((f"skipped {len(skipped)} images that cannot be read ({where}):", "yellow"))
    )
    for bad in skipped[:10]:
        console.print(f"  {bad.image_id}: {bad.reason}: {bad.detail}")
    if len(skipped) > 10:
        console.print(f"  ... and {len(skipped) - 10} more")


@contextmanager
def _pipeline_one_line() -> Iterator[None]:
    """The pipeline's bad-input errors (not an image, no such gallery or run, a run
    never evaluated, a run of another kind, ...) as one red line: UserError, whatever
    main() knows. The library checks arguments with ValueError (and its subclasses:
    PipelineError, DetectorError, GalleryError, CheckpointError, SnapshotError ...)."""
    try:
        yield
    except UserError:
        raise
    except ValueError as exc:
        raise UserError(str(exc)) from exc


# ---------------------------------------------------------------------------
# Commands, in the order `celebcat --help` lists them: the top-level ones, then
# the sub-apps, each with the options and helpers only it uses
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
        int | None,
        typer.Option(help="Processes for the image scan (default: all cores).", min=1),
    ] = None,
    allow_empty: Annotated[
        bool,
        typer.Option(
            "--allow-empty",
            help="Load an annotation file that has no rows (only "
            "its header) as an empty table, instead of refusing it.",
        ),
    ] = False,
    as_csv: CsvOption = False,
    as_json: JsonOption = False,
    db: NewDbOption = None,
) -> None:
    """Load CelebA annotation files and the image index into the catalog.

    Reads the official txt files and/or the Kaggle CSVs found in DATA_DIR (and its
    Anno/, Eval/ or archive/ subfolders), indexes img_celeba/ and img_align_celeba/,
    and replaces the catalog's data in one transaction: on any error the catalog is
    left exactly as it was.

    Example: celebcat ingest ~/data/celeba --db celeba.duckdb
    """

    from catalog.ingest import IngestProgress
    from catalog.ingest import ingest as run_ingest

    err = _console(stderr=True)
    with _progress() as (task, live):
        progress = IngestProgress(step=lambda m: live.print(_styled((m, "dim"))), scan=task)
        result = run_ingest(
            data_dir,
            db,
            images=images,
            scan_images=not no_images,
            workers=workers,
            progress=progress,
            allow_empty=allow_empty,
        )
    for note in result.notes:
        err.print(_styled(("note:", "yellow"), " ", note))
    rows = [(t, n, str(result.files.get(t, "")) or "-") for t, n in result.rows.items()]
    if as_json:
        _print_json(
            {
                "db": str(result.db),
                "data_dir": str(result.data_dir),
                "tables": [{"table": t, "rows": n, "from": f} for t, n, f in rows],
                "problems": result.problems,
                "notes": result.notes,
                "load_seconds": result.load_seconds,
                "scan_seconds": result.scan_seconds,
            }
        )
        return
    _print_rows(["table", "rows", "from"], rows, title=f"Catalog {result.db}", as_csv=as_csv)
    if as_csv:
        return
    out = _console()
    total = sum(result.problems.values())
    summary = ", ".join(f"{k} {v}" for k, v in result.problems.items()) or "none"
    out.print(f"problems: {total} ({summary}){'; see `celebcat check`' if total else ''}")
    out.print(
        f"annotations loaded in {result.load_seconds:.2f} s"
        + (f", images scanned in {result.scan_seconds:.2f} s" if result.scan_seconds else "")
    )


class Layout(_Choice):
    txt = "txt"
    kaggle = "kaggle"
    both = "both"


@app.command()
@_user_errors(ValueError)  # catalog.synth checks its arguments with ValueError
@_plain_choices
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the synthetic CelebA into.")],
    ids: Annotated[int, typer.Option(help="Number of identities.")] = 50,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    layout: Annotated[Layout, typer.Option(help="Annotation layout.")] = Layout.txt,
    max_side: Annotated[int, typer.Option(help="Longest image side in pixels.")] = 500,
    images: Annotated[
        int | None, typer.Option(help="Total images (default: CelebA's mean per identity).")
    ] = None,
    aligned: Annotated[
        bool,
        typer.Option("--aligned", help="Also write 178x218 aligned crops to img_align_celeba/."),
    ] = False,
    annotations_only: Annotated[
        bool,
        typer.Option(
            "--annotations-only", help="Write only the annotation files (fast, for benchmarks)."
        ),
    ] = False,
    workers: Annotated[
        int | None, typer.Option(help="Processes (default: all cores).", min=1)
    ] = None,
    style: Annotated[
        str,
        typer.Option(
            help="Population: hard (identity in the face's shape; hair, light and "
            "colours vary per image) or easy (the first population)."
        ),
    ] = "hard",
    preview: Annotated[
        Path | None,
        typer.Option(
            help="Also write a contact sheet (PNG) of one identity's images and its look-alikes."
        ),
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
            out,
            ids=ids,
            seed=seed,
            layout=layout,
            max_side=max_side,
            images=images,
            annotations_only=annotations_only,
            aligned=aligned,
            workers=workers,
            progress=update,
            style=style,
        )
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
    query: Annotated[str, typer.Argument(help="SQL: one statement, or several separated by ';'.")],
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

    Several statements run in order, each result printed after the one before (a
    statement that fails stops the rest, naming which one).

    Example: celebcat sql "select Male, count(*) from attributes group by all"
    """
    from catalog.info import run_statements

    for result in run_statements(query, db, write=write):
        if result.columns:
            _print_rows(
                result.columns, result.rows, as_csv=as_csv, as_json=as_json, max_rows=max_rows
            )


@app.command()
def check(
    as_csv: CsvOption = False,
    as_json: JsonOption = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit with status 1 if any error or warning was found.")
    ] = False,
    decode: Annotated[
        bool,
        typer.Option(
            "--decode",
            help="Decode every annotated image first (slow: minutes for "
            "CelebA); failures become image_decode_error problems.",
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(help="Decoding threads with --decode (default: one per CPU).", min=1),
    ] = None,
    db: DbOption = None,
) -> None:
    """Print the cross-file problems found at ingest, grouped and counted.

    Severity error marks an image the catalog cannot use (missing, unreadable, cut
    short, too large, a link out of the image root, or failing --decode): selections
    and snapshots leave it out. Ingest checks headers and file ends; --decode decodes
    every image too (run it again after each ingest, which starts the table afresh).

    Every problem row is in the `problems` table for SQL, e.g.
    celebcat sql "select * from problems where check_name = 'bbox_outside_image'"

    Example: celebcat check --decode
    """
    from catalog.info import problem_summary

    if decode:
        from catalog.problems import check_decode

        with _progress() as (task, _):
            found = check_decode(db, workers=workers, progress=task("decoding", 0))
        rate = found.n_images / found.seconds if found.seconds else 0.0
        _console(stderr=True).print(
            f"decoded {found.n_images:,} images in {found.seconds:.1f} s ({rate:.0f}/s): "
            f"{found.n_errors:,} failed"
        )
    result = problem_summary(db)
    if not result.rows and not (as_csv or as_json):
        _console().print("No problems found.")
        return
    _print_rows(result.columns, result.rows, as_csv=as_csv, as_json=as_json)
    if strict and any(row[2] in ("error", "warning") for row in result.rows):
        raise typer.Exit(1)


def _demo_plan_help() -> str:
    from models.pipeline.demo import PLANS  # light: the demo imports its steps lazily

    d, f = PLANS["default"], PLANS["full"]
    return f"Identities to synthesise (default {d.ids}; with --full {f.ids})."


@app.command()
def demo(
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for the synthetic data, its catalog, the checkpoints and the "
            "report (an earlier demo's data, catalog, snapshot, gallery and report "
            "there are replaced)."
        ),
    ] = Path("celebcat-demo"),
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="More identities and epochs: figures closer to what "
            "the models reach (about 10 minutes on 2 idle cores).",
        ),
    ] = False,
    ids: Annotated[int | None, typer.Option(help=_demo_plan_help(), show_default=False)] = None,
    seed: SeedOption = 0,
    train: Annotated[
        bool,
        typer.Option(
            "--train/--no-train",
            help="Train, evaluate, identify and write the report (needs torch; "
            "without it the demo stops at the snapshot).",
        ),
    ] = True,
) -> None:
    """Run the whole flow on a synthetic CelebA made on the spot; write its report.

    Synthesises a small CelebA, ingests it into a catalog next to it, prints
    the table counts and the problems found, selects with parameters that fit
    it and freezes the selection as snapshot "demo" (--no-train stops there,
    in under 30 s). Then, where torch is installed: trains the small landmark
    model, aligns the snapshot with it (64 px crops), trains an ArcFace
    recognizer on the CPU backbone, evaluates it and the recognizer shipped
    with celebcat (test and open-set figures, beside the reference's), trains
    a small face detector and measures it and the one shipped with celebcat on
    group photos of the test people, builds a gallery of the held-out query
    people (its threshold measured on the other held-out people) and
    identifies the faces of a synthetic group photo (some people in the
    gallery, some not) with the recognizer and the detector that measured
    better. Prints each step's
    figures and times, and writes one self-contained HTML page:
    OUT/report/index.html.

    Measured: under 2.5 minutes on an idle 2-core machine (142 s wall, 242 CPU
    seconds; the step timings are printed at the end); --full about 11 (645 s). The
    demo draws the easy synthetic population, which small models learn in
    minutes.

    Example: celebcat demo --out ./celebcat-demo
    """
    from models.pipeline import demo as steps

    plan = steps.PLANS["full" if full else "default"].with_ids(ids)
    steps.run(
        steps.DemoFolder(out),
        plan,
        _DemoScreen(),
        seed=seed,
        training=train,
        install_torch=NEEDS_TORCH.replace("\\[", "["),  # printed as it is: no markup
    )


class _DemoScreen:
    """The console ``celebcat demo`` shows its steps on (a
    :class:`models.pipeline.demo.Screen`)."""

    def __init__(self) -> None:
        self.console = _console()

    def rule(self, title: str) -> None:
        self.console.rule(title)

    def line(self, text: str) -> None:
        self.console.print(text)

    def note(self, text: str) -> None:
        self.console.print(_styled(("note:", "yellow"), " ", text))

    def table(
        self, columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None
    ) -> None:
        _print_rows(columns, rows, title=title)

    @contextmanager
    def bars(self) -> Iterator[ProgressTask]:
        with _progress() as (task, _):
            yield task

    @contextmanager
    def stages(self) -> Iterator[Callable[[str, int, int], None]]:
        with self.bars() as task:
            yield _staged(task)


@app.command()
def params(as_csv: CsvOption = False, as_json: JsonOption = False, db: DbOption = None) -> None:
    """Show the selection parameters in force, their defaults and valid ranges (change
    them with `celebcat select`).

    Example: celebcat params --json
    """
    from catalog.info import run_query
    from catalog.views import PARAM_NAMES

    result = run_query("SELECT name, value, description FROM params ORDER BY name", db)
    rows = [
        (name, value, *((spec.default, spec.range_text()) if spec else (None, "")), text)
        for name, value, text in result.rows
        for spec in [PARAM_NAMES.get(name)]
    ]
    _print_rows(
        ["name", "value", "default", "range", "description"], rows, as_csv=as_csv, as_json=as_json
    )


def _default(name: str) -> float:
    from catalog.views import PARAM_NAMES

    return PARAM_NAMES[name].default


def _param_help(name: str, text: str | None = None) -> str:
    """Help text for an option that sets parameter ``name``: its meaning and default,
    read from the one list of parameters (catalog.views.PARAMS)."""
    from catalog.views import PARAM_NAMES

    return PARAM_NAMES[name].help(text)


@app.command("select")
def select_cmd(
    n_ids: Annotated[int | None, typer.Option(help=_param_help("n_ids"))] = None,
    images_per_id: Annotated[
        int | None,
        typer.Option(
            help=_param_help("images_per_id") + " With --fit: the "
            "clean images an identity needs to be selected (default 20)."
        ),
    ] = None,
    min_images_per_id: Annotated[
        int | None, typer.Option(help=_param_help("min_images_per_id"))
    ] = None,
    min_box: Annotated[
        tuple[int, int] | None,
        typer.Option(
            help=f"Minimum face box W H in pixels (default {_default('min_box_w'):g} "
            f"{_default('min_box_h'):g}).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help=_param_help("seed", "sampling seed"))] = None,
    keep_blurry: Annotated[
        bool | None,
        typer.Option(
            "--keep-blurry/--drop-blurry", help="Keep Blurry images (default: drop them)."
        ),
    ] = None,
    holdout_ids: Annotated[
        int | None,
        typer.Option(
            help=_param_help("holdout_ids") + " Alone, it is divided "
            "half and half between query and distractor identities."
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(help="Images per identity for train/val/test, e.g. 18/4/3.", metavar="T/V/T"),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Any parameter as NAME=VALUE (names, defaults and ranges: `celebcat params`).",
        ),
    ] = None,
    fit: Annotated[
        bool,
        typer.Option(
            "--fit",
            help="Use the parameters that fit this catalog: every "
            "identity with --images-per-id clean images, a fifth of them "
            "held out, the rest split 70/15/15 (other options apply on top).",
        ),
    ] = False,
    reset: Annotated[
        bool,
        typer.Option(
            "--reset", help="Return every parameter to its default first (then the options)."
        ),
    ] = False,
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
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Set selection parameters and quotas; summarise the selection they give.

    Parameters and quotas are stored in the catalog and read by the views; anything
    the data cannot satisfy is refused, naming the parameter or quota and by how much,
    and so is a value outside a parameter's range.

    Example: celebcat select --n-ids 500 --min-box 80 80 --seed 7 --quota Male=0.5
    """
    from catalog.quotas import parse_quota
    from catalog.selection import options_to_params, select

    values = options_to_params(
        n_ids=n_ids,
        images_per_id=images_per_id,
        min_images_per_id=min_images_per_id,
        min_box=min_box,
        seed=seed,
        keep_blurry=keep_blurry,
        holdout_ids=holdout_ids,
        split=split,
        assignments=set_ or (),
    )
    quotas = None
    if clear_quotas:
        quotas = {}
    if quota:
        quotas = dict(parse_quota(q) for q in quota)
    summary = select(db, quotas=quotas, fit=fit, reset=reset, **values)
    if as_json:
        _print_json(
            {
                "params": summary.params,
                "fitted": summary.fitted,
                "kept": summary.kept,
                "clean_images": summary.clean_images,
                "eligible_identities": summary.eligible_identities,
                "selected_identities": summary.selected_identities,
                "selected_images": summary.selected_images,
                "splits": [
                    {"split": k, "images": n, "identities": i}
                    for k, (n, i) in summary.splits.items()
                ],
                "quotas": [
                    {"attribute": a, "target": t, "selected": r} for a, t, r in summary.quotas
                ],
                "attribute_shift": [
                    {"attribute": a, "share_all": x, "share_selected": y, "diff_points": d}
                    for a, x, y, d in summary.shift
                ],
            }
        )
        return
    console = _console()
    if fit:
        console.print(
            "fitted to the catalog: " + ", ".join(f"{k}={v}" for k, v in summary.fitted.items())
        )
        if summary.kept:
            console.print(
                "kept from before (not the defaults): "
                + ", ".join(f"{k}={v}" for k, v in summary.kept.items())
                + " (celebcat select --reset --fit starts from the defaults)"
            )
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
        ["attribute", "share_all", "share_selected", "diff_points"],
        summary.shift,
        title="largest attribute shifts (selection vs all)",
    )


@app.command()
def stats(
    snapshot: Annotated[
        str | None, typer.Option(help="Only this snapshot's images (default: everything).")
    ] = None,
    plots: Annotated[
        Path | None,
        typer.Option(help=f"Also write PNG charts into this folder. {NEEDS_PLOTS}"),
    ] = None,
    as_csv: Annotated[
        bool,
        typer.Option("--csv", help="Print every table as one CSV: table, row, column, value."),
    ] = False,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Dataset statistics: attribute shares, images per identity, box and image sizes.

    The thresholds (images an identity needs, the smallest face box) are the selection
    parameters in force, or the snapshot's with --snapshot.

    Example: celebcat stats --snapshot base-v1 --plots plots/
    """
    if plots is not None:
        _needs("matplotlib")
    from catalog.stats import compute_stats, write_plots

    result = compute_stats(db, snapshot)
    console = _console()
    if as_json and as_csv:
        raise _bad_usage("choose one of them", "--csv", "--json")
    if as_json:
        sys.stdout.write(json.dumps(result.as_dict(), indent=2) + "\n")
    elif as_csv:
        _print_tables_csv({t: (r.columns, r.rows) for t, r in result.tables().items()})
    else:
        for title, table in result.tables().items():
            _print_rows(table.columns, table.rows, title=title)
        for note in result.notes:
            console.print(_styled(("note:", "yellow"), " ", note))
    if plots is not None:
        written = write_plots(result, plots)
        for path in written:
            _console(stderr=as_json or as_csv).print(f"wrote {path}")


class ExportFormat(_Choice):
    auto = "auto"
    folder = "folder"
    parquet = "parquet"
    coco = "coco"


#: What ``--format auto`` reads from OUT's name.
_EXPORT_SUFFIXES = {".parquet": ExportFormat.parquet.value, ".json": ExportFormat.coco.value}


def _export_format(out: Path, chosen: str) -> str:
    """The export's format: ``chosen``, or for auto what OUT's suffix says (a folder when
    it has none or is one); any other suffix is a usage error, not a folder so named."""
    if chosen != ExportFormat.auto.value:
        return chosen
    if out.is_dir() or not out.suffix:
        return ExportFormat.folder.value
    if out.suffix.lower() in _EXPORT_SUFFIXES:
        return _EXPORT_SUFFIXES[out.suffix.lower()]
    raise typer.BadParameter(
        f"{str(out)!r}: name a folder (images and labels.csv), OUT.parquet or OUT.json "
        "(COCO keypoints), or say --format (folder writes a folder of this name)",
        param_hint="'OUT'",
    )


def _only_for(fmt: str, allowed: str, **given: object) -> None:
    """Refuse options that the chosen export format has no use for."""
    used = [name for name, value in given.items() if value not in (None, False)]
    if fmt != allowed and used:
        flags = ", ".join("--" + name.replace("_", "-") for name in used)
        raise typer.BadParameter(f"{flags}: only for --format {allowed} (this is {fmt})")


def _size_text(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 100_000 else f"{n_bytes / 1e3:.0f} kB"


@app.command()
@_user_errors(ValueError)  # catalog.export checks size and workers with ValueError
@_plain_choices
def export(
    snapshot: Annotated[str, typer.Option(help="Snapshot to export.")],
    out: Annotated[
        Path,
        typer.Argument(
            help="A folder (images and labels.csv), OUT.parquet (one table) or OUT.json "
            "(COCO keypoints); replaced, except a folder, which resumes."
        ),
    ],
    export_format: Annotated[
        ExportFormat, typer.Option("--format", help="What to write (auto: from OUT's name).")
    ] = ExportFormat.auto,
    crop: Annotated[
        bool, typer.Option("--crop", help="folder: crop each image to its face box and resize.")
    ] = False,
    size: Annotated[
        int, typer.Option(help="folder: output side in pixels with --crop.", min=1)
    ] = 256,
    workers: Annotated[int | None, typer.Option(help="folder: parallel workers.", min=1)] = None,
    skip_bad: SkipBadOption = False,
    embeddings: Annotated[
        str | None,
        typer.Option(help="parquet: this recognition run's embeddings of the snapshot's images."),
    ] = None,
    predictions: Annotated[
        str | None,
        typer.Option(help="parquet: this landmark run's predictions for the snapshot's images."),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="coco: one split of the snapshot (default: all).")
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write a snapshot for other tools: a folder of images, Parquet, or COCO keypoints.

    A folder: the images copied (or cropped to the face with --crop) into
    OUT/<split>/<image_id>, and labels.csv with identity, label, split, attributes,
    box and landmarks. An interrupted export continues where it stopped when run
    again; an image that cannot be read stops it before anything is written (with
    --skip-bad it is left out and listed in OUT/export.json).

    OUT.parquet: one row per image (the columns of catalog.frames: path relative to
    the image root, split, label, identity, face box, CelebA box, landmarks, the 40
    attributes), or a run's embeddings or predictions; the snapshot's name, hash and
    image root are in the file's metadata. pandas, polars and Hugging Face datasets
    read it.

    OUT.json: COCO keypoints (boxes, the five points, identity and split), for
    detection and keypoint tools.

    Example: celebcat export --snapshot base-v1 exported/ --crop --size 256
    """
    fmt = _export_format(out, export_format)
    _only_for(fmt, "folder", crop=crop, workers=workers, skip_bad=skip_bad)
    if size != 256:
        _only_for(fmt, "folder", size=size)
    _only_for(fmt, "parquet", embeddings=embeddings, predictions=predictions)
    _only_for(fmt, "coco", split=split)
    if fmt == "parquet":
        return _export_parquet(snapshot, out, embeddings, predictions, db, as_json)
    if fmt == "coco":
        return _export_coco(snapshot, out, split, db, as_json)
    from catalog.export import export_snapshot

    with _progress() as (task, _):
        result = export_snapshot(
            snapshot,
            out,
            db,
            crop=crop,
            size=size,
            workers=workers,
            progress=task("exporting", 0),
            skip_bad=skip_bad,
        )
    if as_json:
        return _print_json(_fields(result))
    console = _console()
    console.print(
        f"{result.n_images} images of snapshot {result.snapshot} in {result.out} "
        f"({result.n_written} written, {result.n_skipped} already there) "
        f"in {result.seconds:.1f} s; labels in {result.labels}"
    )
    if result.outside:
        console.print(
            f"{result.outside} rows of labels.csv reach outside the {result.size} px crop "
            "(negative x_1, y_1): CelebA's box is larger than the face box the crop is "
            f'cut to; {result.out / "export.json"} ("coordinates") says so for any reader'
        )
    _print_skipped(console, result.skipped, f"listed in {result.out / 'export.json'}")


def _export_parquet(
    snapshot: str,
    out: Path,
    embeddings: str | None,
    predictions: str | None,
    db: Path | None,
    as_json: bool,
) -> None:
    from catalog.parquet import export_parquet

    result = export_parquet(snapshot, out, db, embeddings=embeddings, predictions=predictions)
    if as_json:
        return _print_json(_fields(result))
    what = (
        ""
        if result.table == "snapshot"
        else f"run {embeddings or predictions}'s {result.table} of "
    )
    _console().print(
        f"wrote {result.rows:,} rows of {what}snapshot {result.snapshot} (hash "
        f"{result.snapshot_hash[:16]}) to {result.path}: {_size_text(result.bytes)} in "
        f"{result.seconds:.1f} s"
    )


def _export_coco(
    snapshot: str, out: Path, split: str | None, db: Path | None, as_json: bool
) -> None:
    from catalog.coco import export_coco

    result = export_coco(db, snapshot, out, split=split)
    if as_json:
        return _print_json(_fields(result))
    _console().print(
        f"wrote {result.n_images:,} images and {result.n_annotations:,} face annotations of "
        f"snapshot {snapshot} to {result.path} (COCO keypoints)"
    )


class LandmarkSource(_Choice):
    predicted = "predicted"
    truth = "truth"


class AlignSize(_IntChoice):
    # 112 and 224: the recognizers' usual inputs; 64-160 for fast CPU runs; 256 the
    # reference's alignment output; 150 dlib's recognizer's (--template dlib)
    s64 = "64"
    s96 = "96"
    s112 = "112"
    s128 = "128"
    s150 = "150"
    s160 = "160"
    s224 = "224"
    s256 = "256"


@app.command()
@_user_errors(ValueError)  # models.alignment.snapshot checks its arguments with ValueError
@_plain_choices
def align(
    snapshot: Annotated[str, typer.Option(help="Snapshot whose images to align.")],
    run: Annotated[
        str | None, typer.Option(help="Landmark run id or checkpoint (not with --source truth).")
    ] = None,
    size: Annotated[AlignSize, typer.Option(help="Aligned crop side in pixels.")] = AlignSize.s112,
    template: Annotated[
        Template, typer.Option(help="Face template to align onto.")
    ] = Template.reference,
    source: Annotated[
        LandmarkSource,
        typer.Option(help="predicted (the run's landmarks) or truth (a control)."),
    ] = LandmarkSource.predicted,
    batch_size: Annotated[int, typer.Option(help="Prediction batch size.", min=1)] = 32,
    workers: Annotated[
        int | None, typer.Option(help="Threads decoding and warping (default: one per CPU).")
    ] = None,
    skip_bad: SkipBadOption = False,
    device: DeviceOption = "auto",
    db: DbOption = None,
) -> None:
    """Predict landmarks, write them to the catalog, and store aligned face crops.

    Predictions go to landmark_predictions (in-the-wild pixels, with NME against
    the annotations) and the test split's NME, argmax NME, failure rate and CED AUC
    to metrics. The aligned crops become the crop cache
    aligned/<template>/<run or truth> that FaceDataset(source="aligned") reads (the
    newest alignment of that size; `celebcat cache list` shows them all). An image
    that cannot be read stops the alignment; with --skip-bad it is left out (with a
    landmark run, build the face crops of the model's input size with --skip-bad
    first: the predictions read them).

    On several processes (each predicts and warps a share; rank 0 writes):
    torchrun --nproc_per_node=N -m cli align ...

    Example: celebcat align --run landmarks-20261128-120000-ab12 --snapshot base-v1

    Needs torch: pip install torch==2.13.0 && pip install -e '.\\[torch]'.
    """
    if source == "predicted" and run is None:
        raise _bad_usage("needed with --source predicted (or use --source truth)", "--run")
    if source == "truth" and run is not None:
        raise _bad_usage(
            "--run and --source truth exclude each other: truth aligns with the "
            "catalog's own landmarks, no run's; drop one of them",
            "--run",
            "--source",
        )
    from models.alignment.snapshot import align_snapshot
    from models.distributed import is_main_process

    align_it = functools.partial(
        align_snapshot,
        run,
        snapshot,
        db,
        size=size,
        template=template,
        source=source,
        batch_size=batch_size,
        workers=workers,
        skip_bad=skip_bad,
        device=device,
    )
    if not is_main_process():  # under torchrun: rank 0 reports, the others work quietly
        align_it()
        return
    with _progress() as (task, _):
        result = align_it(progress=_staged(task))
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
            f"{result.n_box_fallback} faces had collapsed landmark predictions and "
            "were aligned from their face box instead.",
            style="yellow",
        )
    _print_skipped(console, result.skipped, "recorded in the cache's index")


@app.command()
@_user_errors(ValueError)
def embed(
    run: Annotated[str, typer.Option(help="Recognition run id, run folder or checkpoint.")],
    snapshot: Annotated[
        str | None, typer.Option(help="Snapshot to embed (default: the run's).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch.", min=1)] = 128,
    workers: WorkersOption = 0,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Leave out images that cannot be read.")
    ] = False,
    device: DeviceOption = "auto",
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Embed a snapshot's images with a recognizer into the catalog's embeddings table.

    Every image with a split, cropped as the run trained (no augmentation),
    L2-normalised. Nearest neighbours are then SQL, e.g.
    celebcat sql "select b.image_id, list_cosine_similarity(a.embedding, b.embedding) s
    from embeddings a join embeddings b using (run_id) where a.image_id = '000123.jpg'
    and b.image_id <> a.image_id order by s desc limit 5"

    On several processes (each embeds a share, on its own GPU where there are
    GPUs; rank 0 writes): torchrun --nproc_per_node=N -m cli embed ...

    Example: celebcat embed --run recognition-20261201-120000-ab12
    """
    from models import store
    from models.distributed import is_main_process
    from models.recognition.evaluate import embed_snapshot

    # auto under torchrun: this process's GPU, if any
    recognizer = store.load_recognizer(run, db, device)
    embed_it = functools.partial(
        embed_snapshot,
        recognizer,
        snapshot,
        db,
        batch_size=batch_size,
        workers=workers,
        skip_bad=skip_bad,
    )
    if not is_main_process():  # rank 0 reports, the others work quietly
        embed_it()
        return
    with _progress() as (task, _):
        out = embed_it(progress=_staged(task))
    summary = {
        "run": out.run_id,
        "snapshot": out.snapshot,
        "images": len(out.image_id),
        "dim": int(out.embeddings.shape[1]) if len(out.image_id) else 0,
        "source": out.source,
        "seconds": round(out.seconds, 2),
    }
    if as_json:
        return _print_json(summary)
    console = _console()
    console.print(
        f"{summary['images']} embeddings ({summary['dim']}-d, crops {out.source}) of "
        f"snapshot {out.snapshot} by run {out.run_id} in the catalog "
        f"({out.seconds:.1f} s)"
    )
    _print_skipped(console, out.skipped, "not embedded")


class RunKind(_Choice):
    landmarks = "landmarks"
    recognition = "recognition"
    detector = "detector"


runs_app = typer.Typer(
    help="Runs: models trained here, and pretrained ones imported (celebcat runs import)."
    "\n\nExample: celebcat runs --json",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(runs_app, name="runs")


@runs_app.callback()
@_plain_choices
def runs(
    ctx: typer.Context,
    kind: Annotated[RunKind | None, typer.Option(help="Only runs of this kind.")] = None,
    latest: Annotated[
        bool, typer.Option("--latest", help="Print only the newest run's id (for scripts).")
    ] = False,
    as_csv: CsvOption = False,
    as_json: JsonOption = False,
    db: GroupDbOption = None,
) -> None:
    """List the runs with their status and snapshot (none for a pretrained run).

    Example: celebcat runs --json
    In a script: RUN=$(celebcat runs --kind landmarks --latest)
    """
    if ctx.invoked_subcommand is not None:
        return
    _existing_catalog(db)
    from catalog.results import list_runs

    def minutes(r: Any) -> float | None:
        return (
            None
            if r.ended_at is None
            else round((r.ended_at - r.started_at).total_seconds() / 60, 1)
        )

    found = list_runs(db, kind)
    if latest:
        if not found:
            raise UserError(f"No {f'{kind} ' if kind else ''}runs in the catalog yet.")
        print(found[-1].run_id)
        return

    def made(r: Any) -> str:  # a pretrained run trained on none of the catalog's snapshots
        source = r.config.get("pretrained")
        if not isinstance(source, dict):
            return ""
        return "" if as_json or as_csv else f"(pretrained: {source.get('source')})"

    rows = [
        (
            r.run_id,
            r.kind,
            r.status,
            r.snapshot or made(r),
            r.snapshot_hash[:12],
            r.started_at.replace(microsecond=0),
            None if "pretrained" in r.config else minutes(r),
        )
        for r in found
    ]
    _print_rows(
        ["run", "kind", "status", "snapshot", "hash", "started (UTC)", "minutes"],
        rows,
        as_csv=as_csv,
        as_json=as_json,
    )


class PretrainedKind(_Choice):
    recognition = "recognition"
    detector = "detector"


@runs_app.command("import")
@_plain_choices
def runs_import(
    source: Annotated[
        str,
        typer.Argument(
            help="dlib (its detector, landmark and recognition models), synthetic (the "
            "recognizer and detector celebcat ships, trained on synthetic faces), or one "
            "ONNX file: "
            "onnx:FILE[?options] with --kind."
        ),
    ],
    kind: Annotated[PretrainedKind | None, typer.Option(help="What an ONNX file is.")] = None,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Record pretrained models as runs of the catalog.

    dlib: one run per stage (detector, landmarks, recognition). synthetic: the
    recognizer and the face detector shipped inside celebcat, trained on drawn
    faces (the demo uses them; on real photographs they find and name no one).
    onnx:FILE: one run, a recognizer in insightface's layout or a face detector.
    Each run's config holds the file's hash, the versions and the licence; every
    command that takes a run then takes it. Nothing is downloaded
    (docs/pretrained.md).

    Example: celebcat runs import dlib
    Example: celebcat runs import onnx:w600k_r50.onnx --kind recognition
    """
    from models.pretrained import import_source

    imported = import_source(db, source, kind)
    rows = [(m.run_id, m.kind, m.licence) for m, _ in imported]
    if as_json:
        return _print_json([{"run": m.run_id, "kind": m.kind, **c} for m, c in imported])
    _print_rows(["run", "kind", "licence"], rows)


@app.command("identify")
def identify_cmd(
    images: Annotated[list[Path], typer.Argument(help="Photos (any size, any format PIL reads).")],
    gallery: Annotated[str, typer.Option(help="Gallery to search (celebcat gallery list).")],
    top: Annotated[int, typer.Option(help="Matches shown per face.", min=1)] = 5,
    fpir: Annotated[
        float,
        typer.Option(
            help="The rate at which a face of someone not in the gallery may be named as "
            "one of its people; its threshold was measured for this gallery when it was "
            "built (celebcat gallery calibrate)."
        ),
    ] = 0.01,
    fpr: Annotated[
        float | None,
        typer.Option(
            help="Use the recognizer's pair threshold at this false-positive rate instead "
            "(two faces of different people score above it at that rate; it does not "
            "hold for a search of a whole gallery)."
        ),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="A cosine threshold instead of --fpir's.")
    ] = None,
    detector: DetectorOption = "haar",
    landmarks: LandmarksOption = None,
    template: TemplateOption = None,
    run: Annotated[
        str | None, typer.Option(help="Recognizer run (default and only choice: the gallery's).")
    ] = None,
    draw: Annotated[
        Path | None,
        typer.Option(
            help="Write the photo with boxes, points and names here (several photos: "
            "OUT-<photo name>.png)."
        ),
    ] = None,
    as_csv: Annotated[
        bool,
        typer.Option(
            "--csv",
            help="Print one row a face: image, face, box, identity, cosine, threshold.",
        ),
    ] = False,
    as_json: JsonOption = False,
    device: DeviceOption = "auto",
    db: DbOption = None,
) -> None:
    """Who is in a photo: each face's box, landmarks and best matches in a gallery.

    A face is named when its best match's cosine is above the gallery's
    threshold at --fpir: faces of people not in the gallery, searched in it
    when it was built, score above it at that rate. A gallery built before
    calibration existed uses the recognizer's pair threshold and says so
    (celebcat gallery calibrate NAME).

    Example: celebcat identify photo.jpg --gallery friends --top 3 --draw out.png
    """
    if as_json and as_csv:
        raise _bad_usage("choose one of them", "--csv", "--json")

    from models.pipeline.identify import UNKNOWN, draw_faces, identify

    with _pipeline_one_line():
        result = identify(
            images,
            gallery,
            db,
            run=run,
            detector=detector,
            landmark_run=landmarks,
            template=template,
            top=top,
            fpir=fpir,
            fpr=fpr,
            threshold=threshold,
            device=device,
        )
        if not result.faces:
            names = ", ".join(im.name for im in result.images)
            raise UserError(
                f"No face found in {names} (detector {detector}); try another "
                "--detector (run:<detector run>, onnx:<model>)."
            )
        drawn = []
        if draw is not None:
            for k, image in enumerate(result.images):
                out = (
                    draw
                    if len(result.images) == 1
                    else draw.with_name(
                        f"{draw.stem}-{Path(image.name).stem}{draw.suffix or '.png'}"
                    )
                )
                drawn.append(draw_faces(image, result.faces_of(k), out))
    if as_json:
        data = {
            "gallery": result.gallery.name,
            "run_id": result.run_id,
            "threshold": result.threshold.as_dict(),
            "images": [
                {"image": str(images[k]), "faces": [f.as_dict() for f in result.faces_of(k)]}
                for k in range(len(result.images))
            ],
            "drawn": [str(p) for p in drawn],
        }
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    if as_csv:
        rows = [
            (
                images[k],
                n,
                *(round(float(v), 2) for v in face.box),
                face.identity,
                face.matches[0].identity if face.matches else None,
                round(face.matches[0].cosine, 6) if face.matches else None,
                round(result.threshold.value, 6),
            )
            for k in range(len(result.images))
            for n, face in enumerate(result.faces_of(k), start=1)
        ]
        columns = ["image", "face", "x_1", "y_1", "x_2", "y_2", "identity", "best", "cosine"]
        return _print_rows([*columns, "threshold"], rows, as_csv=True)
    console = _console()
    console.print(f"threshold: {result.threshold.explain()}")
    for k in range(len(result.images)):
        faces = result.faces_of(k)
        console.print(f"{images[k]}: {len(faces) or 'no'} face{'s' if len(faces) != 1 else ''}")
        for n, face in enumerate(faces, start=1):
            box = ", ".join(f"{v:.0f}" for v in face.box)
            name = face.identity if face.identity != UNKNOWN else (UNKNOWN, "yellow")
            best = ", ".join(f"{m.identity} {m.cosine:.3f}" for m in face.matches)
            console.print(_styled(f"  face {n} [{box}]: ", name, f" (top: {best})"))
    for path in drawn:
        console.print(f"drew {path}")


@app.command("verify")
def verify_cmd(
    first: Annotated[Path, typer.Argument(help="A photo of one face.")],
    second: Annotated[Path, typer.Argument(help="A photo of one face, to compare.")],
    run: Annotated[str, typer.Option(help="Recognizer run (id, folder or checkpoint).")],
    fpr: Annotated[
        float,
        typer.Option(
            help="The rate at which two faces of different people may be called the same "
            "person; its threshold is the one the run's open-set evaluation measured."
        ),
    ] = 0.01,
    threshold: Annotated[
        float | None, typer.Option(help="A cosine threshold instead of --fpr's.")
    ] = None,
    detector: DetectorOption = "haar",
    landmarks: LandmarksOption = None,
    template: TemplateOption = None,
    as_json: JsonOption = False,
    device: DeviceOption = "auto",
    db: DbOption = None,
) -> None:
    """Whether two photos show the same person (1:1 verification).

    The highest-scoring face of each photo is embedded and the two compared by
    cosine, against the pair threshold of the recognizer's open-set evaluation at
    --fpr: two faces of different people score above it at that rate. (To name a
    face among many people, use identify with a gallery: its threshold is measured
    for the gallery's size.)

    Example: celebcat verify a.jpg b.jpg --run RUN --fpr 0.01
    """

    from models.pipeline.identify import verify

    with _pipeline_one_line():
        result = verify(
            first,
            second,
            db,
            run=run,
            fpr=fpr,
            threshold=threshold,
            detector=detector,
            landmark_run=landmarks,
            template=template,
            device=device,
        )
    if as_json:
        sys.stdout.write(json.dumps(result.as_dict(), indent=2) + "\n")
        return
    console = _console()
    for image, n in zip(result.images, result.faces_found, strict=True):
        if n > 1:
            console.print(f"{image.name}: {n} faces; the highest-scoring one is compared")
    console.print(result.explain())


# ---------------------------------------------------------------------------
# celebcat views
# ---------------------------------------------------------------------------


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
    db: GroupDbOption = None,
) -> None:
    """List the selection views with their row counts and what each selects.

    Example: celebcat views
    """
    if ctx.invoked_subcommand is not None:
        return
    _existing_catalog(db)
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


# ---------------------------------------------------------------------------
# celebcat cache
# ---------------------------------------------------------------------------


cache_app = typer.Typer(
    help="Crop caches: a snapshot's face crops decoded once into a memory-mapped array."
    "\n\nExample: celebcat cache build --snapshot base-v1 --size 256",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")


class CropSource(_Choice):
    bbox = "bbox"


@cache_app.command("build")
@_user_errors(ValueError)  # catalog.cache checks size and workers with ValueError
@_plain_choices
def cache_build(
    snapshot: Annotated[str, typer.Option(help="Snapshot to cache.")],
    size: Annotated[int, typer.Option(help="Crop side in pixels (the model input).", min=1)] = 256,
    source: Annotated[
        CropSource, typer.Option(help="Crop source: bbox (face box).")
    ] = CropSource.bbox,
    workers: Annotated[int | None, typer.Option(help="Decoding threads.")] = None,
    skip_bad: SkipBadOption = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Decode and crop every image of a snapshot once; Datasets then read the crops.

    The cache is keyed by the snapshot's hash and the crop settings, so a changed
    snapshot never reads stale crops. Building it again does nothing. An image that
    cannot be read stops the build before anything is written; with --skip-bad the
    cache is built without it, its index records which and why, and Datasets reading
    it leave those images out.

    Example: celebcat cache build --snapshot base-v1 --size 256
    """
    from catalog.cache import build_cache

    with _progress() as (task, _):
        info = build_cache(
            snapshot,
            db,
            size=size,
            source=source,
            workers=workers,
            progress=task("crops", 0),
            skip_bad=skip_bad,
        )
    if as_json:
        return _print_json(_fields(info))
    what = f"built in {info.seconds:.1f} s" if info.built else "already built"
    console = _console()
    console.print(f"{info.n_images} crops of {info.size} px for {snapshot}: {what} ({info.path})")
    _print_skipped(console, info.skipped, "recorded in the cache's index")


@cache_app.command("list")
def cache_list(as_csv: CsvOption = False, as_json: JsonOption = False, db: DbOption = None):
    """List the crop caches of the catalog.

    Example: celebcat cache list
    """
    from catalog.cache import list_caches

    machine = as_csv or as_json  # full paths there; file names in the table (one folder)
    rows = [
        (
            c.snapshot,
            c.hash[:12],
            c.source,
            c.size,
            c.n_images,
            round(c.path.stat().st_size / 2**20, 1) if c.path.exists() else None,
            str(c.path) if machine else c.path.name,
        )
        for c in list_caches(db)
    ]
    _print_rows(
        ["snapshot", "hash", "source", "size", "images", "MiB", "path" if machine else "file"],
        rows,
        as_csv=as_csv,
        as_json=as_json,
    )


@cache_app.command("drop")
def cache_drop(
    snapshot: Annotated[str, typer.Option(help="Snapshot whose caches to delete.")],
    size: Annotated[int | None, typer.Option(help="Only caches of this size.", min=1)] = None,
    source: Annotated[
        str | None,
        typer.Option(
            help="Only this source: bbox, aligned (every alignment) or one, "
            "e.g. aligned/arcface/truth."
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Delete a snapshot's crop caches (files and index).

    Example: celebcat cache drop --snapshot base-v1 --source aligned/arcface/truth
    """
    from catalog.cache import drop_cache

    dropped = drop_cache(snapshot, db, size=size, source=source)
    _console().print(f"dropped {len(dropped)} cache(s) of {snapshot}")


# ---------------------------------------------------------------------------
# celebcat train
# ---------------------------------------------------------------------------


train_app = typer.Typer(
    help=f"Train models on a snapshot. {NEEDS_TORCH}"
    "\n\nExample: celebcat train landmarks --snapshot demo",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")

# Options the trainers share (train landmarks, recognizer, detector; workers and seed,
# which others take too, are with the shared options above).
TrainSnapshotOption = Annotated[str, typer.Option(help="Snapshot to train on (train/val splits).")]
EpochsOption = Annotated[int, typer.Option(help="Epochs.")]
LrOption = Annotated[float, typer.Option(help="AdamW learning rate.")]
ScheduleOption = Annotated[
    str, typer.Option(help="cosine (lr to lr/100 at the last epoch) or constant.")
]
MaxMinutesOption = Annotated[
    float | None, typer.Option(help="Time budget: stop before an epoch likely to overrun it.")
]
MaxBatchesOption = Annotated[
    int | None, typer.Option(help="Batches per epoch (short runs for demos).")
]
CheckpointsOption = Annotated[Path, typer.Option(help="Checkpoint folder.")]
BatchSizeOption = Annotated[int, typer.Option(help="Batch size.")]
_RESUME_HELP = (
    "Continue from a checkpoint or run folder (with its settings; --epochs, "
    "--max-minutes, --workers, --device, --out may change)."
)
ResumeOption = Annotated[Path | None, typer.Option(help=_RESUME_HELP)]

PRESETS = {"small": "hourglass_small", "seed": "hourglass_seed", "paper": "hourglass_paper"}


class Preset(_Choice):
    small = "small"
    seed = "seed"
    paper = "paper"


#: Option names of the train commands -> their config fields, where they differ.
_CONFIG_NAMES = {"max_batches": "max_batches_per_epoch", "workers": "num_workers", "out": "out_dir"}


def _typed_options(
    ctx: typer.Context, given: dict[str, Any], renamed: dict[str, str] | None = None
) -> dict[str, Any]:
    """The config fields typed on this command line (not defaults), for a resume: the
    run's own settings with these over them (the config refuses, by name, a change a
    resume may not make)."""
    names = {**_CONFIG_NAMES, **(renamed or {})}
    return {
        names.get(p, p): given[names.get(p, p)]
        for p in ctx.params
        # by name: typer vendors its own click, whose enum is not click's
        if getattr(ctx.get_parameter_source(p), "name", None) == "COMMANDLINE"
        and names.get(p, p) in given
    }


def _batch_bar(task: ProgressTask, digits: int = 5) -> Callable[[int, int, int, float], None]:
    """on_batch for the trainers: one bar, its label the epoch and running loss (to
    ``digits`` decimals)."""
    bar: list[Callable[..., None]] = []

    def on_batch(epoch: int, done: int, total: int, loss: float) -> None:
        if not bar:
            bar.append(task("training", total))
        bar[0](done, total, label=f"epoch {epoch} loss {loss:.{digits}f}")

    return on_batch


@train_app.command("landmarks")
@_user_errors(ValueError)  # models.landmarks.train checks its config with ValueError
@_plain_choices
def train_landmarks_cmd(
    ctx: typer.Context,
    snapshot: TrainSnapshotOption,
    preset: Annotated[
        Preset, typer.Option(help="Model: small (CPU-friendly), seed (the reference), paper.")
    ] = Preset.small,
    epochs: EpochsOption = 30,
    batch_size: BatchSizeOption = 16,
    lr: LrOption = 1e-3,
    schedule: ScheduleOption = "cosine",
    max_minutes: MaxMinutesOption = None,
    max_batches: MaxBatchesOption = None,
    workers: WorkersOption = 0,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    out: CheckpointsOption = Path("checkpoints"),
    resume: ResumeOption = None,
    db: DbOption = None,
) -> None:
    """Train the stacked-hourglass landmark model; runs and metrics go to the catalog.

    The progress bar and the per-epoch lines go to stderr, the final summary to
    stdout; every epoch's figures are in the catalog (`celebcat sql "select * from
    metrics"`).

    On several processes: torchrun --nproc_per_node=N -m cli train landmarks ...
    (--batch-size is per process; one run, written by rank 0; see the README).

    Example: celebcat train landmarks --snapshot demo --preset small --epochs 5
    """
    from models import store
    from models.distributed import is_main_process
    from models.landmarks.train import KIND, LandmarkTrainConfig, train_landmarks

    given = dict(
        snapshot=snapshot,
        model=PRESETS[preset],
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        schedule=schedule,
        max_minutes=max_minutes,
        max_batches_per_epoch=max_batches,
        num_workers=workers,
        seed=seed,
        device=device,
        out_dir=str(out),
    )
    if resume is None:
        config = LandmarkTrainConfig(**given)
    else:
        typed = _typed_options(ctx, given, {"preset": "model"})
        config = store.resumed_config(resume, KIND, **typed)
    if not is_main_process():  # under torchrun: rank 0 reports, the others train quietly
        train_landmarks(config, db, resume=resume)
        return
    with _progress() as (task, console):
        on_batch = _batch_bar(task)

        def report(e: dict[str, Any]) -> None:
            console.print(
                f"epoch {e['epoch']}: train loss {e['train_loss']:.5f}, val NME "
                f"{e['val_nme']:.4f} (argmax {e['val_nme_argmax']:.4f}), "
                f"best {e['best_val_nme']:.4f}"
            )

        result = train_landmarks(config, db, resume=resume, progress=report, on_batch=on_batch)
    console = _console()
    console.print(
        f"run {result.run_id}: {result.epochs_done} epochs, best val NME "
        f"{result.best_val_nme:.4f}, checkpoint {result.best_checkpoint}"
    )


class RecognitionLoss(_Choice):
    ce = "ce"
    arcface = "arcface"
    cosface = "cosface"
    triplet = "triplet"


class Mining(_Choice):
    random = "random"
    batch_hard = "batch-hard"


def _face_source(value: str) -> str:
    """--source of train recognizer: aligned, bbox or aligned/<template>/<run | truth>."""
    from catalog.crop_source import CropSource

    try:
        source = CropSource.parse(value)
    except ValueError:
        source = None
    if source is not None and (source.template is None or source.template in Template.__members__):
        return value
    raise typer.BadParameter(
        f"{value!r}: use aligned (the newest alignment at --size), bbox, "
        "or aligned/<reference|arcface>/<landmark run | truth>"
    )


class Backbone(_Choice):
    face_cpu = "face_cpu"
    resnet18 = "resnet18"
    resnet50 = "resnet50"


@train_app.command("recognizer")
@_user_errors(ValueError)  # models.recognition.train checks its config with ValueError
@_plain_choices
def train_recognizer_cmd(
    ctx: typer.Context,
    snapshot: TrainSnapshotOption,
    loss: Annotated[
        RecognitionLoss,
        typer.Option(help="Softmax CE (label smoothing 0.1), ArcFace, CosFace or triplet."),
    ] = RecognitionLoss.arcface,
    mining: Annotated[
        Mining, typer.Option(help="Triplets: random (the reference's) or batch-hard (PK batches).")
    ] = Mining.batch_hard,
    backbone: Annotated[
        Backbone,
        typer.Option(help="face_cpu (CPU-sized ResNet-10), resnet18, resnet50 (the reference's)."),
    ] = Backbone.face_cpu,
    source: Annotated[
        str,
        typer.Option(
            callback=_face_source,
            help="aligned (the newest alignment at --size: celebcat align first), "
            "bbox (face-box crops), or one alignment by name: aligned/TEMPLATE/RUN, "
            "RUN a landmark run id or truth (celebcat cache list shows them).",
        ),
    ] = "aligned",
    size: Annotated[int, typer.Option(help="Crop side in pixels (a multiple of 16).")] = 112,
    embedding_dim: Annotated[int, typer.Option(help="Embedding size.")] = 512,
    epochs: EpochsOption = 30,
    batch_size: Annotated[
        int, typer.Option(help="Batch size (triplet: P x K with K=4).", min=1)
    ] = 64,
    lr: LrOption = 1e-3,
    schedule: ScheduleOption = "cosine",
    max_minutes: MaxMinutesOption = None,
    max_batches: MaxBatchesOption = None,
    workers: WorkersOption = 0,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    out: CheckpointsOption = Path("checkpoints"),
    resume: ResumeOption = None,
    db: DbOption = None,
) -> None:
    """Train a face recognizer (backbone + loss); runs and metrics go to the catalog.

    Classifier losses keep the checkpoint with the best validation top-1, triplet
    the best validation verification AUC (logged for every loss). Then embed and
    evaluate: celebcat eval recognizer --run RUN.

    On several processes: torchrun --nproc_per_node=N -m cli train recognizer ...
    (--batch-size is per process; one run, written by rank 0; see the README).

    Example: celebcat train recognizer --snapshot demo --loss arcface --epochs 10
    """
    from models import store
    from models.distributed import is_main_process
    from models.recognition.train import KIND, RecognizerTrainConfig, train_recognizer

    given = dict(
        snapshot=snapshot,
        loss=loss,
        mining=mining,
        backbone=backbone,
        source=source,
        size=size,
        embedding_dim=embedding_dim,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        schedule=schedule,
        max_minutes=max_minutes,
        max_batches_per_epoch=max_batches,
        num_workers=workers,
        seed=seed,
        device=device,
        out_dir=str(out),
    )
    if resume is None:
        config = RecognizerTrainConfig(**given)
    else:
        typed = _typed_options(ctx, given)
        config = store.resumed_config(resume, KIND, **typed)
    if not is_main_process():  # under torchrun: rank 0 reports, the others train quietly
        train_recognizer(config, db, resume=resume)
        return
    with _progress() as (task, console):

        def report(e: dict[str, Any]) -> None:
            top1 = f", val top-1 {e['val_top1']:.4f}" if "val_top1" in e else ""
            best = next(v for k, v in e.items() if k.startswith("best_val_"))
            console.print(
                f"epoch {e['epoch']}: train loss {e['train_loss']:.5f}{top1}, "
                f"val AUC {e['val_auc']:.4f}, best {best:.4f}"
            )

        result = train_recognizer(
            config, db, resume=resume, progress=report, on_batch=_batch_bar(task)
        )
    _console().print(
        f"run {result.run_id}: {result.epochs_done} epochs, best val {result.metric} "
        f"{result.best:.4f}, checkpoint {result.best_checkpoint}\n"
        f"next: celebcat eval recognizer --run {result.run_id}"
    )


@train_app.command("detector")
def train_detector_cmd(
    ctx: typer.Context,
    snapshot: TrainSnapshotOption,
    epochs: EpochsOption = 20,
    batch_size: BatchSizeOption = 32,
    lr: LrOption = 3e-3,
    input_size: Annotated[
        int, typer.Option(help="Side of the letterboxed input square (a multiple of 32).")
    ] = 128,
    mosaic: Annotated[
        float, typer.Option(help="Share of training pictures made 2 x 2 mosaics (several faces).")
    ] = 0.3,
    schedule: ScheduleOption = "cosine",
    max_minutes: MaxMinutesOption = None,
    max_batches: MaxBatchesOption = None,
    workers: WorkersOption = 0,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    out: CheckpointsOption = Path("checkpoints"),
    resume: ResumeOption = None,
    db: DbOption = None,
) -> None:
    """Train a small face detector on the catalog's face boxes; then its test IoU.

    A CenterNet-style model on letterboxed whole images, so the pipeline finds faces
    in any CelebA-format data (synthetic too) where OpenCV's cascade does not; use it
    as --detector run:<run id>. Validation mean IoU of the top detection keeps the
    best checkpoint; at the end the test split's IoU and recall at IoU 0.5 are
    measured and written to metrics.

    Example: celebcat train detector --snapshot demo --epochs 20
    """
    from models import store
    from models.detection.boxes import RECALL
    from models.detection.train import (
        KIND,
        DetectorTrainConfig,
        evaluate_detector,
        train_detector,
    )

    given = dict(
        snapshot=snapshot,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        input_size=input_size,
        mosaic=mosaic,
        schedule=schedule,
        max_minutes=max_minutes,
        max_batches_per_epoch=max_batches,
        num_workers=workers,
        seed=seed,
        device=device,
        out_dir=str(out),
    )
    with _pipeline_one_line():
        if resume is None:
            config = DetectorTrainConfig(**given)
        else:
            typed = _typed_options(ctx, given)
            config = store.resumed_config(resume, KIND, **typed)
        with _progress() as (task, console):
            on_batch = _batch_bar(task, digits=4)

            def report(e: dict[str, Any]) -> None:
                console.print(
                    f"epoch {e['epoch']}: train loss {e['train_loss']:.4f}, val IoU "
                    f"{e['val_iou']:.3f}, recall@IoU0.5 {e['val_' + RECALL]:.3f}, best "
                    f"IoU {e['best_val_iou']:.3f}"
                )

            result = train_detector(config, db, resume=resume, progress=report, on_batch=on_batch)
        console = _console()
        console.print(
            f"run {result.run_id}: {result.epochs_done} epochs, best val IoU "
            f"{result.best_val_iou:.3f}, checkpoint {result.best_checkpoint}"
        )
        from catalog.snapshots import SnapshotError

        try:
            test = evaluate_detector(result.run_id, db)
        except SnapshotError as exc:
            if "has no split" not in str(exc):
                raise
            console.print("no test split in the snapshot: no test figures")
            return
        m = test.metrics
        console.print(
            f"test split ({test.n_images} images): IoU {m['iou']:.3f}, recall@IoU0.5 "
            f"{m[RECALL]:.3f}, {m['detections_per_image']:.2f} detections per "
            f"image; use it with --detector run:{result.run_id}"
        )


# ---------------------------------------------------------------------------
# celebcat report
# ---------------------------------------------------------------------------


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
        Path | None,
        typer.Option(help=f"Also write the CED plot (one curve per group) here. {NEEDS_PLOTS}"),
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

    Without --split the report covers every image the run predicted, whatever its
    split (training images included); a note on stderr names the splits.

    Example: celebcat report landmarks --run RUN --split test --by Eyeglasses --ced ced.png
    """
    if ced is not None:
        _needs("matplotlib")
    from catalog.reports import landmark_report, report_scope, write_ced_plot

    groups = [b.strip() for b in by.split(",") if b.strip()]
    result = landmark_report(
        db, run, groups, threshold=threshold, split=split, per_landmark=per_landmark
    )
    _print_rows(result.columns, result.rows, as_csv=as_csv, as_json=as_json)
    if split is None:
        _console(stderr=True).print(_styled(("note:", "yellow"), " ", report_scope(db, run)))
    if ced is not None:
        path = write_ced_plot(db, run, ced, groups, split=split, limit=threshold)
        _console(stderr=True).print(f"wrote {path}")


@report_app.command("alignment")
def report_alignment(
    snapshot: Annotated[str, typer.Option(help="Snapshot whose alignments to measure.")],
    size: Annotated[int | None, typer.Option(help="Only alignments of this size.", min=1)] = None,
    as_csv: CsvOption = False,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """How far each alignment of a snapshot puts the true eye centres from the template's.

    One row per aligned crop cache (celebcat align), in output pixels: mean, 95th
    percentile, max, and the share within 2 px.

    Example: celebcat report alignment --snapshot base-v1 --size 112
    """
    from models.alignment.snapshot import alignment_report

    result = alignment_report(db, snapshot, size)
    _print_rows(result.columns, result.rows, as_csv=as_csv, as_json=as_json)


@report_app.command("compare")
def report_compare(
    runs_: Annotated[
        list[str], typer.Option("--run", help="A run id; repeat for each run to compare.")
    ],
    reference: Annotated[
        bool, typer.Option("--reference", help="Add the reference project's reported figures.")
    ] = False,
    as_csv: CsvOption = False,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Runs side by side: best validation figure, test and open-set figures.

    --csv and --json give one row a run; the table shows one column a run, so that
    twenty figures fit a terminal.

    Example: celebcat report compare --run RUN_CE --run RUN_ARCFACE --reference
    """
    from catalog.reports import compare_runs

    table = compare_runs(db, runs_, reference=reference)
    if as_csv or as_json:
        return _print_rows(table.columns, table.rows, as_csv=as_csv, as_json=as_json)
    columns = ["", *(str(r[0]) for r in table.rows)]
    rows = [(name, *(r[i] for r in table.rows)) for i, name in enumerate(table.columns) if i > 0]
    _print_rows(columns, rows, labels=True)


@report_app.command("html")
def report_html(
    out: Annotated[Path, typer.Option(help="Folder for the page (index.html; replaced).")],
    run: Annotated[
        list[str] | None,
        typer.Option(
            "--run",
            help="A landmark run and/or a recognition run (repeat --run; "
            "default: the newest finished run of each kind).",
        ),
    ] = None,
    snapshot: Annotated[
        str | None, typer.Option(help="Snapshot whose statistics to show (default: the runs').")
    ] = None,
    photo: Annotated[
        Path | None,
        typer.Option(help=f"Also identify the faces of this photo (needs torch). {NEEDS_TORCH}"),
    ] = None,
    gallery: Annotated[
        str | None,
        typer.Option(
            help="Gallery for --photo (default: the newest one the recognition run made)."
        ),
    ] = None,
    detector: DetectorOption = "haar",
    fpir: Annotated[
        float,
        typer.Option(
            help="For --photo: the rate at which the gallery may name someone it does "
            "not hold (its calibrated threshold; see celebcat identify --help)."
        ),
    ] = 0.01,
    worst: Annotated[int, typer.Option(help="Worst landmark faces to show.")] = 8,
    device: DeviceOption = "auto",
    db: DbOption = None,
) -> None:
    """Write one self-contained HTML page over the catalog's selection and results.

    The selection's statistics and plots; the landmark run's test NME beside the
    reference's, its CED and its worst faces (predicted points red, true ones
    green); the recognition run's test and open-set figures beside the reference's,
    its thresholds, ROC, cosine histograms and t-SNE (from the embeddings celebcat
    eval recognizer stored); with --photo, who is in it. Images are embedded, the
    style inline: the page opens from disk, offline, and travels as one file.
    Plots need matplotlib (the \\[plots] extra), the t-SNE scikit-learn.

    Example: celebcat report html --out report/ --run LANDMARK_RUN --run RECOGNITION_RUN
    """
    if photo is not None:
        _needs("torch")
    from models.pipeline.report import photo_section, resolve_runs, write_report

    with _pipeline_one_line():
        sections = []
        if photo is not None:
            _, recognition = resolve_runs(db, run or ())
            if recognition is None:
                raise _bad_usage("needs a recognition run: give one with --run", "--photo")
            sections.append(
                photo_section(
                    db,
                    photo,
                    recognition,
                    gallery=gallery,
                    detector=detector,
                    fpir=fpir,
                    device=device,
                )
            )
        page, notes = write_report(
            db, out, runs=run or (), snapshot=snapshot, sections=sections, worst=worst
        )
    console = _console(stderr=True)
    for note in notes:
        console.print(_styled(("note:", "yellow"), " ", note))
    _console().print(f"wrote {page} ({page.stat().st_size / 1e6:.1f} MB, one file)")


# ---------------------------------------------------------------------------
# celebcat eval
# ---------------------------------------------------------------------------


eval_app = typer.Typer(
    help=f"Evaluate trained models; figures go to the metrics table. {NEEDS_TORCH}"
    "\n\nExample: celebcat eval recognizer --run RUN",
    no_args_is_help=True,
)
app.add_typer(eval_app, name="eval")


@eval_app.command("recognizer")
@_user_errors(ValueError)
def eval_recognizer(
    run: Annotated[str, typer.Option(help="Recognition run id, run folder or checkpoint.")],
    by: Annotated[
        str | None, typer.Option(help="Also per group of these attributes, e.g. Eyeglasses,Male.")
    ] = None,
    plots: Annotated[
        Path | None,
        typer.Option(
            help="Folder for ROC, cosine-histogram and t-SNE PNGs (needs the plots extra)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch.", min=1)] = 128,
    workers: WorkersOption = 0,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Leave out images that cannot be read.")
    ] = False,
    snapshot: Annotated[
        str | None,
        typer.Option(help="The snapshot to measure a pretrained run on (celebcat runs import)."),
    ] = None,
    as_csv: CsvOption = False,
    as_json: JsonOption = False,
    device: DeviceOption = "auto",
    db: DbOption = None,
) -> None:
    """Embed the run's snapshot and measure it the reference's ways.

    test split: top-1/top-5, all-pairs verification (AUC, EER, TPR at FPR 0.1, 0.01,
    0.001), triplet accuracy. query/distractor splits: the reference's open-set TPR at
    FPR 0.5 ... 0.001 (with the thresholds identify uses) and IJB-C style TPIR at FPIR
    0.1 and 0.01. Everything is written to metrics; compare runs with celebcat report
    compare --run RUN --run RUN.

    Example: celebcat eval recognizer --run RUN --by Eyeglasses --plots plots/
    """
    from models.distributed import is_main_process
    from models.recognition.evaluate import evaluate_recognizer

    if plots is not None:
        _needs("matplotlib")
    attrs = [a.strip() for a in by.split(",") if a.strip()] if by else []
    evaluate_it = functools.partial(
        evaluate_recognizer,
        run,
        db,
        by=attrs,
        plots=plots,
        batch_size=batch_size,
        workers=workers,
        skip_bad=skip_bad,
        snapshot=snapshot,
        device=device,
    )
    if not is_main_process():  # under torchrun: rank 0 measures and reports
        evaluate_it()
        return
    with _progress() as (task, _):
        out = evaluate_it(progress=_staged(task))
    rows = [
        (split, name, value)
        for split, values in out.metrics.items()
        for name, value in values.items()
    ]
    _print_rows(
        ["split", "metric", "value"],
        rows,
        as_csv=as_csv,
        as_json=as_json,
        title=f"run {out.run_id}, epoch {out.epoch}",
    )
    if not (as_csv or as_json):
        for path in out.plots:
            _console().print(f"plot: {path}")


# ---------------------------------------------------------------------------
# celebcat snapshot
# ---------------------------------------------------------------------------


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
    _print_rows(
        ["name", "created_at", "images", "identities", "hash"], rows, as_csv=as_csv, as_json=as_json
    )


@snapshot_app.command("show")
def snapshot_show(
    name: str,
    as_csv: Annotated[
        bool,
        typer.Option("--csv", help="Print the tables as one CSV: table, row, column, value."),
    ] = False,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Show a snapshot: hash, parameters and split sizes.

    Example: celebcat snapshot show base-v1
    """
    from catalog.formats import SPLITS, UNUSED_SPLIT
    from catalog.snapshots import show

    snap, splits = show(name, db)
    order = (*SPLITS, UNUSED_SPLIT)
    splits = dict(
        sorted(
            splits.items(),
            key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0]),
        )
    )
    if as_json:
        return _print_json(
            {
                **_fields(snap),
                "splits": [
                    {"split": k, "images": n, "identities": i} for k, (n, i) in splits.items()
                ],
            }
        )
    tables = {
        "splits": (["split", "images", "identities"], [(k, *v) for k, v in splits.items()]),
        "parameters": (["parameter", "value"], sorted(snap.params.items())),
        "quotas": (["quota", "share"], sorted(snap.quotas.items())),
    }
    if as_csv:
        about = [("name", snap.name), ("created_at", snap.created_at), ("hash", snap.hash)]
        return _print_tables_csv({"snapshot": (["field", "value"], about), **tables})
    console = _console()
    console.print(f"snapshot {snap.name}, created {snap.created_at} UTC\nhash {snap.hash}")
    for columns, rows in tables.values():
        if rows:
            _print_rows(columns, rows)


@snapshot_app.command("diff")
def snapshot_diff(
    a: str,
    b: str,
    as_csv: Annotated[
        bool,
        typer.Option("--csv", help="Print the images that differ: image_id, change, splits."),
    ] = False,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Compare two snapshots: images only in one, split changes, parameter changes.

    Example: celebcat snapshot diff base-v1 base-v2
    """
    from catalog.snapshots import diff

    d = diff(a, b, db)
    if as_json:
        return _print_json({"a": a, "b": b, **_fields(d)})
    if as_csv:  # an image of one snapshot only: its split there is not in the diff
        rows: list[tuple[Any, ...]] = [(i, f"only in {a}", None, None) for i in d.only_a]
        rows += [(i, f"only in {b}", None, None) for i in d.only_b]
        rows += [(i, "split changed", x, y) for i, x, y in d.split_changed]
        rows.sort(key=lambda r: r[0])
        return _print_rows(
            ["image_id", "change", f"split in {a}", f"split in {b}"], rows, as_csv=True
        )
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


@app.command()
def serve(
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on; 127.0.0.1 keeps it on this machine (any other "
            "address lets other machines see the catalog's faces)."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.", min=1, max=65535)] = 8765,
    db: DbOption = None,
) -> None:
    """Browse the catalog's faces in a web browser: a local, read-only app.

    A grid of faces for a snapshot or the whole catalog with filters (split,
    identity, any attribute, problems) and sorting by a run's figures; a face with
    its box, true and predicted landmarks, its person's other faces and its nearest
    neighbours; a recognizer's failures; a read-only SQL box. It never writes the
    catalog nor holds it open between requests, so training and celebcat sql keep
    working beside it. Thumbnails are cached beside the catalog (<catalog>.thumbs/).

    Needs the serve extra: pip install -e '.\\[serve]'.

    Example: celebcat serve --db celeba.duckdb
    """
    _needs("starlette")
    _needs("uvicorn")
    from catalog.serve import serve as run

    run(db, host=host, port=port)


# ---------------------------------------------------------------------------
# celebcat gallery
# ---------------------------------------------------------------------------


gallery_app = typer.Typer(
    help="Galleries: the people `celebcat identify` can name, embedded by one recognizer "
    "run.\n\nExample: celebcat gallery add friends --run RUN --folder photos/",
    no_args_is_help=True,
)
app.add_typer(gallery_app, name="gallery")


@gallery_app.command("add")
def gallery_add(
    name: Annotated[str, typer.Argument(help="Gallery name.")],
    run: Annotated[str, typer.Option(help="Recognizer run whose embeddings the gallery holds.")],
    snapshot: Annotated[
        str | None, typer.Option(help="From this snapshot's --split (names: identity numbers).")
    ] = None,
    split: Annotated[str | None, typer.Option(help="The snapshot split, e.g. query.")] = None,
    folder: Annotated[
        Path | None,
        typer.Option(
            help="From a folder with one subfolder per person (names: the "
            "subfolders'), images of any size."
        ),
    ] = None,
    detector: Annotated[
        str | None,
        typer.Option(
            "--detector",
            help="Default: catalog for --snapshot, haar for --folder "
            "(see `celebcat identify --help`).",
        ),
    ] = None,
    strangers: StrangersOption = None,
    landmarks: LandmarksOption = None,
    template: TemplateOption = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace a gallery of that name.")
    ] = False,
    device: DeviceOption = "auto",
    db: DbOption = None,
) -> None:
    """Embed a snapshot split or a folder of people and store it as a gallery.

    Each image's face goes through the face pipeline (detector, landmarks,
    alignment, the recognizer), the highest-scoring face of each folder
    image; images without a face are left out, named.

    Then the gallery is calibrated: faces of people it does not hold
    (--strangers, else a snapshot's held-out people not in the gallery) are
    searched in it, so that identify knows at which cosine a stranger is
    named at a given rate.

    Example: celebcat gallery add heldout --run RUN --snapshot demo --split query
    """
    from models.pipeline.identify import add_gallery

    if (snapshot is None) == (folder is None):
        raise _bad_usage("give one of them (--split with --snapshot)", "--snapshot", "--folder")
    with _pipeline_one_line(), _progress() as (task, _):
        built = add_gallery(
            db,
            name,
            run,
            snapshot=snapshot,
            split=split,
            folder=folder,
            strangers=strangers,
            detector=detector,
            landmark_run=landmarks,
            template=template,
            replace=replace,
            device=device,
            progress=_staged(task),
        )
    g = built.gallery
    console = _console()
    console.print(
        f"gallery {g.name}: {g.n_identities} identities, {g.n_images} images from "
        f"{g.source} (run {g.run_id}, crops {g.crops}, detector {g.detector}) in "
        f"{built.seconds:.1f} s"
    )
    _print_calibration(console, g.name, g.n_identities, built.calibrations)
    if built.skipped:
        console.print(f"{len(built.skipped)} images left out:", style="yellow")
        for image, why in built.skipped[:10]:
            console.print(f"  {image}: {why}")
        if len(built.skipped) > 10:
            console.print(f"  ... and {len(built.skipped) - 10} more")


@gallery_app.command("list")
def gallery_list(
    as_csv: CsvOption = False, as_json: JsonOption = False, db: DbOption = None
) -> None:
    """List the galleries: people, images, and the stranger faces each was calibrated on
    (empty: not calibrated; see celebcat gallery calibrate).

    Example: celebcat gallery list
    """
    from catalog.gallery import list_galleries, read_calibration

    rows = []
    for g in list_galleries(db):
        calibration = read_calibration(db, g.name)
        rows.append(
            (
                g.name,
                g.n_identities,
                g.n_images,
                len(calibration) if calibration is not None else None,
                g.run_id,
                g.source,
                g.detector,
                g.crops,
                g.created_at.replace(microsecond=0),
            )
        )
    _print_rows(
        [
            "gallery",
            "identities",
            "images",
            "strangers",
            "run",
            "source",
            "detector",
            "crops",
            "created (UTC)",
        ],
        rows,
        as_csv=as_csv,
        as_json=as_json,
    )


@gallery_app.command("show")
def gallery_show(
    name: str, as_csv: CsvOption = False, as_json: JsonOption = False, db: DbOption = None
) -> None:
    """A gallery's identities and how many images each has.

    Example: celebcat gallery show heldout
    """
    from collections import Counter

    from catalog.gallery import read_entries

    with _pipeline_one_line():
        entries = read_entries(db, name)
    g = entries.gallery
    counts = Counter(entries.identity_name.tolist())
    rows = [(identity, n) for identity, n in sorted(counts.items())]
    if not (as_csv or as_json):
        _console().print(
            f"gallery {g.name}: run {g.run_id}, {g.source}, detector {g.detector}, "
            f"crops {g.crops}, created {g.created_at:%Y-%m-%d %H:%M} UTC"
        )
    _print_rows(["identity", "images"], rows, as_csv=as_csv, as_json=as_json, max_rows=50)


@gallery_app.command("calibrate")
def gallery_calibrate(
    name: Annotated[str, typer.Argument(help="Gallery name.")],
    strangers: StrangersOption = None,
    device: DeviceOption = "auto",
    db: DbOption = None,
) -> None:
    """Measure at which cosine a gallery names people it does not hold.

    The strangers' faces (--strangers, else the held-out people of the gallery's
    snapshot not in it) go through the gallery's own pipeline and are searched in
    it; each one's best cosine is stored, and identify --fpir takes its threshold
    from them. Galleries built before calibration existed need this once.

    Example: celebcat gallery calibrate heldout
    """
    from catalog.gallery import get_gallery
    from models.pipeline.identify import calibrate_gallery

    with _pipeline_one_line(), _progress() as (task, _):
        calibrations = calibrate_gallery(
            db, name, strangers=strangers, device=device, progress=_staged(task)
        )
        g = get_gallery(db, name)
    _print_calibration(_console(), name, g.n_identities, calibrations)


def _print_calibration(console: Any, name: str, size: int, calibrations: Sequence[Any]) -> None:
    """What a calibration measured: the stranger faces, and the threshold at 1 %."""
    from models.pipeline.identify import DEFAULT_FPIR, gallery_threshold

    mean = next((c for c in calibrations if c.how == "mean"), None)
    if mean is None:
        console.print(
            _styled(
                ("not calibrated:", "yellow"),
                " no strangers (people not in the gallery) to measure it on; identify will "
                "use the recognizer's pair threshold. Give --strangers DIR (celebcat gallery "
                f"calibrate {name} --strangers DIR).",
            )
        )
        return
    limit = gallery_threshold(mean, DEFAULT_FPIR, "", size, name)
    console.print(
        f"calibrated on {len(mean)} faces of {mean.n_identities} strangers "
        f"({mean.strangers}): {limit.explain()}"
    )


@gallery_app.command("drop")
def gallery_drop(name: str, db: DbOption = None) -> None:
    """Delete a gallery and its embeddings.

    Example: celebcat gallery drop heldout
    """
    from catalog.gallery import drop_gallery

    with _pipeline_one_line():
        drop_gallery(db, name)
    _console().print(f"dropped gallery {name}")


# ---------------------------------------------------------------------------
# Entry point: known errors become one red line, not a traceback
# ---------------------------------------------------------------------------


def _known_errors() -> tuple[type[BaseException], ...]:
    """The errors whose message is the whole story: the library's (CatalogError and its
    subclasses), this module's UserError, a file or folder that is not there, and
    DuckDB failing to open the catalog file. Anything else is a bug: its traceback
    stays."""
    from catalog.errors import CatalogError

    known: list[type[BaseException]] = [
        UserError,
        CatalogError,
        FileNotFoundError,
        NotADirectoryError,
    ]
    if "duckdb" in sys.modules:
        import duckdb

        known.append(duckdb.IOException)
    return tuple(known)


def _missing_extra(exc: BaseException) -> str | None:
    """The one-line message for an import of an optional dependency that failed."""
    from catalog.errors import EXTRAS, MissingExtraError, require

    name = getattr(exc, "name", None) or ""
    if isinstance(exc, ModuleNotFoundError) and name.split(".")[0] in EXTRAS:
        try:
            require(name.split(".")[0])
        except MissingExtraError as missing:
            return str(missing)
        return f"{name.split('.')[0]} could not be imported: {exc}"
    return None


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
    # Ctrl-C: KeyboardInterrupt while the command runs
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _run_app()
    finally:
        # the command is over: a Ctrl-C while the interpreter shuts down gets the
        # start-up handler's one word (after the output), not a traceback from threading
        if before is not None:
            signal.signal(signal.SIGINT, before)


def _import_the_engine_whole() -> None:
    """duckdb's compiled module aborts the process ("Critical nanobind error", a
    traceback) when a Ctrl-C lands while it is imported: import it with Ctrl-C held
    until it is done, then act on it. Not for --help and the like, which need no
    catalog and stay fast."""
    args = sys.argv[1:]
    if not args or {"-h", "--help", "--version"} & set(args) or "duckdb" in sys.modules:
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        import duckdb  # noqa: F401
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt


def _run_app() -> None:
    try:
        _import_the_engine_whole()
        app()
    except (_Interrupted, KeyboardInterrupt) as exc:  # the latter: outside any command
        _console(stderr=True).print(str(exc) or "Interrupted.", style="red")
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == 130:  # typer's own exit for a Ctrl-C while it parses: silent
            _console(stderr=True).print("Interrupted.", style="red")
        raise
    except Exception as exc:
        message = _missing_extra(exc)
        if message is None and not isinstance(exc, _known_errors()):
            raise

        _console(stderr=True).print(_styled(("Error:", "red"), " ", message or _explain(exc)))
        sys.exit(1)


if __name__ == "__main__":
    main()
