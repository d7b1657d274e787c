"""Train the recognizer celebcat ships (models/pretrained/weights/), reproducibly, on CPU.

The demo identifies its group photo with it (models/pipeline/demo.py): a recognizer
trained in the demo's own seconds on a few dozen people names too few of the photo's
faces at a rate of strangers named that the gallery can promise (docs/recognition.md).

Recipe: a synthetic population that no demo draws (``celebcat synth`` seed 1001; the
demo draws seeds 0, 1, 2, ...), the demo's "easy" style, 4,000 identities, 100,000
images; ``select --fit --images-per-id 15 --min-box 64 64 --split 13/1/1`` (2,755
eligible: a 64 px crop needs no 100 px box, and 13 training images a person teach
more than 7), 100 held out for the open-set figures, 2,655 trained; crops aligned
with the catalog's true landmarks (arcface template, 64 px, the demo's Plan.size and
template); ArcFace on the face_cpu backbone, 128-d embeddings (Plan.embedding_dim),
seed 0, 30 epochs; ``celebcat eval recognizer``; then the backbone's weights alone,
in half precision, written to OUT/recognizer-synthetic-easy.pt with their provenance
(:func:`models.pretrained.synthetic.save`). Its SHA-256 printed last goes into
models/pretrained/synthetic.py. (With one validation image a person, the per-epoch
"val AUC" has no same-person pair to measure and prints nan; val top-1 chooses.)

Usage: python bench/train_shipped_recognizer.py WORKDIR [--epochs 30] [--max-minutes 60]
Measured (2 cores, mostly idle): synth, ingest and align 6 minutes, training 40 s an
epoch, 41 minutes in all (docs/pretrained.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

SEED_SYNTH = 1001  # no demo seed: the demo's populations are seeds 0, 1, 2, ...
IDS, IMAGES, STYLE = 4000, 100000, "easy"
IMAGES_PER_ID, HOLDOUT, SPLIT, MIN_BOX = 15, 100, "13/1/1", 64
SIZE, TEMPLATE, DIM = 64, "arcface", 128
SNAPSHOT = "shipped"


def celebcat(*args: str, db: Path) -> None:
    env = dict(os.environ, CELEBCAT_DB=str(db))
    print("+ celebcat", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "cli", *args], check=True, env=env)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--max-minutes", type=float, default=60.0)
    ap.add_argument("--out", type=Path, default=Path("models/pretrained/weights"))
    ap.add_argument("--ids", type=int, default=IDS, help="identities synthesised")
    ap.add_argument("--images", type=int, default=IMAGES, help="images synthesised")
    ap.add_argument("--images-per-id", type=int, default=IMAGES_PER_ID)
    ap.add_argument("--holdout", type=int, default=HOLDOUT)
    ap.add_argument("--split", default=SPLIT, help="train/val/test images per identity")
    ap.add_argument("--min-box", type=int, default=MIN_BOX, help="smallest face box side kept")
    a = ap.parse_args()
    work, db = a.workdir, a.workdir / "celeba.duckdb"
    work.mkdir(parents=True, exist_ok=True)
    data = str(work / "data")
    celebcat(
        "synth",
        data,
        *f"--ids {a.ids} --images {a.images} --seed {SEED_SYNTH}".split(),
        "--style",
        STYLE,
        db=db,
    )
    celebcat("ingest", data, db=db)
    select = f"--fit --images-per-id {a.images_per_id} --holdout-ids {a.holdout}"
    select += f" --split {a.split}" if a.split else ""
    select += f" --min-box {a.min_box} {a.min_box}" if a.min_box else ""
    celebcat("select", *select.split(), db=db)
    celebcat("snapshot", "create", SNAPSHOT, db=db)
    celebcat(
        "align",
        "--snapshot",
        SNAPSHOT,
        *f"--source truth --size {SIZE} --template {TEMPLATE}".split(),
        db=db,
    )
    ckpts = work / "checkpoints"
    celebcat(
        "train",
        "recognizer",
        "--snapshot",
        SNAPSHOT,
        *f"--loss arcface --backbone face_cpu --source aligned/{TEMPLATE}/truth --size {SIZE} "
        f"--embedding-dim {DIM} --epochs {a.epochs} --max-minutes {a.max_minutes} --seed 0 "
        "--device cpu".split(),
        "--out",
        str(ckpts),
        db=db,
    )
    run = sorted(ckpts.glob("recognition-*"))[-1]
    celebcat("eval", "recognizer", "--run", run.name, db=db)

    import torch

    from models.pretrained import synthetic

    ck = torch.load(run / "best.pt", map_location="cpu", weights_only=False)
    config = ck["config"]
    a.out.mkdir(parents=True, exist_ok=True)
    dest = a.out / synthetic.FILE
    sha256 = synthetic.save(
        dest,
        ck["model"],
        {k: config[k] for k in ("backbone", "size", "embedding_dim", "dropout")},
        f"celebcat synth --ids {a.ids} --images {a.images} --seed {SEED_SYNTH} --style {STYLE}; "
        f"select {select}; run "
        f"{run.name}, epoch {ck['epoch']} of {a.epochs} (best val top-1); "
        "bench/train_shipped_recognizer.py",
    )
    print(dest, dest.stat().st_size, sha256)


if __name__ == "__main__":
    main()
