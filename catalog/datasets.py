"""torch Datasets over a snapshot: face-box crops for landmarks and for recognition.

Each Dataset reads its snapshot's rows once, in ``__init__`` (one read-only
connection, or the caller's open one, closed or left alone before ``__init__``
returns), and keeps them as numpy arrays: no connection travels to DataLoader
workers, and fixed-width numpy string arrays instead of lists of Python strings keep
forked workers from copying the rows page by page as they touch refcounts
(pytorch/pytorch#13246).

``__getitem__`` loads one image and warps it once. The geometry is one 3x3 matrix
per sample (see :mod:`catalog.transforms`): the face box onto the output square,
then the random augmentation, applied to the pixels and the landmarks alike. Pixels
come from the snapshot's crop cache when one of the Dataset's size and source exists
(``celebcat cache``, :mod:`catalog.cache`), else from the in-the-wild image, decoded
at reduced scale where the crop allows (:func:`catalog.transforms.open_for_crop`).
Without augmentation the two give the same tensors. With it they differ slightly
(the cached crop is resampled a second time), and where a rotation, zoom-out or
shift reaches past the face box a cached crop shows black, a decoded one the image
around the box.

Random augmentation is reproducible: sample ``index`` of epoch ``e`` draws from
``numpy.random.default_rng([seed, e, index])``, whichever worker loads it and in
whatever order, so ``num_workers`` never changes a batch, while ``set_epoch(e)``
gives every epoch new draws. ``set_epoch`` acts on the Dataset object, so call it
before each epoch's DataLoader iterator is created, with ``persistent_workers=False``
(persistent workers keep the copy they were started with).

Your own transforms plug in after that pipeline: ``transform`` takes the sample's
``image`` tensor, (3, S, S) float32 normalised or uint8 levels per ``image_dtype``,
and returns the new one, so torchvision v2 transforms (which take tensors) fit as
they are; ``target_transform`` takes the target (FaceDataset: ``label``;
LandmarkDataset: ``landmarks``). Neither library is needed here. Both run with
torch's global generator seeded from ``(seed, epoch, index)`` (and restored after),
so random torchvision v2 transforms are reproducible like ``augment``; randomness
they draw elsewhere (Python's ``random``, numpy's generators, as albumentations
does) is theirs. For albumentations, which takes numpy (H, W, C) uint8, use
``image_dtype="uint8"`` and convert around it::

    def albu(image: torch.Tensor) -> torch.Tensor:  # a module-level function: picklable
        out = pipeline(image=image.permute(1, 2, 0).numpy())["image"]
        return torch.from_numpy(out).permute(2, 0, 1)

``attributes=True`` (all 40, in the file's order) or a list of CelebA attribute
names adds ``sample["attributes"]``: float32 0/1 (the file's -1/1), read with the rows
in ``__init__`` and kept as a numpy array.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from catalog import cache as crop_cache
from catalog import snapshots
from catalog import transforms as T
from catalog.crop_source import source_kind
from catalog.db import connect, has_table
from catalog.errors import CatalogError
from catalog.formats import ATTRIBUTES

if TYPE_CHECKING:
    import duckdb

__all__ = ["DatasetError", "FaceDataset", "LandmarkDataset", "PKSampler"]

SOURCES: tuple[str, ...] = ("bbox", "aligned")
#: "float32": normalised images, ready for a model. "uint8": the RGB levels, a quarter
#: of the bytes through DataLoader workers and host-to-device copies; normalise each
#: batch on the device with catalog.transforms.normalize_batch.
IMAGE_DTYPES: tuple[str, ...] = ("float32", "uint8")
#: The split name for every image of the snapshot (and ``unused``: selected images in
#: no split, as ``celebcat snapshot show`` calls them).
ALL, UNUSED = snapshots.ALL, snapshots.UNUSED


class DatasetError(CatalogError, ValueError):
    """The snapshot cannot feed this Dataset (no face boxes, no landmarks, no images)."""


class _ImageError(snapshots.SnapshotImageError, DatasetError):
    """Images of the snapshot cannot be read: a DatasetError and a SnapshotImageError."""


def _in_cache(
    rows: snapshots.SnapshotImages, cache: crop_cache.CropCache
) -> snapshots.SnapshotImages:
    """``rows`` less the images the cache was built without (recorded as skipped)."""
    held = np.isin(rows.image_id, cache.image_ids)
    if held.all():
        return rows
    left_out = {b.image_id: b for b in cache.skipped}
    unknown = [i for i in rows.image_id[~held] if i not in left_out]
    if unknown:
        raise DatasetError(
            f"The crop cache {cache.path.name} lacks {len(unknown)} images of snapshot "
            f"{rows.snapshot!r} (first: {', '.join(unknown[:3])}); drop it (`celebcat cache "
            "drop`) and build it again."
        )
    return rows.subset(held, [left_out[i] for i in rows.image_id[~held]])


def _attribute_names(attributes: bool | str | Sequence[str]) -> tuple[str, ...]:
    """The attributes asked for, checked: True -> all 40 in file order, False -> none."""
    if attributes is True:
        return ATTRIBUTES
    if attributes is False or attributes is None:
        return ()
    names = (attributes,) if isinstance(attributes, str) else tuple(attributes)
    if not names:
        raise ValueError("attributes=[]: name at least one attribute, or pass True for all 40")
    for name in names:
        if name not in ATTRIBUTES:
            near = difflib.get_close_matches(str(name), ATTRIBUTES, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise ValueError(
                f"Unknown attribute {name!r}{hint} (CelebA's 40 attributes: "
                "catalog.formats.ATTRIBUTES)"
            )
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ValueError(f"attributes named twice: {', '.join(doubled)}")
    return names


def _read_attributes(
    con: duckdb.DuckDBPyConnection, snapshot: str, names: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """(image ids, (M, K) int8 values 1/0, -1 where absent) for the snapshot's images."""
    if not has_table(con, "attributes"):
        raise DatasetError(
            "The catalog has no attributes table: ingest the data folder with its "
            "list_attr_celeba file (`celebcat ingest DIR`), or leave attributes out."
        )
    columns = ", ".join(f'coalesce(a."{n}"::TINYINT, -1)::TINYINT AS "{n}"' for n in names)
    got = con.execute(
        f"SELECT s.image_id, {columns} FROM snapshot_images AS s "
        "LEFT JOIN attributes AS a USING (image_id) WHERE s.snapshot = ?",
        [snapshot],
    ).fetchnumpy()
    ids = np.asarray(got["image_id"], dtype=str)
    values = np.stack([np.asarray(got[n], dtype=np.int8) for n in names], axis=1)
    return ids, values.reshape(len(ids), len(names))


class _CropDataset(Dataset):
    """Rows of one snapshot split and the pixel path shared by the Datasets below."""

    def __init__(
        self,
        catalog: str | os.PathLike[str] | duckdb.DuckDBPyConnection | None,
        snapshot: str,
        split: str,
        size: int,
        source: str,
        augment: T.Augment | None,
        seed: int,
        landmarks: bool,
        image_dtype: str = "float32",
        skip_bad: bool = False,
        *,
        transform: Callable[[torch.Tensor], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        attributes: bool | str | Sequence[str] = False,
    ) -> None:
        names = _attribute_names(attributes)
        if image_dtype not in IMAGE_DTYPES:
            raise ValueError(f"image_dtype {image_dtype!r}: use one of {', '.join(IMAGE_DTYPES)}")
        kind = source_kind(source)
        if kind not in SOURCES or (kind == "bbox" and source != "bbox"):
            raise ValueError(
                f"source {source!r}: use one of {', '.join(SOURCES)} (or aligned/<template>/"
                "<run id or truth> for one alignment of several)"
            )
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        own = catalog is None or isinstance(catalog, str | os.PathLike)
        con = connect(catalog, read_only=True) if own else catalog  # type: ignore[arg-type]
        try:
            snap_hash = snapshots.get(con, snapshot).hash  # unknown: SnapshotError
            # Aligned crops need no face box (their matrices come with the cache); look
            # for the cache first so that the error says what is really missing.
            cache = crop_cache.find_cache(con, snap_hash, size, source, snapshot=snapshot)
            if kind == "aligned" and cache is None:
                raise FileNotFoundError(
                    f"No {source} crops for snapshot {snapshot!r} (hash {snap_hash[:12]}) "
                    f"at size {size}: run the alignment step (`celebcat align --snapshot "
                    f"{snapshot} ...`) first (`celebcat cache list` shows what exists); use "
                    "source='bbox' meanwhile."
                )
            rows = snapshots.read_images(
                con,
                snapshot,
                split,
                landmarks=landmarks,
                boxes=source == "bbox",
                files=cache is None,
                skip_bad=skip_bad,
                error=_ImageError,
            )
            table = _read_attributes(con, snapshot, names) if names else None
        finally:
            if own:
                con.close()
        if landmarks:
            lacking = rows.image_id[~np.isfinite(rows.landmarks).all(axis=(1, 2))]
            if len(lacking):
                raise DatasetError(
                    f"{len(lacking)} of the {len(rows)} images of snapshot {snapshot!r} "
                    f"(split {split}) have no in-the-wild landmarks (first: "
                    f"{', '.join(lacking[:3])}). Ingest the data folder with a "
                    "list_landmarks_celeba file that covers them."
                )
        if cache is not None:
            rows = _in_cache(rows, cache)
        self._attributes: np.ndarray | None = None
        if table is not None:
            ids, values = table
            order = np.argsort(ids)
            at = order[np.searchsorted(ids, rows.image_id, sorter=order)]
            values = values[at]
            lacking = rows.image_id[(values < 0).any(axis=1)]
            if len(lacking):
                raise DatasetError(
                    f"{len(lacking)} of the {len(rows)} images of snapshot {snapshot!r} "
                    f"(split {split}) have no value for some of the attributes asked for "
                    f"(first: {', '.join(lacking[:3])}). Ingest the data folder with a "
                    "list_attr_celeba file that covers them, or leave attributes out."
                )
            self._attributes = values.astype(bool)
        self._attribute_names = names
        self.transform, self.target_transform = transform, target_transform
        self._rows = rows
        self.snapshot, self.snapshot_hash, self.split = snapshot, snap_hash, split
        self.size, self.source, self.augment, self.seed = size, source, augment, seed
        self.image_dtype = image_dtype
        #: Images of the split left out: unreadable ones with ``skip_bad``, and those the
        #: crop cache read was built without (``celebcat cache build --skip-bad``).
        self.skipped: tuple[snapshots.BadImage, ...] = rows.skipped
        self.epoch = 0
        # The handle only: CropCache maps its file on first use, i.e. in each worker.
        self.cache: crop_cache.CropCache | None = cache

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def image_ids(self) -> np.ndarray:
        """(N,) str: the images, in the Dataset's order (by image_id)."""
        return self._rows.image_id

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) float64: face boxes ``x_1, y_1, x_2, y_2`` (exclusive ends), in-the-wild
        pixels; NaN for aligned crops read from a cache without boxes."""
        return self._rows.box

    @property
    def attribute_names(self) -> tuple[str, ...]:
        """The attributes of ``sample["attributes"]``, in its order; () without them."""
        return self._attribute_names

    @property
    def attribute_values(self) -> np.ndarray | None:
        """(N, K) bool: each image's attributes (K = ``attribute_names``); None without."""
        return self._attributes

    def set_epoch(self, epoch: int) -> None:
        """New augmentation draws for epoch ``epoch`` (reproducible; see the module doc)."""
        self.epoch = int(epoch)

    def _repr_fields(self) -> dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = {"snapshot": self.snapshot, "split": self.split, **self._repr_fields()}
        fields["images"] = len(self)
        if self.image_dtype != "float32":
            fields["image_dtype"] = self.image_dtype
        if self.augment is not None:
            fields["augment"] = self.augment
        if self._attribute_names:
            fields["attributes"] = len(self._attribute_names)
        if self.skipped:
            fields["skipped"] = len(self.skipped)
        body = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        return f"{type(self).__name__}({body})"

    def _finish(self, sample: dict[str, Any], index: int, target: str) -> dict[str, Any]:
        """Adds the attributes and runs the caller's transforms (on ``image`` and on
        ``target``) with torch's generator seeded from (seed, epoch, index)."""
        if self._attributes is not None:
            sample["attributes"] = torch.from_numpy(self._attributes[index].astype(np.float32))
        if self.transform is None and self.target_transform is None:
            return sample
        seed = np.random.SeedSequence([self.seed, self.epoch, index, 1]).generate_state(
            1, np.uint64
        )[0]
        state = torch.get_rng_state()
        try:
            torch.manual_seed(int(seed))
            if self.transform is not None:
                sample["image"] = self.transform(sample["image"])
            if self.target_transform is not None:
                sample[target] = self.target_transform(sample[target])
        finally:
            torch.set_rng_state(state)
        return sample

    def _crop(self, index: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """The output image (uint8 (S, S, 3) RGB), the matrix in-the-wild pixels ->
        output pixels, and whether it flipped."""
        rows, s = self._rows, self.size
        rng = np.random.default_rng([self.seed, self.epoch, index])
        aug, flipped = np.eye(3), False
        if self.augment is not None:
            aug, flipped = T.augment_matrix(s, self.augment, rng)
        if self.cache is not None:
            source, to_source = self.cache.crop(str(rows.image_id[index]))
            n = source.shape[0]
            # bbox: the cached crop is this box at the cache's size; aligned: the cached
            # crop is the output frame itself, at the cache's size.
            base = (
                T.box_to_square(rows.box[index], s)
                if self.source == "bbox"
                else T.box_to_square((0, 0, n, n), s) @ to_source
            )
        else:
            path = str(rows.path[index])
            try:
                source, to_source = T.open_for_crop(path, rows.box[index], s)
            except T.BAD_IMAGE_ERRORS as e:  # changed since the snapshot: one clear line
                image_id = str(rows.image_id[index])
                reason = (str(e).splitlines() or [type(e).__name__])[0].rstrip(".")
                raise _ImageError(
                    f"image {image_id}: decoding {path}: {reason}. " + snapshots.DECODE_ADVICE,
                    [snapshots.BadImage(image_id, path, "image_decode_error", reason)],
                ) from None
            base = T.box_to_square(rows.box[index], s)
        matrix = aug @ base
        on_source = matrix @ T.invert(to_source)
        if (
            self.augment is None
            and np.shape(source)[:2] == (s, s)
            and (np.abs(on_source - np.eye(3)).max() < 1e-9)
        ):
            image = np.asarray(source)  # the cached crop as it is: no resampling
        else:
            image = T.warp(source, on_source, s)
        if self.augment is not None:
            # on the levels, in one saturating pass: a quarter of the bytes of floats
            image = T.jitter_colour_uint8(image, self.augment, rng)
        return image, matrix, flipped

    def _image_tensor(self, image: np.ndarray) -> torch.Tensor:
        return T.to_uint8_tensor(image) if self.image_dtype == "uint8" else T.to_tensor(image)


class LandmarkDataset(_CropDataset):
    """Face-box crops with five landmarks and their heatmaps (stacked-hourglass targets).

    ``catalog`` is a catalog path (None: the default catalog) or an open DuckDB
    connection, which is used and left open. ``split`` is one of the snapshot's splits
    (train, val, test, query, distractor, unused) or ``"all"``. An image whose file
    cannot be read (:func:`catalog.snapshots.read_images`) is refused, naming it, or
    with ``skip_bad`` left out (``skipped`` says which and why); images a crop cache
    was built without (``celebcat cache build --skip-bad``) are left out the same way.

    Each sample is a dict:

    - ``image``: float32 (3, S, S), S = ``input_size``, normalised RGB
      (:func:`catalog.transforms.to_tensor`): the snapshot's face box stretched onto
      the square (:func:`catalog.transforms.box_to_square`), then the random
      augmentation, resampled once; colour jitter after. With ``image_dtype="uint8"``:
      uint8 (3, S, S) RGB levels instead, for
      :func:`catalog.transforms.normalize_batch` on the device.
    - ``landmarks``: float32 (5, 2), (x, y) in input pixels (pixel-index coordinates),
      CelebA's order lefteye, righteye, nose, leftmouth, rightmouth, "left" being the
      viewer's left in the *output* (reordered after a flip). Points may fall outside
      the crop after augmentation.
    - ``heatmaps``: float32 (5, H, H), H = ``heatmap_size``: a Gaussian of peak 1 and
      standard deviation ``sigma`` heatmap pixels at each landmark (heatmap pixels,
      edges of the input onto edges of the map); zero where a point left the map.
    - ``affine``: float32 (2, 3), input pixels -> in-the-wild pixels of the original
      image (the inverse of the sample's matrix), so predictions map back:
      ``transforms.apply(affine, landmarks)`` gives the catalog's landmarks (in
      flipped order when the sample was flipped).
    - ``image_id``: str.
    - ``attributes``: float32 (K,) 0/1, with ``attributes=True`` (all 40, in the
      file's order) or a list of names (in that order): see ``attribute_names``.

    ``transform`` takes ``image`` (the tensor above) and returns its replacement; keep
    it photometric (colour, noise, erasing): ``landmarks``, ``heatmaps`` and ``affine``
    follow the geometry of ``augment`` only, so a flip or crop there would leave them
    wrong. ``target_transform`` takes ``landmarks`` (e.g. to rescale them for a
    regression head); ``heatmaps`` and ``affine`` are made before it, from the points
    as above. Both: see the module doc (seeded, after our own pipeline).

    ``sigma=1.5`` heatmap pixels (6 input pixels at 256 -> 64), the upper end of what
    HRNet's face-alignment configs use at this size (1.0 for 300W, 1.5 for WFLW;
    github.com/HRNet/HRNet-Facial-Landmark-Detection, experiments/). The wider peak
    (about 3x3 pixels above half height) gives sub-pixel decoding around the argmax
    more to fit, against the reference's argmax-only 4-pixel steps; it stays narrow
    beside the gaps between the five points (the closest pair is 6.5-11 heatmap pixels
    apart on the synthetic crops, more on real faces).
    """

    def __init__(
        self,
        catalog: str | os.PathLike[str] | duckdb.DuckDBPyConnection | None,
        snapshot: str,
        split: str,
        input_size: int = 256,
        heatmap_size: int = 64,
        sigma: float = 1.5,
        augment: T.Augment | None = None,
        seed: int = 0,
        image_dtype: str = "float32",
        skip_bad: bool = False,
        *,
        transform: Callable[[torch.Tensor], Any] | None = None,
        target_transform: Callable[[torch.Tensor], Any] | None = None,
        attributes: bool | str | Sequence[str] = False,
    ) -> None:
        super().__init__(
            catalog,
            snapshot,
            split,
            input_size,
            "bbox",
            augment,
            seed,
            True,
            image_dtype,
            skip_bad,
            transform=transform,
            target_transform=target_transform,
            attributes=attributes,
        )
        self.input_size, self.heatmap_size, self.sigma = input_size, heatmap_size, sigma

    def _repr_fields(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "heatmap_size": self.heatmap_size}

    @property
    def landmarks(self) -> np.ndarray:
        """(N, 5, 2) float64: the catalog's landmarks, in-the-wild pixels."""
        assert self._rows.landmarks is not None
        return self._rows.landmarks

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, matrix, flipped = self._crop(index)
        points = T.apply(matrix, self.landmarks[index])
        if flipped:
            points = T.flip_landmarks(points)
        heat = T.input_to_heatmap(points, self.input_size, self.heatmap_size)
        sample = {
            "image": self._image_tensor(image),
            "landmarks": torch.from_numpy(points.astype(np.float32)),
            "heatmaps": torch.from_numpy(T.gaussian_heatmaps(heat, self.heatmap_size, self.sigma)),
            "affine": torch.from_numpy(T.invert(matrix)[:2].astype(np.float32)),
            "image_id": str(self._rows.image_id[index]),
        }
        return self._finish(sample, index, "landmarks")


class FaceDataset(_CropDataset):
    """Face crops and identity labels for recognition.

    ``catalog`` is a catalog path (None: the default catalog) or an open DuckDB
    connection, which is used and left open. ``split`` is one of the snapshot's splits
    (train, val, test, query, distractor, unused) or ``"all"``. Images that cannot be
    read: as for :class:`LandmarkDataset` (``skip_bad``, ``skipped``).

    ``source="bbox"`` crops the snapshot's face box, stretched onto the square;
    ``source="aligned"`` reads the aligned crops of the alignment step (``celebcat
    align``: a crop cache of this snapshot and size with source
    ``aligned/<template>/<landmarks run id | truth>``), the newest when there are
    several; name one in full to pin it (``source="aligned/arcface/truth"``; the
    Dataset's ``cache.source`` says which was read). Raises FileNotFoundError, saying
    what to run, until they exist.

    Each sample is a dict:

    - ``image``: float32 (3, size, size), normalised RGB
      (:func:`catalog.transforms.to_tensor`), the crop with the random augmentation
      applied in the same single resampling, colour jitter after; uint8 RGB levels
      with ``image_dtype="uint8"`` (see :data:`IMAGE_DTYPES`).
    - ``label``: int64 scalar tensor, the snapshot's contiguous label 0..C-1
      (``num_classes`` = C, over the train/val/test identities); **-1** for images
      without one: the held-out ``query`` and ``distractor`` splits (and ``unused``).
    - ``image_id``: str.
    - ``attributes``: float32 (K,) 0/1, with ``attributes=True`` (all 40, in the
      file's order) or a list of names (in that order): see ``attribute_names``. An
      unknown name is a ValueError naming the nearest ones; images lacking a value, a
      DatasetError.

    ``transform`` takes ``image`` (the tensor above, after our crop, augmentation and
    ``image_dtype``) and returns its replacement (e.g. a torchvision v2 pipeline);
    ``target_transform`` takes ``label``. The rest of the sample is left as it is. Both:
    see the module doc (seeded, albumentations).
    """

    def __init__(
        self,
        catalog: str | os.PathLike[str] | duckdb.DuckDBPyConnection | None,
        snapshot: str,
        split: str,
        source: str = "bbox",
        size: int = 112,
        augment: T.Augment | None = None,
        seed: int = 0,
        image_dtype: str = "float32",
        skip_bad: bool = False,
        *,
        transform: Callable[[torch.Tensor], Any] | None = None,
        target_transform: Callable[[torch.Tensor], Any] | None = None,
        attributes: bool | str | Sequence[str] = False,
    ) -> None:
        super().__init__(
            catalog,
            snapshot,
            split,
            size,
            source,
            augment,
            seed,
            False,
            image_dtype,
            skip_bad,
            transform=transform,
            target_transform=target_transform,
            attributes=attributes,
        )

    def _repr_fields(self) -> dict[str, Any]:
        # aligned: the alignment actually read (the newest, unless one was named)
        source = self.cache.source if self.cache is not None else self.source
        identities = len(np.unique(self._rows.identity))
        return {"size": self.size, "source": source, "identities": identities}

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64: each image's label, -1 where it has none (what PKSampler takes)."""
        return self._rows.label

    @property
    def num_classes(self) -> int:
        """C: the identities of the snapshot's train/val/test splits."""
        return self._rows.num_classes

    @property
    def identities(self) -> np.ndarray:
        """(N,) int64: each image's CelebA identity (held-out images included)."""
        return self._rows.identity

    @property
    def splits(self) -> np.ndarray:
        """(N,) str: each image's split in the snapshot."""
        return self._rows.split

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, _, _ = self._crop(index)
        sample = {
            "image": self._image_tensor(image),
            "label": torch.tensor(int(self._rows.label[index]), dtype=torch.int64),
            "image_id": str(self._rows.image_id[index]),
        }
        return self._finish(sample, index, "label")


class PKSampler(Sampler[list[int]]):
    """Batches of P identities x K images, for batch-hard triplet mining.

    An epoch visits every identity (label >= 0; -1 is ignored) once, in an order
    shuffled from ``(seed, epoch)``, P identities per batch, so a batch never holds
    an identity twice. Each identity gives K of its indices, drawn without
    replacement; an identity with fewer than K images gives all of them plus random
    repeats (drawn with replacement) to make up K. ``drop_last`` drops the final batch
    when fewer than P identities are left for it. ``len()`` is the number of batches.

    Use as ``DataLoader(ds, batch_sampler=PKSampler(ds.labels, p, k))``; call
    ``set_epoch(e)`` before each epoch for a new, reproducible order.

    Several processes (``num_replicas``, one of them ``rank``, e.g. under torchrun):
    every process draws the whole epoch from the same seed and yields every
    ``num_replicas``-th batch, starting at its ``rank``; ``len()`` is each process's
    share, the same for all (the last batches that would not go round are dropped), so
    the processes see disjoint batches of one epoch and step together.
    """

    def __init__(
        self,
        labels: Sequence[int],
        p: int,
        k: int,
        seed: int = 0,
        drop_last: bool = True,
        *,
        rank: int = 0,
        num_replicas: int = 1,
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if p < 1 or k < 1:
            raise ValueError(f"p and k must be >= 1, got p={p}, k={k}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"rank must be in [0, num_replicas), got rank={rank}, num_replicas={num_replicas}"
            )
        ids, inverse = np.unique(labels, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        groups = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
        self.groups = [g for i, g in zip(ids, groups, strict=True) if i >= 0]
        if len(self.groups) < p:
            raise ValueError(f"p = {p} identities per batch, but only {len(self.groups)} exist")
        self.p, self.k, self.seed, self.drop_last = p, k, seed, drop_last
        self.rank, self.num_replicas = rank, num_replicas
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.groups)
        batches = n // self.p if self.drop_last else math.ceil(n / self.p)
        return batches // self.num_replicas

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.groups))
        for b, start in enumerate(range(0, len(self) * self.num_replicas * self.p, self.p)):
            batch = []
            for g in order[start : start + self.p]:
                idx = self.groups[g]
                if len(idx) >= self.k:
                    picked = rng.choice(idx, self.k, replace=False)
                else:
                    picked = np.concatenate([idx, rng.choice(idx, self.k - len(idx))])
                batch.extend(int(i) for i in picked)
            if b % self.num_replicas == self.rank:  # every batch is drawn on every rank
                yield batch
