"""Export benchmark: ``export_snapshot`` vs the reference workflow's search-and-copy.

Run:  python bench/export.py [--images 20000] [--select 3000] [--baseline-files 100]

The reference workflow copied its 25,000 selected images in 78 minutes: for each
selected file name it searched the whole image tree, then copied what it found
(docs/reference-workflow.md, step 1). Setup, cached under bench/_work/export_<images>/ (gitignored):

1. a synthetic CelebA of ``--images`` in-the-wild JPEGs (``catalog.synth``), moved
   into nested folders of 1,000 (``img_celeba/000/000001.jpg``), as some downloads are;
2. a catalog of it (``catalog.ingest``) and a snapshot of exactly ``--select`` images
   (n_ids x images_per_id, all in train/val/test).

Contenders, all on the same selected files, page cache warmed first (every selected
file read once), each writing into a fresh folder; ``--repeat`` rounds (default 3)
interleave them and the best time of each is kept:

  baseline     for each file: glob(root + '/**/' + name, recursive=True), then
               shutil.copy. Run on ``--baseline-files`` of the files (spread over the
               selection) and extrapolated linearly to all of them, unless
               ``--baseline-files`` is 0 or at least ``--select``.
  ours copy    export_snapshot(name, out)                        (threads)
  ours crop    export_snapshot(name, out, crop=True, size=SIZE)  (threads)
  crop, procs  the same crop function (catalog.export._crop_one) in a process pool,
               chunks of 16: what export_snapshot would do with processes instead of
               threads (it uses threads; this row is the evidence)

Target (issue): ours copy at least 50x faster than the baseline. Timings on a shared
2-core machine are noisy; run twice before trusting a ratio.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = ROOT / "bench" / "_work"
#: Files per nested image folder (img_celeba/000/, img_celeba/001/, ...).
PER_FOLDER = 1000


def log(message: str) -> None:
    print(message, flush=True)


def dataset(n_images: int, work: Path) -> Path:
    """The synthetic data folder, built once: annotations + nested in-the-wild JPEGs."""
    from catalog.synth import synthesize

    data = work / "data"
    done = work / "data.complete"  # written last: a half-built cache is rebuilt
    if done.exists():
        return data
    shutil.rmtree(data, ignore_errors=True)
    ids = max(1, round(n_images / 19.9))  # CelebA's mean images per identity
    log(f"synthesising {n_images} images of {ids} identities into {data} (once) ...")
    t0 = time.perf_counter()

    def report(written: int, total: int) -> None:
        if written % 2000 == 0 or written == total:
            log(f"  {written}/{total} images, {time.perf_counter() - t0:.0f} s")

    synthesize(data, ids=ids, seed=0, images=n_images, progress=report)
    images = data / "img_celeba"
    for entry in sorted(os.scandir(images), key=lambda e: e.name):
        if entry.is_file():
            folder = images / f"{int(Path(entry.name).stem) // PER_FOLDER:03d}"
            folder.mkdir(exist_ok=True)
            os.replace(entry.path, folder / entry.name)
    done.write_text("ok\n")
    return data


def catalog(data: Path, work: Path, n_select: int) -> tuple[Path, str]:
    """The ingested catalog and the name of a snapshot of exactly ``n_select`` images."""
    from catalog.ingest import ingest
    from catalog.selection import InfeasibleSelection, select
    from catalog.snapshots import SnapshotError, create, show

    db = work / "catalog.duckdb"
    done = work / "catalog.complete"
    if not done.exists():
        log(f"ingesting {data} into {db} (once) ...")
        db.unlink(missing_ok=True)
        ingest(data, db)
        done.write_text("ok\n")
    name = f"bench{n_select}"
    try:
        snap, _ = show(name, db)
        if snap.n_images == n_select:
            return db, name
    except SnapshotError:
        pass
    # n_ids x images_per_id == n_select exactly; fewer images per identity when too few
    # identities have that many clean ones.
    for per_id in (20, 15, 12, 10, 8, 6, 5, 4, 3, 2, 1):
        if n_select % per_id:
            continue
        try:
            select(
                db,
                n_ids=n_select // per_id,
                images_per_id=per_id,
                min_images_per_id=per_id,
                min_box_w=0,
                min_box_h=0,
                holdout_ids=0,
                query_ids=0,
                distractor_ids=0,
                query_images=0,
                distractor_images=0,
                train_per_id=per_id - 2 * (per_id // 5),
                val_per_id=per_id // 5,
                test_per_id=per_id // 5,
            )
        except InfeasibleSelection:
            continue
        break
    else:
        raise SystemExit(f"no selection of exactly {n_select} images fits; try --select 3000")
    from catalog.snapshots import drop

    try:
        drop(name, db)
    except SnapshotError:
        pass
    create(name, db)
    return db, name


def selected(db: Path, name: str) -> tuple[Path, list[tuple[str, str, str]]]:
    """The image root and (image_id, split, relative path) of every snapshot image."""
    from catalog.db import connect

    con = connect(db, read_only=True)
    try:
        root = con.execute("SELECT value FROM catalog_info WHERE key = 'image_root'").fetchone()
        rows = con.execute(
            "SELECT s.image_id, coalesce(s.split, 'unused'), i.path FROM snapshot_images s "
            "JOIN images i USING (image_id) WHERE s.snapshot = ? ORDER BY s.image_id",
            [name],
        ).fetchall()
    finally:
        con.close()
    return Path(root[0]), rows


def baseline(root: Path, files: list[tuple[str, str, str]], out: Path) -> None:
    """The reference workflow: search the whole tree for each name, copy what was found."""
    for image_id, split, _path in files:
        found = glob.glob(str(root) + "/**/" + image_id, recursive=True)
        if not found:
            raise FileNotFoundError(image_id)
        (out / split).mkdir(parents=True, exist_ok=True)
        shutil.copy(found[0], out / split / image_id)


def crop_in_processes(db: Path, name: str, out: Path, size: int, workers: int | None) -> None:
    """export_snapshot's crop work in a process pool (no labels.csv, no resume check)."""
    from concurrent.futures import ProcessPoolExecutor

    from catalog import export
    from catalog.db import connect

    con = connect(db, read_only=True)
    try:
        _hash, image_root, rows = export._read_snapshot(con, name)
    finally:
        con.close()
    tasks, _sizes = export._plan(rows, image_root, out, crop=True)
    for folder in {os.path.dirname(t.dst) for t in tasks}:
        os.makedirs(folder, exist_ok=True)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(export._crop_one, tasks, [size] * len(tasks), chunksize=16))


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=20000, help="synthetic dataset size")
    parser.add_argument("--select", type=int, default=3000, help="images in the snapshot")
    parser.add_argument(
        "--baseline-files",
        type=int,
        default=100,
        help="files the baseline copies (extrapolated to --select); 0: all of them",
    )
    parser.add_argument("--size", type=int, default=256, help="crop output side in pixels")
    parser.add_argument("--workers", type=int, default=None, help="export workers")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best is kept")
    args = parser.parse_args(argv)
    if args.select > args.images:
        parser.error("--select must not exceed --images")

    from catalog.export import export_snapshot

    work = WORK / f"export_{args.images}"
    work.mkdir(parents=True, exist_ok=True)
    data = dataset(args.images, work)
    db, name = catalog(data, work, args.select)
    root, rows = selected(db, name)
    n = len(rows)
    tree = sum(len(files) for _, _, files in os.walk(root))
    log(f"\nimage tree: {tree} files under {root}; snapshot {name!r}: {n} images")
    log(f"cpus: {os.cpu_count()} (shared machine: figures are noisy)\n")

    for _, _, path in rows:  # warm the page cache for every contender alike
        (root / path).read_bytes()

    n_base = n if args.baseline_files <= 0 else min(args.baseline_files, n)
    subset = rows[:: max(1, n // n_base)][:n_base]  # spread over the selection
    extrapolated = len(subset) < n
    w, size = args.workers, args.size
    contenders: dict[str, Callable[[Path], object]] = {
        "baseline": lambda out: baseline(root, subset, out),
        "copy": lambda out: export_snapshot(name, out, db, workers=w),
        "crop": lambda out: export_snapshot(name, out, db, crop=True, size=size, workers=w),
        "crop_proc": lambda out: crop_in_processes(db, name, out, size, w),
    }
    # Rounds interleave the contenders, so a burst of load from elsewhere hits all of
    # them alike; the best of the rounds is kept. Output folders are emptied untimed.
    best = {key: float("inf") for key in contenders}
    for _ in range(args.repeat):
        for key, fn in contenders.items():
            out = fresh(work / f"out_{key}")
            best[key] = min(best[key], timed(lambda fn=fn, out=out: fn(out)))
    t_base = best["baseline"] * n / len(subset)
    base_note = (
        f"measured on {len(subset)} files ({best['baseline']:.2f} s), x{n / len(subset):.0f}"
        if extrapolated
        else "measured on all files"
    )
    results: list[tuple[str, float, str]] = [
        ("baseline: glob per file + copy", t_base, base_note),
        ("ours: export (copy)", best["copy"], "threads"),
        (f"ours: export --crop --size {size}", best["crop"], "threads"),
        (f"crop {size} in a process pool", best["crop_proc"], "processes (not shipped)"),
    ]
    log(f"best of {args.repeat} interleaved rounds")
    log(f"{'contender':<34} {'seconds':>9} {'images/s':>10} {'vs baseline':>12}  note")
    for label, seconds, note in results:
        log(f"{label:<34} {seconds:>9.2f} {n / seconds:>10.0f} {t_base / seconds:>11.1f}x  {note}")
    copy_ratio = t_base / results[1][1]
    verdict = "meets" if copy_ratio >= 50 else "MISSES"
    log(f"\nours copy is {copy_ratio:.0f}x faster than the baseline ({verdict} the 50x target)")
    if extrapolated:
        log(
            "(baseline time extrapolated linearly from the subset; the per-file search cost "
            "does not depend on which files are searched for)"
        )
    ref = 78 * 60 / 25000
    log(
        f"reference workflow: {ref * 1000:.0f} ms per file on the 202,599-file tree; "
        f"baseline here: {t_base / n * 1000:.1f} ms per file on {tree} files"
    )


if __name__ == "__main__":
    main()
