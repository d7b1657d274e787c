"""``celebcat select``: set the selection parameters, check they can be met, summarise.

The rules themselves are the views in ``sql/``; this module only changes their
parameters (``catalog.views``) and refuses settings the data cannot satisfy, saying
which parameter and by how much, instead of letting a view return fewer rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from catalog.db import connect, transaction
from catalog.quotas import refresh, set_quotas
from catalog.views import apply_views, ensure_params, get_params, set_params

if TYPE_CHECKING:
    import duckdb


class InfeasibleSelection(ValueError):
    """The parameters ask for more than the data (or each other) allow."""


@dataclass
class SelectionSummary:
    params: dict[str, float]
    clean_images: int
    eligible_identities: int
    selected_identities: int
    selected_images: int
    splits: dict[str, tuple[int, int]] = field(default_factory=dict)  # split -> (images, ids)
    shift: list[tuple[str, float, float, float]] = field(default_factory=list)
    quotas: list[tuple[str, float, float]] = field(default_factory=list)


def problems_with(p: dict[str, float], eligible: int) -> list[str]:
    """Why these parameters cannot be met (empty when they can)."""
    out = []
    if p["n_ids"] > eligible:
        out.append(
            f"n_ids = {p['n_ids']} but only {eligible} identities have at least "
            f"{p['min_images_per_id']} clean images (short by {p['n_ids'] - eligible}); "
            "lower --n-ids, --min-images-per-id or --min-box"
        )
    if p["images_per_id"] > p["min_images_per_id"]:
        out.append(
            f"images_per_id = {p['images_per_id']} exceeds min_images_per_id = "
            f"{p['min_images_per_id']} (by {p['images_per_id'] - p['min_images_per_id']}): "
            "an eligible identity may not have that many clean images"
        )
    per_id = p["train_per_id"] + p["val_per_id"] + p["test_per_id"]
    if per_id > p["images_per_id"]:
        out.append(
            f"train_per_id + val_per_id + test_per_id = {per_id} exceeds images_per_id = "
            f"{p['images_per_id']} (by {per_id - p['images_per_id']})"
        )
    for role in ("query", "distractor"):
        if p[f"{role}_ids"] and p[f"{role}_images"] > p["images_per_id"]:
            out.append(
                f"{role}_images = {p[f'{role}_images']} exceeds images_per_id = "
                f"{p['images_per_id']} (by {p[f'{role}_images'] - p['images_per_id']})"
            )
    held = p["query_ids"] + p["distractor_ids"]
    if held > p["holdout_ids"]:
        out.append(
            f"query_ids + distractor_ids = {held} exceeds holdout_ids = {p['holdout_ids']} "
            f"(by {held - p['holdout_ids']})"
        )
    if p["holdout_ids"] > p["n_ids"]:
        out.append(
            f"holdout_ids = {p['holdout_ids']} exceeds n_ids = {p['n_ids']} "
            f"(by {p['holdout_ids'] - p['n_ids']})"
        )
    return out


def _count(con: duckdb.DuckDBPyConnection, view: str) -> int:
    return con.execute(f"SELECT count(*) FROM {view}").fetchone()[0]


def rebuild(con: duckdb.DuckDBPyConnection) -> None:
    """Views, then the feasibility check, then the quota sample (which needs both)."""
    apply_views(con, quotas=False)
    check_feasible(con)
    refresh(con)


def check_feasible(con: duckdb.DuckDBPyConnection) -> None:
    """Raise :class:`InfeasibleSelection` listing every parameter that cannot be met."""
    found = problems_with(get_params(con), _count(con, "eligible_identities"))
    if found:
        raise InfeasibleSelection("The selection cannot be met:\n  - " + "\n  - ".join(found))


def summarise(con: duckdb.DuckDBPyConnection) -> SelectionSummary:
    summary = SelectionSummary(
        params=get_params(con),
        clean_images=_count(con, "clean_images"),
        eligible_identities=_count(con, "eligible_identities"),
        selected_identities=_count(con, "selected_identities"),
        selected_images=_count(con, "selection"),
    )
    rows = con.execute(
        "SELECT split, count(*), count(DISTINCT identity) FROM recognition_split "
        "GROUP BY split ORDER BY min(CASE split WHEN 'train' THEN 1 WHEN 'val' THEN 2 "
        "WHEN 'test' THEN 3 WHEN 'query' THEN 4 ELSE 5 END)"
    ).fetchall()
    summary.splits = {split: (n, ids) for split, n, ids in rows}
    summary.shift = con.execute("SELECT * FROM attribute_shift LIMIT 10").fetchall()
    return summary


def select(
    db: str | os.PathLike[str] | None = None,
    *,
    quotas: dict[str, float] | None = None,
    **params: float,
) -> SelectionSummary:
    """Set parameters and quotas, check them, summarise the selection they give.

    All or nothing: parameters or quotas that cannot be met are rolled back and the
    error names them. ``quotas=None`` keeps the stored quotas; ``{}`` clears them.
    """
    con = connect(db)
    try:
        with transaction(con):
            ensure_params(con)
            set_params(con, **params)
            set_quotas(con, quotas)
            rebuild(con)
        summary = summarise(con)
        summary.quotas = quota_shares(con)
        return summary
    finally:
        con.close()


def quota_shares(con: duckdb.DuckDBPyConnection) -> list[tuple[str, float, float]]:
    """(attribute, target share, share in the selection) for each stored quota."""
    result = []
    for attribute, share in con.execute("SELECT * FROM quotas ORDER BY 1").fetchall():
        reached = con.execute(
            f'SELECT avg(a."{attribute}"::INT) FROM selection JOIN attributes a USING (image_id)'
        ).fetchone()[0]
        result.append((attribute, share, reached))
    return result


def fitted_params(
    db: str | os.PathLike[str] | None = None, *, images_per_id: int = 20, holdout_share: float = 0.2
) -> dict[str, int]:
    """Parameters that fit a small catalog (the demo's, a test's): every identity with
    ``images_per_id`` clean images is selected, ``holdout_share`` of them held out
    (half queries, half distractors), and the rest split 70/15/15.
    """
    con = connect(db, read_only=True)
    try:
        p = get_params(con)
        eligible = con.execute(
            "SELECT count(*) FROM (SELECT identity FROM clean_images GROUP BY identity "
            "HAVING count(*) >= ?)",
            [images_per_id],
        ).fetchone()[0]
    finally:
        con.close()
    if eligible == 0:
        raise InfeasibleSelection(
            f"No identity has {images_per_id} clean images; lower images_per_id"
        )
    holdout = int(eligible * holdout_share) // 2 * 2
    val = max(1, round(images_per_id * 0.15))
    return {
        "n_ids": eligible,
        "min_images_per_id": images_per_id,
        "images_per_id": images_per_id,
        "holdout_ids": holdout,
        "query_ids": holdout // 2,
        "distractor_ids": holdout // 2,
        "query_images": min(p.get("query_images", 2), images_per_id),
        "distractor_images": min(p.get("distractor_images", 5), images_per_id),
        "train_per_id": images_per_id - 2 * val,
        "val_per_id": val,
        "test_per_id": val,
    }
