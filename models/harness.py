"""One training loop for every trainer: landmarks now, recognition next.

The loop reads top to bottom (nanoGPT's train.py): config -> task (modules, data) ->
optimizer -> for each epoch: train, validate, log, checkpoint. What differs between
trainers is a :class:`Task`: its modules, its data, its loss on one batch, its
validation metrics and which of them picks the best checkpoint. What stays the same
is here:

- the run, its config, the snapshot hash and every epoch's metrics (split ``train``:
  ``loss``; split ``val``: the task's metrics) in the catalog (:mod:`catalog.results`);
  checkpoints in ``out_dir/<run_id>/``: ``last.pt`` every epoch, ``best.pt`` at the
  best validation metric, both written atomically (:mod:`models.checkpoints`);
- strict resume from a checkpoint (only :attr:`TrainConfig.RESUMABLE` settings may
  change), refused for another snapshot;
- a time budget (``max_minutes``): no epoch starts that, as long as the longest so
  far, would overrun it;
- the learning rate per epoch (:func:`epoch_lr`), AdamW over every module's
  parameters (a classifier head's too);
- on CUDA: autocast (bfloat16 where supported, else float16 with a GradScaler) and
  channels_last; uint8 batches normalised on the device (:meth:`Env.images`);
- reproducibility on CPU: modules initialised from ``seed``, the training order of
  epoch e from :func:`epoch_seed` (seed, e), the RNG state in the checkpoint, so a
  resumed run ends with the same weights as one never interrupted;
- Ctrl-C marks the run 'interrupted', any error 'failed';
- under torchrun (:mod:`models.distributed`): one run, started by rank 0, its id sent
  to the others; the modules in one DistributedDataParallel; each rank trains on its
  share of every epoch (``batch_size`` is per process, so a step sees ``world_size``
  batches, recorded in the config); validation split across the ranks and gathered,
  so rank 0 measures what one process would; only rank 0 writes runs, metrics and
  checkpoints; rank 0's time-budget decision binds every rank.

A trainer is a Task subclass and a config subclass::

    @dataclass
    class MyConfig(TrainConfig):
        model: str = "..."

    class MyTask(Task):
        kind, config_type, metric, higher_is_better = "mine", MyConfig, "top1", True
        def build(self, env): ...          # -> {"model": ..., "loss": ...}
        def train_loader(self, epoch, seed): ...
        def train_step(self, batch): ...   # -> loss
        def evaluate(self): ...            # -> {"top1": ..., ...}

    train(MyTask, MyConfig(snapshot="base-v1"), db)

Every write (runs, metrics, checkpoints) goes through :class:`Writer`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from catalog import results
from models import distributed
from models.checkpoints import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    load_weights,
    require,
    save_checkpoint,
)
from models.config import TrainConfig
from models.env import Env


def epoch_lr(config: TrainConfig, epoch: int) -> float:
    """The learning rate of ``epoch`` (0-based): a function of the epoch alone, so a
    resumed run follows the same schedule. Cosine decays from ``lr`` at the first epoch
    to ``lr / 100`` at the last of ``config.epochs`` (a run stopped early by its time
    budget ends higher)."""
    if config.schedule == "constant" or config.epochs <= 1:
        return config.lr
    floor = config.lr / 100
    progress = min(epoch / (config.epochs - 1), 1.0)
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s training order (shuffle or PK sampling)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class Task:
    """What a trainer adds to the loop. Subclass it; the harness calls, in order:

    ``Task(config, db)``, then (torch seeded from ``config.seed``) :meth:`build`;
    per epoch :meth:`train_loader`, :meth:`train_step` per batch (modules in train
    mode), :meth:`evaluate` (eval mode, no grad); :meth:`extra_state` per checkpoint.
    """

    #: runs.kind, and the run ids' prefix
    kind: ClassVar[str]
    #: the config class (a resumed run's saved config is read as one)
    config_type: ClassVar[type[TrainConfig]]
    #: the key of :meth:`evaluate`'s dict that picks best.pt, and which way is better
    metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = False

    def __init__(self, config: Any, db: str | os.PathLike[str] | None) -> None:
        self.config, self.db = config, db
        self.snapshot_hash = ""  # build() sets it: a resume must be of the same images

    def build(self, env: Env) -> dict[str, nn.Module]:
        """Make the modules (torch is seeded) and the datasets, and set
        ``snapshot_hash``; return the modules to optimise and checkpoint, by name
        (``model`` first, e.g. ``{"model": backbone, "loss": arcface}``). The
        harness moves them to ``env.device``. Raise here for missing data: no run is
        recorded yet."""
        raise NotImplementedError

    def train_loader(self, epoch: int, seed: int) -> Iterable[Any]:
        """Epoch ``epoch``'s training batches (with ``len``), their order drawn from
        ``seed`` alone (a shuffling DataLoader's generator, or PKSampler(seed=seed)).
        Under torchrun, this rank's share, as many batches on every rank
        (:func:`models.distributed.shuffled_loader`, PKSampler's ``rank``)."""
        raise NotImplementedError

    def train_step(self, batch: Any) -> torch.Tensor:
        """The loss of one batch (forward under ``env.autocast()``); the harness does
        the backward pass and the optimizer step."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """The validation metrics (logged as split ``val``), :attr:`metric` among them.
        Under torchrun each rank predicts its :func:`models.distributed.shard` and
        gathers the rows (:func:`models.distributed.gather_rows`); rank 0's metrics
        are the ones kept."""
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """More for every checkpoint (tensors, numbers, strings, containers)."""
        return {}


class Writer:
    """Every write a training run makes: its row in ``runs``, its metrics, its
    checkpoints. Under torchrun only rank 0 writes: ``enabled = rank == 0`` (the
    other ranks get the run id from rank 0)."""

    def __init__(self, db: str | os.PathLike[str] | None, enabled: bool = True) -> None:
        self.db, self.enabled = db, enabled

    def start_run(self, kind: str, config: Mapping[str, Any], snapshot: str) -> str:
        return results.start_run(self.db, kind, config, snapshot) if self.enabled else ""

    def reopen_run(self, run_id: str) -> None:
        if self.enabled:
            results.reopen_run(self.db, run_id)

    def log_metrics(self, run_id: str, epoch: int, split: str, values: Mapping[str, float]) -> None:
        if self.enabled:
            results.log_metrics(self.db, run_id, epoch, split, values)

    def finish_run(self, run_id: str, status: str) -> None:
        if self.enabled:
            results.finish_run(self.db, run_id, status)

    def save_checkpoint(self, path: Path, state: Mapping[str, Any]) -> None:
        if self.enabled:
            save_checkpoint(path, state)


@dataclass(frozen=True)
class TrainOutcome:
    run_id: str
    metric: str  # the validation metric that picked best.pt
    best: float  # its best value (inf / -inf if no epoch gave a number)
    best_epoch: int  # 0-based; -1 if none
    best_checkpoint: Path
    epochs_done: int


#: Checkpoint keys of the harness's own (a task's modules and extra state take others).
_STATE_KEYS = frozenset(
    {
        "optimizer",
        "scaler",
        "epoch",
        "best_epoch",
        "config",
        "run_id",
        "snapshot",
        "snapshot_hash",
        "rng",
    }
)


def _batch_len(batch: Any) -> int:
    """Samples in a batch: a tensor, or a dict / tuple of them (its first entry)."""
    if isinstance(batch, Mapping):
        return _batch_len(next(iter(batch.values())))
    if isinstance(batch, list | tuple) and batch and not isinstance(batch[0], str):
        return _batch_len(batch[0])
    return len(batch)


def _restore(
    ckpt: Checkpoint,
    task: Task,
    modules: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    env: Env,
    best_key: str,
) -> None:
    """Load the modules, optimizer, scaler and RNG state from ``ckpt``, or raise a
    CheckpointError saying what in it does not fit."""
    require(
        ckpt,
        {"optimizer": dict, "scaler": dict, "rng": dict, "best_epoch": int, best_key: (float, int)},
    )
    if ckpt["snapshot_hash"] != task.snapshot_hash:
        raise ValueError(
            f"Snapshot {task.config.snapshot!r} is not the one run {ckpt['run_id']} trained on "
            f"(hash {task.snapshot_hash[:12]} != {ckpt['snapshot_hash'][:12]})."
        )
    for name, module in modules.items():
        load_weights(module, ckpt, name)
    what = "optimizer state"
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
        what = "GradScaler state"
        if ckpt["scaler"] and scaler.is_enabled():  # empty: saved where none ran (CPU)
            scaler.load_state_dict(ckpt["scaler"])
        what = "RNG state"
        torch.set_rng_state(ckpt["rng"]["torch"])
        if env.cuda and ckpt["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise CheckpointError(ckpt.path, f"its {what} does not fit: {reason}") from None


def train(
    task_type: type[Task],
    config: TrainConfig | None = None,
    db: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    on_batch: Callable[[int, int, int, float], None] | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> TrainOutcome:
    """Train a ``task_type`` task (or, with ``resume=`` a checkpoint or run folder,
    continue its run, with ``config``'s resumable changes).

    ``progress`` is called after each epoch with ``run_id``, ``epoch``, ``lr``,
    ``train_loss``, ``val_<name>`` per validation metric and ``best_val_<metric>``;
    ``on_batch(epoch, done, total, mean loss so far)`` after each training batch.
    Both number epochs as the ``metrics`` table does: 1 for the first.
    ``clock`` times the budget (a test passes a fake one).

    Under torchrun every rank calls this (see the module docstring); ``progress`` and
    ``on_batch`` are called on rank 0 only, and every rank returns the same outcome.
    """
    with distributed.session():
        return _train(task_type, config, db, resume, progress, on_batch, clock)


def _train(
    task_type: type[Task],
    config: TrainConfig | None,
    db: str | os.PathLike[str] | None,
    resume: str | os.PathLike[str] | None,
    progress: Callable[[dict[str, Any]], None] | None,
    on_batch: Callable[[int, int, int, float], None] | None,
    clock: Callable[[], float],
) -> TrainOutcome:
    config_type = task_type.config_type
    ckpt = None
    if resume is not None:
        ckpt = load_checkpoint(resume, kind=task_type.kind, config_type=config_type)
        changed = dataclasses.asdict(config) if config is not None else {}
        config = config_type.resumed(ckpt["config"], **changed)
    config = config if config is not None else config_type()
    config.validate()  # again: a config may be changed after it was made
    # what the run records: how many processes trained it (a resume may change it)
    config = dataclasses.replace(config, world_size=distributed.world_size())
    env = Env.create(distributed.device(config.device))
    main = distributed.is_main()
    if not main:  # rank 0 reports
        progress = on_batch = None

    # modules (from the seed), then data: an unknown snapshot or missing split fails
    # here, before a run is recorded
    torch.manual_seed(config.seed)
    task = task_type(config, db)
    modules = task.build(env)
    clash = sorted(set(modules) & (_STATE_KEYS | set(task.extra_state())))
    if clash:
        raise ValueError(f"module name(s) {', '.join(clash)} clash with checkpoint keys")
    for module in modules.values():
        module.to(env.device, memory_format=env.memory_format)
    params = [p for module in modules.values() for p in module.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=env.amp_dtype == torch.float16)

    best_key = f"best_val_{task.metric}"
    better = (lambda a, b: a > b) if task.higher_is_better else (lambda a, b: a < b)
    start_epoch, best, best_epoch = 0, -math.inf if task.higher_is_better else math.inf, -1
    writer = Writer(db, enabled=main)
    if ckpt is not None:
        _restore(ckpt, task, modules, optimizer, scaler, env, best_key)
        start_epoch, best, best_epoch = ckpt["epoch"], ckpt[best_key], ckpt["best_epoch"]
        run_id = ckpt["run_id"]
        distributed.on_main(lambda: writer.reopen_run(run_id))
    else:
        run_id = distributed.on_main(
            lambda: writer.start_run(task.kind, dataclasses.asdict(config), config.snapshot)
        )
    run_dir = Path(config.out_dir) / run_id
    # the step the loop calls: the task's own, or (torchrun) through DistributedDataParallel
    step = distributed.for_training(task.train_step, modules, env.device)

    minutes = config.max_minutes
    deadline = clock() + 60 * minutes if minutes is not None else math.inf
    epochs_done, longest_epoch = start_epoch, 0.0
    try:
        for epoch in range(start_epoch, config.epochs):
            epoch_start = clock()
            # --- train -------------------------------------------------------------------
            for module in modules.values():
                module.train()
            for group in optimizer.param_groups:
                group["lr"] = epoch_lr(config, epoch)
            loader = task.train_loader(epoch, epoch_seed(config.seed, epoch))
            n_batches = min(len(loader), config.max_batches_per_epoch or len(loader))
            loss_sum, seen = 0.0, 0
            for done, batch in enumerate(
                itertools.islice(loader, config.max_batches_per_epoch), start=1
            ):
                loss = step(batch)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                n = _batch_len(batch)
                loss_sum += loss.item() * n
                seen += n
                if on_batch is not None:
                    on_batch(epoch + 1, done, n_batches, loss_sum / seen)
            loss_sum, seen = distributed.sum_all([loss_sum, seen])  # every rank's batches
            train_loss = loss_sum / max(seen, 1)

            # --- validate ----------------------------------------------------------------
            distributed.sync_buffers(modules)  # rank 0's statistics, those it checkpoints
            for module in modules.values():
                module.eval()
            with torch.no_grad():
                val = distributed.broadcast(task.evaluate())

            # --- log, checkpoint ---------------------------------------------------------
            # the metrics table numbers epochs as training prints them: 1 for the first
            writer.log_metrics(run_id, epoch + 1, "train", {"loss": train_loss})
            writer.log_metrics(run_id, epoch + 1, "val", val)
            improved = better(val[task.metric], best)
            if improved:
                best, best_epoch = val[task.metric], epoch
            state = {
                **{name: module.state_dict() for name, module in modules.items()},
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch + 1,  # epochs done; resume starts here
                best_key: best,
                "best_epoch": best_epoch,
                "config": dataclasses.asdict(config),
                "run_id": run_id,
                "snapshot": config.snapshot,
                "snapshot_hash": task.snapshot_hash,
                "rng": {
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if env.cuda else [],
                },
                **task.extra_state(),
            }
            if improved:
                writer.save_checkpoint(run_dir / "best.pt", state)
            writer.save_checkpoint(run_dir / "last.pt", state)
            if progress is not None:
                progress(
                    {
                        "run_id": run_id,
                        "epoch": epoch + 1,  # 1 for the first, as printed and in metrics
                        "lr": epoch_lr(config, epoch),
                        "train_loss": train_loss,
                        **{f"val_{name}": value for name, value in val.items()},
                        best_key: best,
                    }
                )
            epochs_done = epoch + 1
            # the budget is a limit: stop unless another epoch as long as the longest
            # so far still fits (the first epoch always runs)
            now = clock()
            longest_epoch = max(longest_epoch, now - epoch_start)
            if distributed.broadcast(now + longest_epoch > deadline):  # rank 0's decision
                break
    except KeyboardInterrupt:
        writer.finish_run(run_id, "interrupted")
        raise
    except BaseException:
        writer.finish_run(run_id, "failed")
        raise
    writer.finish_run(run_id, "finished")
    return TrainOutcome(run_id, task.metric, best, best_epoch, run_dir / "best.pt", epochs_done)


__all__ = [
    "Task",
    "TrainOutcome",
    "Writer",
    "epoch_lr",
    "epoch_seed",
    "train",
]
