"""One self-contained HTML page over a catalog's selection and results.

``celebcat report html`` and ``celebcat demo`` write it: a single ``index.html`` whose
images are embedded as base64 ``data:`` URIs and whose style is inline, so it opens
from disk in any browser, offline, with no server, and can be mailed as one file.

This module assembles the page from what the catalog holds, and from PNG bytes it is
given (figures made where torch or a model is needed: :mod:`models.pipeline.report`):

- :func:`stats_section`: the selection's statistics (:func:`catalog.stats.compute_stats`
  over a snapshot: summary, splits, face box sizes, attribute shares) and its plots;
- :func:`landmark_section`: a landmark run's test NME, failure rate and CED AUC
  (:func:`catalog.reports.landmark_report`), its CED plot, and the worst faces, each
  cropped around its face box with the predicted points (red) and the true ones
  (green) drawn, joined by a line;
- :func:`recognizer_section`: a recognizer's test and open-set figures beside the
  reference's (:func:`catalog.reports.compare_runs` with ``reference=True``), the
  open-set thresholds identification uses, and the figures it is given (ROC, cosine
  histograms, t-SNE);
- :class:`Section`: anything else (the identify result, step timings) as tables,
  images and text; :func:`render` lays the sections out as a page.

A tiny inline script (the page reads the same without it) checks on load that every
image decoded and records the count in ``<body data-images="loaded/total">``, which
the browser test reads back.

Plots need the ``plots`` extra (matplotlib); without it the page says so where a plot
would be and keeps the tables.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from catalog.db import DbArg, connect, has_table
from catalog.info import QueryResult
from catalog.metric_names import at_fpr, operating_points

__all__ = [
    "Figure",
    "Section",
    "Table",
    "landmark_section",
    "png_bytes",
    "recognizer_section",
    "render",
    "stats_section",
    "worst_faces",
    "write_page",
]

#: Worst faces shown by default.
WORST = 8
#: Colours of the worst faces' points (RGB): predicted, true, the line between them.
PREDICTED_COLOUR = (230, 40, 40)
TRUE_COLOUR = (40, 200, 60)
LINE_COLOUR = (255, 230, 60)


@dataclass(frozen=True)
class Figure:
    """A PNG to embed, its title and a caption (plain text)."""

    title: str
    png: bytes
    caption: str = ""
    width: int | None = None  # CSS pixels to show it at; None: its own width, at most the page


@dataclass(frozen=True)
class Table:
    title: str
    result: QueryResult
    note: str = ""
    collapsed: bool = False  # in a <details> element, closed
    marks: Sequence[str] = ()  # per row: "ok" (green edge), "bad" (red edge) or ""


@dataclass
class Section:
    """A heading, paragraphs of plain text, tables and figures, in that order."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    anchor: str = ""
    figures_first: bool = False  # figures before the tables (after the paragraphs)

    @property
    def id(self) -> str:
        return self.anchor or "".join(c if c.isalnum() else "-" for c in self.title.lower())


def png_bytes(path: str | os.PathLike[str]) -> bytes:
    return Path(path).read_bytes()


def _pil_png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _plots_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


NO_PLOTS = "Plots need matplotlib (pip install -e '.[plots]'); the tables stand without them."


# --- sections from the catalog ----------------------------------------------------------


def stats_section(db: DbArg, snapshot: str, *, plots: bool = True) -> Section:
    """The statistics of ``snapshot``'s images (``celebcat stats --snapshot``)."""
    from catalog.stats import compute_stats, write_plots

    stats = compute_stats(db, snapshot)
    section = Section(f"The selection: snapshot {snapshot}", anchor="selection")
    section.paragraphs.append(
        f"{stats.n_images:,} images of {stats.n_identities:,} identities, frozen as snapshot "
        f"{snapshot!r}. Attribute shares, face boxes and partitions are read from the "
        "catalog's annotation tables for these images (celebcat stats --snapshot)."
    )
    section.paragraphs.extend(stats.notes)
    if stats.splits is not None:
        section.tables.append(Table("splits", stats.splits))
    section.tables.append(Table("summary", stats.summary))
    section.tables.append(Table("face box sizes, pixels", stats.bbox_sizes))
    section.tables.append(
        Table("attribute shares (largest first)", stats.attributes, collapsed=True)
    )
    if plots and _plots_available():
        with tempfile.TemporaryDirectory(prefix="celebcat-report-") as temp:
            for path in write_plots(stats, temp):
                title = path.stem.replace("_", " ")
                section.figures.append(Figure(title, path.read_bytes(), width=480))
    elif plots:
        section.paragraphs.append(NO_PLOTS)
    return section


def worst_faces(
    db: DbArg, run_id: str, *, split: str | None = "test", n: int = WORST, size: int = 192
) -> list[Figure]:
    """The ``n`` images of ``split`` with the largest NME under landmark run ``run_id``,
    each cropped around its face box (a square 1.4 times its longer side) at ``size``
    pixels, predicted points red, true points green, a yellow line between each pair."""
    from PIL import Image, ImageDraw

    from catalog import transforms as T
    from catalog.reports import landmark_errors

    errors = landmark_errors(db, run_id, split=split)
    if not len(errors.nme):
        return []
    order = np.argsort(-errors.nme, kind="stable")[:n]
    ids = [errors.image_ids[i] for i in order]
    cols = ", ".join(f"p.{c}" for c in _landmark_columns())
    true_cols = ", ".join(f"l.{c}" for c in _landmark_columns())
    con = connect(db, read_only=True)
    try:
        root = con.execute("SELECT value FROM catalog_info WHERE key = 'image_root'").fetchone()
        rows = con.execute(
            f"SELECT p.image_id, i.path, b.x_1, b.y_1, b.width, b.height, {cols}, {true_cols} "
            "FROM landmark_predictions p JOIN images i USING (image_id) "
            "JOIN bboxes b USING (image_id) JOIN landmarks l USING (image_id) "
            "WHERE p.run_id = ? AND list_contains(?, p.image_id)",
            [run_id, ids],
        ).fetchall()
    finally:
        con.close()
    found = {r[0]: r for r in rows}
    figures = []
    for rank, (image_id, nme) in enumerate(zip(ids, errors.nme[order], strict=True), 1):
        r = found.get(image_id)
        if r is None or root is None or not root[0]:
            continue
        path = Path(root[0]) / r[1]
        if not path.is_file():
            continue
        x, y, w, h = (float(v) for v in r[2:6])
        pred = np.asarray(r[6:16], np.float64).reshape(5, 2)
        true = np.asarray(r[16:26], np.float64).reshape(5, 2)
        side = 1.4 * max(w, h)
        cx, cy = x + w / 2, y + h / 2
        region = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
        with Image.open(path) as opened:
            source, to_source = T.reduce_for_crop(opened.convert("RGB"), region, size)
            to_crop = T.box_to_square(region, size)
            crop = Image.fromarray(T.warp(source, to_crop @ T.invert(to_source), size))
        draw = ImageDraw.Draw(crop)
        p_pts, t_pts = T.apply(to_crop, pred), T.apply(to_crop, true)
        radius = max(2, size // 64)
        for (px, py), (tx, ty) in zip(p_pts, t_pts, strict=True):
            draw.line([(tx, ty), (px, py)], fill=LINE_COLOUR, width=1)
        for points, colour in ((t_pts, TRUE_COLOUR), (p_pts, PREDICTED_COLOUR)):
            for px, py in points:
                draw.ellipse(
                    [px - radius, py - radius, px + radius, py + radius],
                    fill=colour,
                    outline=(0, 0, 0),
                )
        figures.append(Figure(f"#{rank} {image_id}", _pil_png(crop), f"NME {nme:.3f}", width=size))
    return figures


def _landmark_columns() -> tuple[str, ...]:
    from catalog.formats import LANDMARK_COLUMNS

    return tuple(LANDMARK_COLUMNS)


def landmark_section(
    db: DbArg,
    run_id: str,
    *,
    split: str = "test",
    worst: int = WORST,
    plots: bool = True,
    by: Sequence[str] = (),
) -> Section:
    """A landmark run's ``split`` figures, its CED and its worst faces."""
    from catalog.reports import FAILURE_THRESHOLD, NORMALISER, landmark_report, write_ced_plot
    from catalog.results import get_run

    run = get_run(db, run_id)
    section = Section(f"Landmarks: run {run_id}", anchor="landmarks")
    model = run.config.get("model", "")
    section.paragraphs.append(
        f"{model} trained on snapshot {run.snapshot!r}; NME over the {NORMALISER.replace('_', '-')}"
        f" distance (true eye centres), failure = NME > {FAILURE_THRESHOLD:g}, AUC = area under "
        f"the CED up to {FAILURE_THRESHOLD:g}, on the {split} split (celebcat report landmarks)."
    )
    report = landmark_report(db, run_id, list(by), split=split)
    section.tables.append(Table(f"{split} split", report))
    section.tables.append(_beside_reference(db, run_id, landmarks=True))
    val = _val_curve(db, run_id, "nme")
    if val.rows:
        section.tables.append(Table("validation NME by epoch", val, collapsed=True))
    if plots and _plots_available():
        with tempfile.TemporaryDirectory(prefix="celebcat-report-") as temp:
            ced = write_ced_plot(db, run_id, Path(temp) / "ced.png", list(by), split=split)
            section.figures.append(
                Figure("cumulative error distribution", ced.read_bytes(), width=560)
            )
    elif plots:
        section.paragraphs.append(NO_PLOTS)
    faces = worst_faces(db, run_id, split=split, n=worst)
    if faces:
        section.paragraphs.append(
            f"The {len(faces)} worst faces of the {split} split, worst first: predicted "
            "points red, true points green, a yellow line from each true point to its "
            "prediction."
        )
        section.figures.extend(faces)
    return section


def _val_curve(db: DbArg, run_id: str, name: str) -> QueryResult:
    con = connect(db, read_only=True)
    try:
        rows = (
            con.execute(
                "SELECT epoch + 1 AS epoch, max(value) FILTER (split = 'train' AND name = 'loss') "
                "AS train_loss, max(value) FILTER (split = 'val' AND name = ?) AS val "
                "FROM metrics WHERE run_id = ? GROUP BY epoch HAVING val IS NOT NULL "
                "ORDER BY epoch",
                [name, run_id],
            ).fetchall()
            if has_table(con, "metrics")
            else []
        )
    finally:
        con.close()
    return QueryResult(["epoch", "train loss", f"val {name}"], rows)


def _beside_reference(db: DbArg, run_id: str, *, landmarks: bool) -> Table:
    """The run's figures beside the reference's reported ones of the same task
    (:data:`catalog.reports.REFERENCE_ROWS`), one row a figure, as ``celebcat report
    compare RUN --reference`` prints them; figures no column has are left out."""
    from catalog.reports import compare_runs

    table = compare_runs(db, [run_id], reference=True)
    shown = [table.rows[0], *(r for r in table.rows[1:] if ("landmarks" in r[0]) == landmarks)]
    rows = []
    for i, column in enumerate(table.columns):
        values = [r[i] for r in shown]
        if i < 4 or (i >= 6 and all(v is None for v in values)):  # run, kind, model, loss
            continue
        rows.append((column, *values))
    names = ["this run" if r[0] == run_id else r[0] for r in shown]
    return Table(
        "beside the reference's reported figures",
        QueryResult(["", *names], rows),
        note="The reference: real CelebA, ResNet-50 (landmarks: the hourglass at "
        "256 px), two T4 GPUs. This run: the synthetic data and CPU-sized model "
        "above. Blank: not reported.",
    )


def recognizer_section(db: DbArg, run_id: str, figures: Sequence[Figure] = ()) -> Section:
    """A recognizer's figures beside the reference's, its thresholds, and ``figures``."""
    from catalog.results import get_metrics, get_run

    run = get_run(db, run_id)
    config = run.config
    section = Section(f"Recognizer: run {run_id}", anchor="recognizer")
    section.paragraphs.append(
        f"{config.get('backbone', '')} with the {config.get('loss', '')} loss, "
        f"{config.get('size', '')} px {config.get('source', '')} crops, "
        f"{config.get('embedding_dim', '')}-d embeddings, trained on snapshot {run.snapshot!r}. "
        "Test: images of the training identities never trained on (closed set, all pairs). "
        "Open set: the held-out query identities against each other and against the "
        "distractors, the reference's protocol (celebcat eval recognizer)."
    )
    section.tables.append(_beside_reference(db, run_id, landmarks=False))
    metrics = get_metrics(db, run_id)
    latest = max((e for e, s, _ in metrics if s == "open_set"), default=None)
    if latest is not None:
        latest_names = {n for e, s, n in metrics if e == latest and s == "open_set"}
        fprs = operating_points(latest_names, "threshold")[::-1]
        rows = [
            (
                f,
                metrics.get((latest, "open_set", at_fpr("threshold", f))),
                metrics.get((latest, "open_set", at_fpr("tpr", f))),
            )
            for f in fprs
        ]
        section.tables.append(
            Table(
                "open-set thresholds (what identify names a face above)",
                QueryResult(["FPR", "cosine threshold", "TPR"], rows),
                note="Two different held-out people score above the threshold at rate FPR; "
                "two images of one held-out person do at rate TPR.",
            )
        )
    val = _val_curve(db, run_id, "top1" if config.get("loss") != "triplet" else "auc")
    if val.rows:
        section.tables.append(Table("validation by epoch", val, collapsed=True))
    section.figures.extend(figures)
    return section


# --- the page ---------------------------------------------------------------------------

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1d2330; background: #f6f7f9; margin: 0; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 60px; background: #fff; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 21px; margin: 36px 0 8px; padding-top: 12px; border-top: 2px solid #e3e6eb; }
h3 { font-size: 16px; margin: 18px 0 6px; }
p { margin: 6px 0; max-width: 860px; }
.sub { color: #5a6375; }
nav a { margin-right: 14px; }
table { border-collapse: collapse; margin: 6px 0 4px; font-size: 14px; }
th, td { border: 1px solid #d5d9e0; padding: 3px 9px; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.ok td:first-child { border-left: 4px solid #2f9e44; }
tr.bad td:first-child { border-left: 4px solid #e03131; }
.note { color: #5a6375; font-size: 13px; margin: 2px 0 10px; max-width: 520px; }
.tables { display: flex; flex-wrap: wrap; gap: 4px 36px; align-items: flex-start; }
.figures { display: flex; flex-wrap: wrap; gap: 14px; margin: 10px 0; }
figure { margin: 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #d5d9e0; }
figcaption { font-size: 13px; color: #3b4352; }
details summary { cursor: pointer; margin: 8px 0 4px; font-weight: 600; font-size: 15px; }
"""

# Counts the images that decoded once the page has loaded; <body data-images="k/n">.
_CHECK_IMAGES = """
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; }
  }
  document.body.setAttribute("data-images", ok + "/" + imgs.length);
});
"""


def _number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return ""
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return f"{int(value):,}"


def _table_html(table: Table) -> str:
    result = table.result
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in result.columns)
    body = []
    for k, row in enumerate(result.rows):
        mark = table.marks[k] if k < len(table.marks) else ""
        cells = []
        for value in row:
            number = _number(value)
            if number is not None:
                cells.append(f'<td class="num">{number}</td>')
            else:
                cells.append(f"<td>{'' if value is None else html.escape(str(value))}</td>")
        row_class = f' class="{html.escape(mark, quote=True)}"' if mark else ""
        body.append(f"<tr{row_class}>" + "".join(cells) + "</tr>")
    out = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    note = f'<p class="note">{html.escape(table.note)}</p>' if table.note else ""
    title = html.escape(table.title)
    if table.collapsed:
        return f"<details><summary>{title}</summary>{out}{note}</details>"
    return f'<div class="table"><h3>{title}</h3>{out}{note}</div>'


def _figure_html(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    width = f' width="{int(figure.width)}"' if figure.width else ""
    caption = ": ".join(x for x in (figure.title, figure.caption) if x)
    return (
        f'<figure><img src="data:image/png;base64,{data}"{width} '
        f'alt="{html.escape(figure.title, quote=True)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _tables_html(tables: Sequence[Table]) -> str:
    """Open tables side by side where they fit, then the collapsed ones."""
    shown = [_table_html(t) for t in tables if not t.collapsed]
    out = f'<div class="tables">{"".join(shown)}</div>' if shown else ""
    return out + "".join(_table_html(t) for t in tables if t.collapsed)


def _figures_html(figures: Sequence[Figure]) -> str:
    if not figures:
        return ""
    return f'<div class="figures">{"".join(_figure_html(f) for f in figures)}</div>'


def render(
    title: str,
    sections: Sequence[Section],
    *,
    subtitle: str = "",
    generated: datetime | None = None,
) -> str:
    """The page: a title, a table of contents and the sections, as one HTML string."""
    when = (generated or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_CHECK_IMAGES}</script>",
        '</head><body data-images="pending"><main>',
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="sub">{html.escape(subtitle)}{" · " if subtitle else ""}written {when}</p>',
        "<nav>"
        + "".join(f'<a href="#{html.escape(s.id)}">{html.escape(s.title)}</a>' for s in sections)
        + "</nav>",
    ]
    for section in sections:
        parts.append(
            f'<section id="{html.escape(section.id)}"><h2>{html.escape(section.title)}</h2>'
        )
        parts.extend(f"<p>{html.escape(p)}</p>" for p in section.paragraphs)
        blocks = [_tables_html(section.tables), _figures_html(section.figures)]
        parts.extend(reversed(blocks) if section.figures_first else blocks)
        parts.append("</section>")
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def write_page(out_dir: str | os.PathLike[str], page: str) -> Path:
    """``out_dir/index.html`` (the folder created), written to a temporary file and
    renamed over the old page, so a reader never sees half a page."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    temp = out / f".index.html.{os.getpid()}.tmp"
    temp.write_text(page, encoding="utf-8")
    os.replace(temp, path)
    return path
