"""Scale, measured: a 10x CelebA catalog through ingest, views, snapshot and Parquet export.

Run:  python bench/scale.py [--scale 10] [--keep]

The annotation files are synthetic (catalog.synth, annotations only; 10x = 2,025,990
images of 101,770 identities), written once under bench/_work/ (shared with
bench/selection.py). Each step runs in a fresh interpreter and reports its wall
time and peak resident memory (VmHWM):

  ingest      the six annotation files -> a new catalog (no image scan)
  selection   SELECT count(*) FROM selection on the ingested catalog (the reference's
              parameters: 1,000 identities x 25 images), as bench/selection.py times it
  views       select() of the same parameters: set, views applied and checked, the
              selection summarised (counts of every view, the split's sizes)
  snapshot    snapshot create of that selection
  export      celebcat snapshot export of it to Parquet (catalog.parquet)
  views-big   select() of a large selection: every identity with >= 15 clean images,
              15 each, blurry and small faces kept (about half the catalog)
  snap-big    snapshot create of it
  export-big  its Parquet export
  read-big    DuckDB reading the exported file back (count, distinct identities, the
              hash in its metadata), as an engine elsewhere would

Target (issue 13): the selection under 1 GB peak at 10x, as bench/selection.py
measures it; every other step's peak is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from selection import annotations, peak_mb  # noqa: E402

#: The large selection: k clean images of every identity that has k.
BIG_K = 15
STEPS = (
    "ingest",
    "selection",
    "views",
    "snapshot",
    "export",
    "views-big",
    "snap-big",
    "export-big",
    "read-big",
)


def child(step: str, folder: str, db: str, out: str) -> dict[str, float]:
    """One step; runs in a fresh interpreter."""
    t0 = time.perf_counter()
    info: dict[str, float] = {}
    if step == "ingest":
        from catalog.ingest import ingest

        ingest(folder, db, scan_images=False)
        from catalog.db import connect

        con = connect(db, read_only=True)
        info["rows"] = con.execute("SELECT count(*) FROM identities").fetchone()[0]
        con.close()
    elif step == "selection":
        from catalog.db import connect

        con = connect(db, read_only=True)
        info["rows"] = con.execute("SELECT count(*) FROM selection").fetchone()[0]
        con.close()
    elif step in ("views", "views-big"):
        from catalog.selection import fitted_params, select
        from catalog.views import PARAMS

        if step == "views":
            params = {p.name: p.default for p in PARAMS}
        else:
            params = {
                **fitted_params(db, images_per_id=BIG_K, holdout_share=0.02),
                "drop_blurry": 0,
                "min_box_w": 0,
                "min_box_h": 0,
            }
            # fitted_params counted clean images under the stored filters: count again
            # without them
            params.update(_eligible_without_filters(db, params))
        summary = select(db, quotas={}, **params)
        info["rows"] = summary.selected_images
    elif step in ("snapshot", "snap-big"):
        from catalog.snapshots import create

        info["rows"] = create("ref" if step == "snapshot" else "big", db).n_images
    elif step in ("export", "export-big"):
        from catalog.parquet import export_parquet

        result = export_parquet("ref" if step == "export" else "big", out, db)
        info["rows"], info["mb"] = result.rows, result.bytes / 2**20
    elif step == "read-big":
        import duckdb

        con = duckdb.connect()
        rows, ids = con.execute(
            "SELECT count(*), count(DISTINCT identity) FROM read_parquet(?)", [out]
        ).fetchone()
        meta = dict(
            con.execute(
                "SELECT key::VARCHAR, value::VARCHAR FROM parquet_kv_metadata(?)", [out]
            ).fetchall()
        )
        con.close()
        info["rows"], info["identities"] = rows, ids
        info["hash_in_metadata"] = float(len(meta.get("snapshot_hash", "")) == 64)
    return {"seconds": time.perf_counter() - t0, "peak_mb": peak_mb(), **info}


def _eligible_without_filters(db: str, params: dict) -> dict[str, int]:
    """n_ids (and a held-out share) for BIG_K images an identity, nothing filtered."""
    from catalog.db import connect

    con = connect(db, read_only=True)
    try:
        n = con.execute(  # clean_images with no blur or size filter (sql/clean_images.sql)
            "SELECT count(*) FROM (SELECT i.identity FROM attributes AS a "
            "JOIN identities AS i USING (image_id) JOIN bboxes AS b USING (image_id) "
            "GROUP BY i.identity HAVING count(*) >= ?)",
            [BIG_K],
        ).fetchone()[0]
    finally:
        con.close()
    holdout = int(n * 0.02) // 2 * 2
    return {
        "n_ids": n,
        "holdout_ids": holdout,
        "query_ids": holdout // 2,
        "distractor_ids": holdout // 2,
    }


def measure(step: str, folder: Path, db: Path, out: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", step, str(folder), str(db), str(out)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"step {step} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the catalog and files")
    parser.add_argument("--child", nargs=4, metavar=("STEP", "FOLDER", "DB", "OUT"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    folder = annotations(args.scale)
    tmp = tempfile.mkdtemp(prefix="scale-", dir=ROOT / "bench" / "_work")
    db = Path(tmp) / "scale.duckdb"
    print(f"{args.scale}x CelebA annotations in {folder}; catalog {db}", flush=True)
    print(f"  {'step':11} {'seconds':>8} {'peak MB':>8} {'rows':>10}  notes", flush=True)
    for step in STEPS:
        out = Path(tmp) / ("big.parquet" if step.endswith("-big") else "ref.parquet")
        r = measure(step, folder, db, out)
        notes = []
        if "mb" in r:
            notes.append(f"{r['mb']:.1f} MiB file")
        if "identities" in r:
            notes.append(f"{r['identities']:,} identities")
        if "hash_in_metadata" in r:
            notes.append("hash in metadata" if r["hash_in_metadata"] else "NO HASH")
        if step == "selection":
            notes.append("target < 1024 MB: " + ("met" if r["peak_mb"] < 1024 else "MISSED"))
        print(
            f"  {step:11} {r['seconds']:8.2f} {r['peak_mb']:8.0f} {int(r.get('rows', 0)):>10,}"
            f"  {', '.join(notes)}",
            flush=True,
        )
    print(f"  catalog file {db.stat().st_size / 2**20:.0f} MiB")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
