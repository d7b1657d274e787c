"""celeba-catalog data layer: CelebA files -> DuckDB tables -> SQL views -> Datasets.

Nothing here imports torch or the ``models`` package; importing ``catalog`` does no
work (no connections, no file access).
"""

__version__ = "0.1.0"
