"""Attribute quotas: ``celebcat select --quota Male=0.5 --quota Eyeglasses=0.05``.

The reference author wanted the selection to hold set shares of some attributes
(50% Male, 5% Eyeglasses, 5% hats) and gave up. Here a quota is met within one
percentage point where the data allow it, deterministically, or refused with the
quota named.

Two levels, decided from the data: an attribute on which at least 90% of the
eligible identities are unanimous (Male, in CelebA) is balanced over *identities*
(an identity counts as positive when most of its clean images are); any other
attribute is balanced over the selected *images*.

How: start from the plain seeded sample (the views' md5 order), then swap one
member for a non-member at a time, taking the swap that most reduces the total
distance to the targets, ties broken by md5 order, until every target is met or no
swap helps. Identities first, then images within each identity (so every identity
keeps exactly images_per_id). The result is stored in ``quota_identities`` /
``quota_images``, which the views read instead of their own sample when not empty:
a materialised step, because its input columns are named by data (the quotas),
which a static view cannot do. It is recomputed whenever parameters, quotas or
data change (select, ingest, snapshot create, views apply).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from catalog.db import register_frame
from catalog.errors import CatalogError
from catalog.formats import ATTRIBUTES
from catalog.names import suggest

if TYPE_CHECKING:
    import duckdb

#: Share of eligible identities that must agree on an attribute for its quota to be
#: met over identities rather than images.
IDENTITY_LEVEL_AGREEMENT = 0.9
TOLERANCE = 0.01  # one percentage point


class QuotaError(CatalogError, ValueError):
    """A quota that cannot be met (named), or a malformed one."""


@dataclass(frozen=True)
class QuotaResult:
    attribute: str
    level: str  # "identity" or "image"
    target: float
    reached: float


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def parse_quota(text: str) -> tuple[str, float]:
    """``"Male=0.5"`` -> ("Male", 0.5), with errors that say what is wrong."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep:
        raise QuotaError(f"Quota {text!r}: expected ATTRIBUTE=SHARE, e.g. Male=0.5")
    if name not in ATTRIBUTES:
        near = suggest(name, ATTRIBUTES)
        raise QuotaError(f"Quota {text!r}: unknown attribute {name!r}{near}")
    try:
        share = float(value)
    except ValueError:
        raise QuotaError(f"Quota {text!r}: share {value!r} is not a number") from None
    if not 0 <= share <= 1:
        raise QuotaError(f"Quota {text!r}: share must be between 0 and 1")
    return name, share


def set_quotas(con: duckdb.DuckDBPyConnection, quotas: dict[str, float] | None) -> None:
    """Replace the stored quotas (``{}`` clears them; None leaves them as they are)."""
    if quotas is None:
        return
    con.execute("DELETE FROM quotas")
    if quotas:
        con.executemany("INSERT INTO quotas VALUES (?, ?)", list(quotas.items()))


def _representatives(vectors, preference):  # noqa: ANN001, ANN202 - numpy arrays
    """Index of the most preferred (lowest ``preference``) row of each distinct vector."""
    import numpy as np

    order = np.lexsort((preference, *vectors.T[::-1]))
    _, first = np.unique(vectors[order], axis=0, return_index=True)
    return order[first]


def _swap_towards(
    members: list[str],
    pool: list[str],
    vectors: dict[str, tuple[int, ...]],
    targets: list[float],
    weights: list[float],
    order: dict[str, str],
) -> list[str]:
    """Swap members for pool items while that lowers the weighted L1 distance to targets.

    ``vectors[x]`` is what item x adds to the counts. Each step takes the swap with
    the largest gain; ties go to the pool item earliest in md5 ``order``, then to
    the member latest in it, so the result is deterministic. Returns the new members.
    """
    import numpy as np

    if not members or not pool:
        return list(members)
    members, pool = list(members), list(pool)
    rank = {x: r for r, x in enumerate(sorted(members + pool, key=order.__getitem__))}
    m_rank = np.array([rank[m] for m in members])
    p_rank = np.array([rank[x] for x in pool])
    t, w = np.asarray(targets, float), np.asarray(weights, float)
    mv = np.array([vectors[m] for m in members], float).reshape(len(members), -1)
    pv = np.array([vectors[x] for x in pool], float).reshape(len(pool), -1)
    counts = mv.sum(axis=0)
    while True:
        current = float((np.abs(counts - t) * w).sum())
        if current <= 1e-9:
            break
        # Items with equal vectors are interchangeable for the counts, so gains are
        # computed per distinct vector: the least preferred member of each (the one
        # to give up) against the most preferred pool item of each.
        outs = _representatives(mv, -m_rank)
        ins = _representatives(pv, p_rank)
        new = counts[None, None, :] - mv[outs][:, None, :] + pv[ins][None, :, :]
        gain = current - (np.abs(new - t) * w).sum(axis=2)
        best = gain.max()
        if best <= 1e-9:
            break
        ii, jj = np.nonzero(gain >= best - 1e-12)
        k = np.lexsort((-m_rank[outs][ii], p_rank[ins][jj]))[0]
        i, j = outs[ii[k]], ins[jj[k]]
        counts = new[ii[k], jj[k]]
        mv[i], pv[j] = pv[j].copy(), mv[i].copy()
        m_rank[i], p_rank[j] = p_rank[j], m_rank[i]
        members[i], pool[j] = pool[j], members[i]
    return members


def refresh(con: duckdb.DuckDBPyConnection) -> list[QuotaResult]:
    """Recompute ``quota_identities`` / ``quota_images`` from quotas, parameters and data.

    Raises :class:`QuotaError` naming the first quota that cannot be met within one
    percentage point (the stored picks are then left empty).
    """
    con.execute("DELETE FROM quota_identities")
    con.execute("DELETE FROM quota_images")
    quotas = dict(con.execute("SELECT attribute, share FROM quotas ORDER BY 1").fetchall())
    if not quotas:
        return []
    p = dict(con.execute("SELECT name, value FROM params").fetchall())
    seed, n_ids, per_id = int(p["seed"]), int(p["n_ids"]), int(p["images_per_id"])
    names = list(quotas)
    cols = ", ".join(f'a."{name}"::INT' for name in names)
    clean = con.execute(
        f"SELECT k.image_id, k.identity, {cols} FROM clean_images k "
        "JOIN attributes a USING (image_id) "
        "SEMI JOIN eligible_identities e ON e.identity = k.identity"
    ).fetchall()
    by_id: dict[int, list[tuple]] = defaultdict(list)
    for row in clean:
        by_id[row[1]].append(row)

    # Which attributes are identity-level: most identities unanimous about them.
    level = {}
    for k, a in enumerate(names):
        unanimous = sum(len({r[2 + k] for r in rows}) == 1 for rows in by_id.values())
        agree = unanimous / max(len(by_id), 1)
        level[a] = "identity" if agree >= IDENTITY_LEVEL_AGREEMENT else "image"
    id_attrs = [a for a in names if level[a] == "identity"]
    img_attrs = [a for a in names if level[a] == "image"]

    id_order = {str(i): _md5(f"{seed}:id:{i}") + f"{i:012d}" for i in by_id}
    img_order = {r[0]: _md5(f"{seed}:img:{r[0]}") + r[0] for r in clean}
    col = {a: 2 + names.index(a) for a in names}
    # Each identity's default images: its first images_per_id in md5 order.
    default = {i: sorted(rows, key=lambda r: img_order[r[0]])[:per_id] for i, rows in by_id.items()}
    n_chosen = min(n_ids, len(by_id))
    total = per_id * n_chosen
    # Distances are measured in tolerance units (1 point of identities or of images),
    # so identity-level and image-level quotas weigh the same.
    id_w = [1 / (TOLERANCE * max(n_chosen, 1))] * len(id_attrs)
    img_w = [1 / (TOLERANCE * max(total, 1))] * len(img_attrs)

    # 1. Identities: identity-level quotas, and a head start on image-level ones
    #    (identities whose default images bring the shares nearer).
    ranked = sorted(by_id, key=lambda i: id_order[str(i)])
    id_vec = {
        str(i): tuple(int(2 * sum(r[col[a]] for r in rows) >= len(rows)) for a in id_attrs)
        + tuple(sum(r[col[a]] for r in default[i]) for a in img_attrs)
        for i, rows in by_id.items()
    }
    chosen = _swap_towards(
        [str(i) for i in ranked[:n_chosen]],
        [str(i) for i in ranked[n_chosen:]],
        id_vec,
        [quotas[a] * n_chosen for a in id_attrs] + [quotas[a] * total for a in img_attrs],
        id_w + [w / 4 for w in img_w],  # images are fine-tuned in step 2
        id_order,
    )
    results: list[QuotaResult] = []
    for k, a in enumerate(id_attrs):
        reached = sum(id_vec[i][k] for i in chosen) / max(n_chosen, 1)
        results.append(QuotaResult(a, "identity", quotas[a], reached))

    # 2. Images within the chosen identities; each keeps exactly images_per_id.
    picks = {int(i): [r[0] for r in default[int(i)]] for i in chosen}
    if img_attrs:
        img_vec = {r[0]: tuple(r[col[a]] for a in img_attrs) for r in clean}
        targets = [quotas[a] * total for a in img_attrs]
        counts = [
            sum(img_vec[x][k] for m in picks.values() for x in m) for k in range(len(img_attrs))
        ]
        # Identity by identity (md5 order), each moving its own counts as far towards
        # the remaining need as its spare images allow.
        for i in sorted(picks, key=lambda i: id_order[str(i)]):
            members = picks[i]
            taken = set(members)
            pool = [r[0] for r in by_id[i] if r[0] not in taken]
            own = [sum(img_vec[x][k] for x in members) for k in range(len(img_attrs))]
            local = [o + t - c for o, t, c in zip(own, targets, counts, strict=True)]
            new = _swap_towards(members, pool, img_vec, local, img_w, img_order)
            new_own = [sum(img_vec[x][k] for x in new) for k in range(len(img_attrs))]
            counts = [c - o + n for c, o, n in zip(counts, own, new_own, strict=True)]
            picks[i] = new
        for k, a in enumerate(img_attrs):
            results.append(QuotaResult(a, "image", quotas[a], counts[k] / max(total, 1)))

    for r in results:
        if abs(r.reached - r.target) > TOLERANCE + 1e-9:
            unit = "identities" if r.level == "identity" else "images"
            raise QuotaError(
                f"Quota {r.attribute}={r.target:g} cannot be met: the closest selection of "
                f"{unit} reaches {r.reached:.3f} (tolerance 0.01). Relax the quota, or widen "
                "the pool (--min-box, --min-images-per-id, a larger --n-ids for images)."
            )
    import pandas as pd

    # Through a data frame: executemany inserts row by row, 100x slower at this size.
    ids = pd.DataFrame(
        [(int(i), n + 1) for n, i in enumerate(sorted(chosen, key=id_order.__getitem__))],
        columns=["identity", "pick"],
    )
    images = pd.DataFrame(
        [
            (x, n + 1)
            for m in picks.values()
            for n, x in enumerate(sorted(m, key=img_order.__getitem__))
        ],
        columns=["image_id", "pick_in_id"],
    )
    for table, frame in (("quota_identities", ids), ("quota_images", images)):
        register_frame(con, "_quota_frame", frame)
        con.execute(f"INSERT INTO {table} SELECT * FROM _quota_frame")
        con.unregister("_quota_frame")
    return results
