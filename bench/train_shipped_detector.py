"""Train the face detector celebcat ships (models/pretrained/weights/), on CPU.

The demo finds the faces of its group photo with it where it finds more than the
demo's own (models/pipeline/demo.py): a CenterNet trained for the demo's 40 seconds
on 300 pictures scores some of the photo's small faces under its threshold (measured:
3 of 6 found on one seed of five, docs/recognition.md).

Recipe: the catalog ``bench/train_shipped_recognizer.py WORK`` made (synthetic seed
1001, style easy, no demo's population), its snapshot ``shipped``: ``celebcat train
detector`` on the train split (34,515 pictures of 2,655 people), 60 % of the pictures
2 x 2 mosaics (the demo's share), 128 px input, the default score threshold, a time
budget; ``celebcat eval detector``-style test figures; then the network's weights in
half precision, written to OUT/detector-synthetic-easy.pt with their provenance. Its
SHA-256 printed last goes into models/pretrained/synthetic.py.

Usage: python bench/train_shipped_detector.py WORKDIR [--epochs 3] [--max-minutes 30]
Measured (2 cores, mostly idle): about 4 minutes an epoch.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

SNAPSHOT, MOSAIC = "shipped", 0.6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir", type=Path, help="train_shipped_recognizer.py's WORKDIR")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-minutes", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=Path("models/pretrained/weights"))
    ap.add_argument("--run", help="a finished detector run of that catalog: no training")
    a = ap.parse_args()
    db, ckpts = a.workdir / "celeba.duckdb", a.workdir / "detector"
    env = dict(os.environ, CELEBCAT_DB=str(db))
    args = (
        f"train detector --snapshot {SNAPSHOT} --epochs {a.epochs} --mosaic {MOSAIC} "
        f"--max-minutes {a.max_minutes} --seed 0 --device cpu --out {ckpts}"
    )
    if a.run is None:
        print("+ celebcat", args, flush=True)
        subprocess.run([sys.executable, "-m", "cli", *args.split()], check=True, env=env)
    run = ckpts / a.run if a.run else sorted(ckpts.glob("detector-*"))[-1]

    from models.checkpoints import load_checkpoint
    from models.detection.train import evaluate_detector
    from models.pretrained import synthetic

    test = evaluate_detector(run.name, db)
    print(f"{run.name}: test {test.metrics}")
    ck = load_checkpoint(run / "best.pt")
    config = ck["config"]
    a.out.mkdir(parents=True, exist_ok=True)
    dest = a.out / synthetic.DETECTOR_FILE
    sha256 = synthetic.save(
        dest,
        ck["model"],
        {k: config[k] for k in ("model", "input_size", "score_threshold")},
        f"bench/train_shipped_recognizer.py's catalog (celebcat synth --ids 4000 --images "
        f"100000 --seed 1001 --style easy), snapshot {SNAPSHOT}; run {run.name}, epoch "
        f"{ck['epoch']} of {a.epochs}, mosaic {MOSAIC}; bench/train_shipped_detector.py",
    )
    print(dest, dest.stat().st_size, sha256)


if __name__ == "__main__":
    main()
