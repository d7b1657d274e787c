"""Embed a snapshot with a recognizer run, and evaluate it the reference's ways.

``celebcat embed --run R`` and ``celebcat eval recognizer --run R``:

1. :func:`models.store.load_recognizer`: the run's best checkpoint -> backbone (and its
   loss, whose classifier gives closed-set scores), in eval mode.
2. :func:`embed_snapshot`: every image of the run's snapshot that has a split, cropped
   as in training (the run's ``source`` and ``size``, no augmentation), embedded in
   batches and written to the catalog's ``embeddings`` table, L2-normalised.
3. :func:`evaluate_recognizer` (:mod:`models.recognition.metrics` does the maths):

   - split ``test`` (images of training identities never trained on): closed-set
     top-1 / top-5 from the classifier (for triplet runs, and as ``top1_centre`` for
     every run, from the nearest class centre of the training embeddings),
     verification over all pairs (AUC, EER, TPR at FPR 1e-1 / 1e-2 / 1e-3), and the
     reference's triplet accuracy (seeded random triplets);
   - split ``open_set`` (the held-out ``query`` and ``distractor`` identities): the
     reference's open-set verification, TPR and threshold at FPR 0.5, 0.2, 0.1, 0.05,
     0.01, 0.001, and IJB-C style identification (TPIR at FPIR 0.1, 0.01).

   Written to ``metrics`` at the checkpoint's epoch. ``by=("Eyeglasses", ...)``
   repeats each figure over the images of each attribute group (split
   ``test:Eyeglasses=True``, ...; a group's pairs use only its own images).

The thresholds stored here are what ``identify`` uses to call a face "unknown": each
is explained by the FPR it was measured at.

Under torchrun (:mod:`models.distributed`) each rank embeds a contiguous share of the
images; the embeddings are gathered and rank 0 makes the single write (embeddings,
metrics, plots). Every rank returns the same result.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from catalog import results, snapshots
from catalog.datasets import FaceDataset
from catalog.db import connect
from catalog.formats import SPLITS
from catalog.metric_names import MetricName, at_fpr
from catalog.reports import group_label
from models import distributed, store
from models.env import Env
from models.recognition.metrics import (
    IDENTIFICATION_FPIRS,
    OPEN_SET_FPRS,
    VERIFICATION_FPRS,
    closed_set_accuracy,
    open_set_identification,
    open_set_verification,
    topk_accuracy,
    triplet_accuracy,
    verification,
)
from models.recognition.recognizer import Recognizer, embed_batches

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)

#: The splits embedded: every one a snapshot gives an image ('unused' images are not).
EMBED_SPLITS = SPLITS


@dataclass
class Embedded:
    """A snapshot's embeddings under one run, sorted by image id."""

    run_id: str
    snapshot: str
    source: str  # the crops embedded (the cache source, or 'bbox')
    image_id: np.ndarray  # (N,) str
    identity: np.ndarray  # (N,) int64
    label: np.ndarray  # (N,) int64, -1 for held-out identities
    split: np.ndarray  # (N,) str
    embeddings: np.ndarray  # (N, D) float32, L2-normalised
    logits: np.ndarray | None  # (N, C) class scores of the run's classifier; None: triplet
    skipped: tuple = ()
    seconds: float = 0.0

    def where(self, split: str) -> np.ndarray:
        return self.split == split


def embed_snapshot(
    recognizer: Recognizer,
    snapshot: str | None = None,
    db: str | os.PathLike[str] | None = None,
    *,
    batch_size: int = 128,
    workers: int = 0,
    skip_bad: bool = False,
    write: bool = True,
    progress: ProgressFn | None = None,
) -> Embedded:
    """Embed every image with a split in ``snapshot`` (default: the run's) and, with
    ``write``, store the embeddings in the catalog (overwriting the run's earlier ones
    of the same images). Under torchrun each rank embeds its share (on the GPU of
    its local rank where the recognizer is on CUDA) and rank 0 writes them all;
    ``progress`` is rank 0's, over its share."""
    with distributed.session():
        return _embed(
            recognizer,
            snapshot,
            db,
            batch_size=batch_size,
            workers=workers,
            skip_bad=skip_bad,
            write=write,
            progress=progress if distributed.is_main() else None,
        )


def _embed(
    recognizer: Recognizer,
    snapshot: str | None,
    db: str | os.PathLike[str] | None,
    *,
    batch_size: int,
    workers: int,
    skip_bad: bool,
    write: bool,
    progress: ProgressFn | None,
) -> Embedded:
    start = time.perf_counter()
    config = recognizer.config
    snapshot = snapshot or config.snapshot
    if not snapshot:
        raise ValueError(
            f"Run {recognizer.run_id} is a pretrained model, trained on no snapshot of this "
            "catalog: name the snapshot to embed (--snapshot S)."
        )
    ds = FaceDataset(
        db, snapshot, "all", config.source, config.size, image_dtype="uint8", skip_bad=skip_bad
    )
    keep = np.isin(ds.splits, EMBED_SPLITS)
    subset = torch.utils.data.Subset(ds, np.flatnonzero(keep).tolist())
    loader = DataLoader(distributed.shard(subset), batch_size=batch_size, num_workers=workers)
    batches = _counted(loader, progress, "embed")
    if isinstance(recognizer, Recognizer):
        device = next(recognizer.model.parameters()).device
        if distributed.active() and device.type == "cuda":  # one GPU a process
            device = torch.device(distributed.device("cuda"))
            recognizer.model.to(device)
            recognizer.loss.to(device)
        found = embed_batches(recognizer.model, batches, Env(device), recognizer.classifier)
    else:  # a pretrained recognizer (models.pretrained): crops in, embeddings out
        found = _embed_crops(recognizer, batches, batch_size)
    emb, _, logits = distributed.gather_rows(*found)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    source = ds.cache.source if ds.cache is not None else config.source
    out = Embedded(
        recognizer.run_id,
        snapshot,
        source,
        ds.image_ids[keep],
        ds.identities[keep],
        ds.labels[keep],
        ds.splits[keep],
        emb.astype(np.float32),
        logits,
        tuple(ds.skipped),
    )
    if write:
        distributed.on_main(
            lambda: results.write_embeddings(
                db, recognizer.run_id, list(out.image_id), out.embeddings, source
            )
        )
    out.seconds = time.perf_counter() - start
    return out


def _embed_crops(
    recognizer: Any, batches: Any, batch_size: int
) -> tuple[np.ndarray, np.ndarray, None]:
    """:func:`embed_batches` for a recognizer that is not a torch module: its ``embed``
    on each batch's uint8 crops (B, 3, S, S), no class scores."""
    chunks, labels = [], []
    for batch in batches:
        crops = np.ascontiguousarray(batch["image"].numpy().transpose(0, 2, 3, 1))
        chunks.append(recognizer.embed(crops, batch_size))
        labels.append(batch["label"].numpy())
    dim = int(recognizer.config.embedding_dim)
    emb = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    return emb, np.concatenate(labels) if labels else np.zeros(0, np.int64), None


def _counted(loader: DataLoader, progress: ProgressFn | None, stage: str) -> Any:
    if progress is None:
        return loader
    total = len(loader)

    def batches() -> Any:
        progress(stage, 0, total)
        for done, batch in enumerate(loader, start=1):
            yield batch
            progress(stage, done, total)

    return batches()


@dataclass
class RecognitionEval:
    """What :func:`evaluate_recognizer` measured, also written to ``metrics``."""

    run_id: str
    epoch: int  # the checkpoint's epoch as training printed it (1 the first; 0 pretrained)
    metrics: dict[str, dict[str, float]]  # split -> name -> value
    embedded: Embedded = field(repr=False)
    plots: list[Path] = field(default_factory=list)


def closed_set_metrics(e: Embedded, mask: np.ndarray | None = None) -> dict[str, float]:
    """Test-split figures of ``e`` (restricted to ``mask`` where given)."""
    test = e.where("test") if mask is None else e.where("test") & mask
    train = e.where("train")
    out: dict[str, float] = {}
    labels = e.label[test]
    if len(labels) == 0:
        return out
    if e.logits is not None:
        top = topk_accuracy(e.logits[test], labels, ks=(1, 5))
        out["top1"], out["top5"] = top[1], top[5]
    centre = closed_set_accuracy(
        e.embeddings[test], labels, e.embeddings[train], e.label[train], ks=(1, 5)
    )
    out["top1_centre"], out["top5_centre"] = centre[1], centre[5]
    if e.logits is None:  # no classifier: the centre figures are the closed-set ones
        out["top1"], out["top5"] = centre[1], centre[5]
    if (
        len(np.unique(labels)) >= 2
        and np.bincount(np.unique(labels, return_inverse=True)[1]).max() >= 2
    ):
        v = verification(e.embeddings[test], labels, VERIFICATION_FPRS)
        out["verif_auc"], out["verif_eer"] = v.auc, v.eer
        for f in VERIFICATION_FPRS:
            out[at_fpr("verif_tpr", f)] = v.tpr(f)
        out["triplet_acc"] = triplet_accuracy(e.embeddings[test], labels=labels, seed=0)
    return out


def open_set_metrics(e: Embedded, mask: np.ndarray | None = None) -> dict[str, float]:
    """The reference's open-set protocol and IJB-C identification on query/distractor."""
    query = e.where("query") if mask is None else e.where("query") & mask
    distractor = e.where("distractor") if mask is None else e.where("distractor") & mask
    out: dict[str, float] = {}
    q_ids = e.identity[query]
    if not distractor.any() or len(q_ids) < 2 or len(np.unique(q_ids)) == len(q_ids):
        return out  # no positives or no distractors: nothing to measure
    v = open_set_verification(e.embeddings[query], q_ids, e.embeddings[distractor], OPEN_SET_FPRS)
    out["auc"], out["eer"] = v.auc, v.eer
    for f in OPEN_SET_FPRS:
        out[at_fpr("tpr", f)] = v.tpr(f)
        out[at_fpr("threshold", f)] = v.threshold(f)
    ident = open_set_identification(
        e.embeddings[query], q_ids, e.embeddings[distractor], IDENTIFICATION_FPIRS
    )
    out["rank1"] = ident.rank1
    for f in IDENTIFICATION_FPIRS:
        out[str(MetricName("tpir", "fpir", f))] = ident.tpir(f)
        out[str(MetricName("tpir_threshold", "fpir", f))] = ident.threshold(f)
    return out


def _check_attributes(by: Sequence[str]) -> None:
    """ValueError naming the unknown attributes in ``by``, with the ones likely meant."""
    from catalog.formats import ATTRIBUTES
    from catalog.names import suggest

    unknown = [a for a in by if a not in ATTRIBUTES]
    if unknown:
        named = ", ".join(
            f"{a} ({near.removeprefix('; ')})" if (near := suggest(a, ATTRIBUTES)) else a
            for a in unknown
        )
        raise ValueError(f"Unknown attribute(s) {named}; see `celebcat schema attributes`")


def _groups(
    db: str | os.PathLike[str] | None, image_ids: np.ndarray, by: Sequence[str]
) -> dict[str, np.ndarray]:
    """{"Eyeglasses=True,Male=False": mask over image_ids, ...} from the attributes
    table (labels: catalog.reports.group_label)."""
    _check_attributes(by)
    cols = ", ".join(f'"{a}"' for a in by)
    con = connect(db, read_only=True)
    try:
        rows = con.execute(f"SELECT image_id, {cols} FROM attributes").fetchall()
    finally:
        con.close()
    value = {r[0]: r[1:] for r in rows}
    keys = np.array(
        [group_label(by, value[i]) if i in value else "no attributes" for i in image_ids]
    )
    return {k: keys == k for k in sorted(set(keys.tolist()))}


def evaluate_recognizer(
    run_id_or_checkpoint: str | os.PathLike[str],
    db: str | os.PathLike[str] | None = None,
    *,
    by: Sequence[str] = (),
    plots: str | os.PathLike[str] | None = None,
    batch_size: int = 128,
    workers: int = 0,
    skip_bad: bool = False,
    progress: ProgressFn | None = None,
    snapshot: str | None = None,
    device: str = "auto",
) -> RecognitionEval:
    """Embed the run's snapshot (writing the embeddings), measure every protocol, write
    the figures to ``metrics`` at the checkpoint's epoch, and (``plots``: a folder)
    draw ROC, cosine histograms and a t-SNE as PNG.

    ``snapshot``: a pretrained run (models.pretrained), trained on none of the
    catalog's, is measured on this one (every identity is new to it, so its figures
    read like the open-set ones; a second snapshot's figures replace the first's). A
    trained run is measured on its own snapshot only."""
    _check_attributes(by)  # before the model is loaded and the snapshot embedded
    recognizer = store.load_recognizer(run_id_or_checkpoint, db, distributed.device(device))
    trained_on = recognizer.config.snapshot
    if trained_on and snapshot not in (None, trained_on):
        raise ValueError(
            f"Run {recognizer.run_id} trained on snapshot {trained_on!r}: its test and "
            f"held-out splits are that snapshot's, so it is measured there, not on {snapshot!r}"
        )
    if not trained_on and snapshot is None:
        raise ValueError(
            f"Run {recognizer.run_id} is a pretrained model, trained on no snapshot of this "
            "catalog: name the one to measure it on (--snapshot S)."
        )
    snapshot = snapshot or trained_on
    snap = snapshots.read_images(db, snapshot, files=False, boxes=False)
    if trained_on and snap.hash != recognizer.snapshot_hash:
        raise ValueError(
            f"Snapshot {recognizer.config.snapshot!r} was recreated since run "
            f"{recognizer.run_id} trained on it (hash {snap.hash[:12]} != "
            f"{recognizer.snapshot_hash[:12]}): its test split is not the run's."
        )
    with distributed.session():  # torchrun: every rank embeds, rank 0 measures and writes
        embedded = embed_snapshot(
            recognizer,
            snapshot,
            db=db,
            batch_size=batch_size,
            workers=workers,
            skip_bad=skip_bad,
            progress=progress,
        )
        metrics, drawn = distributed.on_main(lambda: _measure(embedded, db, recognizer, by, plots))
    return RecognitionEval(recognizer.run_id, recognizer.epoch + 1, metrics, embedded, drawn)


def _measure(
    embedded: Embedded,
    db: str | os.PathLike[str] | None,
    recognizer: Recognizer,
    by: Sequence[str],
    plots: str | os.PathLike[str] | None,
) -> tuple[dict[str, dict[str, float]], list[Path]]:
    """Every protocol's figures, written to ``metrics``; the plots drawn, if asked."""
    metrics = {"test": closed_set_metrics(embedded), "open_set": open_set_metrics(embedded)}
    if by:
        for key, mask in _groups(db, embedded.image_id, by).items():
            metrics[f"test:{key}"] = closed_set_metrics(embedded, mask)
            metrics[f"open_set:{key}"] = open_set_metrics(embedded, mask)
    for split, values in metrics.items():
        values = {k: v for k, v in values.items() if not math.isnan(v)}
        if values:
            results.log_metrics(db, recognizer.run_id, recognizer.epoch + 1, split, values)
    if plots is None:
        return metrics, []
    from models.recognition.plots import draw_all

    return metrics, draw_all(embedded, Path(plots))


__all__ = [
    "EMBED_SPLITS",
    "Embedded",
    "RecognitionEval",
    "Recognizer",
    "closed_set_metrics",
    "embed_snapshot",
    "evaluate_recognizer",
    "open_set_metrics",
]
