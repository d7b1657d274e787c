"""celeba-catalog data layer: CelebA files -> DuckDB tables -> SQL views -> Datasets.

Nothing here imports the ``models`` package, and only the torch-facing modules
(``catalog.datasets``, and ``catalog.transforms`` when asked for tensors) import
torch; importing ``catalog`` does no work (no connections, no file access).

A notebook's first two calls::

    import catalog
    frame = catalog.snapshot_frame("base-v1", "celeba.duckdb")       # pandas, one row an image
    ids, vectors = catalog.embeddings(RUN, "celeba.duckdb", snapshot="base-v1", split="test")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from catalog.db import DbArg

__version__ = "0.1.0"


def snapshot_frame(
    snapshot: str, db: DbArg = None, *, split: str | None = None, relative_paths: bool = False
) -> pd.DataFrame:
    """A snapshot as a DataFrame: :func:`catalog.frames.snapshot_frame`."""
    from catalog import frames

    return frames.snapshot_frame(snapshot, db, split=split, relative_paths=relative_paths)


def embeddings(
    run_id: str, db: DbArg = None, *, snapshot: str | None = None, split: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A run's embeddings as (ids, vectors): :func:`catalog.frames.embeddings`."""
    from catalog import frames

    return frames.embeddings(run_id, db, snapshot=snapshot, split=split)


__all__ = ["__version__", "embeddings", "snapshot_frame"]
