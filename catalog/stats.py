"""``celebcat stats``: what is in the catalog, before anything is selected.

The reference workflow's step 0: attribute shares (Male ~42%, Blurry ~5% on
CelebA), identities and how many images each has (how many reach the
``min_images_per_id`` the selection needs), face box sizes (how many fall under the
``min_box_w`` x ``min_box_h`` cut), image sizes and the train/valid/test partition.
Over the whole catalog or over the images of one snapshot. The two thresholds are
the selection parameters in force (``params``), or the snapshot's own; a caller may
give others.

Everything is computed in DuckDB, a handful of aggregate queries; Python only
reshapes their few result rows, so the cost does not grow with the catalog beyond
what DuckDB spends scanning it. Histograms for the plots are binned in SQL too.

A snapshot freezes its image ids, identities and splits, not the annotations: its
attribute shares, face boxes and partitions are read from the current annotation
tables, restricted to its images. Identities come from the snapshot itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalog import snapshots
from catalog.db import DbArg, connect, has_table
from catalog.formats import ANNOTATION_TABLES, ATTRIBUTES, UNUSED_SPLIT, split_order_sql
from catalog.info import QueryResult

if TYPE_CHECKING:
    import duckdb

#: Width of the histogram bins fetched for the plots, in pixels.
BIN_PX = 10

QUANTILES: tuple[tuple[str, float], ...] = (
    ("min", 0.0),
    ("5%", 0.05),
    ("25%", 0.25),
    ("median", 0.5),
    ("75%", 0.75),
    ("95%", 0.95),
    ("max", 1.0),
)


@dataclass(frozen=True)
class Stats:
    """Step-0 statistics of a catalog or snapshot.

    The headline numbers are plain fields; the tables are :class:`QueryResult` s
    (``tables()`` lists the ones to print, in order). Shares are fractions (0..1)
    rounded to 4 decimals in the tables and exact in the fields; sizes are pixels.
    ``*_bins`` hold (width_bin, height_bin, count) over ``bin_px`` pixel bins, the raw
    distribution for the plots. ``image_sizes`` is None when the catalog has no image
    index; ``splits`` is None for the whole catalog.
    """

    scope: str  # "whole catalog" or "snapshot NAME"
    snapshot: str | None
    n_images: int
    n_identities: int
    male_share: float | None
    blurry_share: float | None
    many_images: int  # the threshold of ids_with_many (min_images_per_id)
    ids_with_many: int
    images_per_id_min: int | None
    images_per_id_median: float | None
    images_per_id_max: int | None
    small_box: tuple[int, int]  # (width, height) threshold of small_box_share (min_box_w/h)
    small_box_share: float | None
    summary: QueryResult  # statistic, value
    attributes: QueryResult  # attribute, positive, share (largest share first)
    images_per_identity: QueryResult  # images, identities (k = 1..max, zeros included)
    bbox_sizes: QueryResult  # statistic, width, height
    image_sizes: QueryResult | None  # statistic, width, height
    partitions: QueryResult  # partition, images, identities
    splits: QueryResult | None  # split, images, identities
    bin_px: int
    bbox_bins: QueryResult  # width_bin, height_bin, boxes
    image_size_bins: QueryResult | None  # width_bin, height_bin, images
    notes: list[str] = field(default_factory=list)

    def tables(self) -> dict[str, QueryResult]:
        """The tables worth printing, titled, in reading order (no plot bins)."""
        out = {
            f"{self.scope}: summary": self.summary,
            "attribute shares (positive share, largest first)": self.attributes,
            "images per identity (identities having k images)": self.images_per_identity,
            "face box sizes, pixels (bboxes)": self.bbox_sizes,
        }
        if self.image_sizes is not None:
            out["image sizes, pixels (image index)"] = self.image_sizes
        out["partitions (list_eval_partition)"] = self.partitions
        if self.splits is not None:
            out[f"splits of snapshot {self.snapshot}"] = self.splits
        return out

    def as_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready data: headline fields, each table as a list of dicts."""

        def rows(result: QueryResult | None) -> list[dict[str, Any]] | None:
            if result is None:
                return None
            return [dict(zip(result.columns, row, strict=True)) for row in result.rows]

        return {
            "scope": self.scope,
            "snapshot": self.snapshot,
            "images": self.n_images,
            "identities": self.n_identities,
            "male_share": self.male_share,
            "blurry_share": self.blurry_share,
            f"identities_with_{self.many_images}_or_more_images": self.ids_with_many,
            "images_per_identity": {
                "min": self.images_per_id_min,
                "median": self.images_per_id_median,
                "max": self.images_per_id_max,
                "histogram": rows(self.images_per_identity),
            },
            f"boxes_under_{_box_text(self.small_box, '_')}_share": self.small_box_share,
            "thresholds": {
                "min_images_per_id": self.many_images,
                "min_box_w": self.small_box[0],
                "min_box_h": self.small_box[1],
            },
            "attributes": rows(self.attributes),
            "bbox_sizes": rows(self.bbox_sizes),
            "image_sizes": rows(self.image_sizes),
            "partitions": rows(self.partitions),
            "splits": rows(self.splits),
            "notes": list(self.notes),
        }


def compute_stats(
    db: DbArg = None,
    snapshot: str | None = None,
    *,
    many_images: int | None = None,
    small_box: int | tuple[int, int] | None = None,
    bin_px: int = BIN_PX,
) -> Stats:
    """Step-0 statistics of the catalog ``db``, or of the images of snapshot ``snapshot``.

    ``many_images`` (identities with at least this many images) and ``small_box``
    (boxes narrower or lower than (width, height), or a side for both) default to the
    selection's ``min_images_per_id`` and ``min_box_w`` / ``min_box_h``: the snapshot's
    parameters with ``snapshot``, else those in force.

    Raises :class:`~catalog.snapshots.SnapshotError` naming the known snapshots when
    ``snapshot`` does not exist. Opens one read-only connection and closes it.
    """
    con = connect(db, read_only=True)
    try:
        params = _params(con, snapshot)
        if many_images is None:
            many_images = int(params["min_images_per_id"])
        if small_box is None:
            small_box = (int(params["min_box_w"]), int(params["min_box_h"]))
        elif isinstance(small_box, int):
            small_box = (small_box, small_box)
        if bin_px < 1 or many_images < 1 or min(small_box) < 0:
            raise ValueError(
                f"bin_px and many_images must be at least 1 and small_box at least 0; got "
                f"bin_px={bin_px}, many_images={many_images}, small_box={small_box}"
            )
        if snapshot is not None:
            # A temporary table lives in the connection's in-memory temp catalog, so it
            # works on a read-only catalog and lets every query below stay parameter-free.
            con.execute(
                "CREATE TEMP TABLE _stats_scope AS SELECT image_id, identity, split "
                "FROM snapshot_images WHERE snapshot = ?",
                [snapshot],
            )
        return _compute(con, snapshot, many_images, small_box, bin_px)
    finally:
        con.close()


def _params(con: duckdb.DuckDBPyConnection, snapshot: str | None) -> dict[str, float]:
    """The snapshot's parameters (SnapshotError naming the known ones for an unknown
    name), else the ones in force, else the defaults (a catalog without ``params``)."""
    from catalog.views import DEFAULTS

    if snapshot is not None:
        return {**DEFAULTS, **snapshots.get(con, snapshot).params}
    if has_table(con, "params"):
        return {**DEFAULTS, **dict(con.execute("SELECT name, value FROM params").fetchall())}
    return dict(DEFAULTS)


def _box_text(box: tuple[int, int], sep: str = " ") -> str:
    """ "100 px" for a square threshold, "80x100 px" otherwise."""
    w, h = box
    return f"{w}{sep}px" if w == h else f"{w}x{h}{sep}px"


def _compute(
    con: duckdb.DuckDBPyConnection,
    snapshot: str | None,
    many_images: int,
    small_box: tuple[int, int],
    bin_px: int,
) -> Stats:
    scoped = snapshot is not None
    notes: list[str] = []

    def table(name: str) -> str:
        """``name``, restricted to the snapshot's images when there is one."""
        if not scoped:
            return name
        return f"(SELECT * FROM {name} SEMI JOIN _stats_scope USING (image_id))"

    # Identities: a snapshot's own (frozen at creation), else the identities table.
    ids = "_stats_scope" if scoped else "identities"

    # --- images and attributes: one scan of attributes for all 40 shares -------------
    if scoped:
        n_images = con.execute("SELECT count(*) FROM _stats_scope").fetchone()[0]
    else:
        union = " UNION ".join(f"SELECT image_id FROM {t}" for t in ANNOTATION_TABLES)
        n_images = con.execute(f"SELECT count(*) FROM ({union})").fetchone()[0]
    # count(*) FILTER, not count_if: over zero rows count_if gives NULL, this gives 0.
    counts = ", ".join(f'count(*) FILTER ("{a}")' for a in ATTRIBUTES)
    n_attr, *positives = con.execute(
        f"SELECT count(*), {counts} FROM {table('attributes')}"
    ).fetchone()
    positive = dict(zip(ATTRIBUTES, positives, strict=True))
    shares = {a: (p / n_attr if n_attr else None) for a, p in positive.items()}
    attributes = QueryResult(
        ["attribute", "positive", "share"],
        sorted(
            ((a, p, _r4(shares[a])) for a, p in positive.items()),
            key=lambda row: (-row[1], row[0]),
        ),
    )
    if n_attr != n_images:
        notes.append(
            f"Attribute shares are over the {n_attr:,} of {n_images:,} images that have attributes."
        )

    # --- images per identity ----------------------------------------------------------
    per_id = f"SELECT identity, count(*) AS n FROM {ids} GROUP BY identity"
    n_ids, id_min, id_median, id_max, n_many = con.execute(
        f"SELECT count(*), min(n), median(n), max(n), count(*) FILTER (n >= {int(many_images)}) "
        f"FROM ({per_id})"
    ).fetchone()
    # Every k from 1 to the maximum, zeros included, so the histogram has no gaps.
    histogram = con.execute(
        f"WITH per_id AS ({per_id}), "
        "ks AS (SELECT unnest(range(1, max(n) + 1)) AS k FROM per_id) "
        "SELECT ks.k::INTEGER AS images, count(per_id.identity) AS identities "
        "FROM ks LEFT JOIN per_id ON per_id.n = ks.k GROUP BY ks.k ORDER BY ks.k"
    ).fetchall()
    images_per_identity = QueryResult(["images", "identities"], histogram)

    # --- face boxes and image sizes ---------------------------------------------------
    bbox_sizes, n_boxes, n_small, bbox_bins = _sizes(
        con, table("bboxes"), bin_px, small_box, "boxes"
    )
    small_share = n_small / n_boxes if n_boxes else None

    images_table = table("images") if has_table(con, "images") else None
    n_sized = 0
    image_sizes = image_bins = None
    if images_table is not None:
        image_sizes, n_sized, _, image_bins = _sizes(con, images_table, bin_px, None, "images")
    if n_sized == 0:
        image_sizes = image_bins = None
        notes.append(
            "No image sizes: no image index for these images (ingested without images, "
            "or no image header could be read). `celebcat ingest DIR` with the image "
            "folder in place fills it."
        )

    # --- partitions and splits --------------------------------------------------------
    partitions = _result(
        con,
        f"SELECT p.partition_name AS partition, count(*) AS images, "
        f"count(DISTINCT i.identity) AS identities "
        f"FROM {table('partitions')} AS p LEFT JOIN {ids} AS i USING (image_id) "
        "GROUP BY p.partition, p.partition_name ORDER BY p.partition",
    )
    splits = None
    if scoped:
        splits = _result(
            con,
            f"SELECT coalesce(split, '{UNUSED_SPLIT}') AS split, count(*) AS images, "
            "count(DISTINCT identity) AS identities FROM _stats_scope GROUP BY 1 "
            f"ORDER BY min({split_order_sql('split')}), 1",
        )

    male, blurry = shares["Male"], shares["Blurry"]
    summary_rows: list[tuple[str, Any]] = [
        ("images", n_images),
        ("identities", n_ids),
        ("Male share", _r4(male)),
        ("Blurry share", _r4(blurry)),
        ("images per identity: min", id_min),
        ("images per identity: median", id_median),
        ("images per identity: max", id_max),
        (f"identities with >= {many_images} images", n_many),
        ("face boxes", n_boxes),
        (f"boxes under {_box_wide_or_high(small_box)}", n_small),
        (f"boxes under {_box_text(small_box)}: share", _r4(small_share)),
        ("images with a size in the image index", n_sized),
    ]
    return Stats(
        scope=f"snapshot {snapshot}" if scoped else "whole catalog",
        snapshot=snapshot,
        n_images=n_images,
        n_identities=n_ids,
        male_share=male,
        blurry_share=blurry,
        many_images=many_images,
        ids_with_many=n_many,
        images_per_id_min=id_min,
        images_per_id_median=id_median,
        images_per_id_max=id_max,
        small_box=small_box,
        small_box_share=small_share,
        summary=QueryResult(["statistic", "value"], summary_rows),
        attributes=attributes,
        images_per_identity=images_per_identity,
        bbox_sizes=bbox_sizes,
        image_sizes=image_sizes,
        partitions=partitions,
        splits=splits,
        bin_px=bin_px,
        bbox_bins=bbox_bins,
        image_size_bins=image_bins,
        notes=notes,
    )


def _box_wide_or_high(box: tuple[int, int]) -> str:
    w, h = box
    return f"{w} px wide or high" if w == h else f"{w} px wide or {h} px high"


def _sizes(
    con: duckdb.DuckDBPyConnection,
    source: str,
    bin_px: int,
    small: tuple[int, int] | None,
    what: str,
) -> tuple[QueryResult, int, int, QueryResult]:
    """Quantiles of width/height, rows with both, rows under ``small``, 2D bins.

    Rows with a NULL width or height (unreadable images) are left out of everything.
    """
    qs = "[" + ", ".join(str(q) for _, q in QUANTILES) + "]"
    under = (
        f"count(*) FILTER (width < {int(small[0])} OR height < {int(small[1])})" if small else "0"
    )
    n, n_small, widths, heights = con.execute(
        f"SELECT count(*), {under}, quantile_cont(width, {qs}), quantile_cont(height, {qs}) "
        f"FROM {source} WHERE width IS NOT NULL AND height IS NOT NULL"
    ).fetchone()
    widths = widths or [None] * len(QUANTILES)
    heights = heights or [None] * len(QUANTILES)
    quantiles = QueryResult(
        ["statistic", "width", "height"],
        [
            (label, _r1(w), _r1(h))
            for (label, _), w, h in zip(QUANTILES, widths, heights, strict=True)
        ],
    )
    # floor(), not integer division: // truncates toward zero, which would merge the
    # bins either side of 0 should a malformed negative size ever appear.
    bins = _result(
        con,
        f"SELECT (floor(width / {int(bin_px)}) * {int(bin_px)})::INTEGER AS width_bin, "
        f"(floor(height / {int(bin_px)}) * {int(bin_px)})::INTEGER AS height_bin, "
        f"count(*) AS {what} FROM {source} "
        "WHERE width IS NOT NULL AND height IS NOT NULL GROUP BY ALL ORDER BY ALL",
    )
    return quantiles, n, n_small, bins


def _result(con: duckdb.DuckDBPyConnection, sql: str) -> QueryResult:
    cur = con.execute(sql)
    return QueryResult([d[0] for d in cur.description], cur.fetchall())


def _r4(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _r1(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)


# --------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------


def write_plots(stats: Stats, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write the step-0 charts as PNG files into ``out_dir``; returns the paths written.

    ``attribute_shares.png``, ``images_per_identity.png``, ``bbox_sizes.png``,
    ``image_sizes.png`` (only with an image index) and ``partitions.png`` (with the
    snapshot's splits beside the partitions). A chart whose data are empty is skipped.
    """
    # Imported here so `import catalog.stats` (and `celebcat --help`) stays light. Figures
    # are made with matplotlib.figure.Figure, not pyplot: no global backend switch or
    # figure registry, and savefig renders PNG with Agg on machines without a display.
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, draw in (
        ("attribute_shares.png", _plot_attributes),
        ("images_per_identity.png", _plot_images_per_identity),
        ("bbox_sizes.png", _plot_bbox_sizes),
        ("image_sizes.png", _plot_image_sizes),
        ("partitions.png", _plot_partitions),
    ):
        fig = draw(Figure, stats)
        if fig is not None:
            path = out / name
            fig.savefig(path, dpi=110, bbox_inches="tight")
            written.append(path)
    return written


def _plot_attributes(Figure: Any, stats: Stats) -> Any:
    rows = [(a, s) for a, _, s in stats.attributes.rows if s is not None]
    if not rows:
        return None
    rows.sort(key=lambda r: r[1])  # barh draws bottom-up: largest share ends on top
    names = [a for a, _ in rows]
    shares = [100 * s for _, s in rows]
    # The two headline attributes stand out, so the eye finds them among forty.
    colours = ["tab:orange" if a in ("Male", "Blurry") else "tab:blue" for a in names]
    fig = Figure(figsize=(8, 10))
    ax = fig.subplots()
    bars = ax.barh(names, shares, color=colours)
    ax.bar_label(bars, labels=[f"{s:.1f}%" for s in shares], padding=2, fontsize=8)
    ax.set_xlim(0, max(100.0, max(shares) * 1.1))
    ax.set_xlabel("images with the attribute (%)")
    ax.set_title(f"Attribute shares, {stats.scope} ({stats.n_images:,} images)")
    ax.tick_params(axis="y", labelsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    return fig


def _plot_images_per_identity(Figure: Any, stats: Stats) -> Any:
    rows = stats.images_per_identity.rows
    if not rows:
        return None
    ks = [k for k, _ in rows]
    counts = [n for _, n in rows]
    many = stats.many_images
    fig = Figure(figsize=(9, 5))
    ax = fig.subplots()
    ax.bar(ks, counts, width=0.85, color=["tab:green" if k >= many else "tab:gray" for k in ks])
    # The line sits between k = many - 1 and k = many: bars right of it are eligible.
    ax.axvline(many - 0.5, color="tab:red", linestyle="--", linewidth=1.5)
    x_max = max(max(ks), many) + 0.7
    ax.set_xlim(0.3, x_max)
    ax.set_ylim(0, max(counts) * 1.15)  # headroom so the note clears the tallest bar
    # The note goes on the roomier side of the line, so it stays inside the frame.
    right = (many - 0.5) < 0.6 * x_max
    ax.annotate(
        f"{stats.ids_with_many:,} identities with >= {many} images",
        xy=(many - 0.5, 0.97),
        xycoords=("data", "axes fraction"),
        xytext=(6 if right else -6, 0),
        textcoords="offset points",
        ha="left" if right else "right",
        va="top",
        color="tab:red",
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85},
    )
    ax.set_xlabel("images per identity")
    ax.set_ylabel("identities")
    ax.set_title(
        f"Images per identity, {stats.scope} ({stats.n_identities:,} identities; "
        f"median {stats.images_per_id_median:g})"
    )
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return fig


def _grid(bins: QueryResult, bin_px: int) -> tuple[Any, Any, Any]:
    """(x edges, y edges, counts[y, x]) of a dense 2D histogram from sparse SQL bins."""
    import numpy as np

    data = np.asarray(bins.rows, dtype=np.int64)
    x, y, n = data[:, 0], data[:, 1], data[:, 2]
    x_edges = np.arange(x.min(), x.max() + 2 * bin_px, bin_px)
    y_edges = np.arange(y.min(), y.max() + 2 * bin_px, bin_px)
    grid = np.zeros((len(y_edges) - 1, len(x_edges) - 1), dtype=np.int64)
    np.add.at(grid, ((y - y.min()) // bin_px, (x - x.min()) // bin_px), n)
    return x_edges, y_edges, grid


def _plot_sizes(
    Figure: Any,
    bins: QueryResult,
    bin_px: int,
    title: str,
    what: str,
    small: tuple[int, int] | None,
) -> Any:
    """Width and height histograms (left) and the 2D width x height histogram (right)."""
    import numpy as np
    from matplotlib.colors import LogNorm, Normalize

    x_edges, y_edges, grid = _grid(bins, bin_px)
    fig = Figure(figsize=(13, 5.2))
    ax_1d, ax_2d = fig.subplots(1, 2)
    ax_1d.stairs(grid.sum(axis=0), x_edges, label="width", color="tab:blue", linewidth=1.5)
    ax_1d.stairs(grid.sum(axis=1), y_edges, label="height", color="tab:orange", linewidth=1.5)
    ax_1d.set_xlabel(f"pixels ({bin_px} px bins)")
    ax_1d.set_ylabel(what)
    ax_1d.set_title(f"{what.capitalize()} width and height")
    masked = np.ma.masked_equal(grid, 0)  # empty bins stay white, not the lowest colour
    # A log scale keeps the sparse tails visible next to a dense core; with few counts
    # per bin it only adds clutter (ticks like 6x10^0), so small data stay linear.
    log = grid.max() >= 100
    norm = LogNorm(vmin=1) if log else Normalize(vmin=0)
    mesh = ax_2d.pcolormesh(x_edges, y_edges, masked, norm=norm, cmap="viridis")
    fig.colorbar(mesh, ax=ax_2d, label=f"{what} per bin" + (" (log scale)" if log else ""))
    ax_2d.set_xlabel("width (px)")
    ax_2d.set_ylabel("height (px)")
    ax_2d.set_title("Width x height")
    if small is not None:
        # The selection in force's cut: boxes left of or below these lines are dropped.
        w, h = small
        if w == h:
            ax_1d.axvline(w, color="tab:red", linestyle="--", label=f"{w} px")
        else:
            ax_1d.axvline(w, color="tab:blue", linestyle="--", label=f"min width {w} px")
            ax_1d.axvline(h, color="tab:orange", linestyle="--", label=f"min height {h} px")
        ax_2d.axvline(w, color="tab:red", linestyle="--")
        ax_2d.axhline(h, color="tab:red", linestyle="--")
    ax_1d.legend()
    ax_1d.grid(alpha=0.3)
    ax_1d.set_axisbelow(True)
    fig.suptitle(title)
    return fig


def _plot_bbox_sizes(Figure: Any, stats: Stats) -> Any:
    if not stats.bbox_bins.rows:
        return None
    share = (
        ""
        if stats.small_box_share is None
        else (f"; {100 * stats.small_box_share:.1f}% under {_box_wide_or_high(stats.small_box)}")
    )
    return _plot_sizes(
        Figure,
        stats.bbox_bins,
        stats.bin_px,
        f"Face box sizes, {stats.scope}{share}",
        "boxes",
        stats.small_box,
    )


def _plot_image_sizes(Figure: Any, stats: Stats) -> Any:
    if stats.image_size_bins is None or not stats.image_size_bins.rows:
        return None
    return _plot_sizes(
        Figure, stats.image_size_bins, stats.bin_px, f"Image sizes, {stats.scope}", "images", None
    )


def _plot_partitions(Figure: Any, stats: Stats) -> Any:
    panels = [("Partitions (list_eval_partition)", stats.partitions)]
    if stats.splits is not None:
        panels.append((f"Splits of snapshot {stats.snapshot}", stats.splits))
    panels = [(t, r) for t, r in panels if r.rows]
    if not panels:
        return None
    fig = Figure(figsize=(6 * len(panels), 4.5))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (title, result) in zip(axes[0], panels, strict=True):
        names = [str(name) for name, _, _ in result.rows]
        images = [n for _, n, _ in result.rows]
        bars = ax.bar(names, images, color="tab:blue")
        ax.bar_label(
            bars,
            labels=[f"{n:,} img\n{i:,} ids" for _, n, i in result.rows],
            padding=2,
            fontsize=9,
        )
        ax.set_ylim(0, max(images) * 1.2)  # room for the labels above the tallest bar
        ax.set_ylabel("images")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    what = "Partition and split sizes" if len(panels) > 1 else "Partition sizes"
    fig.suptitle(f"{what}, {stats.scope}")
    return fig
