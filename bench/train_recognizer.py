"""Recognition training on CPU: images/s per backbone, and what data loading costs.

Run:  python bench/train_recognizer.py [--models face_cpu,resnet18,resnet50]
          [--sizes 112,64] [--batch 64] [--steps 3] [--loss arcface] [--optimizer sgd]
          [--channels-last] [--ids 40] [--workers 0,2] [--loader-batches 8]
          [--e2e-model face_cpu] [--e2e-steps 6] [--threads 1]

Three measurements, all with :func:`train_throughput`, which runs training steps over
any iterable of batches (a list in memory, or a DataLoader) and times separately the
wait for each batch and the step on it:

  steps    per backbone (models.registry, recognition) and input size: a training step
           on an in-memory uint8 batch of ``--batch`` (64) images: normalise
           (catalog.transforms.normalize_batch), forward, loss (``--loss``, default
           ArcFace over 1,000 classes), backward, optimiser step (SGD, momentum 0.9, or
           AdamW); ``--warmup`` steps, then the mean of ``--steps``. images/s = batch /
           step.
  loading  batches from a DataLoader alone, ``--workers`` 0 and 2: a synthetic
           in-memory uint8 Dataset (collation and worker transport only), and the real
           ``FaceDataset(db, "bench", "train", size=S, image_dtype="uint8")`` on a
           synthetic catalog (``--ids`` identities, built once under
           bench/_work/recog_<ids>/), decoding the JPEGs ("decode") or reading the
           snapshot's crop cache ("cache", built once per size). Batches are drawn with
           replacement, so the split's size does not limit their number. Loader share
           = load / (load + step): the part of a step spent waiting for data when
           loading is not overlapped (num_workers=0).
  e2e      the training loop of ``--e2e-model`` over the real DataLoader (crop cache,
           each of ``--workers``; with workers the loading overlaps the steps) against
           the same steps on in-memory batches: overhead = 1 - in-memory time / loop
           time. On 2 cores the workers compete with the model's threads for the same
           CPUs, so overlap hides less than it would on a bigger machine.

The machine's 2 cores are shared with other work: the load average is printed; run
twice before trusting a ratio. torch runs on ``--threads`` 1 by default: with another
process busy on one of the two cores, two OpenMP threads wait on each other at every
parallel region, and a face_cpu step at 64 px measured 2.0-6.8 s on 2 threads against
0.25-0.8 s on one (load average 4-6).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from catalog.transforms import normalize_batch  # noqa: E402
from models.recognition.backbones import n_parameters  # noqa: E402
from models.recognition.losses import RecognitionLoss, make_loss  # noqa: E402
from models.registry import RECOGNITION, create_model, list_models  # noqa: E402

WORK = ROOT / "bench" / "_work"
SNAPSHOT = "bench"


def log(message: str) -> None:
    print(message, flush=True)


@dataclass(frozen=True)
class Timing:
    """Mean seconds per batch over the timed steps: waiting for the batch, and the step."""

    load_s: float
    step_s: float
    batch: int

    @property
    def images_per_s(self) -> float:
        """Training images/s of the whole loop (loading + steps)."""
        return self.batch / (self.load_s + self.step_s)

    @property
    def step_images_per_s(self) -> float:
        """images/s of the steps alone."""
        return self.batch / self.step_s


def _unpack(batch: Any) -> tuple[Tensor, Tensor]:
    """(images, labels) of a (images, labels) pair or a FaceDataset batch dict."""
    if isinstance(batch, dict):
        return batch["image"], batch["label"]
    images, labels = batch
    return images, labels


def train_throughput(
    model: nn.Module,
    loss_fn: RecognitionLoss,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Any],
    steps: int,
    warmup: int = 1,
    channels_last: bool = False,
) -> Timing:
    """Run ``warmup + steps`` training steps over ``batches`` and time the last ``steps``.

    ``batches``: any iterable of (uint8 images (B, 3, S, S), int64 labels (B,)) pairs
    or FaceDataset batch dicts: an in-memory list (cycled), or a DataLoader (over
    ``FaceDataset(..., image_dtype="uint8")`` for the real cost of loading). For each
    step the wait for the next batch and the step itself (normalise, forward, loss,
    backward, optimiser step) are timed separately.
    """
    model.train()
    source: Iterator[Any] = iter(
        batches if not isinstance(batches, list) else itertools.cycle(batches)
    )
    load = step = 0.0
    size = 0
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        images, labels = _unpack(next(source))
        t1 = time.perf_counter()
        x = normalize_batch(images)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = loss_fn(model(x), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        t2 = time.perf_counter()
        if i >= warmup:
            load, step, size = load + t1 - t0, step + t2 - t1, len(labels)
    return Timing(load / steps, step / steps, size)


def loader_throughput(loader: Iterable[Any], batches: int, warmup: int = 1) -> float:
    """Seconds per batch of iterating ``loader`` alone (after ``warmup`` batches, which
    also start the workers)."""
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return (time.perf_counter() - t0) / batches


class InMemoryFaces(Dataset):
    """Random uint8 faces and labels held in memory: a DataLoader's own cost."""

    def __init__(self, n: int, size: int, num_classes: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
        self.labels = torch.randint(0, num_classes, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"image": self.images[index], "label": self.labels[index]}


def memory_batches(
    batch: int, size: int, num_classes: int, n: int = 2
) -> list[tuple[Tensor, Tensor]]:
    """``n`` in-memory uint8 batches (cycled by train_throughput)."""
    data = InMemoryFaces(batch * n, size, num_classes)
    return [
        (data.images[i : i + batch], data.labels[i : i + batch]) for i in range(0, batch * n, batch)
    ]


def make_loader(dataset: Dataset, batch: int, workers: int, batches: int) -> DataLoader:
    """Batches drawn with replacement (as many as asked, whatever the dataset's size)."""
    sampler = RandomSampler(
        dataset,
        replacement=True,
        num_samples=batch * (batches + 4),
        generator=torch.Generator().manual_seed(0),
    )
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        persistent_workers=False,
    )


def build_catalog(ids: int, sizes: Iterable[int]) -> Path:
    """A synthetic catalog with snapshot "bench" and its crop caches, built once."""
    from catalog.cache import build_cache
    from catalog.ingest import ingest
    from catalog.selection import fitted_params, select
    from catalog.snapshots import create
    from catalog.synth import synthesize

    work = WORK / f"recog_{ids}"
    db, done = work / "catalog.duckdb", work / "complete"
    if not done.exists():  # written last: a half-built set is rebuilt
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        log(f"synthesising {ids} identities into {work} (once) ...")
        synthesize(work / "data", ids=ids, seed=0)
        ingest(work / "data", db)
        select(db, **fitted_params(db, images_per_id=10))
        create(SNAPSHOT, db)
        done.write_text("ok\n")
    for size in sizes:
        build_cache(SNAPSHOT, db, size=size)
    return db


def face_datasets(db: Path, size: int) -> dict[str, Dataset]:
    """FaceDataset over the bench snapshot's train split, decoding and from the cache."""
    from catalog.datasets import FaceDataset

    decode = FaceDataset(db, SNAPSHOT, "train", size=size, image_dtype="uint8")
    decode.cache = None  # decode the JPEGs although a cache exists
    cache = FaceDataset(db, SNAPSHOT, "train", size=size, image_dtype="uint8")
    if cache.cache is None:
        raise SystemExit(f"FaceDataset found no crop cache of size {size}")
    return {"decode": decode, "cache": cache}


def setup(name: str, size: int, args: argparse.Namespace, num_classes: int) -> tuple[Any, ...]:
    torch.manual_seed(0)
    model = create_model(name, input_size=size)
    loss_fn = make_loss(args.loss, num_classes, model.config.embedding_dim)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = [*model.parameters(), *loss_fn.parameters()]
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    else:
        optimizer = torch.optim.AdamW(params, lr=1e-3)
    return model, loss_fn, optimizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(sorted(list_models(RECOGNITION))))
    parser.add_argument("--sizes", default="112,64")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--loss", default="arcface")
    parser.add_argument("--classes", type=int, default=1000, help="classes of the loss")
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--ids", type=int, default=40, help="identities of the catalog")
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--loader-batches", type=int, default=8)
    parser.add_argument("--e2e-model", default="face_cpu", help="'' skips the e2e loop")
    parser.add_argument("--e2e-steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (see above)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = args.models.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    log(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; batch {args.batch}, "
        f"{args.loss} over {args.classes} classes, {args.optimizer}"
        f"{', channels_last' if args.channels_last else ''}"
    )

    # 1. model steps on in-memory batches
    step_s: dict[tuple[str, int], float] = {}
    counts: dict[str, int] = {}
    for name in models:
        for size in sizes:
            model, loss_fn, optimizer = setup(name, size, args, args.classes)
            counts.setdefault(name, n_parameters(model))  # at the first size (the head's
            # grid, and so its linear layer, can be smaller at smaller sizes)
            timing = train_throughput(
                model,
                loss_fn,
                optimizer,
                memory_batches(args.batch, size, args.classes),
                args.steps,
                args.warmup,
                args.channels_last,
            )
            step_s[name, size] = timing.step_s
            log(
                f"  {name:<9} {size:>3} px: {timing.step_s:6.2f} s/step, "
                f"{timing.step_images_per_s:6.1f} images/s"
            )

    # 2. loading alone
    db = build_catalog(args.ids, sizes)
    load_s: dict[tuple[str, int, int], float] = {}
    torch_threads = torch.get_num_threads()
    for size in sizes:
        datasets = {"synthetic": InMemoryFaces(256, size, args.classes), **face_datasets(db, size)}
        for kind, dataset in datasets.items():
            for w in workers:
                torch.set_num_threads(1)  # per-sample work, as in a DataLoader worker
                loader = make_loader(dataset, args.batch, w, args.loader_batches)
                load_s[kind, size, w] = loader_throughput(loader, args.loader_batches)
                torch.set_num_threads(torch_threads)
    n_train = len(face_datasets(db, sizes[0])["cache"])

    # 3. end to end: the loop over the real DataLoader (crop cache) vs in memory
    e2e: dict[tuple[int, int], tuple[Timing, Timing]] = {}
    if args.e2e_model:
        for size in sizes:
            cache = face_datasets(db, size)["cache"]
            if cache.num_classes > args.classes:
                raise SystemExit(f"--classes must be at least the snapshot's {cache.num_classes}")
            model, loss_fn, optimizer = setup(args.e2e_model, size, args, args.classes)
            memory = train_throughput(
                model,
                loss_fn,
                optimizer,
                memory_batches(args.batch, size, args.classes),
                args.e2e_steps,
                args.warmup,
                args.channels_last,
            )
            for w in workers:
                loader = make_loader(cache, args.batch, w, args.e2e_steps + args.warmup)
                real = train_throughput(
                    model,
                    loss_fn,
                    optimizer,
                    loader,
                    args.e2e_steps,
                    args.warmup,
                    args.channels_last,
                )
                e2e[size, w] = (real, memory)
    report(args, models, sizes, workers, counts, step_s, load_s, e2e, n_train)


def report(
    args: argparse.Namespace,
    models: list[str],
    sizes: list[int],
    workers: list[int],
    counts: dict[str, int],
    step_s: dict[tuple[str, int], float],
    load_s: dict[tuple[str, int, int], float],
    e2e: dict[tuple[int, int], tuple[Timing, Timing]],
    n_train: int,
) -> None:
    """The tables."""
    kinds = ("synthetic", "decode", "cache")
    log("")
    log(
        f"training steps, batch {args.batch} (normalise + forward + {args.loss} + backward + "
        f"{args.optimizer} step), mean of {args.steps} after {args.warmup} warm-up"
    )
    header = "".join(f"{f'{s} px s/step':>15}{'img/s':>8}" for s in sizes)
    log(f"{'model':<9} {'params':>7} {header}   (params at {sizes[0]} px)")
    for name in models:
        cells = "".join(
            f"{step_s[name, s]:>15.2f}{args.batch / step_s[name, s]:>8.1f}" for s in sizes
        )
        log(f"{name:<9} {counts[name] / 1e6:>6.1f}M {cells}")
    log("")
    log(
        f"loading alone, s/batch of {args.batch} ({args.loader_batches} batches after one; "
        f"FaceDataset train split: {n_train} images of snapshot {SNAPSHOT!r}, drawn with "
        "replacement)"
    )
    log(f"{'loader':<10} {'size':>4} " + "".join(f"{f'workers={w}':>11}" for w in workers))
    for size in sizes:
        for kind in kinds:
            cells = "".join(f"{load_s[kind, size, w]:>11.3f}" for w in workers)
            log(f"{kind:<10} {size:>4} {cells}")
    log("")
    w0 = 0 if 0 in workers else workers[0]
    log(f"loader share of a serial step, load / (load + step), num_workers={w0}")
    log(f"{'model':<9} {'size':>4} " + "".join(f"{k:>11}" for k in kinds))
    for name in models:
        for size in sizes:
            s = step_s[name, size]
            shares = [load_s[k, size, w0] / (load_s[k, size, w0] + s) for k in kinds]
            log(f"{name:<9} {size:>4} " + "".join(f"{v:>11.1%}" for v in shares))
    if e2e:
        log("")
        log(
            f"end to end, {args.e2e_model}: the loop over FaceDataset (crop cache) against the "
            f"same steps on in-memory batches, mean of {args.e2e_steps} steps"
        )
        for (size, w), (real, memory) in e2e.items():
            loop = real.load_s + real.step_s
            log(
                f"  {size:>3} px, workers={w}: loop {real.images_per_s:6.1f} images/s (waiting "
                f"for data {real.load_s / loop:5.1%} of it), in memory "
                f"{memory.images_per_s:6.1f} images/s: overhead "
                f"{1 - (memory.load_s + memory.step_s) / loop:5.1%}"
            )
    log(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
