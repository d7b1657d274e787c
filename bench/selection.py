"""Selection at scale: our views vs the reference pandas code, at 1x and 10x CelebA.

Run:  python bench/selection.py [--scales 1,10]

For each scale the six official txt files are written once (cached under
bench/_work/; 10x = 2,025,990 rows, 101,770 identities). Then four measurements,
each in its own process, each reporting wall time and peak memory (max RSS):

  load    ours: catalog.ingest.ingest (six files -> on-disk catalog)
          pandas: read_csv(sep=r"\\s+") of the same six files + merges (bench/ingest.py)
  select  ours: open the ingested catalog, SELECT count(*) FROM selection
          pandas: the reference code (merge, filter, value_counts, seeded choice,
          groupby sample) on the loaded frames; its time excludes the loading, its
          memory is the process peak (the frames must be in memory to select)

Targets (issue 3) at 10x: our selection under 2 s and under 1 GB peak; our ingest at
most half of pandas' peak memory for the same files.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = ROOT / "bench" / "_work"
CELEBA_IDS = 10_177


def peak_mb() -> float:
    """Peak resident memory of this process in MiB.

    VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent
    across fork + exec, so a child of a big parent would report the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, folder: str, db: str) -> dict[str, float]:
    """One measurement; runs in a fresh interpreter."""
    if kind == "ours-load":
        from catalog.ingest import ingest

        t0 = time.perf_counter()
        ingest(folder, db, scan_images=False)
        return {"seconds": time.perf_counter() - t0, "peak_mb": peak_mb()}
    if kind == "ours-select":
        from catalog.db import connect

        t0 = time.perf_counter()
        con = connect(db, read_only=True)
        n = con.execute("SELECT count(*) FROM selection").fetchone()[0]
        con.close()
        return {"seconds": time.perf_counter() - t0, "peak_mb": peak_mb(), "rows": n}
    import numpy as np
    import pandas as pd

    t0 = time.perf_counter()
    d = Path(folder)
    if kind == "pandas-load":  # the same six files our ingest reads, merged as the reference did
        sys.path.insert(0, str(ROOT / "bench"))
        from ingest import pandas_way

        pandas_way(d)
        return {"seconds": time.perf_counter() - t0, "peak_mb": peak_mb()}
    attrs = pd.read_csv(d / "list_attr_celeba.txt", sep=r"\s+", skiprows=1)
    attrs = attrs.rename_axis("image_id").reset_index()
    bbox = pd.read_csv(d / "list_bbox_celeba.txt", sep=r"\s+", skiprows=1)
    ident = pd.read_csv(
        d / "identity_CelebA.txt", sep=r"\s+", header=None, names=["image_id", "identity"]
    )
    df = attrs.merge(bbox, on="image_id").merge(ident, on="image_id")
    loaded = time.perf_counter()
    # The reference workflow's step 1, as it was written.
    df = df[df["Blurry"] != 1]
    df = df[(df["width"] >= 100) & (df["height"] >= 100)]
    counts = df["identity"].value_counts()
    eligible = counts[counts >= 25].index.to_numpy()
    rng = np.random.default_rng(21)
    chosen = rng.choice(eligible, size=min(1000, len(eligible)), replace=False)
    selected = df[df["identity"].isin(chosen)].groupby("identity").sample(25, random_state=21)
    return {"seconds": time.perf_counter() - loaded, "peak_mb": peak_mb(), "rows": len(selected)}


def measure(kind: str, folder: Path, db: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(folder), str(db)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def annotations(scale: int) -> Path:
    from catalog.synth import synthesize

    folder = WORK / f"annotations_{scale}x"
    if not (folder / "list_eval_partition.txt").exists():
        print(f"writing {scale}x annotation files (once) ...", flush=True)
        synthesize(folder, ids=CELEBA_IDS * scale, seed=0, annotations_only=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,10")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "FOLDER", "DB"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    for scale in [int(s) for s in args.scales.split(",")]:
        folder = annotations(scale)
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "bench.duckdb"
            r = {
                k: measure(k, folder, db)
                for k in ("ours-load", "pandas-load", "ours-select", "pandas-select")
            }
        rows = r["ours-select"].get("rows")
        print(
            f"\n{scale}x CelebA ({scale * 202_599:,} rows), selection rows: ours {rows}, "
            f"pandas {r['pandas-select'].get('rows')}"
        )
        print(f"  {'':8} {'ours s':>8} {'pandas s':>9} {'ours MB':>8} {'pandas MB':>10}")
        for step in ("load", "select"):
            o, p = r[f"ours-{step}"], r[f"pandas-{step}"]
            print(
                f"  {step:8} {o['seconds']:8.2f} {p['seconds']:9.2f} "
                f"{o['peak_mb']:8.0f} {p['peak_mb']:10.0f}"
            )
        o, p = r["ours-load"], r["pandas-load"]
        print(f"  ingest memory ours/pandas = {o['peak_mb'] / p['peak_mb']:.2f} (target <= 0.5)")
        s = r["ours-select"]
        print(
            f"  selection: {s['seconds']:.2f} s (target < 2 s at 10x), "
            f"{s['peak_mb']:.0f} MB (target < 1024 MB)"
        )


if __name__ == "__main__":
    main()
