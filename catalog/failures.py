"""A recognizer's failures, from its stored embeddings: what to look at first.

For a recognition run and a split of a snapshot (default: the run's snapshot, its
test split), from the ``embeddings`` table alone (``celebcat embed`` or ``eval
recognizer`` wrote them):

- **false non-matches**: pairs of images of the *same* person with the lowest
  cosine (the recognizer thinks they are two people);
- **false matches**: pairs of images of *different* people with the highest cosine
  (the recognizer thinks they are one);
- **confused identities**: pairs of people whose centres (the mean of each person's
  embeddings, normalised) are closest, with how many of their image pairs score
  above the threshold.

The threshold is the run's pair threshold at FPR 0.01 as ``eval recognizer`` stored
it (``open_set`` / ``threshold@fpr=0.01`` in ``metrics``), or one given; a pair above
it is called the same person. Pairs are scored in blocks of rows, so memory stays at
``block x N`` floats whatever the split's size.

The HTML report and ``celebcat serve`` show these as thumbnails side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from catalog import frames, results
from catalog.db import DbArg, connect, has_table
from catalog.metric_names import at_fpr

#: The operating point whose stored threshold calls a pair "the same person".
FPR = 0.01
BLOCK = 1024


@dataclass(frozen=True)
class Pair:
    """Two images and their cosine."""

    image_a: str
    image_b: str
    identity_a: int
    identity_b: int
    cosine: float


@dataclass(frozen=True)
class ConfusedIdentities:
    identity_a: int
    identity_b: int
    centre_cosine: float  # cosine of the two people's centres
    above_threshold: int  # image pairs of the two scoring above the threshold
    pairs: int  # image pairs of the two
    closest: Pair  # their highest-scoring image pair


@dataclass(frozen=True)
class Failures:
    run_id: str
    snapshot: str
    split: str
    images: int
    identities: int
    threshold: float | None  # None: no stored threshold and none given
    threshold_source: str  # "stored (FPR 0.01)", "given", or "none"
    false_non_matches: list[Pair] = field(default_factory=list)
    false_matches: list[Pair] = field(default_factory=list)
    confused: list[ConfusedIdentities] = field(default_factory=list)


def stored_threshold(db: DbArg, run_id: str, fpr: float = FPR) -> float | None:
    """The run's pair threshold at ``fpr`` as evaluation stored it (its latest epoch)."""
    con = connect(db, read_only=True)
    try:
        if not has_table(con, "metrics"):
            return None
        row = con.execute(
            "SELECT value FROM metrics WHERE run_id = ? AND split = 'open_set' AND name = ? "
            "ORDER BY epoch DESC LIMIT 1",
            [run_id, at_fpr("threshold", fpr)],
        ).fetchone()
    finally:
        con.close()
    return None if row is None else float(row[0])


def _top(values: np.ndarray, k: int, largest: bool) -> np.ndarray:
    """Indices of the ``k`` largest (smallest) of ``values``, best first."""
    if len(values) <= k:
        order = np.argsort(values)
    else:
        part = np.argpartition(values, -k if largest else k - 1)
        part = part[-k:] if largest else part[:k]
        order = part[np.argsort(values[part])]
    return order[::-1] if largest else order


def recognition_failures(
    db: DbArg,
    run_id: str,
    *,
    snapshot: str | None = None,
    split: str = "test",
    top: int = 12,
    threshold: float | None = None,
) -> Failures:
    """The ``top`` worst pairs each way and the ``top`` most confused identity pairs of
    ``run_id`` on ``split`` of ``snapshot`` (default: the run's). Raises RunError,
    SnapshotError, or ValueError when the run has no embeddings there."""
    run = results.get_run(db, run_id)
    snapshot = snapshot or run.snapshot
    if not snapshot:
        raise ValueError(f"Run {run_id} has no snapshot of this catalog: name one (snapshot=).")
    ids, vectors = frames.embeddings(run_id, db, snapshot=snapshot, split=split)
    table = frames.snapshot_frame(snapshot, db, split=split).set_index("image_id")
    identity = table.loc[ids, "identity"].to_numpy(dtype=np.int64)
    source = "given"
    if threshold is None:
        threshold = stored_threshold(db, run_id)
        source = f"stored (FPR {FPR:g})" if threshold is not None else "none"
    n = len(ids)
    same_best: list[tuple[float, int, int]] = []
    diff_best: list[tuple[float, int, int]] = []
    columns = np.arange(n)
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        scores = vectors[start:stop] @ vectors.T  # (rows, n)
        rows = np.arange(start, stop)[:, None]
        upper = columns[None, :] > rows  # each pair once
        same = identity[rows] == identity[None, :]
        for mask, best, largest in (
            (upper & same, same_best, False),
            (upper & ~same, diff_best, True),
        ):
            r, c = np.nonzero(mask)
            if not len(r):
                continue
            vals = scores[r, c]
            pick = _top(vals, top, largest)
            best.extend(
                zip(vals[pick].tolist(), (r[pick] + start).tolist(), c[pick].tolist(), strict=True)
            )
        same_best.sort()
        del same_best[top:]
        diff_best.sort(reverse=True)
        del diff_best[top:]

    def pair(cos: float, a: int, b: int) -> Pair:
        return Pair(str(ids[a]), str(ids[b]), int(identity[a]), int(identity[b]), float(cos))

    people, members = np.unique(identity, return_inverse=True)
    centres = np.zeros((len(people), vectors.shape[1]), dtype=np.float64)
    np.add.at(centres, members, vectors)
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    closeness = centres @ centres.T
    a_idx, b_idx = np.triu_indices(len(people), 1)
    order = _top(closeness[a_idx, b_idx], top, True) if len(a_idx) else np.array([], int)
    confused = []
    for k in order:
        a, b = a_idx[k], b_idx[k]
        in_a, in_b = np.flatnonzero(members == a), np.flatnonzero(members == b)
        cross = vectors[in_a] @ vectors[in_b].T
        best = np.unravel_index(int(np.argmax(cross)), cross.shape)
        above = int((cross > threshold).sum()) if threshold is not None else 0
        confused.append(
            ConfusedIdentities(
                int(people[a]),
                int(people[b]),
                float(closeness[a, b]),
                above,
                int(cross.size),
                pair(float(cross[best]), int(in_a[best[0]]), int(in_b[best[1]])),
            )
        )
    return Failures(
        run_id,
        snapshot,
        split,
        n,
        len(people),
        threshold,
        source,
        [pair(*t) for t in same_best],
        [pair(*t) for t in diff_best],
        confused,
    )


__all__ = [
    "ConfusedIdentities",
    "Failures",
    "Pair",
    "recognition_failures",
    "stored_threshold",
]
