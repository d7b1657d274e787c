"""Several processes, one piece of work: training, ``align`` and ``embed`` under torchrun.

``torchrun --nproc_per_node=N -m cli train landmarks ...`` starts N copies of a
command with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` in their environment. The library functions that can use them
(:func:`models.harness.train`, :func:`models.alignment.snapshot.align_snapshot`,
:func:`models.recognition.evaluate.embed_snapshot`) open a :func:`session`: one process
group (gloo on the CPU; where there is CUDA, NCCL for CUDA tensors and gloo for
Python objects and CPU tensors), each process on the GPU of its ``LOCAL_RANK``
(:func:`device`). Without torchrun (or with one process) nothing here does anything:
every helper returns what one process would have.

The rules the callers keep:

- every rank reads the catalog (read-only connections, which DuckDB lets many
  processes hold at once); only rank 0 writes it and the checkpoints, and what rank
  0 decided or read once is sent to the others (:func:`broadcast`, :func:`on_main`:
  its result, or its exception, on every rank, so no rank waits for one that failed);
- work over images is split into contiguous shards (:func:`shard_bounds`), one a
  rank, and the results gathered back in the images' order (:func:`gather_rows`,
  :func:`gather_chunks`), so rank 0 writes exactly what one process would have;
- every rank makes the same collective calls in the same order: a decision that ends
  a loop (the time budget) is rank 0's, broadcast.
"""

from __future__ import annotations

import atexit
import math
import os
import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

R = TypeVar("R")

#: The backends a session uses: gloo alone on the CPU; with CUDA, NCCL for CUDA
#: tensors (gradients, buffers) and gloo for CPU tensors and pickled objects.
CPU_BACKEND = "gloo"
CUDA_BACKEND = "cpu:gloo,cuda:nccl"


def launched() -> bool:
    """True in a process that torchrun (or the like) started as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """True unless this process is a rank other than 0 (by ``$RANK``; usable before a
    process group exists, e.g. to decide who prints)."""
    return int(os.environ.get("RANK", "0")) == 0


def active() -> bool:
    """True inside a :func:`session` of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, the one that writes (also True with no process group)."""
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def cpus() -> int:
    """This process's share of the machine's CPUs: all of them, or under torchrun the
    CPUs over the processes on this node (``LOCAL_WORLD_SIZE``), at least one."""
    return max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


_depth = 0  # sessions open in this process (nested calls share the outermost's barrier)


@contextmanager
def session() -> Iterator[None]:
    """The process group for the work inside, where torchrun started several processes:
    made on first use and kept until the process exits (a group destroyed and made
    again would meet the first one's stale rendezvous keys in torchrun's store). On
    leaving the outermost session normally, every rank waits for the others (a
    barrier: rank 0 has made its writes before any rank returns)."""
    global _depth
    if launched() and dist.is_available() and not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank())
        dist.init_process_group(CUDA_BACKEND if cuda else CPU_BACKEND)
        atexit.register(_close)
    _depth += 1
    try:
        yield
        if _depth == 1 and active():
            dist.barrier()
    finally:
        _depth -= 1


def _close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def device(name: str = "auto") -> str:
    """The device of this process: under a session, ``auto`` and ``cuda`` name the GPU
    of its local rank (``cuda:LOCAL_RANK``); one process: ``auto`` is ``cuda`` where
    there is a GPU, else ``cpu``; anything else as given."""
    if launched() and torch.cuda.is_available() and name in ("auto", "cuda"):
        return f"cuda:{local_rank()}"
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def broadcast(obj: R) -> R:
    """Rank 0's ``obj`` on every rank (pickled; for small things: ids, decisions, metrics)."""
    if not active():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _portable(err: BaseException) -> BaseException:
    """``err``, or a RuntimeError with its text where it does not survive pickling."""
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:  # noqa: BLE001 - any failure means: send the text instead
        return RuntimeError(f"{type(err).__name__}: {err}")
    return err


def on_main(fn: Callable[[], R]) -> R:
    """``fn()`` run on rank 0 only (a catalog write, a check of every file), its result
    returned on every rank; if it raises, every rank raises it (rank 0 its own, with
    its traceback), so no rank is left waiting for the others."""
    if not active():
        return fn()
    outcome: tuple[bool, Any] | None = None
    error: BaseException | None = None
    if is_main():
        try:
            outcome = (True, fn())
        except Exception as err:  # sent, then raised here too
            error = err
            outcome = (False, _portable(err))
    ok, value = broadcast(outcome)  # type: ignore[misc]
    if ok:
        return value
    if error is not None:
        raise error
    raise value


def sum_all(values: Sequence[float]) -> list[float]:
    """Each value summed over the ranks (float64)."""
    if not active():
        return [float(v) for v in values]
    total = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(total)
    return total.tolist()


def shard_bounds(n: int, part: int | None = None, parts: int | None = None) -> tuple[int, int]:
    """``[lo, hi)``: this rank's contiguous share of ``n`` items (sizes differ by at most
    one; rank order is item order, so gathering in rank order restores it)."""
    part = rank() if part is None else part
    parts = world_size() if parts is None else parts
    return n * part // parts, n * (part + 1) // parts


def shard(dataset: Dataset) -> Dataset:
    """This rank's contiguous share of ``dataset`` (the whole of it in one process), for
    prediction: evaluate a shard, then :func:`gather_rows`."""
    if not active():
        return dataset
    lo, hi = shard_bounds(len(dataset))  # type: ignore[arg-type]
    return Subset(dataset, range(lo, hi))


def gather_rows(*arrays: np.ndarray | None) -> tuple[Any, ...]:
    """Every rank's ``arrays`` (rows of its :func:`shard`), concatenated along the
    first axis in rank order, on every rank; None stays None. One process: as given."""
    if not active():
        return arrays
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, arrays)
    out = []
    for i, own in enumerate(arrays):
        pieces = [p[i] for p in parts if p[i] is not None]
        if not pieces:
            out.append(None)
            continue
        filled = [p for p in pieces if len(p)]  # an empty shard's (0, 0) fits no shape
        out.append(np.concatenate(filled) if filled else own)
    return tuple(out)


def gather_chunks(
    n: int,
    produce: Callable[[range], Any],
    consume: Callable[[range, Any], None] | None,
    chunk: int = 256,
) -> None:
    """Work on ``n`` items split across the ranks, its results handed to rank 0 a chunk
    at a time (memory stays at a chunk a rank, however large ``n``).

    Every rank calls ``produce(indices)`` for successive chunks of its shard; rank 0
    calls ``consume(indices, result)`` for each rank's chunk, in rank order (``consume``
    is ignored elsewhere). An exception in ``produce`` on any rank, or in ``consume``,
    is raised on every rank after that round: every rank stops at the same point."""
    lo, hi = shard_bounds(n)
    size = max(b - a for a, b in (shard_bounds(n, r) for r in range(world_size())))
    rounds = math.ceil(size / chunk) if size else 0
    for k in range(rounds):
        own = range(min(lo + k * chunk, hi), min(lo + (k + 1) * chunk, hi))
        try:
            payload: tuple[bool, Any] = (True, produce(own) if len(own) else None)
        except Exception as err:
            if not active():
                raise
            payload = (False, _portable(err))
        if not active():
            if consume is not None:
                consume(own, payload[1])
            continue
        parts: list[Any] | None = [None] * world_size() if is_main() else None
        dist.gather_object(payload, parts, dst=0)

        def take(parts: list[Any] | None = parts, k: int = k) -> None:
            assert parts is not None
            for r, (ok, value) in enumerate(parts):
                if not ok:
                    raise value
                a, b = shard_bounds(n, r)
                indices = range(min(a + k * chunk, b), min(a + (k + 1) * chunk, b))
                if len(indices) and consume is not None:
                    consume(indices, value)

        on_main(take)


def sync_buffers(modules: Mapping[str, nn.Module]) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank: DistributedDataParallel
    keeps the parameters equal, but each rank's last forward pass moved its own
    statistics, and rank 0's are the ones its checkpoint holds."""
    if not active():
        return
    for module in modules.values():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


class _Step(nn.Module):
    """The modules of a training step as one module, so one DistributedDataParallel
    wraps them all (a classifier loss has weights too) and the task's own step runs
    as its forward pass."""

    def __init__(self, step: Callable[[Any], torch.Tensor], modules: Mapping[str, nn.Module]):
        super().__init__()
        self.parts = nn.ModuleDict(dict(modules))
        self.step = step

    def forward(self, batch: Any) -> torch.Tensor:
        return self.step(batch)


def for_training(
    step: Callable[[Any], torch.Tensor], modules: Mapping[str, nn.Module], where: torch.device
) -> Callable[[Any], torch.Tensor]:
    """``step`` (batch -> loss), with its gradients averaged over the ranks where there
    are several: the modules wrapped in one DistributedDataParallel (which also sends
    rank 0's weights to every rank now and its buffers before each forward pass). The
    modules themselves stay as they were, so their state_dict has no ``module.``
    prefix and a checkpoint loads in any number of processes."""
    if not active():
        return step
    from torch.nn.parallel import DistributedDataParallel

    ids = [where.index] if where.type == "cuda" and where.index is not None else None
    return DistributedDataParallel(_Step(step, modules), device_ids=ids)


def shuffled_loader(
    dataset: Dataset, batch_size: int, seed: int, epoch: int, **options: Any
) -> DataLoader:
    """One epoch's shuffled training batches: in one process a DataLoader shuffling
    with a generator seeded from ``seed``; under a session each rank's share of one
    permutation (DistributedSampler, seeded from ``seed`` and ``epoch``), padded so
    every rank has as many batches. The last batch is dropped where it would be the
    only one short of ``batch_size`` (no 1-image BatchNorm batch)."""
    n = len(dataset)  # type: ignore[arg-type]
    if not active():
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
            drop_last=n > batch_size,
            **options,
        )
    sampler: DistributedSampler = DistributedSampler(
        dataset, num_replicas=world_size(), rank=rank(), shuffle=True, seed=seed
    )
    sampler.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=len(sampler) > batch_size,
        **options,
    )


__all__ = [
    "active",
    "broadcast",
    "cpus",
    "device",
    "for_training",
    "gather_chunks",
    "gather_rows",
    "is_main",
    "is_main_process",
    "launched",
    "local_rank",
    "on_main",
    "rank",
    "session",
    "shard",
    "shard_bounds",
    "shuffled_loader",
    "sum_all",
    "sync_buffers",
    "world_size",
]
