"""Ingest benchmark: our catalog ingest vs the pandas way (and torchvision if installed).

Run:  python bench/ingest.py [--scan-files 202599] [--repeat 3]

1. Annotations: the six official txt files at full CelebA size (202,599 rows, made
   by the synthetic generator, cached under bench/_work/). Contenders, each timed
   best-of-N on the same files:
     ours, new    catalog.ingest.ingest(..., scan_images=False) into a new on-disk catalog
                  (a first ingest: built in a temporary file, renamed into place)
     ours, again  the same into an existing catalog (a re-ingest: staged in memory, then
                  swapped in by one transaction)
     pandas       read_csv(sep=r"\\s+") for each file, then merges on image_id, as the
                  reference workflow did (in memory only, nothing persisted)
     torchvision  datasets.CelebA(split="all", target_type=all four) when installed
   The contenders take turns, round after round, each keeping its best time, so that
   load from other processes on the machine falls on all alike.
   Targets: ours under 1 s on 2 cores, at most 1.5x pandas (issue 2), at or below
   pandas' time (issue 20), at least 10x faster than torchvision. Last measured
   (--repeat 5 --skip-scan, 2 cores, idle): first ingest 0.81x pandas, re-ingest
   1.10x (1.15-1.17x and 1.51-1.55x before numpy read the files itself and the
   BOOLEAN columns were stored roaring; 0.72-0.75x and 0.89-0.95x with the image ids
   also stored ZSTD, left out: a 10 % larger file, slower lookups); under another
   job's load, where pandas keeps a whole core, 1.01-1.17x (1.76-1.98x) and
   1.25-1.29x (2.11-2.16x) with ZSTD ids; docs/decisions.md, "Ingest".
2. Image scan: N small JPEGs (default 202,599, cached); our header-only parallel scan
   with 1 and 2 workers vs opening each file with PIL in one loop.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.timing import best_of  # noqa: E402

WORK = ROOT / "bench" / "_work"


def full_size_annotations() -> Path:
    from catalog.synth import synthesize

    out = WORK / "full"
    if not (out / "list_eval_partition.txt").exists():
        print("writing full-size annotation files (once) ...", flush=True)
        synthesize(out, ids=10177, seed=0, annotations_only=True)
    return out


def pandas_way(folder: Path) -> object:
    """The reference workflow's loading: read each file with pandas, merge on image_id."""
    import pandas as pd

    def txt(name: str, **kw: object):
        return pd.read_csv(folder / name, sep=r"\s+", **kw)

    attrs = txt("list_attr_celeba.txt", skiprows=1).rename_axis("image_id").reset_index()
    bbox = txt("list_bbox_celeba.txt", skiprows=1)
    marks = txt("list_landmarks_celeba.txt", skiprows=1).rename_axis("image_id").reset_index()
    aligned = txt("list_landmarks_align_celeba.txt", skiprows=1)
    aligned = aligned.rename_axis("image_id").reset_index()
    ident = txt("identity_CelebA.txt", header=None, names=["image_id", "identity"])
    part = txt("list_eval_partition.txt", header=None, names=["image_id", "partition"])
    merged = attrs.merge(bbox, on="image_id").merge(marks, on="image_id")
    merged = merged.merge(ident, on="image_id").merge(part, on="image_id")
    return merged, aligned


def ours(folder: Path) -> object:
    """A first ingest: the catalog does not exist yet."""
    from catalog.ingest import ingest

    with tempfile.TemporaryDirectory() as tmp:
        return ingest(folder, Path(tmp) / "bench.duckdb", scan_images=False)


def ours_again(folder: Path, db: Path) -> object:
    """A re-ingest: ``db`` holds a catalog of the same files already."""
    from catalog.ingest import ingest

    return ingest(folder, db, scan_images=False)


def in_turns(contenders: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best time of each contender over ``repeat`` rounds, one call of each per round."""
    best: dict[str, float] = {}
    for _ in range(repeat):
        for name, fn in contenders.items():
            best[name] = min(best.get(name, float("inf")), best_of(fn, 1))
    return best


def torchvision_way(folder: Path) -> Callable[[], object] | None:
    try:
        from torchvision.datasets import CelebA
    except Exception:  # noqa: BLE001 - not installed, or its build does not load here
        return None
    # torchvision wants root/celeba/<files> and img_align_celeba/; link them there.
    root = WORK / "tv"
    (root / "celeba" / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    for f in folder.glob("*.txt"):
        link = root / "celeba" / f.name
        if not link.exists():
            link.symlink_to(f)
    CelebA._check_integrity = lambda self: True  # synthetic files have other checksums
    return lambda: CelebA(
        str(root), split="all", target_type=["attr", "identity", "bbox", "landmarks"]
    )


def scan_files(n: int) -> Path:
    from PIL import Image

    folder = WORK / f"scan_{n}" / "img_celeba"
    if folder.exists() and len(os.listdir(folder)) == n:
        return folder
    print(f"writing {n} small JPEGs for the scan benchmark (once) ...", flush=True)
    shutil.rmtree(folder.parent, ignore_errors=True)
    folder.mkdir(parents=True)
    templates = []
    for k, size in enumerate([(409, 500), (500, 375), (320, 480), (500, 500)]):
        path = WORK / f"template_{k}.jpg"
        Image.new("RGB", size, (40 * k, 90, 160)).save(path, quality=85)
        templates.append(path.read_bytes())
    for i in range(n):
        (folder / f"{i + 1:06d}.jpg").write_bytes(templates[i % len(templates)])
    return folder


def pil_loop(folder: Path) -> int:
    from PIL import Image

    count = 0
    for entry in os.scandir(folder):
        with Image.open(entry.path) as im:
            count += im.size[0] > 0
    return count


def row(name: str, seconds: float | None, base: float | None, unit: str = "") -> str:
    if seconds is None:
        return f"  {name:<28} {'skipped':>10}"
    ratio = f"{base / seconds:8.1f}x" if base else ""
    return f"  {name:<28} {seconds:9.3f} s {ratio} {unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scan-files", type=int, default=202_599)
    parser.add_argument("--skip-scan", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)

    folder = full_size_annotations()
    print(f"\nAnnotations: six official txt files, 202,599 rows, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        existing = Path(tmp) / "existing.duckdb"
        ours(folder)  # warm-up: imports, the files in the page cache
        ours_again(folder, existing)  # the catalog each re-ingest replaces
        best = in_turns(
            {
                "pandas": lambda: pandas_way(folder),
                "new": lambda: ours(folder),
                "again": lambda: ours_again(folder, existing),
            },
            args.repeat,
        )
    t_pandas, t_ours, t_again = best["pandas"], best["new"], best["again"]
    tv = torchvision_way(folder)
    t_tv = best_of(tv, 1) if tv else None
    print(row("pandas read + merge (memory)", t_pandas, None))
    print(row("torchvision CelebA", t_tv, None))
    print(row("ours, new catalog (on disk)", t_ours, None))
    print(row("ours, re-ingest (existing)", t_again, None))
    print(f"  ours new / pandas   = {t_ours / t_pandas:.2f} (target <= 1; issue 2: <= 1.5)")
    print(f"  ours again / pandas = {t_again / t_pandas:.2f}")
    if t_tv:
        print(f"  torchvision / ours = {t_tv / t_ours:.1f}x (target >= 10)")
    else:
        print("  torchvision not installed here: its reference figure is about 11 s")
    print(f"  ours under 1 s: {'yes' if t_ours < 1 else 'NO'} ({t_ours:.3f} s)")

    if args.skip_scan:
        return
    from catalog.images import scan_images

    images = scan_files(args.scan_files)
    n = args.scan_files
    print(f"\nImage scan: {n} JPEG files, headers only")
    t_pil = best_of(lambda: pil_loop(images), 1)
    t_one = best_of(lambda: scan_images(images, workers=1), 1)
    t_two = best_of(lambda: scan_images(images, workers=2), 1)
    print(row("PIL.Image.open loop", t_pil, None, f"{n / t_pil:10,.0f} files/s"))
    print(row("ours, 1 worker", t_one, t_pil, f"{n / t_one:10,.0f} files/s"))
    print(row("ours, 2 workers", t_two, t_pil, f"{n / t_two:10,.0f} files/s"))


if __name__ == "__main__":
    main()
