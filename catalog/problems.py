"""Cross-file checks: what is inconsistent between annotation files and images.

None of these stops an ingest (real CelebA has a few of them); each finding is a
row of the ``problems`` table, which ``celebcat check`` prints grouped and counted.
One module owns the table: its DDL, the checks, and the summary query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from catalog.formats import ALIGNED_SIZE, LANDMARK_POINTS

if TYPE_CHECKING:
    import duckdb

PROBLEMS_DDL = """
CREATE TABLE problems (
    check_name VARCHAR NOT NULL,   -- which check found it
    severity   VARCHAR NOT NULL,   -- 'warning' (data disagree) or 'info'
    source     VARCHAR,            -- the table (or file set) it concerns
    image_id   VARCHAR,
    detail     VARCHAR
)
"""

_OTHERS = ("bboxes", "landmarks", "landmarks_aligned", "identities", "partitions")
_ANNOTATED = " UNION ".join(
    f"SELECT image_id FROM {t}" for t in ("attributes",) + _OTHERS
)


def _outside(x0: str, y0: str, x1: str, y1: str) -> str:
    """SQL list of the names of the landmarks (table alias ``l``) outside the given box."""
    tests = ", ".join(
        f"CASE WHEN l.{p}_x < {x0} OR l.{p}_x > {x1} OR l.{p}_y < {y0} OR l.{p}_y > {y1} "
        f"THEN '{p}' END"
        for p in LANDMARK_POINTS
    )
    return f"list_filter([{tests}], lambda s: s IS NOT NULL)"


@dataclass(frozen=True)
class Check:
    """One check: a query yielding (image_id, detail) rows, run when ``needs`` hold."""

    name: str
    source: str
    description: str
    sql: str
    needs: tuple[str, ...] = ()  # tables that must be non-empty (or 'scan:wild'/'scan:aligned')
    severity: str = "warning"


def _checks() -> list[Check]:
    checks: list[Check] = []
    checks += [
        Check(
            "zero_size_box", "bboxes", "boxes whose width or height is 0 or less",
            "SELECT image_id, format('width {} height {}', width, height) FROM bboxes "
            "WHERE width <= 0 OR height <= 0",
            ("bboxes",),
        ),
        Check(
            "bbox_outside_image", "bboxes", "boxes reaching outside their in-the-wild image",
            "SELECT b.image_id, format('box x {}..{} y {}..{}, image {}x{}', b.x_1, "
            "b.x_1 + b.width, b.y_1, b.y_1 + b.height, i.width, i.height) "
            "FROM bboxes b JOIN images i USING (image_id) "
            "WHERE b.x_1 < 0 OR b.y_1 < 0 OR b.x_1 + b.width > i.width "
            "OR b.y_1 + b.height > i.height",
            ("bboxes", "images"),
        ),
        Check(
            "landmark_outside_bbox", "landmarks", "in-the-wild landmarks outside their box",
            "SELECT image_id, 'outside the box: ' || array_to_string(pts, ', ') FROM ("
            "SELECT l.image_id, "
            + _outside("b.x_1", "b.y_1", "b.x_1 + b.width", "b.y_1 + b.height")
            + " AS pts FROM landmarks l JOIN bboxes b USING (image_id)) WHERE len(pts) > 0",
            ("landmarks", "bboxes"),
        ),
        Check(
            "landmark_outside_image", "landmarks_aligned",
            f"aligned landmarks outside the {ALIGNED_SIZE[0]}x{ALIGNED_SIZE[1]} frame",
            "SELECT image_id, 'outside the frame: ' || array_to_string(pts, ', ') FROM ("
            "SELECT l.image_id, "
            + _outside("0", "0", str(ALIGNED_SIZE[0]), str(ALIGNED_SIZE[1]))
            + " AS pts FROM landmarks_aligned l) WHERE len(pts) > 0",
            ("landmarks_aligned",),
        ),
        Check(
            "no_image_on_disk", "images", "annotated images not found under the image root",
            f"SELECT image_id, 'annotated, but no file' FROM ({_ANNOTATED}) "
            "ANTI JOIN images USING (image_id)",
            ("scan:wild",),
        ),
        Check(
            "no_image_on_disk", "images_aligned",
            "annotated images not found under the aligned image root",
            f"SELECT image_id, 'annotated, but no aligned file' FROM ({_ANNOTATED}) "
            "ANTI JOIN images_aligned USING (image_id)",
            ("scan:aligned",),
        ),
        Check(
            "unreadable_image", "images", "in-the-wild images whose header could not be read",
            "SELECT image_id, path || ': ' || error FROM _scan_wild WHERE error IS NOT NULL",
            ("scan:wild",),
        ),
        Check(
            "unreadable_image", "images_aligned", "aligned images whose header could not be read",
            "SELECT image_id, path || ': ' || error FROM _scan_aligned WHERE error IS NOT NULL",
            ("scan:aligned",),
        ),
        Check(
            "duplicate_image_name", "images",
            "file names found more than once under the image root (the first path is used)",
            "SELECT image_id, string_agg(path, ', ' ORDER BY path) FROM _scan_wild "
            "GROUP BY image_id HAVING count(*) > 1",
            ("scan:wild",),
        ),
        Check(
            "duplicate_image_name", "images_aligned",
            "file names found more than once under the aligned image root",
            "SELECT image_id, string_agg(path, ', ' ORDER BY path) FROM _scan_aligned "
            "GROUP BY image_id HAVING count(*) > 1",
            ("scan:aligned",),
        ),
        Check(
            "aligned_image_size", "images_aligned",
            f"aligned images that are not {ALIGNED_SIZE[0]}x{ALIGNED_SIZE[1]}",
            "SELECT image_id, format('{}x{}', width, height) FROM images_aligned "
            f"WHERE width <> {ALIGNED_SIZE[0]} OR height <> {ALIGNED_SIZE[1]}",
            ("images_aligned",),
        ),
        Check(
            "image_not_annotated", "images", "in-the-wild images no annotation file mentions",
            f"SELECT image_id, path FROM images ANTI JOIN ({_ANNOTATED}) USING (image_id)",
            ("images", "any_annotation"),
            severity="info",
        ),
    ]
    return checks


def _id_mismatches(con: duckdb.DuckDBPyConnection, present: list[str]) -> int:
    """Ids missing from some annotation tables but present in others, in one pass.

    Every image id of every loaded table is counted once per table; an id seen in
    fewer tables than are loaded is reported once per table it is missing from
    (``missing_annotation``, source = that table). Real CelebA has none.
    """
    if len(present) < 2:
        return 0
    # Fast path: ids are unique per table, so equal counts and equal sums of id hashes
    # mean equal id sets (real CelebA), and the full comparison below is skipped.
    fingerprints = {
        con.execute(f"SELECT count(*), sum(hash(image_id))::HUGEINT FROM {t}").fetchone()
        for t in present
    }
    if len(fingerprints) == 1:
        return 0
    union = " UNION ALL ".join(f"SELECT image_id, '{t}' AS t FROM {t}" for t in present)
    return con.execute(
        "INSERT INTO problems SELECT 'missing_annotation', 'warning', m.t, s.image_id, "
        "'in ' || array_to_string(list_sort(s.tables), ', ') || '; no row in ' || m.t "
        f"FROM (SELECT image_id, list(t) AS tables FROM ({union}) GROUP BY image_id "
        f"HAVING count(*) < {len(present)}) s, (SELECT unnest(?::VARCHAR[]) AS t) m "
        "WHERE NOT list_contains(s.tables, m.t)",
        [present],
    ).fetchone()[0]


def run_checks(con: duckdb.DuckDBPyConnection, scanned: set[str]) -> dict[str, int]:
    """Fill ``problems`` (created empty by the caller) and return counts per check name.

    ``scanned`` holds ``"wild"`` and/or ``"aligned"`` for the image roots that were
    scanned; the staged scans ``_scan_wild`` / ``_scan_aligned`` must exist for those.
    """
    counts = {
        t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("attributes", "images", "images_aligned") + _OTHERS
    }
    counts["any_annotation"] = sum(counts[t] for t in ("attributes",) + _OTHERS)
    found: dict[str, int] = {}
    n = _id_mismatches(con, [t for t in ("attributes",) + _OTHERS if counts[t]])
    if n:
        found["missing_annotation"] = n
    for check in _checks():
        ok = all(
            (need.removeprefix("scan:") in scanned) if need.startswith("scan:") else counts[need]
            for need in check.needs
        )
        if not ok:
            continue
        n = con.execute(
            "INSERT INTO problems SELECT ?, ?, ?, image_id, detail FROM "
            f"({check.sql}) AS q(image_id, detail)",
            [check.name, check.severity, check.source],
        ).fetchone()[0]
        if n:
            found[check.name] = found.get(check.name, 0) + n
    return found


def describe() -> dict[tuple[str, str], str]:
    """(check name, source) -> what the check looks for, for ``celebcat check``."""
    described = {(c.name, c.source): c.description for c in _checks()}
    for t in ("attributes",) + _OTHERS:
        described[("missing_annotation", t)] = (
            f"image ids other annotation files have but {t} lacks"
        )
    return described


SUMMARY_SQL = """
SELECT check_name, source, severity, count(*) AS n,
       string_agg(image_id, ', ' ORDER BY image_id) FILTER (WHERE rn <= 3) AS examples,
       any_value(detail ORDER BY image_id) AS example_detail
FROM (SELECT *, row_number() OVER (PARTITION BY check_name, source ORDER BY image_id) AS rn
      FROM problems)
GROUP BY check_name, source, severity
ORDER BY severity DESC, n DESC, check_name, source
"""


def summary(con: duckdb.DuckDBPyConnection) -> list[dict[str, object]]:
    """Problems grouped by check and source: count, up to 3 example ids, one detail."""
    cur = con.execute(SUMMARY_SQL)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
