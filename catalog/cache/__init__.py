"""``celebcat cache``: every face crop of a snapshot decoded once, memory-mapped after.

Training reads the same crops every epoch. Decoding a 500 px JPEG and resampling the
face box takes most of a data-loader worker's time, and it gives the same pixels
every epoch; only the augmentation differs. A crop cache does that work once per
(snapshot, crop size, crop source) and stores the result as one uint8 array, which
Datasets (``catalog.datasets``) read through ``np.load(mmap_mode="r")`` instead of
decoding when :func:`find_cache` finds one.

What a cache holds, for source ``"bbox"`` (built here; ``"aligned/<template>/<landmarks
run id or truth>"`` crops are computed by the alignment step and stored with
:func:`store_crops`, same layout, no face boxes, matrices original -> aligned crop; a
snapshot may have several alignments at one size, and ``find_cache(..., "aligned")``
gives the newest):

- pixels: row ``r`` of an ``(N, size, size, 3)`` uint8 RGB array is the snapshot's
  face box (``snapshot_images.x_1 .. y_2``, exclusive ends, in-the-wild pixels) mapped
  onto ``size`` x ``size`` by :func:`catalog.transforms.box_to_square`, resampled
  once with :func:`catalog.transforms.warp` (its default, bilinear). Large JPEGs are
  decoded at reduced scale (:func:`catalog.transforms.open_for_crop`) and the decode
  matrix is composed into the warp, so the pixels are byte for byte what a Dataset
  computes without the cache for the same box and size and no augmentation.
- matrices: per image the 3x3 affine ``box_to_square(box, size)`` from original
  (in-the-wild) pixel-index coordinates to crop pixel-index coordinates, so landmarks
  and predictions move between the two frames exactly.

Storage. The array is a ``.npy`` file (``np.lib.format.open_memmap``: a header that
states shape and dtype, then the raw rows) in a folder next to the catalog::

    <catalog folder>/<catalog stem>.crops/<snapshot>-<hash[:12]>-<source>-<size>.npy

(``/`` in the source becomes ``+``, which a source cannot hold otherwise).

The index is in the catalog, in two tables this module owns:

- ``crop_caches``: one row per cache, keyed by ``(hash, source, size)``: the snapshot
  *hash*, not its name, so a changed snapshot (a new hash) never finds stale crops;
  ``path`` is relative to the catalog's folder, so the two move together.
- ``crop_cache_rows``: one row per image: its ``row`` in the array, the face box the
  crop was cut from, the matrix (``m00 .. m12``, the top two rows of the 3x3) and the
  image file's size at the time.

The snapshot hash covers each image's face box, so a new ``box_shrink`` gives a new
hash. The box of every row is stored as well and compared with the snapshot's, as a
second guard: a cache whose boxes differ is not used (:func:`find_cache`) and is
rebuilt (:func:`build_cache`). The hash does not cover pixels: an image file replaced
under its name is caught, after a re-ingest scans it again, by its size differing from
the one recorded, for box and aligned crops alike (a replacement of exactly the same
size is not).

Atomicity. The array is written under a hidden temporary name in the crops folder
and renamed into place (``os.replace``) only when complete; the index rows are
inserted after that, in one transaction. An interrupted build therefore leaves no
index rows pointing at a half-written file, and at worst a temporary file, which
the next build removes. Files are not fsynced: this protects against an interrupted
process, not a power cut.

The package: :mod:`~catalog.cache.reader` (:class:`CropCache`, read access),
:mod:`~catalog.cache.index` (the index tables, finding, listing, dropping, staleness)
and :mod:`~catalog.cache.build` (planning, threaded decoding, the atomic writer);
imports go one way, build -> index -> reader.
"""

from __future__ import annotations

from catalog.cache.build import build_cache, render_crop, store_crops
from catalog.cache.index import (
    SOURCES,
    STORED_SOURCES,
    CacheInfo,
    drop_cache,
    find_cache,
    list_caches,
)
from catalog.cache.reader import CacheError, CropCache

__all__ = [
    "SOURCES",
    "STORED_SOURCES",
    "CacheError",
    "CacheInfo",
    "CropCache",
    "build_cache",
    "drop_cache",
    "find_cache",
    "list_caches",
    "render_crop",
    "store_crops",
]
