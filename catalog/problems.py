"""Cross-file checks: what is inconsistent between annotation files and images.

None of these stops an ingest (real CelebA has a few of them); each finding is a
row of the ``problems`` table, which ``celebcat check`` prints grouped and counted.
One module owns the table: its DDL, the checks, and the summary query.

Severity ``error`` marks an in-the-wild image the catalog cannot use: not on disk,
unreadable, cut short, too large, a link out of the image root, or (after
``celebcat check --decode``, :func:`check_decode`) failing to decode. The
``clean_images`` view leaves those images out, so no selection or snapshot made
afterwards holds one; ``catalog.snapshots.read_images`` names them in older snapshots.
The header-level checks run at every ingest; decoding every image is opt-in.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from catalog.formats import ALIGNED_SIZE, LANDMARK_POINTS
from catalog.imagesize import MAX_IMAGE_PIXELS

if TYPE_CHECKING:
    import duckdb

PROBLEMS_DDL = """
CREATE TABLE problems (
    check_name VARCHAR NOT NULL,   -- which check found it
    severity   VARCHAR NOT NULL,   -- 'error' (an in-the-wild image that cannot be used:
                                   -- clean_images leaves it out), 'warning' (data
                                   -- disagree) or 'info'
    source     VARCHAR,            -- the table (or file set) it concerns
    image_id   VARCHAR,
    detail     VARCHAR
)
"""

#: The severity of a finding that makes an in-the-wild image unusable.
ERROR = "error"
#: The check ``celebcat check --decode`` adds (:func:`check_decode`).
DECODE_CHECK = "image_decode_error"

_OTHERS = ("bboxes", "landmarks", "landmarks_aligned", "identities", "partitions")
_ANNOTATED = " UNION ".join(f"SELECT image_id FROM {t}" for t in ("attributes",) + _OTHERS)


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
            "zero_size_box",
            "bboxes",
            "boxes whose width or height is 0 or less",
            "SELECT image_id, format('width {} height {}', width, height) FROM bboxes "
            "WHERE width <= 0 OR height <= 0",
            ("bboxes",),
        ),
        Check(
            "bbox_outside_image",
            "bboxes",
            "boxes reaching outside their in-the-wild image",
            "SELECT b.image_id, format('box x {}..{} y {}..{}, image {}x{}', b.x_1, "
            "b.x_1 + b.width, b.y_1, b.y_1 + b.height, i.width, i.height) "
            "FROM bboxes b JOIN images i USING (image_id) "
            "WHERE b.x_1 < 0 OR b.y_1 < 0 OR b.x_1 + b.width > i.width "
            "OR b.y_1 + b.height > i.height",
            ("bboxes", "images"),
        ),
        Check(
            "landmark_outside_bbox",
            "landmarks",
            "in-the-wild landmarks outside their box",
            "SELECT image_id, 'outside the box: ' || array_to_string(pts, ', ') FROM ("
            "SELECT l.image_id, "
            + _outside("b.x_1", "b.y_1", "b.x_1 + b.width", "b.y_1 + b.height")
            + " AS pts FROM landmarks l JOIN bboxes b USING (image_id)) WHERE len(pts) > 0",
            ("landmarks", "bboxes"),
        ),
        Check(
            "landmark_outside_image",
            "landmarks_aligned",
            f"aligned landmarks outside the {ALIGNED_SIZE[0]}x{ALIGNED_SIZE[1]} frame",
            "SELECT image_id, 'outside the frame: ' || array_to_string(pts, ', ') FROM ("
            "SELECT l.image_id, "
            + _outside("0", "0", str(ALIGNED_SIZE[0]), str(ALIGNED_SIZE[1]))
            + " AS pts FROM landmarks_aligned l) WHERE len(pts) > 0",
            ("landmarks_aligned",),
        ),
    ]
    for table, scan, what, severity in (
        ("images", "wild", "in-the-wild", ERROR),
        # aligned files are never read by the catalog: a warning, nothing left out
        ("images_aligned", "aligned", "aligned", "warning"),
    ):
        indexed = f"_scan_{scan} AS s JOIN {table} AS i USING (image_id, path)"
        checks += [
            Check(
                "no_image_on_disk",
                table,
                f"annotated images not found under the {what} image root",
                f"SELECT image_id, 'annotated, but no {'aligned ' if scan == 'aligned' else ''}"
                f"file' FROM ({_ANNOTATED}) ANTI JOIN {table} USING (image_id)",
                (f"scan:{scan}",),
                severity,
            ),
            Check(
                "unreadable_image",
                table,
                f"{what} images whose header could not be read",
                f"SELECT image_id, s.path || ': ' || s.error FROM {indexed} "
                "WHERE s.error IS NOT NULL AND s.problem IS NULL",
                (f"scan:{scan}",),
                severity,
            ),
            Check(
                "image_truncated",
                table,
                f"{what} images cut short: the header reads, the end marker is missing",
                f"SELECT image_id, s.path || ': ' || s.error FROM {indexed} "
                "WHERE s.problem = 'image_truncated'",
                (f"scan:{scan}",),
                severity,
            ),
            Check(
                "image_outside_root",
                table,
                f"symbolic links out of the {what} image root (never followed)",
                f"SELECT s.image_id, s.path || ': ' || s.error FROM _scan_{scan} AS s "
                f"LEFT JOIN {table} AS i USING (image_id, path) "
                "WHERE s.problem = 'image_outside_root' "
                "AND (s.image_id IS NULL OR i.image_id IS NOT NULL)",  # folder, or indexed
                (f"scan:{scan}",),
                severity,
            ),
            Check(
                "image_too_large",
                table,
                f"{what} images of more than {MAX_IMAGE_PIXELS:,} pixels (Pillow's "
                "decompression-bomb limit)",
                "SELECT image_id, format('{}: {}x{}, {} pixels', path, width, height, "
                f"width::BIGINT * height) FROM {table} "
                f"WHERE width::BIGINT * height > {MAX_IMAGE_PIXELS}",
                (f"scan:{scan}",),
                severity,
            ),
            Check(
                "duplicate_image_name",
                table,
                f"file names found more than once under the {what} image root (the first "
                "path is used)",
                f"SELECT image_id, string_agg(path, ', ' ORDER BY path) FROM _scan_{scan} "
                "WHERE image_id IS NOT NULL GROUP BY image_id HAVING count(*) > 1",
                (f"scan:{scan}",),
            ),
        ]
    checks += [
        Check(
            "aligned_image_size",
            "images_aligned",
            f"aligned images that are not {ALIGNED_SIZE[0]}x{ALIGNED_SIZE[1]}",
            "SELECT image_id, format('{}x{}', width, height) FROM images_aligned "
            f"WHERE width <> {ALIGNED_SIZE[0]} OR height <> {ALIGNED_SIZE[1]}",
            ("images_aligned",),
        ),
        Check(
            "image_not_annotated",
            "images",
            "in-the-wild images no annotation file mentions",
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
    described[(DECODE_CHECK, "images")] = (
        "in-the-wild images that fail to decode (celebcat check --decode)"
    )
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
ORDER BY CASE severity WHEN 'error' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, n DESC,
         check_name, source
"""


def summary(con: duckdb.DuckDBPyConnection) -> list[dict[str, object]]:
    """Problems grouped by check and source: count, up to 3 example ids, one detail."""
    cur = con.execute(SUMMARY_SQL)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# --- the opt-in decode check -----------------------------------------------------------


@dataclass(frozen=True)
class DecodeResult:
    """What :func:`check_decode` did: images decoded, how many failed, in how long."""

    n_images: int
    n_errors: int
    seconds: float


def check_decode(
    db: str | os.PathLike[str] | None = None,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DecodeResult:
    """Decode every annotated in-the-wild image; record each failure as a problem.

    The images are those the header checks passed (indexed, no error, not too large).
    Each is decoded in full with Pillow (JPEGs at 1/8 scale, which still reads and
    Huffman-decodes every byte of the compressed data, so a file cut short or
    corrupt in its data fails the same way, for a fraction of the time), on
    ``workers`` threads (default one per CPU; Pillow releases the GIL while decoding).
    Failures replace the previous ``image_decode_error`` rows of ``problems``
    (severity ``error``), which ``clean_images`` then leaves out of every selection.
    ``progress(done, total)`` is called with 0, then after each image.

    The catalog is not held open while decoding. ``celebcat ingest`` recreates
    ``problems``: check again after an ingest.
    """
    from catalog import files
    from catalog.db import connect, transaction

    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1 (or None for one per CPU), got {workers}")
    start = time.perf_counter()
    con = connect(db, read_only=True)
    try:
        root_row = con.execute("SELECT value FROM catalog_info WHERE key = 'image_root'").fetchone()
        root = root_row[0] if root_row else None
        rows = (
            con.execute(
                f"SELECT image_id, path FROM images SEMI JOIN ({_ANNOTATED}) USING (image_id) "
                f"WHERE error IS NULL AND width::BIGINT * height <= {MAX_IMAGE_PIXELS} "
                "ORDER BY image_id"
            ).fetchall()
            if root
            else []
        )
    finally:
        con.close()
    if not root:
        raise ValueError(
            "The catalog has no image index: nothing to decode. Ingest the data folder "
            "with its images (`celebcat ingest DIR`)."
        )
    errors: dict[str, str] = {}
    done = [0]
    if progress is not None:
        progress(0, len(rows))

    def one(row: tuple[str, str]) -> None:
        error = decode_error(os.path.join(root, row[1]))
        if error is not None:
            errors[row[0]] = f"{row[1]}: {error}"  # a dict assignment: atomic

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], len(rows))

    files.run_threads(rows, one, workers or os.cpu_count() or 1, tick, name="decode")
    con = connect(db)
    try:
        with transaction(con):
            con.execute("DELETE FROM problems WHERE check_name = ?", [DECODE_CHECK])
            if errors:
                con.executemany(
                    "INSERT INTO problems VALUES (?, ?, 'images', ?, ?)",
                    [(DECODE_CHECK, ERROR, i, d) for i, d in sorted(errors.items())],
                )
    finally:
        con.close()
    return DecodeResult(len(rows), len(errors), time.perf_counter() - start)


def decode_error(path: str | os.PathLike[str]) -> str | None:
    """Why the image at ``path`` does not decode, or None when it does.

    Pillow's ``LOAD_TRUNCATED_IMAGES`` stays off: data that end early are an error.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft(None, (1, 1))  # JPEG: decode at 1/8 scale; other formats: no-op
            im.load()
    except Exception as exc:  # noqa: BLE001 - any failure of any plugin is the finding
        return f"{type(exc).__name__}: {exc}"
    return None
