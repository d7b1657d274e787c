"""How fast the face pipeline is on the CPU: one photo, 1,000 photos, a 10k gallery.

    python bench/pipeline.py [--threads 1] [--images 1000] [--detector-run CKPT] [--dlib]

1. **One photo**: scikit-image's astronaut (512 x 512, one face) as a JPEG, through
   ``FacePipeline.run`` again and again: the median time of each stage (decode,
   detect, landmarks, align, embed) and of the whole, for the full pipeline (Haar ->
   hourglass_small landmarks -> arcface alignment -> face_cpu 112 px, 512-d) beside
   a face-box recognizer (no landmarks, no alignment) and, with ``--detector-run``, the
   trained CenterNet in Haar's place, and with ``--dlib`` (the extra ``[dlib]``)
   dlib's pretrained path (``celebcat runs import dlib``: HOG detector -> 68-point
   predictor -> dlib template -> dlib's 128-d ResNet). The target is at most 100 ms
   end to end on one core.
2. **Batched**: ``--images`` photos (crops of the astronaut at random scales and
   places, flipped or not, 500 px JPEGs on disk, one face each) through one
   ``run`` (64 crops per forward pass): faces per second and where the time goes;
   with ``--dlib``, dlib's path too.
3. **Gallery search**: one face (and a batch of 64) against 10,000 identities of
   512-d centres (``models.pipeline.identify.GalleryIndex``: one matrix product), beside the
   maximum over 5 images per identity, and 100,000 identities to show the scaling.
   The target is under 10 ms at 10,000.

The models are the real architectures trained for one batch on a synthetic catalog
built here (speed does not depend on the weights; the landmarks of a barely trained
model may collapse, which takes the same path). Torch, OpenCV and BLAS run on
``--threads`` threads (default 1: "one CPU core").
"""

from __future__ import annotations

import os
import sys

THREADS = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 1
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(THREADS)  # before numpy loads its BLAS

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.pipeline.faces import STAGES, FacePipeline  # noqa: E402

TARGET_MS = 100.0
SEARCH_TARGET_MS = 10.0


def build_runs(root: Path) -> dict[str, str]:
    """A small synthetic catalog and one-batch runs of the real architectures."""
    from catalog.ingest import ingest
    from catalog.selection import fitted_params, select
    from catalog.snapshots import create
    from catalog.synth import synthesize
    from models.alignment.snapshot import align_snapshot
    from models.landmarks.train import LandmarkTrainConfig, train_landmarks
    from models.recognition.train import RecognizerTrainConfig, train_recognizer

    synthesize(root / "data", ids=12, seed=1, workers=2)
    db = root / "c.duckdb"
    ingest(root / "data", db, workers=2)
    select(db, **fitted_params(db, images_per_id=10))
    create("s", db)
    out = str(root / "ck")
    marks = train_landmarks(
        LandmarkTrainConfig(
            snapshot="s", epochs=1, max_batches_per_epoch=1, batch_size=4, out_dir=out
        ),
        db,
    )
    align_snapshot(marks.run_id, "s", db, size=112, template="arcface")
    runs = {"db": str(db), "landmarks": marks.run_id}
    for source in ("aligned", "bbox"):
        config = RecognizerTrainConfig(
            snapshot="s",
            source=source,
            epochs=1,
            batch_size=8,
            max_batches_per_epoch=1,
            out_dir=out,
        )
        runs[source] = train_recognizer(config, db).run_id
    return runs


def photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` 500 px JPEGs: the astronaut cropped at random scales and places around her
    face, some flipped."""
    from skimage import data

    image = data.astronaut()
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        side = int(rng.uniform(300, 512))
        x0 = int(rng.uniform(max(0, 270 - side), min(512 - side, 180) + 1))
        y0 = int(rng.uniform(max(0, 168 - side), min(512 - side, 50) + 1))
        crop = image[y0 : y0 + side, x0 : x0 + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        path = folder / f"{k:05d}.jpg"
        Image.fromarray(np.ascontiguousarray(crop)).resize((500, 500), Image.BILINEAR).save(
            path, quality=92
        )
        paths.append(path)
    return paths


def single_photo(pipe: FacePipeline, path: Path, repeats: int) -> dict[str, float]:
    """Median ms per stage (this thread's CPU time: the cost on one core, whatever else
    the machine runs) and the median total, CPU and wall, over ``repeats`` runs (after
    3 warm-ups)."""
    for _ in range(3):
        out = pipe.run([path])
    assert len(out.faces) >= 1, "no face found in the benchmark photo"
    outs = [pipe.run([path]) for _ in range(repeats)]
    med = {k: 1000 * statistics.median(o.cpu_timings[k] for o in outs) for k in (*STAGES, "total")}
    med["wall"] = 1000 * statistics.median(o.timings["total"] for o in outs)
    return med


def search_times(
    n_ids: int, dim: int, per_id: int, how: str, repeats: int = 50
) -> tuple[float, float, float]:
    """(build ms, one-query ms, 64-query ms) for a random gallery."""
    from catalog.gallery import Gallery, GalleryEntries
    from models.pipeline.identify import GalleryIndex

    rng = np.random.default_rng(0)
    names = np.repeat(np.array([f"id{i:07d}" for i in range(n_ids)]), per_id)
    vectors = rng.standard_normal((n_ids * per_id, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    entries = GalleryEntries(
        Gallery("bench", "r", None, "x", n_ids, len(names), None, None), names, names, vectors
    )
    start = time.thread_time()
    index = GalleryIndex(entries, how)
    build = 1000 * (time.thread_time() - start)
    out = []
    for q in (1, 64):
        queries = vectors[:q].copy()
        index.search(queries)
        runs = []
        for _ in range(repeats):  # CPU time of this thread: BLAS runs here on one thread
            t = time.thread_time()
            index.search(queries, top=5)
            runs.append(time.thread_time() - t)
        out.append(1000 * statistics.median(runs))
    return build, out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--detector-run",
        help="a trained detector run's checkpoint (or run id "
        "in the catalog built here) to time beside Haar",
    )
    parser.add_argument(
        "--dlib", action="store_true", help="time dlib's pretrained models too (extra [dlib])"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"building a synthetic catalog and one-batch runs in {root} ...", flush=True)
        runs = build_runs(root)
        photo = photos(root / "one", 1)[0]
        from skimage import data

        Image.fromarray(data.astronaut()).save(photo, quality=92)  # the photo itself, 512 px
        db = runs["db"]
        rows = []
        setups = [
            ("haar", "aligned", "haar + landmarks + arcface + face_cpu"),
            ("haar", "bbox", "haar + face box + face_cpu"),
        ]
        if args.dlib:
            from models.pretrained import import_source

            import_source(db, "dlib")
            runs["dlib"] = "recognition-dlib-resnet"
            setups.append(("run:detector-dlib-hog", "dlib", "dlib: HOG + 5 points + ResNet"))
        if args.detector_run:
            setups.append(
                (
                    f"run:{args.detector_run}?score=0&top=1",
                    "aligned",
                    "trained CenterNet + landmarks + arcface + face_cpu",
                )
            )
        pipes = {}
        for detector, source, label in setups:
            pipe = FacePipeline(detector, None, runs[source], db, batch_size=64)
            pipes[label] = pipe
            rows.append((label, single_photo(pipe, photo, args.repeats)))
        print(
            f"\n1. one 512 px photo, one face, {args.threads} thread(s): median ms of "
            f"{args.repeats} runs, CPU time per stage (load average {os.getloadavg()[0]:.1f}"
            f" on {os.cpu_count()} cores: wall time is longer where cores are shared)"
        )
        cols = (*STAGES, "total")
        print(
            f"{'pipeline':<52}"
            + "".join(f"{s:>10}" for s in cols)
            + f"{'wall':>10}  x target (CPU)"
        )
        for label, t in rows:
            print(
                f"{label:<52}"
                + "".join(f"{t[s]:>10.1f}" for s in cols)
                + f"{t['wall']:>10.1f}  {t['total'] / TARGET_MS:>7.2f}"
            )

        paths = photos(root / "many", args.images, seed=1)
        batched = [setups[0][2]] + ([setups[-1][2]] if args.dlib else [])
        for k, label in enumerate(batched):
            pipe = pipes[label]
            pipe.run(paths[:8])
            start = time.perf_counter()
            out = pipe.run(paths, chunk=64)
            wall = time.perf_counter() - start
            n = len(out.faces)
            found = sum(1 for k in range(len(paths)) if out.faces_of(k))
            print(
                f"\n2{'ab'[k]}. batched: {len(paths)} 500 px JPEGs, {label}, 64 crops per "
                f"pass, {args.threads} thread(s)"
            )
            cpu = out.cpu_timings["total"]
            print(
                f"   {n} faces in {found} images: {n / cpu:.1f} faces/s of one core's CPU "
                f"time ({1000 * cpu / len(paths):.1f} ms per image); wall {wall:.1f} s, "
                f"{n / wall:.1f} faces/s here"
            )
            print(
                "   per stage, CPU ms per image: "
                + ", ".join(f"{s} {1000 * out.cpu_timings[s] / len(paths):.1f}" for s in STAGES)
            )

    print(f"\n3. gallery search, 512-d, {args.threads} thread(s): median CPU ms (top 5)")
    print(f"{'gallery':<44}{'build':>10}{'1 face':>10}{'64 faces':>10}  x target (1 face)")
    for n_ids, per_id, how in (
        (10_000, 1, "mean"),
        (10_000, 5, "mean"),
        (10_000, 5, "max"),
        (100_000, 1, "mean"),
    ):
        build, one, many = search_times(n_ids, 512, per_id, how)
        label = f"{n_ids:,} identities x {per_id} image(s), {how}"
        print(f"{label:<44}{build:>10.1f}{one:>10.2f}{many:>10.2f}  {one / SEARCH_TARGET_MS:>7.3f}")


if __name__ == "__main__":
    main()
