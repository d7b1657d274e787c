"""What tests/test_distributed.py runs under torchrun, in one launch (start-up is most of
its time), as the commands ``-m cli`` runs: ``celebcat train landmarks``, two
``celebcat train recognizer`` runs (ArcFace: a loss with weights; triplet: PK batches
dealt out to the ranks), ``celebcat embed`` and ``celebcat eval recognizer`` of the
ArcFace run; then ``align`` with the landmark run (the library call: the command takes
64 px and more).

    torchrun --standalone --nproc_per_node=2 tests/distributed_worker.py DB OUT

Each rank writes ``OUT/rank<r>.json`` with what its calls returned; checkpoints go to
``OUT/ck``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cli  # noqa: E402
from catalog import results  # noqa: E402
from models.alignment import snapshot as align_run  # noqa: E402

#: hourglass_small (128 px crops): 2 epochs of 2 batches of 4 a process.
LANDMARKS = [
    "train",
    "landmarks",
    "--snapshot",
    "s",
    "--epochs",
    "2",
    "--batch-size",
    "4",
    "--max-batches",
    "2",
]
#: face_cpu at 32 px: a second or two an epoch on a CPU.
RECOGNIZER = [
    "train",
    "recognizer",
    "--snapshot",
    "s",
    "--source",
    "bbox",
    "--size",
    "32",
    "--embedding-dim",
    "16",
    "--batch-size",
    "8",
    "--epochs",
    "2",
    "--lr",
    "3e-3",
]


def main(db: str, out: str) -> None:
    torch.set_num_threads(1)
    done: dict[str, object] = {"rank": int(os.environ["RANK"])}
    cli.app([*LANDMARKS, "--out", f"{out}/ck", "--db", db], standalone_mode=False)
    done["landmarks"] = results.list_runs(db, kind="landmarks")[-1].run_id
    for loss in ("arcface", "triplet"):
        cli.app(
            [*RECOGNIZER, "--loss", loss, "--out", f"{out}/ck", "--db", db], standalone_mode=False
        )
        done[loss] = results.list_runs(db, kind="recognition")[-1].run_id
    cli.app(
        ["embed", "--run", f"{out}/ck/{done['arcface']}", "--batch-size", "8", "--db", db],
        standalone_mode=False,
    )
    cli.app(
        [
            "eval",
            "recognizer",
            "--run",
            f"{out}/ck/{done['arcface']}",
            "--batch-size",
            "8",
            "--db",
            db,
        ],
        standalone_mode=False,
    )
    aligned = align_run.align_snapshot(
        f"{out}/ck/{done['landmarks']}", "s", db, size=32, batch_size=8, workers=1
    )
    done["aligned"] = [aligned.n_images, aligned.n_predictions, aligned.cache.source]
    Path(out, f"rank{done['rank']}.json").write_text(json.dumps(done))


if __name__ == "__main__":
    main(*sys.argv[1:])
