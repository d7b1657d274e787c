"""Reports over training results: how a landmark run's error varies with attributes.

``celebcat report landmarks --run RUN --by Eyeglasses,Male --split test``: the run's
per-image NME (``landmark_predictions``, written by ``celebcat align``) joined with the
CelebA attributes, grouped by the given attributes (-1 / 1 as in list_attr_celeba).
Images without an attribute row fall in the NULL group; images without a
true-landmark NME are left out. ``split`` keeps the images of one split of the run's
snapshot (train, val, test, query, distractor, or unused: selected but in no split).

NME is normalised by the inter-ocular distance (the distance between the two true
eye centres, :data:`NORMALISER`); the per-landmark columns use the same normaliser,
so their mean over the five landmarks is the image's NME.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from catalog.db import DbArg, connect, has_table
from catalog.errors import ReportError
from catalog.formats import ATTRIBUTES, LANDMARK_COLUMNS, UNUSED_SPLIT, split_order_sql
from catalog.info import QueryResult
from catalog.metric_names import MetricName, at_fpr
from catalog.names import suggest
from catalog.results import NME_NORMALISER as NORMALISER

if TYPE_CHECKING:
    import duckdb

#: NME above this counts as a failure (the usual 10% of the inter-ocular distance).
FAILURE_THRESHOLD = 0.1
#: A snapshot image's split, 'unused' for selected images in none (as the Datasets say).
_SPLIT = f"coalesce(split, '{UNUSED_SPLIT}')"
#: The five landmarks, CelebA order ("left" = the viewer's left).
LANDMARK_NAMES: tuple[str, ...] = tuple(c[:-2] for c in LANDMARK_COLUMNS[::2])


@dataclass(frozen=True)
class LandmarkErrors:
    """Per-image errors of a run: ``nme`` (N,), ``per_landmark`` (N, 5) in
    :data:`LANDMARK_NAMES` order, ``groups`` (N,) labels of the ``by`` attributes
    (:func:`group_label`: ``"Eyeglasses=True,Male=False"``, ``"all"`` without ``by``)."""

    image_ids: list[str]
    nme: np.ndarray
    per_landmark: np.ndarray
    groups: list[str]


def group_label(names: Sequence[str], values: Sequence[bool | None]) -> str:
    """One attribute group's label, the same in every report, metric and page:
    ``Eyeglasses=True,Male=False`` (``None`` where an image has no value), ``all`` for
    no attributes."""
    return ",".join(f"{n}={v}" for n, v in zip(names, values, strict=True)) or "all"


def _check_attributes(by: Sequence[str]) -> list[str]:
    by = list(by)
    for name in by:
        if name not in ATTRIBUTES:
            near = suggest(name, ATTRIBUTES)
            use = f"{near} Use" if near else "; use"
            raise ReportError(
                f"Unknown attribute {name!r}{use} CelebA's attribute names "
                f"(e.g. {', '.join(ATTRIBUTES[:4])}, ...; all: {', '.join(ATTRIBUTES)})"
            )
    if len(set(by)) != len(by):
        raise ReportError(f"Attributes repeat in {', '.join(by)}")
    return by


def _has_predictions(con: duckdb.DuckDBPyConnection) -> bool:
    return has_table(con, "landmark_predictions")


def _per_landmark_sql() -> str:
    """``nme_<landmark>`` columns: each point's error over the true eye distance."""
    norm = "sqrt((l.righteye_x - l.lefteye_x)^2 + (l.righteye_y - l.lefteye_y)^2)"
    return ", ".join(
        f"sqrt((p.{n}_x - l.{n}_x)^2 + (p.{n}_y - l.{n}_y)^2) / {norm} AS nme_{n}"
        for n in LANDMARK_NAMES
    )


def _errors_sql(db: DbArg, run_id: str, split: str | None) -> tuple[str, list[object]]:
    """A query of the run's images with an NME: image_id, nme, nme_<landmark> x5 and
    every attribute, restricted to ``split`` of the run's snapshot; and its parameters.
    """
    from catalog.results import get_run

    run = get_run(db, run_id)  # RunError for an unknown run
    con = connect(db, read_only=True)
    try:
        # the SQL below divides by the eye distance; refuse predictions scored otherwise
        others = (
            [
                r[0]
                for r in con.execute(
                    "SELECT DISTINCT normaliser FROM landmark_predictions "
                    "WHERE run_id = ? AND normaliser <> ?",
                    [run_id, NORMALISER],
                ).fetchall()
            ]
            if _has_predictions(con)
            else []
        )
        row = con.execute("SELECT hash FROM snapshots WHERE name = ?", [run.snapshot]).fetchone()
        splits = (
            [
                r[0]
                for r in con.execute(
                    f"SELECT DISTINCT {_SPLIT} FROM snapshot_images WHERE snapshot = ? ORDER BY 1",
                    [run.snapshot],
                ).fetchall()
            ]
            if row
            else []
        )
    finally:
        con.close()
    if others:
        raise ReportError(
            f"Run {run_id}'s predictions are normalised by {', '.join(others)}; these "
            f"reports need {NORMALISER}"
        )
    args: list[object] = [run_id]
    where = ""
    if split is not None:
        if row is None or row[0] != run.snapshot_hash:
            raise ReportError(
                f"Run {run_id} was trained on snapshot {run.snapshot!r} "
                f"(hash {run.snapshot_hash[:12]}), which "
                + ("no longer exists" if row is None else f"now has hash {row[0][:12]}")
                + "; its splits are unknown, so report without --split."
            )
        if split not in splits:
            raise ReportError(
                f"Snapshot {run.snapshot!r} has no split {split!r}; it has {', '.join(splits)}"
            )
        where = (
            " AND p.image_id IN (SELECT image_id FROM snapshot_images "
            f"WHERE snapshot = ? AND {_SPLIT} = ?)"
        )
        args += [run.snapshot, split]
    sql = (
        f"SELECT p.image_id, p.nme, {_per_landmark_sql()}, a.* EXCLUDE (image_id) "
        "FROM landmark_predictions AS p LEFT JOIN landmarks AS l USING (image_id) "
        "LEFT JOIN attributes AS a USING (image_id) "
        f"WHERE p.run_id = ? AND p.nme IS NOT NULL AND NOT isnan(p.nme){where}"
    )
    return sql, args


def landmark_report(
    db: DbArg,
    run_id: str,
    by: Sequence[str] = (),
    *,
    threshold: float = FAILURE_THRESHOLD,
    split: str | None = None,
    per_landmark: bool = False,
) -> QueryResult:
    """NME mean, median, failure rate (NME > ``threshold``), CED AUC up to
    ``threshold`` and image count of run ``run_id``, one row per combination of the
    ``by`` attributes (one row overall when ``by`` is empty), ordered by them;
    ``per_landmark`` adds the mean NME of each landmark.

    Raises ReportError (a ValueError) naming an attribute that is not one of CelebA's 40 (or
    repeats), a split the run's snapshot lacks, or a snapshot recreated since the
    run; catalog.results.RunError for an unknown run.
    """
    by = _check_attributes(by)
    inner, args = _errors_sql(db, run_id, split)
    cols = ", ".join(f'"{name}"' for name in by)  # validated against ATTRIBUTES above
    marks = "".join(f", avg(nme_{n}) AS nme_{n}" for n in LANDMARK_NAMES) if per_landmark else ""
    sql = (
        f"SELECT {cols + ', ' if by else ''}"
        "avg(nme) AS nme_mean, median(nme) AS nme_median, "
        "avg(CASE WHEN nme > ? THEN 1.0 ELSE 0.0 END) AS failure_rate, "
        "avg(greatest(? - nme, 0.0)) / ? AS ced_auc, "  # catalog.ced.ced_auc, in SQL
        f"count(*) AS images{marks} FROM ({inner}) "
        f"{'GROUP BY ' + cols + ' ORDER BY ' + cols if by else ''}"
    )
    con = connect(db, read_only=True)
    try:
        cur = con.execute(sql, [threshold, threshold, threshold, *args])
        columns = [d[0] for d in cur.description]
        rows = cur.fetchall()
    finally:
        con.close()
    return QueryResult(columns, rows)


def report_scope(db: DbArg, run_id: str) -> str:
    """Which images a report of run ``run_id`` without a split covers: every image the
    run predicted, counted by its split of the run's snapshot, e.g. "covers all 340
    images run R predicted: train 210, val 45, test 45, ...; --split test for the
    test split alone". Raises RunError for an unknown run.
    """
    from catalog.results import get_run

    run = get_run(db, run_id)
    con = connect(db, read_only=True)
    try:
        total = (
            con.execute(
                "SELECT count(*) FROM landmark_predictions WHERE run_id = ? AND nme IS NOT NULL "
                "AND NOT isnan(nme)",
                [run_id],
            ).fetchone()[0]
            if _has_predictions(con)
            else 0
        )
        row = (
            con.execute("SELECT hash FROM snapshots WHERE name = ?", [run.snapshot]).fetchone()
            if has_table(con, "snapshots")
            else None
        )
        current = row is not None and row[0] == run.snapshot_hash
        counts = (
            con.execute(
                f"SELECT {_SPLIT} AS s, count(*) FROM landmark_predictions AS p "
                "JOIN snapshot_images AS i ON i.image_id = p.image_id AND i.snapshot = ? "
                "WHERE p.run_id = ? AND p.nme IS NOT NULL AND NOT isnan(p.nme) "
                f"GROUP BY s ORDER BY min({split_order_sql('split')}), s",
                [run.snapshot, run_id],
            ).fetchall()
            if current and total
            else []
        )
    finally:
        con.close()
    head = f"covers all {total:,} images run {run_id} predicted"
    if not current:
        return (
            f"{head} (snapshot {run.snapshot!r} changed since the run, so their splits are unknown)"
        )
    parts = ", ".join(f"{split} {n:,}" for split, n in counts)
    return f"{head}: {parts or 'none'}; --split test for the test split alone"


def landmark_errors(
    db: DbArg,
    run_id: str,
    by: Sequence[str] = (),
    *,
    split: str | None = None,
) -> LandmarkErrors:
    """The run's per-image errors (see :class:`LandmarkErrors`), ordered by image id.

    Raises as :func:`landmark_report`.
    """
    by = _check_attributes(by)
    inner, args = _errors_sql(db, run_id, split)
    cols = "".join(f', "{name}"' for name in by)
    marks = ", ".join(f"nme_{n}" for n in LANDMARK_NAMES)
    con = connect(db, read_only=True)
    try:
        rows = con.execute(
            f"SELECT image_id, nme, {marks}{cols} FROM ({inner}) ORDER BY image_id", args
        ).fetchall()
    finally:
        con.close()
    k = len(LANDMARK_NAMES)
    groups = [group_label(by, r[2 + k :]) for r in rows]
    return LandmarkErrors(
        image_ids=[r[0] for r in rows],
        nme=np.array([r[1] for r in rows], dtype=np.float64),
        per_landmark=np.array([r[2 : 2 + k] for r in rows], dtype=np.float64).reshape(-1, k),
        groups=groups,
    )


def write_ced_plot(
    db: DbArg,
    run_id: str,
    path: str | os.PathLike[str],
    by: Sequence[str] = (),
    *,
    split: str | None = None,
    limit: float = FAILURE_THRESHOLD,
) -> Path:
    """A PNG of the run's cumulative error distribution up to ``limit``, one curve per
    group of the ``by`` attributes, AUC and failure rate in the legend.

    Raises ReportError when the run has no predictions with an NME (run ``celebcat
    align`` first), and as :func:`landmark_report`.
    """
    from catalog.ced import plot_ced

    errors = landmark_errors(db, run_id, by, split=split)
    if not len(errors.nme):
        raise ReportError(
            f"Run {run_id} has no predictions with a true-landmark NME"
            f"{f' in split {split!r}' if split else ''}; run `celebcat align --run "
            f"{run_id} --snapshot ...` first."
        )
    curves = {
        g: errors.nme[[i for i, x in enumerate(errors.groups) if x == g]]
        for g in sorted(set(errors.groups))
    }
    title = f"CED, run {run_id}" + (f", {split}" if split else "")
    return plot_ced(curves, path, limit=limit, title=title, xlabel=f"NME ({NORMALISER})")


# --- runs side by side ------------------------------------------------------------------

#: The columns of ``celebcat report compare``: (split, metric) pairs, in order. A
#: column is shown where at least one run has it.
COMPARE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("test", "nme"),
    ("test", "failure_rate"),
    ("test", "top1"),
    ("test", "top5"),
    ("test", "verif_auc"),
    ("test", at_fpr("verif_tpr", 0.01)),
    ("test", "triplet_acc"),
    ("open_set", at_fpr("tpr", 0.5)),
    ("open_set", at_fpr("tpr", 0.2)),
    ("open_set", at_fpr("tpr", 0.1)),
    ("open_set", at_fpr("tpr", 0.05)),
    ("open_set", at_fpr("tpr", 0.01)),
    ("open_set", at_fpr("tpr", 0.001)),
    ("open_set", str(MetricName("tpir", "fpir", 0.1))),
    ("open_set", str(MetricName("tpir", "fpir", 0.01))),
)
#: The reference course project's reported figures (real CelebA, ResNet-50, 2 x T4), in
#: the same columns, for ``report compare --reference``.
REFERENCE_ROWS: dict[str, dict[tuple[str, str], float]] = {
    "reference: landmarks (hourglass, argmax)": {("test", "nme"): 0.037},
    "reference: softmax CE": {
        ("test", "top1"): 0.89,
        ("open_set", at_fpr("tpr", 0.5)): 0.98,
        ("open_set", at_fpr("tpr", 0.2)): 0.95,
        ("open_set", at_fpr("tpr", 0.1)): 0.87,
        ("open_set", at_fpr("tpr", 0.05)): 0.78,
    },
    "reference: ArcFace": {
        ("test", "top1"): 0.93,
        ("open_set", at_fpr("tpr", 0.5)): 0.97,
        ("open_set", at_fpr("tpr", 0.2)): 0.92,
        ("open_set", at_fpr("tpr", 0.1)): 0.86,
        ("open_set", at_fpr("tpr", 0.05)): 0.81,
    },
    "reference: triplet (random)": {("test", "triplet_acc"): 0.91},
}


def compare_runs(
    db: str | os.PathLike[str] | None, run_ids: Sequence[str], *, reference: bool = False
) -> QueryResult:
    """Runs side by side, one row a run: what it is (kind, model, loss), how long it
    trained, its best validation figure, and its test and open-set figures (the
    latest epoch that has them: ``celebcat align`` writes a landmark run's,
    ``celebcat eval recognizer`` a recognizer's). A pretrained run (``celebcat runs
    import``) shows its model and source, no epochs, and the figures of its latest
    evaluation (``eval recognizer --snapshot S``): measure it on the trained runs'
    snapshot to compare like with like. ``reference`` adds the reference project's
    reported figures as rows."""
    from catalog.results import get_run

    runs = [get_run(db, r) for r in run_ids]  # RunError names an unknown id
    con = connect(db, read_only=True)
    try:
        rows = con.execute(
            "SELECT run_id, epoch, split, name, value FROM metrics WHERE list_contains(?, run_id) "
            "ORDER BY run_id, epoch",
            [list(run_ids)],
        ).fetchall()
    finally:
        con.close()
    found: dict[str, dict[tuple[str, str], float]] = {r: {} for r in run_ids}
    epochs: dict[str, int] = {r: 0 for r in run_ids}
    val: dict[str, dict[str, list[float]]] = {r: {} for r in run_ids}
    for run_id, epoch, split, name, value in rows:  # later epochs overwrite earlier ones
        found[run_id][(split, name)] = value
        if split == "train":
            epochs[run_id] = max(epochs[run_id], epoch)
        if split == "val" and value is not None:
            val[run_id].setdefault(name, []).append(value)
    table = {**found, **(REFERENCE_ROWS if reference else {})}
    shown = [c for c in COMPARE_COLUMNS if any(c in v for v in table.values())]
    columns = ["run", "kind", "model", "loss", "epochs", "best val"] + [
        f"{split} {name}" for split, name in shown
    ]
    out = []
    for run in runs:
        config = run.config
        best = ""
        if run.kind == "landmarks" and val[run.run_id].get("nme"):
            best = f"nme {min(val[run.run_id]['nme']):.4f}"
        for name in ("top1", "auc"):
            if run.kind != "landmarks" and val[run.run_id].get(name):
                best = f"{name} {max(val[run.run_id][name]):.4f}"
                break
        made = config.get("pretrained")
        out.append(
            (
                run.run_id,
                run.kind,
                made.get("model", "")
                if isinstance(made, dict)
                else config.get("backbone") or config.get("model", ""),
                f"pretrained ({made.get('source')})"
                if isinstance(made, dict)
                else config.get("loss", ""),
                None if isinstance(made, dict) else epochs[run.run_id],
                best,
                *(found[run.run_id].get(c) for c in shown),
            )
        )
    if reference:
        for name, values in REFERENCE_ROWS.items():
            out.append((name, "", "", "", None, "", *(values.get(c) for c in shown)))
    return QueryResult(columns, out)


__all__ = [
    "COMPARE_COLUMNS",
    "REFERENCE_ROWS",
    "compare_runs",
    "FAILURE_THRESHOLD",
    "LANDMARK_NAMES",
    "NORMALISER",
    "LandmarkErrors",
    "landmark_errors",
    "landmark_report",
    "report_scope",
    "write_ced_plot",
]
