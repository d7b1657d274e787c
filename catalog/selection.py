"""``celebcat select``: set the selection parameters, check they can be met, summarise.

The rules themselves are the views in ``sql/``; this module only changes their
parameters (``catalog.views``) and refuses settings the data cannot satisfy, saying
which parameter and by how much, instead of letting a view return fewer rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from catalog.db import DbArg, connect, transaction
from catalog.errors import CatalogError, ParameterError
from catalog.formats import split_order_sql
from catalog.quotas import refresh, set_quotas
from catalog.views import (
    DEFAULTS,
    apply_views,
    check_params,
    ensure_params,
    get_params,
    set_params,
)

if TYPE_CHECKING:
    import duckdb


class InfeasibleSelection(CatalogError, ValueError):
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
    #: With ``fit``: the parameters the fit set, and those it left as they were stored
    #: that differ from the defaults (a seed set earlier, say): what ``--fit`` says.
    fitted: dict[str, float] = field(default_factory=dict)
    kept: dict[str, float] = field(default_factory=dict)


#: What the infeasibility message ends with: the options named are ``select``'s.
FIT_HINT = (
    "(options of `celebcat select`; `celebcat select --fit` fits them all to this "
    "catalog, `--reset` returns to the defaults)"
)


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
            "an eligible identity may not have that many clean images; lower "
            "--images-per-id or raise --min-images-per-id"
        )
    per_id = p["train_per_id"] + p["val_per_id"] + p["test_per_id"]
    if per_id > p["images_per_id"]:
        out.append(
            f"train_per_id + val_per_id + test_per_id = {per_id} exceeds images_per_id = "
            f"{p['images_per_id']} (by {per_id - p['images_per_id']}); change --split "
            "or --images-per-id"
        )
    for role in ("query", "distractor"):
        if p[f"{role}_ids"] and p[f"{role}_images"] > p["images_per_id"]:
            out.append(
                f"{role}_images = {p[f'{role}_images']} exceeds images_per_id = "
                f"{p['images_per_id']} (by {p[f'{role}_images'] - p['images_per_id']}); "
                f"lower it with --set {role}_images=N"
            )
    held = p["query_ids"] + p["distractor_ids"]
    if held > p["holdout_ids"]:
        out.append(
            f"query_ids + distractor_ids = {held} exceeds holdout_ids = {p['holdout_ids']} "
            f"(by {held - p['holdout_ids']}); raise --holdout-ids, or lower them with "
            "--set query_ids=N --set distractor_ids=N"
        )
    if p["holdout_ids"] > p["n_ids"]:
        out.append(
            f"holdout_ids = {p['holdout_ids']} exceeds n_ids = {p['n_ids']} "
            f"(by {p['holdout_ids'] - p['n_ids']}); lower --holdout-ids or raise --n-ids"
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
        raise InfeasibleSelection(
            "The selection cannot be met:\n  - " + "\n  - ".join(found) + f"\n{FIT_HINT}"
        )


def selection_problems(db: DbArg = None) -> list[str]:
    """Why the selection in force cannot be met on this catalog (empty when it can):
    what ingest says of a fresh catalog whose defaults ask for more than it holds."""
    con = connect(db, read_only=True)
    try:
        return problems_with(get_params(con), _count(con, "eligible_identities"))
    finally:
        con.close()


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
        f"GROUP BY split ORDER BY min({split_order_sql('split')})"
    ).fetchall()
    summary.splits = {split: (n, ids) for split, n, ids in rows}
    summary.shift = con.execute("SELECT * FROM attribute_shift LIMIT 10").fetchall()
    return summary


def derive_holdout(params: dict[str, float]) -> dict[str, float]:
    """``params`` with the held-out identities divided between queries and distractors
    where only ``holdout_ids`` was given: half and half as the reference protocol
    does (200 -> 100 query + 100 distractor identities; an odd one goes to the
    queries). Where one of ``query_ids`` / ``distractor_ids`` is given the other gets
    the rest; where both are, nothing changes."""
    if "holdout_ids" not in params:
        return params
    out = dict(params)
    holdout = int(params["holdout_ids"])
    query, distractor = params.get("query_ids"), params.get("distractor_ids")
    if query is None and distractor is None:
        out["distractor_ids"] = holdout // 2
        out["query_ids"] = holdout - holdout // 2
    elif query is None:
        out["query_ids"] = max(holdout - int(distractor), 0)
    elif distractor is None:
        out["distractor_ids"] = max(holdout - int(query), 0)
    return out


def options_to_params(
    *,
    n_ids: int | None = None,
    images_per_id: int | None = None,
    min_images_per_id: int | None = None,
    min_box: tuple[int, int] | None = None,
    seed: int | None = None,
    keep_blurry: bool | None = None,
    holdout_ids: int | None = None,
    split: str | None = None,
    assignments: Sequence[str] = (),
) -> dict[str, float]:
    """The parameters that ``celebcat select``'s options name (None: not given).

    ``min_box`` is (width, height); ``split`` is "train/val/test" images per identity
    (e.g. "18/4/3"); ``assignments`` are "NAME=NUMBER" strings for any parameter.
    Malformed values raise :class:`~catalog.errors.ParameterError`; ranges are checked
    by :func:`select`.
    """
    values: dict[str, float] = {}
    for name, value in (
        ("n_ids", n_ids),
        ("images_per_id", images_per_id),
        ("min_images_per_id", min_images_per_id),
        ("seed", seed),
        ("holdout_ids", holdout_ids),
    ):
        if value is not None:
            values[name] = value
    if min_box is not None:
        values["min_box_w"], values["min_box_h"] = min_box
    if keep_blurry is not None:
        values["drop_blurry"] = 0 if keep_blurry else 1
    if split is not None:
        parts = split.split("/")
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
            raise ParameterError(f"--split {split!r}: expected three whole numbers like 18/4/3")
        values["train_per_id"], values["val_per_id"], values["test_per_id"] = map(int, parts)
    for item in assignments:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not name.strip() or number is None:
            raise ParameterError(f"--set {item!r}: expected NAME=NUMBER, e.g. box_shrink=0.1")
        values[name.strip()] = number
    return values


#: Clean images per identity that :func:`fitted_params` asks for when not told.
FIT_IMAGES_PER_ID = 20


def select(
    db: DbArg = None,
    *,
    quotas: dict[str, float] | None = None,
    fit: bool = False,
    reset: bool = False,
    **params: float,
) -> SelectionSummary:
    """Set parameters and quotas, check them, summarise the selection they give.

    All or nothing: parameters or quotas that cannot be met are rolled back and the
    error names them. ``quotas=None`` keeps the stored quotas; ``{}`` clears them.
    ``holdout_ids`` alone is divided between queries and distractors
    (:func:`derive_holdout`). With ``fit``, the parameters that fit the catalog
    (:func:`fitted_params`, ``images_per_id`` of them per identity, default
    :data:`FIT_IMAGES_PER_ID`) are applied first, under the other ``params``. With
    ``reset``, every parameter returns to its default first (quotas are kept unless
    ``quotas`` says otherwise)."""
    check_params(params)
    con = connect(db)
    try:
        with transaction(con):
            ensure_params(con)
            if reset:
                set_params(con, **DEFAULTS)
            params = derive_holdout(params)
            given = dict(params)
            fitted: dict[str, float] = {}
            if fit:
                per_id = int(params.pop("images_per_id", FIT_IMAGES_PER_ID))
                set_params(con, **params)  # e.g. a --min-box that decides what is clean
                fitted = _fit(con, per_id)
                params = {**fitted, **params}
            set_params(con, **params)
            set_quotas(con, quotas)
            rebuild(con)
        summary = summarise(con)
        summary.quotas = quota_shares(con)
        if fit:
            summary.fitted = {k: v for k, v in fitted.items() if k not in given}
            summary.kept = {
                k: v
                for k, v in summary.params.items()
                if k not in params and k in DEFAULTS and v != DEFAULTS[k]
            }
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
    db: DbArg = None, *, images_per_id: int = FIT_IMAGES_PER_ID, holdout_share: float = 0.2
) -> dict[str, int]:
    """Parameters that fit a small catalog (the demo's, a test's): every identity with
    ``images_per_id`` clean images is selected, ``holdout_share`` of them held out
    (half queries, half distractors), and the rest split 70/15/15.
    """
    con = connect(db, read_only=True)
    try:
        return _fit(con, images_per_id, holdout_share)
    finally:
        con.close()


def _fit(
    con: duckdb.DuckDBPyConnection, images_per_id: int, holdout_share: float = 0.2
) -> dict[str, int]:
    if images_per_id < 1:
        raise ParameterError(f"images_per_id must be at least 1, got {images_per_id}")
    p = get_params(con)
    eligible = con.execute(
        "SELECT count(*) FROM (SELECT identity FROM clean_images GROUP BY identity "
        "HAVING count(*) >= ?)",
        [images_per_id],
    ).fetchone()[0]
    if eligible == 0:
        raise InfeasibleSelection(
            f"No identity has {images_per_id} clean images; lower images_per_id (--images-per-id)"
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
        "train_per_id": max(images_per_id - 2 * val, 0),
        "val_per_id": val,
        "test_per_id": val,
    }
