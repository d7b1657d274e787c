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
- :func:`failures_section`: what a recognizer gets wrong (:mod:`catalog.failures`):
  its false non-matches, false matches and most confused identity pairs, each pair
  two face thumbnails side by side (cropped around the snapshot's face box), with
  the cosine, the identities and the threshold used;
- :class:`Section`: anything else (the identify result, step timings) as tables,
  images and text; :func:`render` lays the sections out as a page.

Figures by attribute group (a landmark run's NME per group of each of
:data:`ATTRIBUTE_CHARTS`; a recognizer's test figures per ``test:<group>`` that
``eval recognizer --by`` stored) and each run's training curves (train loss and the
validation figure per epoch, numbered from 1) are inline SVG
(:mod:`catalog.report_charts`): they need no plotting library.

A tiny inline script (the page reads the same without it) checks on load that every
image decoded and records the count in ``<body data-images="loaded/total">``, which
the browser test reads back; another makes each table sortable: a click on a header
sorts the rows by that column (numbers as numbers, text alphabetically, blanks
last), a second click reverses them, an arrow marks the column and direction.

Plots need the ``plots`` extra (matplotlib); without it the page says so where a plot
would be and keeps the tables and the SVG charts.
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
from catalog.report_charts import bar_chart, line_chart

__all__ = [
    "ATTRIBUTE_CHARTS",
    "Chart",
    "FacePair",
    "Figure",
    "Panel",
    "Section",
    "Table",
    "attribute_groups",
    "failures_section",
    "face_thumbnails",
    "landmark_section",
    "png_bytes",
    "recognizer_section",
    "render",
    "recognition_groups",
    "stats_section",
    "training_charts",
    "worst_faces",
    "write_page",
]

#: Worst faces shown by default.
WORST = 8
#: Colours of the worst faces' points (RGB): predicted, true, the line between them.
PREDICTED_COLOUR = (230, 40, 40)
TRUE_COLOUR = (40, 200, 60)
LINE_COLOUR = (255, 230, 60)
#: Pairs of each kind shown in the recognition failures, and their thumbnails' side.
FAILURES = 6
THUMB = 112
#: Attributes whose groups the landmark section charts, each on its own.
ATTRIBUTE_CHARTS = ("Eyeglasses", "Wearing_Hat", "Smiling", "Male", "Young")


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


@dataclass(frozen=True)
class Chart:
    """An inline SVG chart made by :mod:`catalog.report_charts` (which escapes its
    text: ``svg`` goes into the page as it is), its title and a caption (plain text)."""

    title: str
    svg: str
    caption: str = ""


@dataclass(frozen=True)
class FacePair:
    """Two face thumbnails side by side: their labels (plain text), their PNGs (None:
    no file to show) and a caption; ``mark`` "bad" draws a red edge (an error at the
    threshold)."""

    title: str
    labels: tuple[str, str]
    pngs: tuple[bytes | None, bytes | None]
    caption: str = ""
    mark: str = ""
    width: int = THUMB


@dataclass
class Panel:
    """A titled row of charts, figures and face pairs, with a note under the title."""

    title: str
    items: list[Chart | Figure | FacePair] = field(default_factory=list)
    note: str = ""


@dataclass
class Section:
    """A heading, paragraphs of plain text, tables, panels and figures, in that order."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    anchor: str = ""
    figures_first: bool = False  # figures before the tables (after the paragraphs)
    panels: list[Panel] = field(default_factory=list)

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
    from PIL import ImageDraw

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
        crop, to_crop = _face_crop(path, (x, y, x + w, y + h), size)
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


def _face_crop(path: Path, box: Sequence[float], size: int) -> tuple[Any, np.ndarray]:
    """The image at ``path`` cropped around face box ``box`` (x_1, y_1, x_2, y_2): a
    square 1.4 times the box's longer side, about its centre, at ``size`` pixels (a
    PIL image), and the matrix from the image's pixels to the crop's."""
    from PIL import Image

    from catalog import transforms as T

    x1, y1, x2, y2 = (float(v) for v in box)
    side = 1.4 * max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    region = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    with Image.open(path) as opened:
        source, to_source = T.reduce_for_crop(opened.convert("RGB"), region, size)
        to_crop = T.box_to_square(region, size)
        crop = Image.fromarray(T.warp(source, to_crop @ T.invert(to_source), size))
    return crop, to_crop


def face_thumbnails(
    db: DbArg, snapshot: str, image_ids: Sequence[str], *, size: int = THUMB
) -> dict[str, bytes]:
    """PNG thumbnails of ``image_ids``, each cropped around its face box in
    ``snapshot`` as :func:`worst_faces` crops; images without a box or a readable
    file are left out."""
    wanted = sorted(set(image_ids))
    if not wanted:
        return {}
    con = connect(db, read_only=True)
    try:
        if not has_table(con, "images"):
            return {}
        root = con.execute("SELECT value FROM catalog_info WHERE key = 'image_root'").fetchone()
        rows = con.execute(
            "SELECT s.image_id, i.path, s.x_1, s.y_1, s.x_2, s.y_2 FROM snapshot_images s "
            "JOIN images i USING (image_id) WHERE s.snapshot = ? AND list_contains(?, s.image_id)",
            [snapshot, wanted],
        ).fetchall()
    finally:
        con.close()
    if root is None or not root[0]:
        return {}
    out = {}
    for image_id, rel, *box in rows:
        path = Path(root[0]) / rel
        if None in box or box[2] <= box[0] or box[3] <= box[1] or not path.is_file():
            continue
        try:
            crop, _ = _face_crop(path, box, size)
        except OSError:  # unreadable since it was checked: no thumbnail, the pair stays
            continue
        out[str(image_id)] = _pil_png(crop)
    return out


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
    attributes: Sequence[str] = ATTRIBUTE_CHARTS,
) -> Section:
    """A landmark run's ``split`` figures, its NME per group of each of ``attributes``
    (a chart and a table), its training curves, its CED and its worst faces."""
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
    groups = attribute_groups(db, run_id, attributes, split=split)
    if groups.rows:
        overall = report.rows[0][report.columns.index("nme_mean")] if not by else None
        section.panels.append(
            Panel(
                f"{split} NME by attribute",
                [
                    Chart(
                        "mean NME per attribute group",
                        bar_chart(
                            [r[0] for r in groups.rows],
                            [r[1] for r in groups.rows],
                            title=f"{split} NME by attribute, run {run_id}",
                            counts=[r[-1] for r in groups.rows],
                            reference=overall,
                            reference_label=f"all {split}",
                        ),
                        "each attribute on its own; n = images; the dashed line: all images",
                    )
                ],
            )
        )
        section.tables.append(Table(f"{split} NME by attribute", groups, collapsed=True))
    elif attributes:
        section.paragraphs.append(
            "No NME by attribute: the catalog has no attributes (list_attr_celeba)."
        )
    curves = training_charts(db, run_id, "nme", "val NME")
    if curves:
        section.panels.append(Panel("training", curves))
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


def attribute_groups(
    db: DbArg, run_id: str, attributes: Sequence[str], *, split: str | None = "test"
) -> QueryResult:
    """A landmark run's figures per group of each of ``attributes`` on its own
    (:func:`catalog.reports.landmark_report` by one attribute, then the next), one row
    a group labelled as :func:`catalog.reports.group_label` does (``Eyeglasses=True``);
    no rows where the catalog has no attributes."""
    from catalog.reports import group_label, landmark_report

    columns = ["group", "nme_mean", "nme_median", "failure_rate", "ced_auc", "images"]
    con = connect(db, read_only=True)
    try:
        known = has_table(con, "attributes")
    finally:
        con.close()
    rows: list[tuple[Any, ...]] = []
    for name in attributes if known else ():
        report = landmark_report(db, run_id, [name], split=split)
        for r in report.rows:
            rows.append((group_label([name], [r[0]]), *r[1:]))
    return QueryResult(columns, rows)


#: The figures of a recognizer's groups that the page shows (charts: the first two).
_GROUP_FIGURES = ("top1", "verif_auc", "top5", "verif_eer", "triplet_acc")


def recognition_groups(db: DbArg, run_id: str, split: str = "test") -> QueryResult:
    """A recognizer's ``split`` figures per attribute group, as ``celebcat eval
    recognizer --by`` stored them (metrics splits ``test:<group>``), at the latest
    epoch that has any: one row a group, a column a figure; the overall figures of
    that epoch as the row ``all``, first."""
    con = connect(db, read_only=True)
    try:
        rows = (
            con.execute(
                "WITH m AS (SELECT * FROM metrics WHERE run_id = ? AND "
                "(split = ? OR starts_with(split, ?))), "
                "latest AS (SELECT max(epoch) AS e FROM m WHERE split <> ?) "
                "SELECT split, name, value FROM m, latest WHERE epoch = latest.e "
                "ORDER BY split, name",
                [run_id, split, split + ":", split],
            ).fetchall()
            if has_table(con, "metrics")
            else []
        )
    finally:
        con.close()
    found: dict[str, dict[str, float]] = {}
    for where, name, value in rows:
        group = "all" if where == split else where[len(split) + 1 :]
        found.setdefault(group, {})[name] = value
    if set(found) <= {"all"}:
        return QueryResult(["group"], [])
    names = [n for n in _GROUP_FIGURES if any(n in v for v in found.values())]
    order = ["all", *sorted(g for g in found if g != "all")]
    return QueryResult(
        ["group", *names],
        [(g, *(found.get(g, {}).get(n) for n in names)) for g in order if g in found],
    )


def _val_curve(db: DbArg, run_id: str, name: str, *, every_epoch: bool = False) -> QueryResult:
    """(epoch from 1, train loss, val ``name``) per epoch that has the val figure
    (``every_epoch``: either figure)."""
    having = "train_loss IS NOT NULL OR val IS NOT NULL" if every_epoch else "val IS NOT NULL"
    con = connect(db, read_only=True)
    try:
        rows = (
            con.execute(
                "SELECT epoch, max(value) FILTER (split = 'train' AND name = 'loss') "
                "AS train_loss, max(value) FILTER (split = 'val' AND name = ?) AS val "
                f"FROM metrics WHERE run_id = ? GROUP BY epoch HAVING {having} "
                "ORDER BY epoch",
                [name, run_id],
            ).fetchall()
            if has_table(con, "metrics")
            else []
        )
    finally:
        con.close()
    return QueryResult(["epoch", "train loss", f"val {name}"], rows)


def training_charts(db: DbArg, run_id: str, name: str, label: str) -> list[Chart]:
    """Line charts of run ``run_id``'s train loss and its validation figure ``name``
    (shown as ``label``) per epoch, epochs numbered from 1 as training prints them; a
    chart only where the run logged that figure."""
    curve = _val_curve(db, run_id, name, every_epoch=True)
    charts = []
    for column, what in ((1, "train loss"), (2, label)):
        points = [(r[0], r[column]) for r in curve.rows if r[column] is not None]
        if not points:
            continue
        charts.append(
            Chart(
                f"{what} by epoch",
                line_chart(
                    [(what, [e for e, _ in points], [v for _, v in points])],
                    title=f"{what} by epoch, run {run_id}",
                    y_label=what,
                ),
                f"{len(points)} epoch(s)",
            )
        )
    return charts


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
    groups = recognition_groups(db, run_id)
    if groups.rows:
        overall = groups.rows[0] if groups.rows[0][0] == "all" else None
        shown = [r for r in groups.rows if r[0] != "all"]
        charts = []
        for name in groups.columns[1:3]:
            k = groups.columns.index(name)
            charts.append(
                Chart(
                    f"test {_FIGURE_NAMES.get(name, name)} by attribute group",
                    bar_chart(
                        [r[0] for r in shown],
                        [r[k] for r in shown],
                        title=f"test {_FIGURE_NAMES.get(name, name)} by attribute group, "
                        f"run {run_id}",
                        reference=overall[k] if overall else None,
                        reference_label="all test",
                    ),
                    "each group's own pairs and images; the dashed line: all test images",
                )
            )
        if charts:
            section.panels.append(Panel("test figures by attribute group", charts))
        section.tables.append(Table("test figures by attribute group", groups, collapsed=True))
    else:
        section.paragraphs.append(
            f"No figures by attribute group: `celebcat eval recognizer --run {run_id} "
            "--by Eyeglasses,Male` stores them (as splits test:<group>)."
        )
    val_name = "top1" if config.get("loss") != "triplet" else "auc"
    curves = training_charts(db, run_id, val_name, f"val {_FIGURE_NAMES.get(val_name, val_name)}")
    if curves:
        section.panels.append(Panel("training", curves))
    val = _val_curve(db, run_id, val_name)
    if val.rows:
        section.tables.append(Table("validation by epoch", val, collapsed=True))
    section.figures.extend(figures)
    return section


def _snapshot_hash(db: DbArg, snapshot: str) -> str | None:
    con = connect(db, read_only=True)
    try:
        row = con.execute("SELECT hash FROM snapshots WHERE name = ?", [snapshot]).fetchone()
    finally:
        con.close()
    return None if row is None else row[0]


#: How the charts name a recognizer's figures.
_FIGURE_NAMES = {
    "top1": "top-1",
    "top5": "top-5",
    "verif_auc": "verification AUC",
    "verif_eer": "verification EER",
    "auc": "AUC",
    "triplet_acc": "triplet accuracy",
}


def failures_section(
    db: DbArg,
    run_id: str,
    *,
    snapshot: str | None = None,
    split: str = "test",
    top: int = FAILURES,
    size: int = THUMB,
) -> Section:
    """What recognizer run ``run_id`` gets wrong on ``split`` of ``snapshot`` (default:
    the run's) (:func:`catalog.failures.recognition_failures`): its false non-matches,
    false matches and most confused identity pairs, ``top`` of each, as face thumbnails
    side by side with their cosine and identities, and the threshold used. Where the
    run has no embeddings there, the section says what to run."""
    from catalog.failures import FPR, recognition_failures
    from catalog.results import get_run

    section = Section(f"Recognition failures: run {run_id}", anchor="failures")
    run = get_run(db, run_id)
    try:
        found = recognition_failures(db, run_id, snapshot=snapshot, split=split, top=top)
    except ValueError as err:  # no embeddings there; RunError, SnapshotError are ValueErrors
        section.paragraphs.append(
            f"No failures to show: {err} Run `celebcat embed --run {run_id}` (the "
            f"embeddings) or `celebcat eval recognizer --run {run_id}` (the embeddings, the "
            "test and open-set figures and the threshold), then write the page again."
        )
        return section
    threshold = found.threshold
    section.paragraphs.append(
        f"What run {run_id} gets wrong on the {split} split of snapshot {found.snapshot!r} "
        f"({found.images:,} images of {found.identities:,} people), from its stored "
        "embeddings (catalog.failures): every pair of images scored by the cosine of their "
        "embeddings. Each face is cropped around the snapshot's face box."
    )
    if found.snapshot == run.snapshot and _snapshot_hash(db, run.snapshot) != run.snapshot_hash:
        section.paragraphs.append(
            f"Snapshot {run.snapshot!r} was recreated since run {run_id} trained on it: its "
            f"{split} split is not the run's, so some of these images may have been trained on."
        )
    if threshold is not None:
        where = (
            f"the run's pair threshold at FPR {FPR:g} as celebcat eval recognizer stored "
            f"it: open_set {at_fpr('threshold', FPR)}"
            if found.threshold_source.startswith("stored")
            else found.threshold_source
        )
        section.paragraphs.append(
            f"Threshold: cosine {threshold:.3f} ({where}): a pair above it is called the same "
            "person. A red edge marks a pair the threshold gets wrong."
        )
    else:
        section.paragraphs.append(
            "Threshold: none (the run has no stored open-set threshold; `celebcat eval "
            f"recognizer --run {run_id}` stores one): pairs are ranked by cosine alone."
        )
    ids = [p.image_a for p in found.false_non_matches + found.false_matches]
    ids += [p.image_b for p in found.false_non_matches + found.false_matches]
    ids += [c.closest.image_a for c in found.confused] + [c.closest.image_b for c in found.confused]
    thumbs = face_thumbnails(db, found.snapshot, ids, size=size)

    def pair(title: str, p: Any, caption: str, wrong: bool) -> FacePair:
        return FacePair(
            title,
            (f"{p.image_a} (identity {p.identity_a})", f"{p.image_b} (identity {p.identity_b})"),
            (thumbs.get(p.image_a), thumbs.get(p.image_b)),
            caption,
            "bad" if wrong else "",
            size,
        )

    def below(cosine: float) -> bool:
        return threshold is not None and cosine <= threshold

    def above(cosine: float) -> bool:
        return threshold is not None and cosine > threshold

    def wrong_note(n: int, total: int, what: str) -> str:
        if threshold is None:
            return f"{total} pair(s)."
        return f"{n} of these {total} {what} at the threshold."

    fnm = found.false_non_matches
    section.panels.append(
        Panel(
            "false non-matches: the same person, lowest cosine",
            [
                pair(
                    f"#{k} cosine {p.cosine:.3f}",
                    p,
                    f"both identity {p.identity_a}",
                    below(p.cosine),
                )
                for k, p in enumerate(fnm, 1)
            ],
            wrong_note(sum(below(p.cosine) for p in fnm), len(fnm), "are called two people"),
        )
    )
    fm = found.false_matches
    section.panels.append(
        Panel(
            "false matches: different people, highest cosine",
            [
                pair(
                    f"#{k} cosine {p.cosine:.3f}",
                    p,
                    f"identities {p.identity_a} and {p.identity_b}",
                    above(p.cosine),
                )
                for k, p in enumerate(fm, 1)
            ],
            wrong_note(sum(above(p.cosine) for p in fm), len(fm), "are called one person"),
        )
    )
    confused = found.confused
    section.panels.append(
        Panel(
            "most confused identities: the closest centres, with their closest pair",
            [
                pair(
                    f"#{k} identities {c.identity_a} and {c.identity_b}",
                    c.closest,
                    f"centres' cosine {c.centre_cosine:.3f}; closest pair {c.closest.cosine:.3f}"
                    + (
                        f"; {c.above_threshold} of {c.pairs} pairs above the threshold"
                        if threshold is not None
                        else f"; {c.pairs} pairs"
                    ),
                    c.above_threshold > 0,
                )
                for k, c in enumerate(confused, 1)
            ],
            "A person's centre: the mean of their embeddings, normalised.",
        )
    )
    section.tables.append(
        Table(
            "most confused identities",
            QueryResult(
                [
                    "identity a",
                    "identity b",
                    "centres' cosine",
                    "pairs above threshold",
                    "pairs",
                    "closest pair's cosine",
                ],
                [
                    (
                        c.identity_a,
                        c.identity_b,
                        c.centre_cosine,
                        c.above_threshold if threshold is not None else None,
                        c.pairs,
                        c.closest.cosine,
                    )
                    for c in confused
                ],
            ),
            collapsed=True,
        )
    )
    if ids and not thumbs:
        section.paragraphs.append("No thumbnails: the catalog has no image files to crop.")
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
th.sortable { cursor: pointer; user-select: none; }
th.sortable::after { content: " \\2195"; color: #98a1b3; font-size: 12px; }
th.sortable[aria-sort="ascending"]::after { content: " \\25B2"; color: #1d2330; }
th.sortable[aria-sort="descending"]::after { content: " \\25BC"; color: #1d2330; }
.panel .note { max-width: 860px; }
figure.chart svg { display: block; background: #fff; border: 1px solid #d5d9e0; }
figure.pair { padding: 4px; border: 1px solid #d5d9e0; background: #fafbfc; }
figure.pair.bad { border: 2px solid #e03131; }
figure.pair .faces { display: flex; gap: 4px; }
figure.pair .face { display: flex; flex-direction: column; font-size: 11px; color: #3b4352;
                    max-width: var(--w); overflow-wrap: anywhere; }
figure.pair img { border: 1px solid #d5d9e0; }
figure.pair .missing { display: flex; align-items: center; justify-content: center;
                       background: #eef1f5; color: #5a6375; }
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


# Sorts a table by the column whose header is clicked (or Enter/Space on it): numbers
# (commas dropped) before text, text alphabetically, blanks last either way; a second
# click reverses; aria-sort on the header drives the arrow (CSS above).
_SORT_TABLES = """
document.addEventListener("DOMContentLoaded", function () {
  function key(row, i) {
    var cell = row.cells[i], text = cell ? cell.textContent.trim() : "";
    var n = text === "" ? NaN : Number(text.replace(/,/g, ""));
    return { text: text, num: n };
  }
  function compare(a, b) {
    if (a.text === "" || b.text === "") { return 0; }
    var an = !isNaN(a.num), bn = !isNaN(b.num);
    if (an && bn) { return a.num - b.num; }
    if (an !== bn) { return an ? -1 : 1; }
    return a.text.localeCompare(b.text, undefined, { numeric: true, sensitivity: "base" });
  }
  function sortBy(table, th, i) {
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    var heads = table.tHead.rows[0].cells;
    for (var h = 0; h < heads.length; h++) { heads[h].removeAttribute("aria-sort"); }
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var keyed = rows.map(function (row) { return [key(row, i), row]; });
    keyed.sort(function (x, y) {
      var blank = (x[0].text === "") - (y[0].text === "");
      return blank !== 0 ? blank : dir * compare(x[0], y[0]);
    });
    keyed.forEach(function (pair) { body.appendChild(pair[1]); });
  }
  var tables = document.querySelectorAll("table.sortable");
  for (var t = 0; t < tables.length; t++) {
    var heads = tables[t].tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) {
      (function (table, th, i) {
        th.className += " sortable";
        th.tabIndex = 0;
        th.title = "sort by this column";
        th.addEventListener("click", function () { sortBy(table, th, i); });
        th.addEventListener("keydown", function (event) {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            sortBy(table, th, i);
          }
        });
      })(tables[t], heads[i], i);
    }
  }
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
    sortable = ' class="sortable"' if len(result.rows) > 1 else ""
    out = f"<table{sortable}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
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


def _chart_html(chart: Chart) -> str:
    caption = ": ".join(x for x in (chart.title, chart.caption) if x)
    return (
        f'<figure class="chart">{chart.svg}<figcaption>{html.escape(caption)}</figcaption></figure>'
    )


def _face_pair_html(pair: FacePair) -> str:
    width = int(pair.width)
    faces = []
    for label, png in zip(pair.labels, pair.pngs, strict=True):
        alt = html.escape(label, quote=True)
        if png is None:
            face = (
                f'<div class="missing" style="width:{width}px;height:{width}px" '
                f'title="{alt}">no image</div>'
            )
        else:
            data = base64.b64encode(png).decode("ascii")
            face = f'<img src="data:image/png;base64,{data}" width="{width}" alt="{alt}">'
        faces.append(f'<div class="face" style="--w:{width}px">{face}{html.escape(label)}</div>')
    mark = f" {html.escape(pair.mark, quote=True)}" if pair.mark else ""
    caption = ": ".join(x for x in (pair.title, pair.caption) if x)
    return (
        f'<figure class="pair{mark}" style="width:{2 * width + 8}px">'
        f'<div class="faces">{"".join(faces)}</div>'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _item_html(item: Chart | Figure | FacePair) -> str:
    if isinstance(item, Chart):
        return _chart_html(item)
    if isinstance(item, FacePair):
        return _face_pair_html(item)
    return _figure_html(item)


def _panels_html(panels: Sequence[Panel]) -> str:
    out = []
    for panel in panels:
        note = f'<p class="note">{html.escape(panel.note)}</p>' if panel.note else ""
        items = "".join(_item_html(i) for i in panel.items)
        out.append(
            f'<div class="panel"><h3>{html.escape(panel.title)}</h3>{note}'
            f'<div class="figures">{items}</div></div>'
        )
    return "".join(out)


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
        f"<script>{_CHECK_IMAGES}{_SORT_TABLES}</script>",
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
        tables, figures = _tables_html(section.tables), _figures_html(section.figures)
        panels = _panels_html(section.panels)
        parts.extend(
            (figures, tables, panels) if section.figures_first else (tables, panels, figures)
        )
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
