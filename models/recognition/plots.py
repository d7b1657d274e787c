"""PNG plots of a recognizer's embeddings: ROC curves, cosine histograms, t-SNE.

Needs the ``plots`` extra (matplotlib; scikit-learn for t-SNE). Figures use the Agg
backend: files only, no display.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.recognition.metrics import open_set_scores, pair_scores, roc_curve

if TYPE_CHECKING:
    from models.recognition.evaluate import Embedded

#: t-SNE shows at most this many identities (more colours than that are unreadable).
TSNE_IDENTITIES = 50


def _pyplot():  # noqa: ANN202 - matplotlib is optional
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "Plots need matplotlib: pip install -e '.[plots]' (or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_all(e: Embedded, out: Path) -> list[Path]:
    """ROC, cosine histograms and t-SNE of ``e`` into ``out`` (created); the files."""
    out.mkdir(parents=True, exist_ok=True)
    prefix = out / e.run_id
    return [
        draw_roc(e, Path(f"{prefix}-roc.png")),
        draw_histograms(e, Path(f"{prefix}-cosines.png")),
        draw_tsne(e, Path(f"{prefix}-tsne.png")),
    ]


def _curves(e: Embedded) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (same-identity cosines, different-identity cosines)} of each protocol."""
    curves = {}
    test = e.where("test")
    if test.sum() > 1:
        curves["test, all pairs"] = pair_scores(e.embeddings[test], e.label[test])
    query, distractor = e.where("query"), e.where("distractor")
    if query.sum() > 1 and distractor.any():
        curves["open set (query / distractor)"] = open_set_scores(
            e.embeddings[query], e.identity[query], e.embeddings[distractor]
        )
    return curves


def draw_roc(e: Embedded, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, (same, different) in _curves(e).items():
        if len(same) and len(different):
            roc = roc_curve(same, different)
            ax.plot(np.maximum(roc.fpr, 1e-5), roc.tpr, label=name)
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC, run {e.run_id}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_histograms(e: Embedded, path: Path) -> Path:
    plt = _pyplot()
    curves = _curves(e)
    fig, axes = plt.subplots(
        1, max(len(curves), 1), figsize=(6 * max(len(curves), 1), 4), squeeze=False
    )
    bins = np.linspace(-1, 1, 81)
    for ax, (name, (same, different)) in zip(axes[0], curves.items(), strict=False):
        ax.hist(different, bins=bins, density=True, alpha=0.6, label="different identity")
        ax.hist(same, bins=bins, density=True, alpha=0.6, label="same identity")
        ax.set_title(name)
        ax.set_xlabel("cosine similarity")
        ax.legend()
    fig.suptitle(f"Cosine similarities, run {e.run_id}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_tsne(e: Embedded, path: Path, identities: int = TSNE_IDENTITIES, seed: int = 0) -> Path:
    """t-SNE of the test, val and query images of up to ``identities`` identities (the
    first by id), a colour each."""
    plt = _pyplot()
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise ImportError("The t-SNE plot needs scikit-learn: pip install -e '.[plots]'") from None
    shown = np.isin(e.split, ("test", "val", "query"))
    ids = np.unique(e.identity[shown])[:identities]
    keep = shown & np.isin(e.identity, ids)
    fig, ax = plt.subplots(figsize=(7, 6))
    if keep.sum() >= 5:
        points = TSNE(
            n_components=2, perplexity=min(30, (keep.sum() - 1) / 3), random_state=seed, init="pca"
        ).fit_transform(e.embeddings[keep])
        colour = np.searchsorted(ids, e.identity[keep])
        ax.scatter(points[:, 0], points[:, 1], c=colour, cmap="tab20", s=12)
    ax.set_title(f"t-SNE of {len(ids)} identities ({int(keep.sum())} images), run {e.run_id}")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
