"""The image index: find the image folders, then list every image with its size.

Two steps, both cheap enough to run on all 202,599 CelebA images every ingest:

- ``find_image_roots(data_dir)`` decides where the in-the-wild and the aligned
  images are, looking only at folder and file names (no image is opened).
- ``scan_images(root)`` walks one root once with ``os.scandir`` and reads each
  image's width and height from its header (``catalog.imagesize``), in a process
  pool for large folders. It returns a DataFrame; loading it into the catalog is
  the ingest module's job.

Hidden entries (names starting with ``.``, which includes macOS's ``._x.jpg``
AppleDouble files) and ``__MACOSX`` folders, both left behind by zip tools, are not
images and are skipped by both steps.

Symbolic links are followed only where they stay inside the root: a link to a file
outside it (``/etc/passwd``) is listed with an error and never opened, and a linked
folder outside it is not walked (one row says so), so that nothing outside the
image root reaches the catalog, an export or a crop.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from catalog.formats import ALIGNED_IMAGE_DIR, IMAGE_SUFFIXES, WILD_IMAGE_DIR
from catalog.imagesize import read_headers

#: Paths per unit of parallel work. Large enough that pickling a chunk and its result
#: costs little next to reading 2,000 headers; small enough that two workers share a
#: few thousand files evenly and progress moves. A scan of one chunk or less runs in
#: the calling process, where it finishes before a pool could start.
CHUNK_SIZE = 2000

#: Columns of the frame ``scan_images`` returns, in order.
SCAN_COLUMNS: tuple[str, ...] = (
    "image_id",
    "path",
    "file_size",
    "width",
    "height",
    "error",
    "problem",
)

#: ``problem`` of a file whose header was read but whose end marker is missing.
TRUNCATED = "image_truncated"
#: ``problem`` of a symbolic link (to a file or a folder) leading out of the root.
OUTSIDE_ROOT = "image_outside_root"

_SUFFIXES = frozenset(s.lower() for s in IMAGE_SUFFIXES)


@dataclass(frozen=True)
class ImageRoots:
    """Where the two image sets of a data folder are; ``None`` where there is none.

    Scan ``wild`` with ``exclude=aligned``: the aligned folder can sit inside the
    in-the-wild root (when that is the data folder itself), and its images must not
    be indexed as in-the-wild ones.
    """

    wild: Path | None
    aligned: Path | None


def find_image_roots(data_dir: str | os.PathLike[str]) -> ImageRoots:
    """Find the in-the-wild and the aligned image folders under ``data_dir``.

    - aligned: the topmost folder named ``img_align_celeba``. Downloads often nest it
      (``archive/img_align_celeba/img_align_celeba/``); the topmost one is right
      because scanning is recursive.
    - wild: the topmost folder named ``img_celeba``, nested the same way; if there is
      none, the folder (``data_dir`` itself included) that directly holds the most
      image files, outside any ``img_align_celeba`` folder; ``None`` if no folder
      holds an image.

    "Topmost" is the fewest levels below ``data_dir``; ties go to the first in sorted
    path order, and so do ties in image count. Only names are looked at: each folder
    is listed once, no image is opened, and the named folders are not descended into
    (their content is the scan's business). Subfolders that cannot be listed are
    skipped. A ``data_dir`` that is itself named ``img_align_celeba`` is the aligned
    root (and there is no wild one); one named ``img_celeba`` is the wild root.

    Raises:
        NotADirectoryError: ``data_dir`` is not a folder.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise NotADirectoryError(f"data folder {data_dir} does not exist or is not a folder")
    # Pointed straight at an image folder: its name says which one it is.
    if data_dir.name == ALIGNED_IMAGE_DIR:
        return ImageRoots(wild=None, aligned=data_dir)
    wild: Path | None = data_dir if data_dir.name == WILD_IMAGE_DIR else None
    aligned: Path | None = None
    best: Path | None = None  # the folder holding the most images, if wild is not named
    best_count = 0
    seen = {_dir_key(data_dir)}
    level = [data_dir]
    # Breadth first, so the first folder found with a name is a topmost one.
    while level and (wild is None or aligned is None):
        next_level: list[Path] = []
        for folder in level:
            try:
                count, subdirs = _list_folder(folder)
            except OSError:
                continue  # e.g. lost+found: not where images are
            if count > best_count:
                best, best_count = folder, count
            for sub in subdirs:
                key = _dir_key(sub)
                if key is None or key in seen:  # unreadable, or a symlink loop
                    continue
                seen.add(key)
                if sub.name == ALIGNED_IMAGE_DIR:
                    aligned = aligned or sub
                elif sub.name == WILD_IMAGE_DIR:
                    wild = wild or sub
                else:
                    next_level.append(sub)
        level = next_level
    return ImageRoots(wild=wild or best, aligned=aligned)


def scan_images(
    root: str | os.PathLike[str],
    *,
    exclude: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> pd.DataFrame:
    """List every image under ``root`` (recursively) with its size read from its header.

    Returns one row per file whose suffix is one of ``IMAGE_SUFFIXES`` (any case),
    sorted by ``path``, with columns:

    - ``image_id`` (str): the file name, e.g. ``"000001.jpg"``. Not unique when the
      same name sits in two subfolders; every copy is returned, for the caller to
      report.
    - ``path`` (str): POSIX path relative to ``root``, e.g. ``"sub/000001.jpg"``.
    - ``file_size`` (int64): bytes (``fstat`` of the file opened for its header).
    - ``width``, ``height`` (nullable Int32): stored pixel size (EXIF orientation not
      applied); NULL when the header could not be read.
    - ``error`` (str or None): why the file cannot be used: its header could not be
      read, it was cut short, or it is a link out of the root. A bad image is a row
      with an error, never an exception.
    - ``problem`` (str or None): which of those, where it is not a plain unreadable
      header: :data:`TRUNCATED` (the header was read, so width and height are there,
      but the file lacks its end marker) or :data:`OUTSIDE_ROOT` (a symbolic link
      whose target is outside ``root``: never opened; a linked folder outside it is
      one row with ``image_id`` None and its ``path`` ending in ``/``, not walked).

    ``exclude`` is a folder whose subtree is skipped (matched by identity, so any
    spelling of the path works; a path that does not exist excludes nothing).
    ``workers`` is the number of processes reading headers (``None``: one per CPU);
    with ``workers=1``, or ``chunk_size`` files or fewer, headers are read in this
    process. ``progress(done, total)`` is called with ``done=0`` once the files are
    listed, then after each chunk of ``chunk_size`` files.

    Raises:
        NotADirectoryError: ``root`` is not a folder.
        OSError: a subfolder cannot be listed (images in it would be missed).
    """
    root_str = os.fspath(root)
    if not os.path.isdir(root_str):
        raise NotADirectoryError(f"image folder {root_str} does not exist or is not a folder")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1 (or None for one per CPU), got {workers}")
    exclude_key = _dir_key(Path(exclude)) if exclude is not None else None

    files, outside = _list_images(root_str, exclude_key)
    total = len(files)
    if progress is not None:
        progress(0, total)

    full_paths = [full for _rel, _name, full in files]
    chunks = [full_paths[i : i + chunk_size] for i in range(total)[::chunk_size]]
    n_workers = min(workers or os.cpu_count() or 1, len(chunks))
    results: list[list[tuple[int | None, int | None, int | None, str | None]]]
    results = [[] for _ in chunks]
    done = 0
    if n_workers <= 1:
        for k, chunk in enumerate(chunks):
            results[k] = read_headers(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    else:
        # Processes, not threads: the parser is Python code and holds the GIL. The
        # default start method is kept; the worker function lives in a module that
        # imports no pandas, so spawn/forkserver workers start quickly too.
        with ProcessPoolExecutor(max_workers=n_workers) as pool:
            futures = {pool.submit(read_headers, chunk): k for k, chunk in enumerate(chunks)}
            try:
                for future in as_completed(futures):
                    k = futures[future]
                    results[k] = future.result()
                    done += len(chunks[k])
                    if progress is not None:
                        progress(done, total)
            except BaseException:
                # Ctrl-C, or a progress callback that raised: drop the queued chunks
                # instead of reading them all before the error surfaces.
                pool.shutdown(wait=False, cancel_futures=True)
                raise

    headers = [header for chunk_result in results for header in chunk_result]
    rows = [
        (
            name,
            rel,
            size,
            width,
            height,
            error,
            TRUNCATED if error is not None and width is not None else None,
        )
        for (rel, name, _full), (size, width, height, error) in zip(files, headers, strict=True)
        if size is not None  # no size: the file was removed since it was listed
    ]
    rows += outside
    rows.sort(key=lambda r: r[1])
    return pd.DataFrame(
        {
            "image_id": pd.Series([r[0] for r in rows], dtype=object),
            "path": pd.Series([r[1] for r in rows], dtype=object),
            "file_size": np.array([r[2] for r in rows], dtype=np.int64),
            "width": pd.array([r[3] for r in rows], dtype="Int32"),
            "height": pd.array([r[4] for r in rows], dtype="Int32"),
            "error": pd.Series([r[5] for r in rows], dtype=object),
            "problem": pd.Series([r[6] for r in rows], dtype=object),
        },
        columns=list(SCAN_COLUMNS),
    )


def _is_image_name(name: str) -> bool:
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in _SUFFIXES


def _skipped(name: str) -> bool:
    """Hidden entries and macOS zip metadata: never images, never image folders."""
    return name.startswith(".") or name == "__MACOSX"


def _dir_key(path: Path) -> tuple[int, int] | None:
    """A folder's identity (device, inode), following symlinks; None if it cannot be read.

    ``os.stat`` rather than ``DirEntry.stat``: on Windows the latter leaves the inode 0.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _list_folder(folder: Path) -> tuple[int, list[Path]]:
    """Image files directly in ``folder`` (counted by name) and its subfolders, sorted."""
    count = 0
    subdirs: list[Path] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if _skipped(name):
                continue
            # is_dir() answers from the directory listing (d_type) without a stat call
            # on most file systems, so counting a folder of 200k images stays cheap.
            if entry.is_dir():
                subdirs.append(folder / name)
            elif _is_image_name(name):
                count += 1
    subdirs.sort()
    return count, subdirs


def _list_images(
    root: str, exclude_key: tuple[int, int] | None
) -> tuple[list[tuple[str, str, str]], list[tuple]]:
    """``(relative POSIX path, name, full path)`` of every image, sorted by path; and
    a scan row (see ``SCAN_COLUMNS``) for each symbolic link out of ``root``.

    Names only: sizes come later from the workers (``read_headers``), because on POSIX
    ``DirEntry.stat()`` is a ``stat`` call per file, 80% of a walk's time measured
    on 200k files, which here would run in one process. A link costs a ``realpath``
    (``is_symlink`` answers from the listing), so only links pay for the check.
    """
    out: list[tuple[str, str, str]] = []
    outside: list[tuple] = []
    real_root = os.path.realpath(root)
    seen = {_dir_key(Path(root))}
    if exclude_key is not None and exclude_key in seen:
        return out, outside  # the root itself is excluded
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                if _skipped(name):
                    continue
                target = _outside(entry.path, real_root) if entry.is_symlink() else None
                if entry.is_dir():
                    if target is not None:
                        outside.append(
                            (
                                None,
                                f"{prefix}{name}/",
                                _link_size(entry),
                                None,
                                None,
                                f"a folder link out of the image root, to {target}: not scanned",
                                OUTSIDE_ROOT,
                            )
                        )
                        continue
                    key = _dir_key(Path(entry.path))
                    # Skip the excluded subtree, and a folder already walked (a symlink
                    # loop, or two links to one folder).
                    if key is None or key == exclude_key or key in seen:
                        continue
                    seen.add(key)
                    stack.append((entry.path, f"{prefix}{name}/"))
                elif _is_image_name(name) and entry.is_file():
                    if target is not None:
                        outside.append(
                            (
                                name,
                                prefix + name,
                                _link_size(entry),
                                None,
                                None,
                                f"a symbolic link out of the image root, to {target}: not followed",
                                OUTSIDE_ROOT,
                            )
                        )
                        continue
                    out.append((prefix + name, name, entry.path))
    out.sort()
    return out, outside


def _outside(path: str, real_root: str) -> str | None:
    """Where the link ``path`` leads, if that is outside ``real_root``; else None."""
    real = os.path.realpath(path)
    try:
        if os.path.commonpath([real_root, real]) == real_root:
            return None
    except ValueError:  # another drive (Windows)
        pass
    return real


def _link_size(entry: os.DirEntry[str]) -> int:
    """The link's own size (``lstat``): its target is not looked at."""
    try:
        return entry.stat(follow_symlinks=False).st_size
    except OSError:
        return 0
