"""celeba-catalog data layer: CelebA files -> DuckDB tables -> SQL views -> Datasets.

Nothing here imports the ``models`` package, and only the torch-facing modules
(``catalog.datasets``, and ``catalog.transforms`` when asked for tensors) import
torch; importing ``catalog`` does no work (no connections, no file access).
"""

__version__ = "0.1.0"
