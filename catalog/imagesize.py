"""Image dimensions from file headers, without decoding pixels.

The image index (``catalog.images``) needs the width and height of every image,
202,599 of them for CelebA, and nothing else. ``PIL.Image.open(p).size`` gets there
too, but it builds a full ``ImageFile`` (plugin probing, every JPEG segment read into
memory and parsed, EXIF included), about 5x slower (measured on 3,000 JPEGs) than
walking the JPEG markers to the frame header. So JPEG and PNG, the formats CelebA and its copies
ship in, are parsed here by hand; everything else (BMP, WebP, GIF, ...) falls back to
Pillow, which opens lazily and decodes nothing.

What is reported is the size of the pixel array as stored, exactly what Pillow's
``.size`` reports: the EXIF orientation tag is **not** applied, so a portrait photo
stored sideways with ``Orientation = 6`` reports its stored (landscape) size. CelebA's
boxes and landmarks are in stored-pixel coordinates too.

Only headers are read, so a file whose header is intact but whose compressed data is
cut short still gets a size. ``read_headers`` also reads the
last few KiB of each JPEG and PNG for its end marker (JPEG's EOI ``FF D9``, PNG's
``IEND`` chunk), which a file cut short lacks: one more read per file. (The default:
``read_headers`` is the image scan's unit of work.) Damage inside
the data is found only by decoding (``celebcat check --decode``).

References: ITU-T T.81 (JPEG) annex B.1.1.2 (markers, fill bytes), B.1.1.3 and
table B.1 (marker codes), B.1.1.4 (segment lengths), B.2.2 (frame header); PNG
(W3C, 2nd ed.) sections 5.2 (signature), 5.6 (IHDR comes first), 11.2.2 (IHDR).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

#: Images with more pixels than this are not used (the ``image_too_large`` check):
#: Pillow's own decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, 1024**3 // 4 // 3,
#: past which it warns; it refuses at twice that). A header can claim up to 65535 x
#: 65535 (JPEG) or 2**31 x 2**31 (PNG) in a few hundred bytes.
MAX_IMAGE_PIXELS = 89_478_485

#: Bytes read from the end of a JPEG or PNG to look for its end marker.
TAIL_BYTES = 4096

#: How ``read_headers`` words a file cut short (header read, end marker missing).
TRUNCATED = "truncated"

# One read covers the markers before the frame header in a plain JFIF file (a few
# hundred bytes) and most ICC profiles; a larger EXIF block is skipped with a seek.
_CHUNK = 4096

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# SOF0..SOF15 are 0xC0..0xCF, except three codes in that range that are not frame
# headers: DHT (C4, Huffman tables), JPG (C8, reserved) and DAC (CC, arithmetic
# conditioning). T.81 table B.1.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}

# Markers that stand alone, with no length field after them: TEM, RST0..RST7, SOI.
_STANDALONE_MARKERS = frozenset([0x01, 0xD8, *range(0xD0, 0xD8)])


class ImageHeaderError(ValueError):
    """An image's size could not be read from its header.

    ``path`` is the file and ``reason`` says what was wrong with it (empty, truncated,
    not an image, ...); the message names both.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot read the image size of {self.path}: {reason}")

    def __reduce__(self) -> tuple[type[ImageHeaderError], tuple[str, str]]:
        # The default pickling would call ImageHeaderError(message) and fail; this keeps
        # the error intact across a process pool.
        return (type(self), (self.path, self.reason))


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Return ``(width, height)`` of the image at ``path``, reading only its header.

    JPEG and PNG are parsed here; other formats go through ``PIL.Image.open`` (lazy,
    nothing decoded). The size is the stored pixel size, as ``PIL.Image.size`` gives
    it: JPEG EXIF orientation is not applied.

    Raises:
        ImageHeaderError: the file cannot be opened, is empty, is truncated before
            the size, or is not an image Pillow knows.
    """
    fd = _open(path)
    try:
        return _size_of_open_file(fd, path)
    finally:
        os.close(fd)


def read_headers(
    paths: Iterable[str], *, check_tail: bool = True
) -> list[tuple[int | None, int | None, int | None, str | None]]:
    """``(file_size, width, height, error)`` for each path; never raises for a bad image.

    With ``check_tail`` (the default), a JPEG or PNG whose header was read but whose
    end marker is missing (the file was cut short) keeps its width and height and gets
    an error that starts with :data:`TRUNCATED`; an error with a size is always that.

    The unit of work of the parallel scan in ``catalog.images``. The file size comes
    from ``fstat`` on the file already opened for its header: on POSIX that is as
    cheap as the ``stat`` a directory walk would otherwise make for it, and here it
    runs in parallel. ``file_size`` is None only for a file that no longer exists.
    This lives here, not in ``catalog.images``, so that a worker process started by
    spawn or forkserver imports this small module and not pandas.
    """
    out: list[tuple[int | None, int | None, int | None, str | None]] = []
    for path in paths:
        try:
            fd = _open(path)
        except ImageHeaderError as exc:
            try:
                size: int | None = os.stat(path).st_size  # e.g. no read permission
            except OSError:
                size = None  # removed since it was listed
            out.append((size, None, None, exc.reason))
            continue
        try:
            size = os.fstat(fd).st_size
            width, height, kind = _size_and_kind(fd, path)
            damage = _tail_damage(fd, size, kind) if check_tail else None
        except ImageHeaderError as exc:
            out.append((size, None, None, exc.reason))
        except Exception as exc:  # noqa: BLE001 - a Pillow bug must not stop a scan
            out.append((size, None, None, f"{type(exc).__name__}: {exc}"))
        else:
            out.append((size, width, height, damage))
        finally:
            os.close(fd)
    return out


def _tail_damage(fd: int, size: int, kind: str) -> str | None:
    """Why the file looks cut short, from its last :data:`TAIL_BYTES`; None if it ends well.

    JPEG: its last marker must be EOI (``FF D9``; T.81 B.2.1). Zero padding after it is
    allowed, and so is other data (camera trailers): an ``FF D9`` anywhere in the tail
    counts, since inside entropy-coded data ``FF`` is only ever followed by ``00`` or
    a restart marker (T.81 B.1.1.5, F.1.2.3), so a file cut in its scan data has none.
    PNG: the ``IEND`` chunk must be in the tail (PNG spec 5.6, 11.2.5).
    """
    if kind not in ("jpeg", "png") or size <= 0:
        return None
    n = min(size, TAIL_BYTES)
    try:
        if hasattr(os, "pread"):  # one system call instead of two
            tail = os.pread(fd, n, size - n)
        else:  # pragma: no cover - Windows
            os.lseek(fd, size - n, os.SEEK_SET)
            tail = os.read(fd, n)
    except OSError as exc:
        return f"{TRUNCATED}? its end cannot be read: {exc.strerror or exc}"
    if kind == "jpeg":
        if b"\xff\xd9" in tail:
            return None
        return (
            f"{TRUNCATED} JPEG: no end-of-image marker (FF D9) in its last {n} bytes; "
            "the file was cut short"
        )
    if b"IEND" in tail:
        return None
    return f"{TRUNCATED} PNG: no IEND chunk in its last {n} bytes; the file was cut short"


def _open(path: str | os.PathLike[str]) -> int:
    # A raw descriptor: open() would add a buffer object, an fstat and an isatty
    # call per file, which shows at 200k files.
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise ImageHeaderError(path, f"cannot open: {exc.strerror or exc}") from exc


def _size_of_open_file(fd: int, path: str | os.PathLike[str]) -> tuple[int, int]:
    width, height, _ = _size_and_kind(fd, path)
    return width, height


def _size_and_kind(fd: int, path: str | os.PathLike[str]) -> tuple[int, int, str]:
    """Dispatch on the magic bytes: JPEG and PNG here, anything else to Pillow.

    The kind is ``"jpeg"``, ``"png"`` or ``"other"``.
    """
    try:
        head = os.read(fd, _CHUNK)
        if head.startswith(b"\xff\xd8\xff"):  # SOI then a marker: Pillow's test too
            return (*_jpeg_size(fd, head, path), "jpeg")
    except OSError as exc:  # e.g. a directory that was named like an image
        raise ImageHeaderError(path, f"cannot read: {exc.strerror or exc}") from exc
    if not head:
        raise ImageHeaderError(path, "empty file")
    if head.startswith(_PNG_SIGNATURE):
        return (*_png_size(head, path), "png")
    return (*_pil_size(path), "other")


def _jpeg_size(fd: int, buf: bytes, path: str | os.PathLike[str]) -> tuple[int, int]:
    """Walk the JPEG markers after SOI to the first frame header (SOFn).

    ``buf`` holds the file from offset 0. Segments are skipped by their length field;
    when the walk leaves ``buf`` (a large EXIF or ICC segment), the file is read again
    from the current offset instead of being read through.
    """
    base = 0  # file offset of buf[0]
    i = 2  # index in buf of the next byte to look at: just after SOI
    while True:
        # The shortest way to a size from here is a marker (2 bytes), a length (2) and
        # the SOF's precision, height and width (5): 9 bytes.
        if i + 9 > len(buf):
            base += i
            os.lseek(fd, base, os.SEEK_SET)
            buf = os.read(fd, _CHUNK)
            i = 0
            if len(buf) < 9:
                raise ImageHeaderError(
                    path,
                    f"truncated JPEG: the file ends at byte {base + len(buf)}, "
                    "before the frame header (SOFn)",
                )
        if buf[i] != 0xFF:
            # Stray bytes between segments; Pillow and libjpeg skip them with a warning.
            i += 1
            continue
        marker = buf[i + 1]
        if marker == 0xFF:  # a fill byte: any number of 0xFF may precede a marker
            i += 1
            continue
        if marker == 0x00 or marker in _STANDALONE_MARKERS:
            # 0xFF00 is an escaped data byte (Pillow skips it); the others have no length.
            i += 2
            continue
        if marker in (0xD9, 0xDA):
            name = "end of image (EOI)" if marker == 0xD9 else "start of scan (SOS)"
            raise ImageHeaderError(
                path, f"no frame header (SOFn) before the {name} at byte {base + i}"
            )
        if marker < 0xC0:
            raise ImageHeaderError(path, f"invalid JPEG marker 0xFF{marker:02X} at byte {base + i}")
        length = (buf[i + 2] << 8) | buf[i + 3]  # counts itself, not the marker
        if marker in _SOF_MARKERS:
            if length < 7:
                raise ImageHeaderError(
                    path, f"frame header at byte {base + i} is {length} bytes long, too short"
                )
            height = (buf[i + 5] << 8) | buf[i + 6]
            width = (buf[i + 7] << 8) | buf[i + 8]
            if width == 0 or height == 0:
                # Height 0 means "given later by a DNL marker" (T.81 B.2.5), which
                # nothing in practice writes and Pillow does not resolve either.
                raise ImageHeaderError(
                    path, f"frame header at byte {base + i} gives a size of {width}x{height}"
                )
            return width, height
        if length < 2:
            raise ImageHeaderError(
                path, f"segment 0xFF{marker:02X} at byte {base + i} has length {length}"
            )
        i += 2 + length


def _png_size(head: bytes, path: str | os.PathLike[str]) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must come first (PNG spec 5.6)."""
    # signature (8), chunk length (4), chunk type (4), width (4), height (4)
    if len(head) < 24:
        raise ImageHeaderError(path, f"truncated PNG: {len(head)} bytes, no complete IHDR")
    if head[12:16] != b"IHDR":
        raise ImageHeaderError(path, f"PNG's first chunk is {head[12:16]!r}, not IHDR")
    width = int.from_bytes(head[16:20], "big")
    height = int.from_bytes(head[20:24], "big")
    if width == 0 or height == 0:
        raise ImageHeaderError(path, f"PNG header gives a size of {width}x{height}")
    return width, height


def _pil_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Any other format: Pillow reads the header on open and decodes nothing."""
    # Imported here so that the JPEG/PNG path (and a worker process) never pays for it.
    from PIL import Image, UnidentifiedImageError

    from catalog.transforms import BAD_IMAGE_ERRORS

    try:
        with Image.open(path) as im:
            return im.size
    except UnidentifiedImageError as exc:
        # Pillow says this both for non-images and for images whose header its plugin
        # rejected (a cut-short BMP, say); it does not tell the two apart.
        raise ImageHeaderError(
            path, "Pillow cannot identify it: not an image, or a damaged header"
        ) from exc
    except Image.DecompressionBombError as exc:
        raise ImageHeaderError(path, f"rejected by Pillow as too large: {exc}") from exc
    except BAD_IMAGE_ERRORS as exc:
        # Pillow's plugins report a bad header as any of these.
        raise ImageHeaderError(path, f"bad header: {exc}") from exc
