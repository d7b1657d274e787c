"""Read access to one crop cache: :class:`CropCache` and :class:`CacheError`.

The read side of :mod:`catalog.cache`: it imports nothing else of the package (nor
the catalog), and what a Dataset holds in its DataLoader workers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from catalog.errors import CatalogError


class CacheError(CatalogError, RuntimeError):
    """A cache cannot be built or read; the message says which image or file, and why."""


class CropCache:
    """Read access to one crop cache; pickles cheaply, opens its file lazily.

    Holds the image ids (sorted), their rows and matrices (a few MB for CelebA's
    25,000-image selection), and the file's path. The memory map is opened on the
    first :meth:`crop` in each process and never pickled, so each DataLoader worker
    maps the file itself; the pages are shared through the OS page cache.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        size: int,
        source: str,
        image_ids: np.ndarray,
        rows: np.ndarray,
        matrices: np.ndarray,
        hash: str = "",
        skipped: Sequence[Any] = (),
    ) -> None:
        self.path = Path(path)
        self.size = int(size)
        self.source = source
        self.hash = hash
        #: Images of the snapshot the cache was built without (``--skip-bad``), as
        #: :class:`catalog.snapshots.BadImage`: image_id, path, reason, detail.
        self.skipped = tuple(skipped)
        order = np.argsort(np.asarray(image_ids, dtype=str), kind="stable")
        self._ids = np.asarray(image_ids, dtype=str)[order]  # sorted: binary search
        self._rows = np.asarray(rows, dtype=np.int64)[order]
        self._matrices = np.asarray(matrices, dtype=np.float64).reshape(-1, 3, 3)[order]
        self._array: np.ndarray | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, image_id: object) -> bool:
        return isinstance(image_id, str) and self._find(image_id) is not None

    def __repr__(self) -> str:
        return (
            f"CropCache({str(self.path)!r}, size={self.size}, source={self.source!r}, "
            f"n_images={len(self)})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"] = None  # a memory map is per process; the worker opens its own
        state["_pid"] = None
        return state

    @property
    def image_ids(self) -> np.ndarray:
        """(N,) str: the cached images, sorted."""
        return self._ids

    @property
    def matrices(self) -> np.ndarray:
        """(N, 3, 3) float64: original pixels -> crop pixels, in :attr:`image_ids` order
        (read-only; no pixels are read)."""
        view = self._matrices.view()
        view.flags.writeable = False
        return view

    def crop(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (size, size, 3) RGB crop and the 3x3 float64 matrix original in-the-wild
        pixels -> crop pixels (pixel-index coordinates, see :mod:`catalog.transforms`).

        Both are copies the caller may change. KeyError for an image not in the cache.
        """
        i = self._find(image_id)
        if i is None:
            raise KeyError(f"{image_id!r} is not in the crop cache {self.path.name}")
        return np.array(self._open()[self._rows[i]]), self._matrices[i].copy()

    def _find(self, image_id: str) -> int | None:
        i = int(np.searchsorted(self._ids, image_id))
        return i if i < len(self._ids) and self._ids[i] == image_id else None

    def _open(self) -> np.ndarray:
        # Reopened after a fork too: a map inherited from the parent would work, but
        # the pid check keeps "one map per process" true whatever the start method.
        if self._array is None or self._pid != os.getpid():
            try:
                array = np.load(self.path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise CacheError(
                    f"Crop cache {self.path} cannot be read ({e}); rebuild it with "
                    "`celebcat cache build`."
                ) from e
            expected = (int(self._rows.max()) + 1 if len(self) else 0, self.size, self.size, 3)
            if (
                array.dtype != np.uint8
                or array.ndim != 4
                or array.shape[0] < expected[0]
                or (array.shape[1:] != expected[1:])
            ):
                raise CacheError(
                    f"Crop cache {self.path} holds {array.dtype} {array.shape}, expected "
                    f"uint8 {expected}; rebuild it with `celebcat cache build`."
                )
            self._array, self._pid = array, os.getpid()
        return self._array
