"""The SQL behind the browser's pages: the filtered, sorted face grid, one face's rows,
its nearest neighbours, the runs to choose from. Every function takes an open
read-only connection and returns plain Python values; nothing here writes.

Filters and sorts come from the page's URL (:class:`GridQuery`), are checked against
what the catalog holds, and reach the SQL as parameters; only names checked against a
fixed list (the 40 attributes) are spliced in, quoted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from catalog.db import has_table
from catalog.formats import ATTRIBUTES, LANDMARK_COLUMNS

if TYPE_CHECKING:
    import duckdb

PAGE_SIZE = 100
MAX_PAGE = 10_000_000
#: The whole catalog rather than a snapshot (``snapshot=*`` or ``snapshot=``).
WHOLE = "*"
#: Figures the grid sorts by: name -> (what it is, the worse end).
SORTS: dict[str, tuple[str, str]] = {
    "nme": ("NME of a landmark run's prediction", "desc"),
    "own_cosine": ("cosine to the identity's centre, by a recognition run", "asc"),
}
ANY_PROBLEM = "*"
#: The name a sort's figures are registered under on the connection.
FIGURES = "serve_figures"
_ATTRS = {a.lower(): a for a in ATTRIBUTES}


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class GridQuery:
    """What the grid shows, as its URL says (:func:`parse_grid`)."""

    snapshot: str | None = None  # None: the newest snapshot; WHOLE: the whole catalog
    split: str = ""
    identity: int | None = None
    attrs: tuple[tuple[str, bool], ...] = ()
    problem: str = ""  # a check name, ANY_PROBLEM, or '' (no filter)
    sort: tuple[str, str] | None = None  # (figure, run id)
    order: str = ""  # asc | desc | '' (the figure's worse end first)
    page: int = 1
    errors: tuple[str, ...] = field(default=(), compare=False)

    @property
    def direction(self) -> str:
        if self.order in ("asc", "desc"):
            return self.order
        return SORTS[self.sort[0]][1] if self.sort else "asc"

    def params(self, **changes: Any) -> list[tuple[str, str]]:
        """The URL query of this grid (with ``changes``), empty values left out."""
        q = replace(self, **changes) if changes else self
        out: list[tuple[str, str]] = []
        if q.snapshot is not None:
            out.append(("snapshot", q.snapshot))
        if q.split:
            out.append(("split", q.split))
        if q.identity is not None:
            out.append(("identity", str(q.identity)))
        out += [("attr", f"{a}:{int(v)}") for a, v in q.attrs]
        if q.problem:
            out.append(("problem", q.problem))
        if q.sort:
            out.append(("sort", f"{q.sort[0]}:{q.sort[1]}"))
        if q.order:
            out.append(("order", q.order))
        if q.page != 1:
            out.append(("page", str(q.page)))
        return out


def parse_grid(values: Mapping[str, Sequence[str]]) -> GridQuery:
    """A GridQuery from the URL's values (name -> list of values); what cannot be read
    is left out and said in ``errors``."""

    def one(name: str) -> str:
        got = values.get(name) or []
        return got[-1].strip() if got else ""

    errors: list[str] = []
    snapshot: str | None = None
    if "snapshot" in values:
        snapshot = one("snapshot") or WHOLE
    identity = None
    if one("identity"):
        try:
            identity = int(one("identity"))
        except ValueError:
            errors.append(f"identity {one('identity')!r} is not a number")
    attrs: list[tuple[str, bool]] = []
    for text in values.get("attr") or []:
        text = text.strip()
        if not text:
            continue
        name, _, value = text.rpartition(":") if ":" in text else (text, "", "1")
        attr = _ATTRS.get(name.strip().lower())
        flag = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
        if attr is None or value.strip().lower() not in flag:
            errors.append(f"attribute filter {text!r}: use NAME:1 or NAME:0 (e.g. Smiling:1)")
            continue
        attrs = [a for a in attrs if a[0] != attr] + [(attr, flag[value.strip().lower()])]
    sort = None
    if one("sort"):
        kind, _, run = one("sort").partition(":")
        if kind not in SORTS or not run:
            errors.append(f"sort {one('sort')!r}: use nme:RUN or own_cosine:RUN")
        else:
            sort = (kind, run)
    order = one("order").lower()
    if order not in ("", "asc", "desc"):
        errors.append(f"order {order!r}: asc or desc")
        order = ""
    page = 1
    if one("page"):
        try:
            page = min(max(1, int(one("page"))), MAX_PAGE)
        except ValueError:
            errors.append(f"page {one('page')!r} is not a number")
    return GridQuery(
        snapshot=snapshot,
        split=one("split"),
        identity=identity,
        attrs=tuple(attrs),
        problem=one("problem"),
        sort=sort,
        order=order,
        page=page,
        errors=tuple(errors),
    )


# --- what the catalog holds -----------------------------------------------------------


def snapshot_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Snapshots, newest first."""
    if not has_table(con, "snapshots"):
        return []
    return [
        r[0]
        for r in con.execute("SELECT name FROM snapshots ORDER BY created_at DESC, name").fetchall()
    ]


def splits(con: duckdb.DuckDBPyConnection, snapshot: str) -> list[tuple[str, int]]:
    """(split, images) of a snapshot (WHOLE: the catalog's partitions)."""
    if snapshot == WHOLE:
        if not has_table(con, "partitions"):
            return []
        return con.execute(
            "SELECT partition_name, count(*) FROM partitions GROUP BY ALL ORDER BY min(partition)"
        ).fetchall()
    return con.execute(
        "SELECT coalesce(split, 'unused'), count(*) FROM snapshot_images WHERE snapshot = ? "
        "GROUP BY ALL ORDER BY ALL",
        [snapshot],
    ).fetchall()


def problem_checks(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, int]]:
    """(check, worst severity, images) of the catalog's problems about images."""
    if not has_table(con, "problems"):
        return []
    return con.execute(
        "SELECT check_name, CASE max(CASE severity WHEN 'error' THEN 3 WHEN 'warning' THEN 2 "
        "ELSE 1 END) WHEN 3 THEN 'error' WHEN 2 THEN 'warning' ELSE 'info' END, "
        "count(DISTINCT image_id) FROM problems WHERE image_id IS NOT NULL GROUP BY 1 ORDER BY 1"
    ).fetchall()


def runs_with(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str, str]]:
    """(run id, kind, snapshot) of the runs with rows in ``table`` (landmark_predictions or
    embeddings), newest first."""
    if not has_table(con, table):
        return []
    if not has_table(con, "runs"):
        return [
            (r[0], "", "")
            for r in con.execute(f"SELECT DISTINCT run_id FROM {table} ORDER BY 1 DESC").fetchall()
        ]
    return con.execute(
        f"SELECT d.run_id, coalesce(r.kind, ''), coalesce(r.snapshot, '') FROM "
        f"(SELECT DISTINCT run_id FROM {table}) AS d LEFT JOIN runs AS r USING (run_id) "
        "ORDER BY r.started_at DESC NULLS LAST, d.run_id DESC"
    ).fetchall()


def recognition_runs(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    return runs_with(con, "embeddings")


def landmark_runs(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    return runs_with(con, "landmark_predictions")


# --- the grid -------------------------------------------------------------------------


@dataclass(frozen=True)
class GridRow:
    image_id: str
    identity: int | None
    split: str | None
    figure: float | None


@dataclass(frozen=True)
class Grid:
    query: GridQuery
    total: int
    rows: list[GridRow]

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // PAGE_SIZE))


class GridError(ValueError):
    """A filter names what the catalog does not hold (shown on the page)."""


def _base(con: duckdb.DuckDBPyConnection, snapshot: str) -> tuple[str, list[Any]]:
    """(image_id, identity, split) of the snapshot, or of every image of the catalog."""
    if snapshot != WHOLE:
        return (
            "SELECT image_id, identity, coalesce(split, 'unused') AS split FROM "
            "snapshot_images WHERE snapshot = ?",
            [snapshot],
        )
    ids = next(
        (t for t in ("images", "identities", "attributes", "bboxes") if has_table(con, t)), None
    )
    if ids is None:
        return (
            "SELECT NULL::VARCHAR AS image_id, NULL::INTEGER AS identity, NULL::VARCHAR AS "
            "split WHERE false",
            [],
        )
    joins, identity = "", "NULL::INTEGER"
    if ids == "identities":
        identity = "x.identity"
    elif has_table(con, "identities"):
        joins += " LEFT JOIN identities AS d USING (image_id)"
        identity = "d.identity"
    split = "NULL::VARCHAR"
    if has_table(con, "partitions"):
        joins += " LEFT JOIN partitions AS p USING (image_id)"
        split = "p.partition_name"
    return (
        f"SELECT image_id, {identity} AS identity, {split} AS split FROM {ids} AS x{joins}",
        [],
    )


def own_cosines(con: duckdb.DuckDBPyConnection, run: str) -> Any:
    """Each image's cosine to its identity's centre by ``run``'s embeddings, computed in
    SQL for every image the run embedded: a DataFrame ``image_id, figure``.

    An identity's centre is the sum of its embeddings in the run (rows are unit vectors,
    and a cosine does not need the mean's length), taken element by element: as a
    fixed-size array when the run's vectors have one length (twice as fast), else
    through ``unnest``."""
    if not has_table(con, "embeddings"):
        raise GridError("the catalog has no embeddings to sort by")
    identity = (
        "JOIN identities AS d USING (image_id)"
        if has_table(con, "identities")
        else "JOIN (SELECT DISTINCT image_id, identity FROM snapshot_images) AS d USING (image_id)"
    )
    emb = (
        "SELECT e.image_id, d.identity, e.embedding FROM embeddings AS e "
        f"{identity} WHERE e.run_id = ?"
    )
    low, high = con.execute(
        "SELECT min(len(embedding)), max(len(embedding)) FROM embeddings WHERE run_id = ?", [run]
    ).fetchone()
    if low and low == high and high <= 4096:
        d = int(high)
        sums = ", ".join(f"sum(v[{k}])" for k in range(1, d + 1))
        sql = (
            f"WITH emb AS (SELECT image_id, identity, embedding::FLOAT[{d}] AS v FROM ({emb})), "
            f"centres AS (SELECT identity, list_value({sums})::FLOAT[{d}] AS centre FROM emb "
            "GROUP BY identity) SELECT emb.image_id, "
            "array_cosine_similarity(emb.v, centres.centre)::DOUBLE AS figure "
            "FROM emb JOIN centres USING (identity)"
        )
    else:
        sql = (
            f"WITH emb AS ({emb}), parts AS (SELECT identity, k, sum(x) AS x FROM "
            "(SELECT identity, unnest(embedding) AS x, generate_subscripts(embedding, 1) AS k "
            "FROM emb) GROUP BY identity, k), centres AS (SELECT identity, "
            "list(x ORDER BY k) AS centre FROM parts GROUP BY identity) SELECT emb.image_id, "
            "list_cosine_similarity(emb.embedding, centres.centre)::DOUBLE AS figure "
            "FROM emb JOIN centres USING (identity)"
        )
    return con.execute(sql, [run]).df()


def grid(
    con: duckdb.DuckDBPyConnection,
    q: GridQuery,
    figures: Callable[[duckdb.DuckDBPyConnection, str], Any] = own_cosines,
) -> Grid:
    """The page ``q.page`` of the images ``q`` keeps, and how many it keeps in all.
    GridError for a snapshot, split, problem or run the catalog does not hold."""
    snapshot = q.snapshot
    if snapshot is None:
        names = snapshot_names(con)
        snapshot = names[0] if names else WHOLE
        q = replace(q, snapshot=None)
    elif snapshot != WHOLE and snapshot not in snapshot_names(con):
        raise GridError(f"no snapshot {snapshot!r}")
    base, params = _base(con, snapshot)
    where: list[str] = []
    if q.split:
        known = [s for s, _ in splits(con, snapshot)]
        if q.split not in known:
            raise GridError(f"no split {q.split!r} here; there are {', '.join(known) or 'none'}")
        where.append("g.split = ?")
        params.append(q.split)
    if q.identity is not None:
        where.append("g.identity = ?")
        params.append(q.identity)
    joins = ""
    if q.attrs:
        if not has_table(con, "attributes"):
            raise GridError("the catalog has no attributes to filter by")
        joins = " JOIN attributes AS a USING (image_id)"
        for name, value in q.attrs:
            where.append(f"a.{quoted(name)} = ?")
            params.append(value)
    if q.problem:
        if not has_table(con, "problems"):
            raise GridError("the catalog has no problems table")
        if q.problem == ANY_PROBLEM:
            where.append("g.image_id IN (SELECT image_id FROM problems)")
        else:
            where.append("g.image_id IN (SELECT image_id FROM problems WHERE check_name = ?)")
            params.append(q.problem)
    filtered = (
        f"filtered AS (SELECT g.image_id, g.identity, g.split FROM ({base}) AS g{joins}"
        f"{' WHERE ' + ' AND '.join(where) if where else ''})"
    )
    total = con.execute(f"WITH {filtered} SELECT count(*) FROM filtered", params).fetchone()[0]
    figure, more = "NULL::DOUBLE", []
    join = ""
    order = "f.image_id"
    registered = False
    if q.sort:
        kind, run = q.sort
        known = [r[0] for r in (landmark_runs if kind == "nme" else recognition_runs)(con)]
        if run not in known:
            what = "predictions" if kind == "nme" else "embeddings"
            raise GridError(f"no run {run!r} with {what}")
        if kind == "nme":
            join = (
                " LEFT JOIN (SELECT image_id, nme AS figure FROM landmark_predictions "
                "WHERE run_id = ?) AS v USING (image_id)"
            )
            more = [run]
        else:  # computed once per run by ``figures`` (the app keeps them)
            con.register(FIGURES, figures(con, run))
            registered = True
            join = f" LEFT JOIN {FIGURES} AS v USING (image_id)"
        figure = "v.figure"
        order = f"v.figure {q.direction.upper()} NULLS LAST, f.image_id"
    try:
        rows = con.execute(
            f"WITH {filtered} SELECT f.image_id, f.identity, f.split, {figure} FROM filtered "
            f"AS f{join} ORDER BY {order} LIMIT {PAGE_SIZE} OFFSET {(q.page - 1) * PAGE_SIZE}",
            [*params, *more],
        ).fetchall()
    finally:
        if registered:
            con.unregister(FIGURES)
    return Grid(q, int(total), [GridRow(r[0], r[1], r[2], r[3]) for r in rows])


# --- one face -------------------------------------------------------------------------


@dataclass
class Face:
    image_id: str
    path: str | None = None
    width: int | None = None
    height: int | None = None
    file_size: int | None = None
    error: str | None = None
    identity: int | None = None
    partition: str | None = None
    bbox: tuple[int, int, int, int] | None = None  # x_1, y_1, width, height
    landmarks: list[tuple[float, float]] | None = None
    attributes: list[str] = field(default_factory=list)  # the true ones
    snapshots: list[tuple[str, str, Any, tuple[int, int, int, int]]] = field(default_factory=list)
    problems: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)
    predicted: list[tuple[float, float]] | None = None
    nme: float | None = None


def _points(row: Sequence[Any]) -> list[tuple[float, float]] | None:
    if row is None or any(v is None for v in row):
        return None
    return [(float(row[k]), float(row[k + 1])) for k in range(0, len(row), 2)]


def face(con: duckdb.DuckDBPyConnection, image_id: str, run: str | None) -> Face | None:
    """Everything the catalog says about one image (None: it knows no such image)."""
    f = Face(image_id)
    found = False

    def row(sql: str, params: list[Any]) -> tuple | None:
        return con.execute(sql, params).fetchone()

    if has_table(con, "images"):
        r = row(
            "SELECT path, width, height, file_size, error FROM images WHERE image_id = ?",
            [image_id],
        )
        if r:
            found = True
            f.path, f.width, f.height, f.file_size, f.error = r
    if has_table(con, "identities"):
        r = row("SELECT identity FROM identities WHERE image_id = ?", [image_id])
        if r:
            found, f.identity = True, r[0]
    if has_table(con, "partitions"):
        r = row("SELECT partition_name FROM partitions WHERE image_id = ?", [image_id])
        if r:
            found, f.partition = True, r[0]
    if has_table(con, "bboxes"):
        r = row("SELECT x_1, y_1, width, height FROM bboxes WHERE image_id = ?", [image_id])
        if r:
            found, f.bbox = True, tuple(int(v) for v in r)  # type: ignore[assignment]
    if has_table(con, "landmarks"):
        cols = ", ".join(LANDMARK_COLUMNS)
        r = row(f"SELECT {cols} FROM landmarks WHERE image_id = ?", [image_id])
        if r:
            found, f.landmarks = True, _points(r)
    if has_table(con, "attributes"):
        cols = ", ".join(quoted(a) for a in ATTRIBUTES)
        r = row(f"SELECT {cols} FROM attributes WHERE image_id = ?", [image_id])
        if r:
            found = True
            f.attributes = [a for a, v in zip(ATTRIBUTES, r, strict=True) if v]
    if has_table(con, "snapshot_images", "snapshots"):
        f.snapshots = [
            (s, sp, label, (x1, y1, x2, y2))
            for s, sp, label, x1, y1, x2, y2 in con.execute(
                "SELECT s.snapshot, coalesce(s.split, 'unused'), s.label, s.x_1, s.y_1, s.x_2, "
                "s.y_2 FROM snapshot_images AS s JOIN snapshots AS n ON n.name = s.snapshot "
                "WHERE s.image_id = ? ORDER BY n.created_at DESC, n.name",
                [image_id],
            ).fetchall()
        ]
        if f.snapshots:
            found = True
            if f.identity is None:
                r = row("SELECT identity FROM snapshot_images WHERE image_id = ?", [image_id])
                f.identity = r[0] if r else None
    if has_table(con, "problems"):
        f.problems = con.execute(
            "SELECT check_name, severity, source, detail FROM problems WHERE image_id = ? "
            "ORDER BY severity, check_name",
            [image_id],
        ).fetchall()
    if run and has_table(con, "landmark_predictions"):
        cols = ", ".join(LANDMARK_COLUMNS)
        r = row(
            f"SELECT {cols}, nme FROM landmark_predictions WHERE run_id = ? AND image_id = ?",
            [run, image_id],
        )
        if r:
            f.predicted, f.nme = _points(r[:-1]), r[-1]
    return f if found else None


def runs_of_image(con: duckdb.DuckDBPyConnection, table: str, image_id: str) -> list[str]:
    """Runs with a row of ``image_id`` in ``table``, newest first."""
    if not has_table(con, table):
        return []
    order = "d.run_id DESC"
    join = ""
    if has_table(con, "runs"):
        join = " LEFT JOIN runs AS r USING (run_id)"
        order = "r.started_at DESC NULLS LAST, d.run_id DESC"
    return [
        r[0]
        for r in con.execute(
            f"SELECT d.run_id FROM {table} AS d{join} WHERE d.image_id = ? ORDER BY {order}",
            [image_id],
        ).fetchall()
    ]


def same_identity(
    con: duckdb.DuckDBPyConnection, image_id: str, identity: int | None, limit: int = 48
) -> tuple[int, list[str]]:
    """(how many other images the person has, the first ``limit`` of them)."""
    if identity is None or not has_table(con, "identities"):
        return 0, []
    rows = con.execute(
        "SELECT image_id, count(*) OVER () FROM identities WHERE identity = ? AND image_id <> ? "
        f"ORDER BY image_id LIMIT {int(limit)}",
        [identity, image_id],
    ).fetchall()
    return (rows[0][1] if rows else 0), [r[0] for r in rows]


def neighbours(
    con: duckdb.DuckDBPyConnection, run: str, image_id: str, limit: int = 12
) -> list[tuple[str, float, int | None, bool | None]]:
    """The ``limit`` images nearest to ``image_id`` by run ``run``'s embeddings:
    (image id, cosine, identity, same person as the image)."""
    if not has_table(con, "embeddings"):
        return []
    has_ids = has_table(con, "identities")
    identity = "db.identity" if has_ids else "NULL::INTEGER"
    same = "da.identity = db.identity" if has_ids else "NULL::BOOLEAN"
    joins = (
        " LEFT JOIN identities AS da ON da.image_id = a.image_id "
        "LEFT JOIN identities AS db ON db.image_id = b.image_id"
        if has_ids
        else ""
    )
    return [
        (r[0], float(r[1]), r[2], r[3])
        for r in con.execute(
            f"SELECT b.image_id, list_cosine_similarity(a.embedding, b.embedding) AS cosine, "
            f"{identity}, {same} FROM embeddings AS a JOIN embeddings AS b "
            "ON b.run_id = a.run_id AND b.image_id <> a.image_id"
            f"{joins} WHERE a.run_id = ? AND a.image_id = ? "
            f"ORDER BY cosine DESC NULLS LAST, b.image_id LIMIT {int(limit)}",
            [run, image_id],
        ).fetchall()
    ]


__all__ = [
    "ANY_PROBLEM",
    "PAGE_SIZE",
    "SORTS",
    "WHOLE",
    "Face",
    "Grid",
    "GridError",
    "GridQuery",
    "GridRow",
    "face",
    "grid",
    "landmark_runs",
    "neighbours",
    "own_cosines",
    "parse_grid",
    "problem_checks",
    "recognition_runs",
    "runs_of_image",
    "same_identity",
    "snapshot_names",
    "splits",
]
