"""Write a synthetic CelebA-format dataset to disk: annotation files and JPEG images.

The annotation files are formatted with numpy into one byte buffer per file (no
per-row Python), so the full 202,599-row set takes a couple of seconds; images are
rendered in a process pool, each image depending only on its own row of the
population, so any number of workers writes the same bytes.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catalog.formats import (
    ALIGNED_IMAGE_DIR,
    ALL_FILES,
    CSV_FILES,
    TXT_FILES,
    WILD_IMAGE_DIR,
    FileSpec,
)
from catalog.synth.faces import aligned_crop, render_face
from catalog.synth.population import (
    DEFAULT_STYLE,
    MAX_IMAGES_PER_IDENTITY,
    FaceTraits,
    Layout,
    Population,
    Pose,
    check_style,
    default_image_count,
    make_population,
)

LAYOUTS: tuple[str, ...] = ("txt", "kaggle", "both")
MIN_SIDE, MAX_SIDE = 128, 8192
#: Images per pool task: big enough to amortise pickling, small enough for smooth progress.
CHUNK = 48
#: The Kaggle copy ships no identity file and no in-the-wild landmarks; the reference
#: workflow read these two from the official release next to the CSVs.
_KAGGLE_EXTRA_TABLES = ("identities", "landmarks")
_IMAGE_NAME = re.compile(r"^\d{6,}\.jpg$")


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`synthesize` wrote.

    ``files`` are the annotation file names (in ``out``); ``image_dir`` and
    ``aligned_dir`` are the image folders written, or None.
    """

    out: Path
    ids: int
    images: int
    files: tuple[str, ...]
    image_dir: Path | None
    aligned_dir: Path | None
    seconds: float
    seed: int = 0
    layout: str = "txt"
    style: str = DEFAULT_STYLE


def annotation_specs(layout: str) -> tuple[FileSpec, ...]:
    """The annotation files a layout writes, in writing order."""
    if layout == "txt":
        return TXT_FILES
    if layout == "kaggle":
        return CSV_FILES + tuple(s for s in TXT_FILES if s.table in _KAGGLE_EXTRA_TABLES)
    if layout == "both":
        return TXT_FILES + CSV_FILES
    raise ValueError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")


# -- annotation formatting ------------------------------------------------------------


def _digits(values: np.ndarray, width: int, pad: int) -> np.ndarray:
    """Integers (N, k) as right-aligned ASCII (N, k, width) uint8, padded with ``pad``.

    ``pad`` is a space for CelebA's padded columns, ``ord("0")`` for zero-padded image
    ids, or 0 (NUL) for variable-width fields, whose NULs are dropped afterwards.
    """
    v = values.astype(np.int64)
    neg = v < 0
    a = np.abs(v)
    ndig = np.ones(a.shape, dtype=np.int64)
    for p in range(1, width + 1):
        ndig += a >= 10**p
    if (ndig + neg > width).any():
        raise ValueError(f"a value does not fit in {width} characters: {v.min()}..{v.max()}")
    out = np.empty((*a.shape, width), dtype=np.uint8)
    for pos in range(width):
        power = 10 ** (width - 1 - pos)
        digit = (a // power) % 10 + 48
        out[..., pos] = np.where(width - pos <= ndig, digit, pad)
    if neg.any():
        rows, cols = np.nonzero(neg)
        out[rows, cols, width - 1 - ndig[rows, cols]] = ord("-")
    return out


def _width(values: np.ndarray) -> int:
    big = int(np.abs(values).max(initial=0))
    return len(str(big)) + int((values < 0).any())


def image_names(n: int) -> list[str]:
    """``000001.jpg`` ... for n images (more digits only past 999,999)."""
    width = max(6, len(str(n)))
    return [f"{i:0{width}d}.jpg" for i in range(1, n + 1)]


def _image_id_bytes(n: int) -> np.ndarray:
    width = max(6, len(str(n)))
    ids = _digits(np.arange(1, n + 1)[:, None], width, ord("0"))[:, 0, :]
    suffix = np.frombuffer(b".jpg", dtype=np.uint8)
    return np.concatenate([ids, np.broadcast_to(suffix, (n, 4))], axis=1)


def format_rows(
    values: np.ndarray, sep: bytes, width: int, pad: int, image_ids: np.ndarray
) -> bytes:
    """Data rows: image id, then each value preceded by ``sep`` and padded to ``width``."""
    n, k = values.shape
    cells = _digits(values, width, pad)
    if sep:
        sep_col = np.broadcast_to(np.frombuffer(sep, dtype=np.uint8), (n, k, len(sep)))
        cells = np.concatenate([sep_col, cells], axis=2)
    newline = np.full((n, 1), ord("\n"), dtype=np.uint8)
    body = np.concatenate([image_ids, cells.reshape(n, -1), newline], axis=1).ravel()
    if pad == 0:
        body = body[body != 0]
    return body.tobytes()


def _header(spec: FileSpec, n: int) -> str:
    if spec.layout == "csv":
        return ",".join(("image_id", *spec.columns)) + "\n"
    lines = []
    if spec.count_line:
        lines.append(f"{n}\n")
    if spec.header_line:
        # As in the official files: the attribute header ends with a space, and only the
        # box file names its image_id column.
        if spec.table == "attributes":
            lines.append(" ".join(spec.columns) + " \n")
        elif spec.table == "bboxes":
            lines.append(" ".join(("image_id", *spec.columns)) + "\n")
        else:
            lines.append(" ".join(spec.columns) + "\n")
    return "".join(lines)


def _table_values(pop: Population, table: str) -> np.ndarray:
    n = pop.images
    if table == "attributes":
        return pop.attributes
    if table == "bboxes":
        return pop.layout.bbox
    if table == "landmarks":
        return pop.layout.landmarks.reshape(n, -1)
    if table == "landmarks_aligned":
        return pop.layout.aligned_landmarks.reshape(n, -1)
    if table == "identities":
        return (pop.identity + 1)[:, None]
    if table == "partitions":
        return pop.partition[:, None]
    raise ValueError(f"no synthetic values for table {table!r}")


def annotation_bytes(pop: Population, spec: FileSpec, ids: np.ndarray | None = None) -> bytes:
    """The full content of one annotation file, byte for byte as CelebA's.

    Official txt: attributes as ``"000001.jpg -1  1 ..."`` (each value ``f" {v:2d}"``),
    boxes and landmarks as ``f"{v:>5d}"`` columns, identity and partition as
    ``"000001.jpg 2880"``. Kaggle CSV: ``image_id,<columns>`` then plain values.
    """
    values = _table_values(pop, spec.table)
    if ids is None:
        ids = _image_id_bytes(pop.images)
    if spec.layout == "csv":
        body = format_rows(values, b",", _width(values), 0, ids)
    elif spec.kind == "attr":
        body = format_rows(values, b" ", 2, ord(" "), ids)
    elif spec.header_line:
        body = format_rows(values, b"", 5, ord(" "), ids)
    else:
        body = format_rows(values, b" ", _width(values), 0, ids)
    return _header(spec, pop.images).encode("ascii") + body


def _write_atomic(path: Path, data: bytes) -> None:
    # A reader (or a crashed run) never sees half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_annotations(pop: Population, out: Path, layout: str) -> tuple[str, ...]:
    """Write the layout's annotation files into ``out``; return their names."""
    ids = _image_id_bytes(pop.images)
    names = []
    for spec in annotation_specs(layout):
        _write_atomic(out / spec.name, annotation_bytes(pop, spec, ids))
        names.append(spec.name)
    return tuple(names)


# -- images ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Chunk:
    """A slice of the population, self-contained so that it pickles small."""

    start: int
    names: list[str]
    traits: FaceTraits  # one row per image (gathered by identity)
    poses: Pose
    attributes: np.ndarray
    layout: Layout
    image_dir: str
    aligned_dir: str | None


def _chunks(pop: Population, image_dir: Path, aligned_dir: Path | None) -> Iterator[_Chunk]:
    names = image_names(pop.images)
    for start in range(0, pop.images, CHUNK):
        idx = np.arange(start, min(start + CHUNK, pop.images))
        yield _Chunk(
            start=start,
            names=names[idx[0] : idx[-1] + 1],
            traits=pop.traits.take(pop.identity[idx]),
            poses=pop.poses.take(idx),
            attributes=pop.attributes[idx],
            layout=pop.layout.take(idx),
            image_dir=str(image_dir),
            aligned_dir=None if aligned_dir is None else str(aligned_dir),
        )


def _render_chunk(chunk: _Chunk) -> int:
    """Render and save one chunk; runs in a worker process. Returns the image count."""
    for j, name in enumerate(chunk.names):
        face = render_face(
            chunk.traits.row(j), chunk.poses.row(j), chunk.attributes[j], chunk.layout.row(j)
        )
        quality = int(chunk.poses.quality[j])
        face.image.save(os.path.join(chunk.image_dir, name), "JPEG", quality=quality)
        if chunk.aligned_dir is not None:
            crop = aligned_crop(face.image, face.aligned_matrix)
            crop.save(os.path.join(chunk.aligned_dir, name), "JPEG", quality=quality)
    return len(chunk.names)


def _remove_stale_images(folder: Path, keep: int) -> None:
    """Drop CelebA-named images that an earlier, larger run left behind."""
    if not folder.is_dir():
        return
    for entry in os.scandir(folder):
        if _IMAGE_NAME.match(entry.name) and int(entry.name[:-4]) > keep:
            os.remove(entry.path)


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork where the platform has it, else spawn.

    fork needs no importable ``__main__``, so it works from notebooks, ``python -`` and
    scripts without a ``__name__ == "__main__"`` guard, where spawn's workers fail to
    start; the workers only render and write files, so threads in the parent (a
    progress bar) hold no lock they need.
    """
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def write_images(
    pop: Population,
    out: Path,
    aligned: bool,
    workers: int,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, Path | None]:
    """Render every image of ``pop`` into ``out/img_celeba`` (and ``img_align_celeba``)."""
    image_dir = out / WILD_IMAGE_DIR
    aligned_dir = out / ALIGNED_IMAGE_DIR if aligned else None
    image_dir.mkdir(exist_ok=True)
    _remove_stale_images(image_dir, pop.images)
    # Aligned images of an earlier run show other faces than the new ones.
    _remove_stale_images(out / ALIGNED_IMAGE_DIR, pop.images if aligned else 0)
    if aligned_dir is not None:
        aligned_dir.mkdir(exist_ok=True)
    total, done = pop.images, 0
    if progress is not None:
        progress(0, total)
    chunks = _chunks(pop, image_dir, aligned_dir)
    n_chunks = -(-total // CHUNK)
    if workers == 1 or n_chunks == 1:
        for chunk in chunks:
            done += _render_chunk(chunk)
            if progress is not None:
                progress(done, total)
    else:
        # A ProcessPoolExecutor, not multiprocessing.Pool: a worker that dies raises
        # BrokenProcessPool here instead of being respawned forever.
        # Only a few chunks in flight at a time: Executor.map would build all of them
        # (hundreds of MB at full scale) before the first one is done.
        n = min(workers, n_chunks)
        with ProcessPoolExecutor(n, mp_context=_pool_context()) as pool:
            pending = {pool.submit(_render_chunk, c) for c in itertools.islice(chunks, 3 * n)}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    done += future.result()
                    if progress is not None:
                        progress(done, total)
                    nxt = next(chunks, None)
                    if nxt is not None:
                        pending.add(pool.submit(_render_chunk, nxt))
    return image_dir, aligned_dir


# -- the entry point ------------------------------------------------------------------


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def synthesize(
    out: str | Path,
    ids: int = 50,
    seed: int = 0,
    layout: str = "txt",
    max_side: int = 500,
    images: int | None = None,
    annotations_only: bool = False,
    aligned: bool = False,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    style: str = DEFAULT_STYLE,
) -> SynthSummary:
    """Write a synthetic dataset in CelebA's formats into ``out``.

    ``ids`` identities with ``images`` images in all (default: CelebA's mean of 19.9 per
    identity, so ``ids=10177`` gives 202,599), 1 to 35 per identity. ``layout`` picks
    the annotation files: ``"txt"`` (the six official files), ``"kaggle"`` (the four
    Kaggle CSVs plus ``identity_CelebA.txt`` and ``list_landmarks_celeba.txt``) or
    ``"both"``. Images go to ``out/img_celeba/`` (in-the-wild JPEGs, long side up to
    ``max_side``) and, with ``aligned``, to ``out/img_align_celeba/`` (178x218);
    ``annotations_only`` skips all pixels. All coordinates in the files are pixels of
    the in-the-wild images, except ``list_landmarks_align_celeba.*`` (aligned frame).
    ``style`` picks the population (:data:`~catalog.synth.population.STYLES`):
    ``"hard"``, where identity lives in the face's geometry and hair, lighting and
    colours vary per image, or ``"easy"``, the first population, whose people differ
    in colour too.

    ``out`` is created if missing. Existing CelebA annotation files in it are
    overwritten, and those this layout does not write are removed, so that ``out``
    never mixes two datasets; when images are written, CelebA-named images that an
    earlier run left in the two image folders (and any aligned ones when ``aligned``
    is off) are removed too. ``annotations_only`` leaves image folders alone.

    The same arguments give the same bytes in every file, whatever ``workers`` is
    (``None``: one per CPU). ``progress(done, total)`` is called as images are written,
    or once at the end when ``annotations_only``.
    """
    start = time.perf_counter()
    ids = _check_int("ids", ids)
    seed = _check_int("seed", seed)
    max_side = _check_int("max_side", max_side)
    if ids < 1:
        raise ValueError(f"ids must be at least 1, got {ids}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    check_style(style)
    if not MIN_SIDE <= max_side <= MAX_SIDE:
        raise ValueError(f"max_side must be between {MIN_SIDE} and {MAX_SIDE}, got {max_side}")
    if images is not None:
        images = _check_int("images", images)
        if not ids <= images <= MAX_IMAGES_PER_IDENTITY * ids:
            raise ValueError(
                f"images must be between ids ({ids}) and {MAX_IMAGES_PER_IDENTITY} x ids "
                f"({MAX_IMAGES_PER_IDENTITY * ids}), since every identity has 1 to "
                f"{MAX_IMAGES_PER_IDENTITY} images; got {images}"
            )
    if workers is None:
        workers = os.cpu_count() or 1
    workers = _check_int("workers", workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if annotations_only and aligned:
        raise ValueError("aligned images need images: drop annotations_only or aligned")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory: choose another output folder")
    out.mkdir(parents=True, exist_ok=True)

    pop = make_population(ids, seed, images, max_side, style)
    files = write_annotations(pop, out, layout)
    for spec in ALL_FILES:
        if spec.name not in files and (out / spec.name).is_file():
            (out / spec.name).unlink()

    image_dir = aligned_dir = None
    if annotations_only:
        if progress is not None:
            progress(pop.images, pop.images)
    else:
        image_dir, aligned_dir = write_images(pop, out, aligned, workers, progress)
    return SynthSummary(
        out=out,
        ids=ids,
        images=pop.images,
        files=files,
        image_dir=image_dir,
        aligned_dir=aligned_dir,
        seconds=time.perf_counter() - start,
        seed=seed,
        layout=layout,
        style=style,
    )


__all__ = ["LAYOUTS", "SynthSummary", "annotation_specs", "default_image_count", "synthesize"]
