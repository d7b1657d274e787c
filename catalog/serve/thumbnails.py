"""Face thumbnails and image files for the browser, and the paths they may come from.

A thumbnail is the face box of an image at ``size`` x ``size`` pixels, what a model
sees: the row of a ``bbox`` crop cache holding the image (``celebcat cache build``),
resized when the cache's size differs; else cut on request from the in-the-wild image
(:func:`catalog.cache.render_crop`) with the newest snapshot's face box, or CelebA's
box clamped to the image, or the whole image. Made thumbnails are JPEGs on disk::

    <thumbnail folder>/<size>/<ingest token>/<h[:2]>/<h>.jpg     (h: sha256 of the id)

The ingest token (the start of ``catalog_info.ingest_id``) changes with every ingest,
so a re-ingested catalog never shows old thumbnails; the file name is a hash, so no
image id, however odd, reaches the file system. The folder is bounded: past
``cache_bytes`` the oldest files are deleted until it is back under 80% of it.

Every file served comes from :func:`safe_image_path` (inside the catalog's image root,
symbolic links resolved) or from the thumbnail folder (names made here).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from catalog.files import discard, temp_name

if TYPE_CHECKING:
    import duckdb
    import numpy as np

#: What a thumbnail folder keeps at most, by default.
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
#: Evicting stops below this share of the bound, so it does not run at every write.
EVICT_TO = 0.8
JPEG_QUALITY = 85
_TOKEN = re.compile(r"[0-9a-f]{1,32}")


class ImageRefused(Exception):
    """The catalog names a file outside its image root (``..``, an absolute path, a
    symbolic link leading out): never served."""


class ImageMissing(Exception):
    """The image is not in the catalog, has no file, or its file cannot be read."""


@dataclass(frozen=True)
class ThumbSource:
    """Where an image's thumbnail comes from, as read from the catalog."""

    image_id: str
    token: str  # the catalog's ingest token
    root: str  # the image root ('' without an image index)
    path: str | None  # the file, relative to the root (images.path)
    box: tuple[int, int, int, int] | None  # face box, exclusive ends; None: whole image
    crop: tuple[str, int, int] | None  # a bbox crop cache: (.npy path, row, crop size)


def is_token(text: str) -> bool:
    return bool(_TOKEN.fullmatch(text))


def ingest_token(con: duckdb.DuckDBPyConnection) -> str:
    """The first 12 hex digits of the catalog's ingest id ('0' where it has none)."""
    from catalog.db import has_table

    if not has_table(con, "catalog_info"):
        return "0"
    row = con.execute("SELECT value FROM catalog_info WHERE key = 'ingest_id'").fetchone()
    value = (row[0] or "").lower()[:12] if row else ""
    return value if is_token(value) else "0"


def safe_image_path(root: str, relative: str | None) -> str:
    """The real path of the catalog's file ``relative`` under ``root``: ImageRefused
    where it is absolute, climbs with ``..`` or resolves (links followed) outside the
    root; ImageMissing where there is no such regular file."""
    if not root or not relative:
        raise ImageMissing("the catalog has no file for this image")
    parts = Path(relative).parts
    if os.path.isabs(relative) or ".." in parts or "\0" in relative:
        raise ImageRefused(f"{relative!r} is not a path inside the image root")
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, relative))
    try:
        inside = os.path.commonpath([real_root, real]) == real_root
    except ValueError:  # another drive (Windows)
        inside = False
    if not inside:
        raise ImageRefused(f"{relative!r} leads out of the image root")
    if not os.path.isfile(real):
        raise ImageMissing(f"no file {relative!r} under the image root")
    return real


def _has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM duckdb_columns() WHERE schema_name = 'main' "
            "AND table_name = ? AND column_name = ?",
            [table, column],
        ).fetchone()[0]
    )


def lookup_sources(
    con: duckdb.DuckDBPyConnection, image_ids: list[str], size: int
) -> dict[str, ThumbSource]:
    """The thumbnail sources of ``image_ids`` found in the catalog, in one query."""
    if not image_ids:
        return {}
    tables = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'"
        ).fetchall()
    }

    def has(*names: str) -> bool:
        return set(names) <= tables

    token = "0"
    root = ""
    if "catalog_info" in tables:
        info = dict(
            con.execute(
                "SELECT key, value FROM catalog_info WHERE key IN ('ingest_id', 'image_root')"
            ).fetchall()
        )
        token = (info.get("ingest_id") or "").lower()[:12]
        token = token if is_token(token) else "0"
        root = info.get("image_root") or ""
    select = ["ids.image_id"]
    joins: list[str] = []
    params: list[object] = [list(image_ids)]
    if has("images"):
        joins.append("LEFT JOIN images AS i USING (image_id)")
        select += ["i.path", "i.width", "i.height"]
    else:
        select += ["NULL", "NULL", "NULL"]
    if has("snapshots", "snapshot_images"):
        joins.append(
            "LEFT JOIN (SELECT s.image_id, s.x_1, s.y_1, s.x_2, s.y_2 FROM snapshot_images AS s "
            "JOIN snapshots AS n ON n.name = s.snapshot WHERE s.image_id IN (SELECT image_id "
            "FROM ids) QUALIFY row_number() OVER (PARTITION BY s.image_id "
            "ORDER BY n.created_at DESC, n.name) = 1) AS sb USING (image_id)"
        )
        select += ["sb.x_1", "sb.y_1", "sb.x_2", "sb.y_2"]
    else:
        select += ["NULL"] * 4
    if has("bboxes"):
        joins.append("LEFT JOIN bboxes AS b USING (image_id)")
        select += ["b.x_1", "b.y_1", "b.width", "b.height"]
    else:
        select += ["NULL"] * 4
    if has("crop_caches", "crop_cache_rows"):
        same_file = "true"
        if has("images") and _has_column(con, "crop_cache_rows", "file_size"):
            # a file replaced since it was cropped (a re-ingest saw another size)
            same_file = (
                "(r.file_size IS NULL OR r.file_size = (SELECT f.file_size FROM images AS f "
                "WHERE f.image_id = r.image_id))"
            )
        joins.append(
            'LEFT JOIN (SELECT r.image_id, c.path AS cache_path, r."row" AS cache_row, '
            "c.size AS cache_size FROM crop_cache_rows AS r JOIN crop_caches AS c "
            "USING (hash, source, size) WHERE c.source = 'bbox' AND r.image_id IN "
            f"(SELECT image_id FROM ids) AND {same_file} QUALIFY row_number() OVER "
            "(PARTITION BY r.image_id ORDER BY (c.size >= ?) DESC, abs(c.size - ?), "
            "c.created_at DESC) = 1) AS cc USING (image_id)"
        )
        params += [size, size]
        select += ["cc.cache_path", "cc.cache_row", "cc.cache_size"]
    else:
        select += ["NULL"] * 3
    sql = (
        "WITH ids AS (SELECT unnest(?::VARCHAR[]) AS image_id) "
        f"SELECT {', '.join(select)} FROM ids {' '.join(joins)} "
        "WHERE ids.image_id IS NOT NULL"
    )
    known_images = has("images")
    rows = con.execute(sql, params).fetchall()
    base = _catalog_dir(con)
    out = {}
    for row in rows:
        image_id, path, width, height = row[0], row[1], row[2], row[3]
        if known_images and path is None and row[4] is None and row[8] is None:
            continue  # not an image of this catalog
        box = _box(row[4:8], row[8:12], width, height)
        crop = None
        if row[12] is not None:
            cache = Path(row[12])
            crop = (str(cache if cache.is_absolute() else base / cache), int(row[13]), int(row[14]))
        out[image_id] = ThumbSource(image_id, token, root, path, box, crop)
    return out


def _catalog_dir(con: duckdb.DuckDBPyConnection) -> Path:
    path = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()[0]
    return Path(path).resolve().parent


def _box(
    face: tuple, celeba: tuple, width: int | None, height: int | None
) -> tuple[int, int, int, int] | None:
    """The snapshot's face box, else CelebA's clamped to the image, else None."""
    if None not in face and face[2] > face[0] and face[3] > face[1]:
        return tuple(int(v) for v in face)  # type: ignore[return-value]
    if None not in celeba:
        x1, y1, w, h = (int(v) for v in celeba)
        x2, y2 = x1 + w, y1 + h
        x1, y1 = max(x1, 0), max(y1, 0)
        if width:
            x2 = min(x2, int(width))
        if height:
            y2 = min(y2, int(height))
        if x2 > x1 and y2 > y1:
            return x1, y1, x2, y2
    return None


#: Crop cache arrays kept memory-mapped: (path, mtime, size) -> array. A few: each is
#: one snapshot's cache; a file replaced or deleted is let go at its next use.
_ARRAYS: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()
_ARRAYS_KEPT = 4
_arrays_lock = threading.Lock()


def _cache_array(path: str, size: int) -> np.ndarray | None:
    """The crop cache's (N, size, size, 3) uint8 array, memory-mapped, or None where
    the file is not one (the checks of :class:`catalog.cache.CropCache`)."""
    import numpy as np

    try:
        st = os.stat(path)
    except OSError:
        st = None
    with _arrays_lock:
        for key in [k for k in _ARRAYS if k[0] == path]:
            if st is None or key != (path, st.st_mtime_ns, st.st_size):
                del _ARRAYS[key]  # replaced or deleted: let its map go
        if st is None:
            return None
        key = (path, st.st_mtime_ns, st.st_size)
        if key in _ARRAYS:
            _ARRAYS.move_to_end(key)
            return _ARRAYS[key]
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1:] != (size, size, 3):
        return None
    with _arrays_lock:
        _ARRAYS[key] = array
        while len(_ARRAYS) > _ARRAYS_KEPT:
            _ARRAYS.popitem(last=False)
    return array


def _from_cache(source: ThumbSource, size: int) -> np.ndarray | None:
    """The image's crop from its crop cache, or None where the cache cannot be read."""
    import numpy as np

    if source.crop is None:
        return None
    path, row, crop_size = source.crop
    array = _cache_array(path, crop_size)
    if array is None or not 0 <= row < len(array):
        return None
    try:
        pixels = np.array(array[row])
    except (OSError, ValueError):
        return None
    if crop_size != size:
        from PIL import Image

        pixels = np.asarray(
            Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2)
        )
    return pixels


def render(source: ThumbSource, size: int) -> bytes:
    """The thumbnail's JPEG bytes (ImageRefused, ImageMissing where there is none)."""
    from PIL import Image

    from catalog.cache import render_crop
    from catalog.transforms import BAD_IMAGE_ERRORS

    pixels = _from_cache(source, size)
    if pixels is None:
        path = safe_image_path(source.root, source.path)
        try:
            box = source.box
            if box is None:
                with Image.open(path) as image:
                    box = (0, 0, image.width, image.height)
            pixels = render_crop(path, box, size)
        except BAD_IMAGE_ERRORS as err:
            raise ImageMissing(f"{source.path!r} cannot be decoded: {err}") from err
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def warm_up() -> None:
    """Import what making a thumbnail needs (numpy, Pillow, OpenCV: a few hundred ms),
    so that the first grid's thumbnails do not wait for it."""
    import cv2  # noqa: F401 - catalog.transforms.warp imports it on first use
    import numpy  # noqa: F401
    from PIL import Image  # noqa: F401

    from catalog.cache import render_crop  # noqa: F401


_PLACEHOLDER: dict[int, bytes] = {}


def placeholder(size: int) -> bytes:
    """A grey square with a cross: the thumbnail of an image that cannot be read."""
    if size not in _PLACEHOLDER:
        from PIL import Image, ImageDraw

        image = Image.new("RGB", (size, size), (200, 200, 200))
        draw = ImageDraw.Draw(image)
        draw.line((0, 0, size, size), fill=(150, 150, 150), width=max(1, size // 32))
        draw.line((0, size, size, 0), fill=(150, 150, 150), width=max(1, size // 32))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=JPEG_QUALITY)
        _PLACEHOLDER[size] = out.getvalue()
    return _PLACEHOLDER[size]


class ThumbnailStore:
    """The thumbnail folder (None: thumbnails are made on every request, not kept)
    and the recent sources of listed images (so a grid's thumbnails need no catalog
    connection of their own)."""

    def __init__(
        self, folder: str | os.PathLike[str] | None, size: int, cache_bytes: int, hints: int
    ) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.size = int(size)
        self.cache_bytes = int(cache_bytes)
        self._hints: OrderedDict[str, ThumbSource] = OrderedDict()
        self._max_hints = hints
        self._lock = threading.Lock()
        self._evict_lock = threading.Lock()
        self._total: int | None = None  # bytes in the folder, counted at the first write

    # --- sources remembered from pages ---------------------------------------------------

    def remember(self, sources: dict[str, ThumbSource]) -> None:
        with self._lock:
            for image_id, source in sources.items():
                self._hints[image_id] = source
                self._hints.move_to_end(image_id)
            while len(self._hints) > self._max_hints:
                self._hints.popitem(last=False)

    def recall(self, image_id: str) -> ThumbSource | None:
        with self._lock:
            return self._hints.get(image_id)

    # --- the folder --------------------------------------------------------------------

    def path(self, token: str, image_id: str) -> Path | None:
        """Where the thumbnail of ``image_id`` for ingest ``token`` lives (None without a
        folder or for a token that is not one)."""
        if self.folder is None or self.cache_bytes <= 0 or not is_token(token):
            return None
        digest = hashlib.sha256(image_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return self.folder / str(self.size) / token / digest[:2] / f"{digest}.jpg"

    def read(self, token: str, image_id: str) -> bytes | None:
        """The kept thumbnail's bytes, or None."""
        path = self.path(token, image_id)
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError:
            return None

    def store(self, token: str, image_id: str, data: bytes) -> None:
        """Keep ``data`` (best effort: a folder that cannot be written keeps nothing)."""
        path = self.path(token, image_id)
        if path is None:
            return
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_name(path)
            with open(tmp, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except OSError:
            if tmp is not None:
                discard(tmp)
            return
        with self._lock:
            if self._total is not None:
                self._total += len(data)
                over = self._total > self.cache_bytes
            else:
                over = True  # count the folder once
        if over:
            self.evict()

    def evict(self) -> int:
        """Delete the oldest thumbnails while the folder is over its bound; returns the
        bytes it holds afterwards."""
        if self.folder is None or not self._evict_lock.acquire(blocking=False):
            return self._total or 0  # another thread is at it
        try:
            files = []
            for dirpath, _, names in os.walk(self.folder):
                for name in names:
                    full = os.path.join(dirpath, name)
                    try:
                        st = os.lstat(full)
                    except OSError:
                        continue
                    files.append((st.st_mtime, st.st_size, full))
            total = sum(f[1] for f in files)
            if total > self.cache_bytes:
                files.sort()
                goal = self.cache_bytes * EVICT_TO
                for _, size, full in files:
                    if total <= goal:
                        break
                    try:
                        os.unlink(full)
                        total -= size
                    except OSError:
                        pass
            with self._lock:
                self._total = total
            return total
        finally:
            self._evict_lock.release()


__all__ = [
    "DEFAULT_CACHE_BYTES",
    "ImageMissing",
    "ImageRefused",
    "ThumbSource",
    "ThumbnailStore",
    "ingest_token",
    "lookup_sources",
    "placeholder",
    "render",
    "safe_image_path",
    "warm_up",
]
