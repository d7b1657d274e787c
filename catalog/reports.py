"""Reports over training results: how a landmark run's error varies with attributes.

``celebcat report landmarks --run RUN --by Eyeglasses,Male``: the run's per-image NME
(``landmark_predictions``) joined with the CelebA attributes, grouped by the given
attributes (-1 / 1 as in list_attr_celeba). Images without an attribute row fall in
the NULL group; images without a true-landmark NME are left out.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from catalog.db import connect
from catalog.formats import ATTRIBUTES
from catalog.info import QueryResult

#: NME above this counts as a failure (the usual 10% of the inter-ocular distance).
FAILURE_THRESHOLD = 0.1


def landmark_report(
    db: str | os.PathLike[str] | None,
    run_id: str,
    by: Sequence[str] = (),
    *,
    threshold: float = FAILURE_THRESHOLD,
) -> QueryResult:
    """NME mean, median, failure rate (NME > ``threshold``) and image count of run
    ``run_id``, one row per combination of the ``by`` attributes (one row overall when
    ``by`` is empty), ordered by the attributes.

    Raises ValueError naming an attribute that is not one of CelebA's 40 (or repeats),
    and catalog.results.RunError for an unknown run.
    """
    from catalog.results import get_run

    by = list(by)
    for name in by:
        if name not in ATTRIBUTES:
            raise ValueError(
                f"Unknown attribute {name!r}; use CelebA's attribute names "
                f"(e.g. {', '.join(ATTRIBUTES[:4])}, ...; all: {', '.join(ATTRIBUTES)})"
            )
    if len(set(by)) != len(by):
        raise ValueError(f"Attributes repeat in {', '.join(by)}")
    get_run(db, run_id)  # RunError for an unknown run
    cols = ", ".join(f'a."{name}"' for name in by)  # validated against ATTRIBUTES above
    sql = (
        f"SELECT {cols + ', ' if by else ''}"
        "avg(p.nme) AS nme_mean, median(p.nme) AS nme_median, "
        "avg(CASE WHEN p.nme > ? THEN 1.0 ELSE 0.0 END) AS failure_rate, "
        "count(*) AS images "
        "FROM landmark_predictions AS p LEFT JOIN attributes AS a USING (image_id) "
        "WHERE p.run_id = ? AND p.nme IS NOT NULL AND NOT isnan(p.nme) "
        f"{'GROUP BY ' + cols + ' ORDER BY ' + cols if by else ''}"
    )
    con = connect(db, read_only=True)
    try:
        cur = con.execute(sql, [threshold, run_id])
        columns = [d[0] for d in cur.description]
        rows = cur.fetchall()
    finally:
        con.close()
    return QueryResult(columns, rows)


__all__ = ["FAILURE_THRESHOLD", "landmark_report"]
