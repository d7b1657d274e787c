"""Does a gallery's calibrated threshold hold? Galleries of several sizes, strangers
counted on people the calibration never saw, beside the pair threshold identify used
before galleries were calibrated.

Run:  python bench/gallery_calibration.py --db CATALOG --run RECOGNIZER_RUN
          [--sizes 10,100,800] [--fpir 0.01] [--repeats 5]

Needs a recognition run evaluated on its snapshot (``celebcat eval recognizer``: the
run's embeddings of every split are in the catalog, and its open-set pair thresholds
in ``metrics``). For each gallery size N, ``--repeats`` times (seeded):

- the gallery: N of the run's trained identities, each as ``gallery add`` stores a
  snapshot split (its ``train`` images), searched by ``how`` = ``mean`` (centres) and
  ``max`` (best image);
- strangers: the held-out people (``query`` and ``distractor`` splits), split in two
  halves by person; the threshold at ``--fpir`` is calibrated on one half
  (:func:`models.pipeline.calibration.threshold_at_fpir`) and the share of the other
  half named (FPIR) is counted;
- TPIR: the share of the gallery people's ``test`` images (never in the gallery) whose
  best match is their own person above the threshold;
- the same two figures at the pair threshold (``threshold@fpr=<fpir>`` of the
  open-set evaluation).

Prints one row per size and template: medians over the repeats (min-max in
brackets). The target: counted FPIR within 0.005-0.02 at --fpir 0.01 for every size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from catalog import gallery as G  # noqa: E402
from catalog import results  # noqa: E402
from catalog.db import connect  # noqa: E402
from catalog.metric_names import at_fpr  # noqa: E402
from models.pipeline.calibration import best_scores, named_rate, threshold_at_fpir  # noqa: E402
from models.pipeline.identify import GalleryIndex  # noqa: E402


def _embedded(db: str, run_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(identity, split, embedding) of every image the run embedded in its snapshot."""
    snapshot = results.get_run(db, run_id).snapshot
    con = connect(db, read_only=True)
    try:
        cols = con.execute(
            "SELECT s.identity, s.split, e.embedding FROM embeddings e JOIN snapshot_images s "
            "USING (image_id) WHERE e.run_id = ? AND s.snapshot = ? ORDER BY e.image_id",
            [run_id, snapshot],
        ).fetchnumpy()
    finally:
        con.close()
    emb = np.stack(list(cols["embedding"])).astype(np.float32)
    return np.asarray(cols["identity"]), np.asarray(cols["split"], dtype=str), emb


def _pair_threshold(db: str, run_id: str, fpr: float) -> float:
    stored = {
        (e, n): v for (e, s, n), v in results.get_metrics(db, run_id).items() if s == "open_set"
    }
    values = [v for (_, n), v in sorted(stored.items()) if n == at_fpr("threshold", fpr)]
    if not values:
        sys.exit(f"run {run_id} has no open-set threshold at FPR {fpr:g}: evaluate it first")
    return float(values[-1])


def _tpir(index: GalleryIndex, probes: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    scores = index.scores(probes)
    best = scores.argmax(axis=1)
    right = index.names[best] == truth
    return float((right & (scores.max(axis=1) > threshold)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--sizes", default="10,100,800")
    parser.add_argument("--fpir", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    identity, split, emb = _embedded(args.db, args.run)
    pair = _pair_threshold(args.db, args.run, args.fpir)
    trained = np.unique(identity[split == "train"])
    held = np.unique(identity[np.isin(split, ("query", "distractor"))])
    stranger_rows = np.flatnonzero(np.isin(split, ("query", "distractor")))
    print(
        f"run {args.run}: {len(trained)} trained identities, {len(held)} held-out people "
        f"({len(stranger_rows)} faces); pair threshold at FPR {args.fpir:g}: {pair:.4f}"
    )
    header = (
        f"{'size':>5} {'how':>4}  {'threshold':>18}  {'FPIR counted':>20}  {'TPIR':>18}  "
        f"{'FPIR at pair thr.':>20}  {'TPIR at pair thr.':>18}"
    )
    print(header)
    for size in (int(s) for s in args.sizes.split(",")):
        if size > len(trained):
            print(f"{size:>5}  skipped: the run trained {len(trained)} identities")
            continue
        figures: dict[str, list[tuple[float, ...]]] = {"mean": [], "max": []}
        for rep in range(args.repeats):
            rng = np.random.default_rng([size, rep])
            people = rng.choice(trained, size, replace=False)
            rows = np.flatnonzero(np.isin(identity, people) & (split == "train"))
            names = identity[rows].astype(str)
            entries = G.GalleryEntries(None, names, names, emb[rows])  # type: ignore[arg-type]
            probes = np.flatnonzero(np.isin(identity, people) & (split == "test"))
            order = rng.permutation(held)
            half = np.isin(identity[stranger_rows], order[: len(order) // 2])
            calib, count = stranger_rows[half], stranger_rows[~half]
            for how in figures:
                index = GalleryIndex(entries, how)
                found = threshold_at_fpir(best_scores(index.scores, emb[calib]), args.fpir)
                counted = best_scores(index.scores, emb[count])
                truth = identity[probes].astype(str)
                figures[how].append(
                    (
                        found.value,
                        named_rate(counted, found.value),
                        _tpir(index, emb[probes], truth, found.value),
                        named_rate(counted, pair),
                        _tpir(index, emb[probes], truth, pair),
                    )
                )
        for how, rows_ in figures.items():
            a = np.array(rows_)
            cells = [
                f"{np.median(a[:, k]):.3f} [{a[:, k].min():.3f}-{a[:, k].max():.3f}]"
                for k in range(a.shape[1])
            ]
            print(
                f"{size:>5} {how:>4}  {cells[0]:>18}  {cells[1]:>20}  {cells[2]:>18}  "
                f"{cells[3]:>20}  {cells[4]:>18}"
            )


if __name__ == "__main__":
    main()
