"""How well a recognizer names the held-out people of a finished demo, as identify
searches: the open-set TPIR at FPIR 0.01 over all of them, not one photo's six faces.

On a demo folder (``celebcat demo --out FOLDER``): the gallery is the centre of each
query person's 3 images (as ``gallery add`` builds it), the probes are the query
people's images the snapshot does not use (where the group photo takes its faces
from), the strangers are the distractor people. Every face is cut from its catalog
box and aligned with the demo's landmark run (``pred``) or with the true landmarks
(``truth``: what alignment costs). ``--flip`` also embeds each crop's mirror image
and sums the two (what the shipped recognizer does itself).

Prints rank-1, the genuine cosines (median, 10th percentile), the strangers' best
cosines (median, 99th percentile: the threshold at FPIR 0.01) and the TPIR there.

Usage: python bench/demo_openset.py FOLDER RUN [--align pred|truth] [--flip]
RUN: a run id of that catalog, a checkpoint, ``own`` (the demo's newest recognizer)
or ``recognition-synthetic-easy`` (imported first where the demo has not).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from catalog import snapshot_frame  # noqa: E402
from catalog.formats import LANDMARK_COLUMNS  # noqa: E402
from models.detection.detectors import Detector  # noqa: E402
from models.pipeline import demo as D  # noqa: E402
from models.pipeline.faces import FacePipeline  # noqa: E402


class TruthDetector(Detector):
    """The catalog's box and true five points of each image, by name."""

    spec = "truth"

    def __init__(self, rows: dict[str, np.ndarray]) -> None:
        self.rows = rows

    def detect(self, images, names=None):  # noqa: ANN001, ANN201
        return [self.rows[n][None] for n in names]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("run")
    ap.add_argument("--align", choices=["pred", "truth"], default="pred")
    ap.add_argument("--flip", action="store_true")
    a = ap.parse_args()
    folder = D.DemoFolder(a.folder)
    landmarks = sorted(p.name for p in folder.checkpoints.glob("landmarks-*"))[-1]
    run = a.run
    if run == "own":
        run = sorted(p.name for p in folder.checkpoints.glob("recognition-*"))[-1]
    if run == D.SHIPPED:
        from models.pretrained import import_source

        import_source(folder.db, "synthetic")
    frame = snapshot_frame(D.SNAPSHOT, folder.db)
    names = [Path(p).name for p in frame["path"]]
    if a.align == "truth":
        rows = {
            n: np.array(
                [r.x_1, r.y_1, r.x_1 + r.width, r.y_1 + r.height, 1.0]
                + [r[c] for c in LANDMARK_COLUMNS],
                np.float32,
            )
            for n, (_, r) in zip(names, frame.iterrows(), strict=True)
        }
        pipeline = FacePipeline(TruthDetector(rows), "detector", run, folder.db)
    else:
        pipeline = FacePipeline("catalog", landmarks, run, folder.db)
    if a.flip:
        embed = pipeline.recognizer.embed

        def flipped(crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
            both = embed(crops, batch_size) + embed(crops[:, :, ::-1].copy(), batch_size)
            return both / np.linalg.norm(both, axis=1, keepdims=True)

        pipeline.recognizer.embed = flipped  # type: ignore[method-assign]
    emb = pipeline.run(list(frame["path"]), names).embeddings
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    split = frame["split"].fillna("unused").astype(str).to_numpy()
    identity = frame["identity"].to_numpy()
    query = split == "query"
    people = np.unique(identity[query])
    centres = np.stack([emb[query & (identity == i)].mean(0) for i in people])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    probe = (split == "unused") & np.isin(identity, people)
    stranger = split == "distractor"
    scores = emb @ centres.T
    genuine = scores[probe, np.searchsorted(people, identity[probe])]
    right = people[scores[probe].argmax(1)] == identity[probe]
    best = scores[stranger].max(1)
    threshold = np.quantile(best, 0.99)
    tpir = ((genuine > threshold) & right).mean()
    print(
        f"{Path(run).name} ({a.align}{', flip' if a.flip else ''}): gallery {len(people)}, "
        f"probes {probe.sum()}, strangers {stranger.sum()}: rank-1 {right.mean():.3f}; "
        f"genuine median {np.median(genuine):.3f}, 10th percentile "
        f"{np.quantile(genuine, 0.1):.3f}; strangers' best median {np.median(best):.3f}, "
        f"99th percentile {threshold:.3f}; TPIR at FPIR 0.01 {tpir:.3f}"
    )


if __name__ == "__main__":
    main()
