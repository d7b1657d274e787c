"""Train a stacked hourglass on a snapshot's five landmarks (design.md, step 2).

One loop, read top to bottom (nanoGPT's train.py): config -> data -> model ->
optimizer -> for each epoch: train, validate, log, checkpoint. The run, its config,
the snapshot hash and every epoch's metrics go into the catalog (catalog.results);
checkpoints go to ``out_dir/<run_id>/`` (``last.pt`` every epoch, ``best.pt`` at the
best validation NME).

Validation NME is measured in the in-the-wild image's pixels: the crops stretch the
face box onto a square non-uniformly (transforms.box_to_square), so distances in
input pixels would weigh x and y differently. Both the sub-pixel decoding
(``config.decode``) and argmax are logged from the same heatmaps, so the gain of
sub-pixel decoding is visible per epoch.

Reproducible on CPU: the model is initialised from ``seed``, the shuffle of epoch e
from (seed, e), the augmentation of sample i from (seed, e, i) (LandmarkDataset), so a
run resumed from ``last.pt`` ends with the same weights as one never interrupted.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from catalog import results
from catalog import transforms as T
from catalog.datasets import DatasetError, LandmarkDataset
from models.heatmaps import decode_argmax, decode_subpixel, heatmap_to_input, input_to_original
from models.hourglass import heatmap_loss
from models.metrics import nme
from models.registry import create_model

KIND = "landmarks"


@dataclass
class LandmarkTrainConfig:
    snapshot: str = "demo"
    model: str = "hourglass_small"  # models.registry name; its input_size sets the crops
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3  # AdamW
    schedule: str = "cosine"  # per epoch: cosine (lr down to lr/100 at the last) | constant
    weight_decay: float = 1e-4
    sigma: float = 1.5  # heatmap pixels, targets and DARK smoothing alike
    augment: bool = True  # catalog.transforms.Augment() defaults on the train split
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"  # cuda if available, else cpu
    out_dir: str = "checkpoints"
    max_minutes: float | None = None  # budget: no epoch starts that, as long as the longest
    # so far, would overrun it
    decode: str = "dark"  # decode_subpixel method: dark | quarter
    normaliser: str = results.NME_NORMALISER  # how NME is normalised (models.metrics.nme)
    max_batches_per_epoch: int | None = None  # short epochs for tests and demos


#: Fields a resumed run may change; any other change would make it a different run.
#: (A new ``epochs`` reshapes the rest of a cosine schedule, which is the point of it.)
RESUMABLE = {"epochs", "num_workers", "device", "out_dir", "max_minutes"}


@dataclass
class TrainResult:
    run_id: str
    best_val_nme: float
    best_checkpoint: Path
    epochs_done: int


SCHEDULES = ("cosine", "constant")
_clock = time.monotonic  # the time budget's clock (a test replaces it)


def epoch_lr(config: LandmarkTrainConfig, epoch: int) -> float:
    """The learning rate of ``epoch`` (0-based): a function of the epoch alone, so a
    resumed run follows the same schedule. Cosine decays from ``lr`` at the first epoch
    to ``lr / 100`` at the last of ``config.epochs`` (a run stopped early by its time
    budget ends higher)."""
    if config.schedule == "constant" or config.epochs <= 1:
        return config.lr
    floor = config.lr / 100
    progress = min(epoch / (config.epochs - 1), 1.0)
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def _seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _save(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint written by :func:`train_landmarks` (a run folder means its last.pt)."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}")
    # weights_only: tensors, numbers, strings and containers only (nothing is executed).
    return torch.load(path, map_location=map_location, weights_only=True)


def train_landmarks(
    config: LandmarkTrainConfig | None = None,
    db: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    on_batch: Callable[[int, int, int, float], None] | None = None,
) -> TrainResult:
    """Train (or, with ``resume=`` a checkpoint or run folder, continue) a landmark model.

    ``progress`` is called after each epoch with that epoch's numbers, ``on_batch(epoch,
    done, total, mean loss so far)`` after each training batch. Ctrl-C marks the
    run 'interrupted', any error 'failed'; resume from ``out_dir/<run_id>/last.pt``.
    """
    ckpt = load_checkpoint(resume) if resume is not None else None
    if ckpt is not None:
        # runs saved before the schedule existed trained at a constant rate
        saved = LandmarkTrainConfig(**{"schedule": "constant", **ckpt["config"]})
        config = config or saved
        changed = [
            f.name for f in fields(config)
            if f.name not in RESUMABLE and getattr(config, f.name) != getattr(saved, f.name)
        ]  # fmt: skip
        if changed:
            raise ValueError(
                f"Cannot resume run {ckpt['run_id']} with a different {', '.join(changed)}; "
                f"only {', '.join(sorted(RESUMABLE))} may change on resume."
            )
    config = config or LandmarkTrainConfig()
    if config.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {config.schedule!r}")
    for name in ("epochs", "batch_size", "max_batches_per_epoch"):
        value = getattr(config, name)
        if value is not None and value < 1:  # 0 batches would train nothing, silently
            raise ValueError(f"{name} must be at least 1, got {value}")
    if config.max_minutes is not None and not config.max_minutes > 0:
        raise ValueError(f"max_minutes must be positive, got {config.max_minutes}")
    if config.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(config.device)
    cuda = device.type == "cuda"

    # model first: its input size decides the crops'
    torch.manual_seed(config.seed)
    model = create_model(config.model)
    input_size, heatmap_size = model.config.input_size, model.config.heatmap_size

    # data (an unknown snapshot or missing split fails here, before a run is recorded)
    train_ds = LandmarkDataset(
        db, config.snapshot, "train", input_size, heatmap_size, config.sigma,
        augment=T.Augment() if config.augment else None, seed=config.seed, image_dtype="uint8",
    )  # fmt: skip
    try:
        val_ds = LandmarkDataset(db, config.snapshot, "val", input_size, heatmap_size, config.sigma,
                                 image_dtype="uint8")  # fmt: skip
    except DatasetError:
        raise  # images or landmarks missing: its own message says what to do
    except ValueError as err:  # no 'val' split at all
        raise ValueError(
            f"Snapshot {config.snapshot!r} has no validation images, which training needs "
            "to measure NME and keep the best checkpoint. Select with val_per_id >= 1 "
            f"(e.g. `celebcat select --split 18/4/3`) and create a new snapshot. ({err})"
        ) from err
    if ckpt is not None and ckpt["snapshot_hash"] != train_ds.snapshot_hash:
        raise ValueError(
            f"Snapshot {config.snapshot!r} is not the one run {ckpt['run_id']} trained on "
            f"(hash {train_ds.snapshot_hash[:12]} != {ckpt['snapshot_hash'][:12]})."
        )

    # model on device, optimizer, mixed precision (CUDA only)
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)  # fmt: skip
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and amp_dtype == torch.float16)

    start_epoch, best_nme, best_epoch = 0, math.inf, -1
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if cuda and ckpt["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        start_epoch, best_nme, best_epoch = ckpt["epoch"], ckpt["best_val_nme"], ckpt["best_epoch"]
        run_id = ckpt["run_id"]
        results.reopen_run(db, run_id)
    else:
        run_id = results.start_run(db, KIND, asdict(config), config.snapshot)
    run_dir = Path(config.out_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)

    val_loader = DataLoader(val_ds, batch_size=config.batch_size, shuffle=False,
                            num_workers=config.num_workers, pin_memory=cuda)  # fmt: skip
    minutes = config.max_minutes
    deadline = _clock() + 60 * minutes if minutes is not None else math.inf
    epochs_done, longest_epoch = start_epoch, 0.0
    try:
        for epoch in range(start_epoch, config.epochs):
            epoch_start = _clock()
            # --- train ---------------------------------------------------------------
            model.train()
            for group in optimizer.param_groups:
                group["lr"] = epoch_lr(config, epoch)
            train_ds.set_epoch(epoch)  # before the iterator (and its workers) exist
            loader = DataLoader(
                train_ds, batch_size=config.batch_size, shuffle=True,
                generator=torch.Generator().manual_seed(_seed(config.seed, epoch)),
                num_workers=config.num_workers, pin_memory=cuda,
                drop_last=len(train_ds) > config.batch_size,  # no 1-image BatchNorm batch
            )  # fmt: skip
            loss_sum, seen = 0.0, 0
            n_batches = min(len(loader), config.max_batches_per_epoch or len(loader))  # >= 1
            for done, batch in enumerate(
                itertools.islice(loader, config.max_batches_per_epoch), start=1
            ):
                # uint8 through the loader, normalised on the device: a quarter of the bytes
                images = batch["image"].to(device, non_blocking=True, memory_format=memory_format)
                # (a no-op where normalising kept the layout)
                images = T.normalize_batch(images).contiguous(memory_format=memory_format)
                targets = batch["heatmaps"].to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=cuda):
                    outputs = model(images)
                loss = heatmap_loss(outputs, targets)  # every stack (intermediate supervision)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                loss_sum += loss.item() * len(images)
                seen += len(images)
                if on_batch is not None:
                    on_batch(epoch, done, n_batches, loss_sum / seen)
            train_loss = loss_sum / max(seen, 1)

            # --- validate: NME in original pixels, sub-pixel and argmax ---------------
            model.eval()
            errors: dict[str, list[torch.Tensor]] = {"nme": [], "nme_argmax": []}
            with torch.no_grad():
                for batch in val_loader:
                    images = batch["image"].to(device, memory_format=memory_format)
                    images = T.normalize_batch(images).contiguous(memory_format=memory_format)
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=cuda):
                        heatmaps = model(images)[-1].float().cpu()
                    affine = batch["affine"]
                    target = input_to_original(batch["landmarks"], affine)
                    decoded = {
                        "nme": decode_subpixel(heatmaps, config.decode, config.sigma)[0],
                        "nme_argmax": decode_argmax(heatmaps)[0],
                    }
                    for name, points in decoded.items():
                        points = heatmap_to_input(points, heatmap_size, input_size)
                        errors[name].append(nme(input_to_original(points, affine), target,
                                                 config.normaliser))
            val = {name: torch.cat(e).mean().item() for name, e in errors.items()}

            # --- log, checkpoint ------------------------------------------------------
            results.log_metrics(db, run_id, epoch, "train", {"loss": train_loss})
            results.log_metrics(db, run_id, epoch, "val", val)
            improved = val["nme"] < best_nme
            if improved:
                best_nme, best_epoch = val["nme"], epoch
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch + 1,  # epochs done; resume starts here
                "best_val_nme": best_nme,
                "best_epoch": best_epoch,
                "config": asdict(config),
                "run_id": run_id,
                "snapshot": config.snapshot,
                "snapshot_hash": train_ds.snapshot_hash,
                "rng": {
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if cuda else [],
                },
            }
            if improved:
                _save(run_dir / "best.pt", state)
            _save(run_dir / "last.pt", state)
            if progress is not None:
                progress({"run_id": run_id, "epoch": epoch, "train_loss": train_loss,
                          "val_nme": val["nme"], "val_nme_argmax": val["nme_argmax"],
                          "best_val_nme": best_nme})  # fmt: skip
            epochs_done = epoch + 1
            # the budget is a limit: stop unless another epoch as long as the longest
            # so far still fits (the first epoch always runs)
            now = _clock()
            longest_epoch = max(longest_epoch, now - epoch_start)
            if now + longest_epoch > deadline:
                break
    except KeyboardInterrupt:
        results.finish_run(db, run_id, "interrupted")
        raise
    except BaseException:
        results.finish_run(db, run_id, "failed")
        raise
    results.finish_run(db, run_id, "finished")
    return TrainResult(run_id, best_nme, run_dir / "best.pt", epochs_done)
