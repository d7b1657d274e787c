"""Galleries: the people ``celebcat identify`` can name, as embeddings in the catalog.

A gallery is a named set of face embeddings, each with the name of the person it
shows, made by one recognizer run (embeddings of two runs are not comparable, so a
gallery records its run and is only searched with it). It is built from a snapshot
split (identity names: CelebA's identity numbers) or a folder with one subfolder per
person (identity names: the subfolder names) by :mod:`models.pipeline.identify`; this module
only stores, lists, reads and drops them.

This module owns two tables:

- ``galleries``: one row per gallery: ``name``, the recognizer ``run_id``,
  ``created_at`` (UTC), ``source`` (``snapshot:<name>/<split>`` or
  ``folder:<absolute path>``), ``n_identities``, ``n_images``, and how its faces were
  found and cropped: ``detector`` (spec) and ``crops`` (the crop source,
  ``bbox`` or ``aligned/<template>/<landmark run>``).
- ``gallery_entries``: one row per gallery image: ``gallery``, ``identity_name``,
  ``image_id_or_path`` (the catalog's image id, or the file's path), ``embedding``
  (``FLOAT[]``, L2-normalised).
- ``gallery_calibrations``: how the gallery's own search scores faces of people it
  does not hold, per search template (``how``: ``mean``, each person's centre, or
  ``max``, their best image): ``strangers`` (where those faces came from),
  ``n_identities`` (how many people they show) and ``scores`` (each stranger face's
  best cosine in the gallery, ascending). ``identify`` takes its unknown-face
  threshold from it (:mod:`models.pipeline.calibration`).

Searching is SQL too, e.g. the five nearest entries to one embedding::

    select identity_name, list_cosine_similarity(embedding, ?::FLOAT[]) as cosine
    from gallery_entries where gallery = 'friends' order by cosine desc limit 5
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from catalog.db import connect, has_table, register_frame, transaction
from catalog.errors import CatalogError
from catalog.names import BadNameError, check_name, suggest

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "GALLERY_DDL",
    "Calibration",
    "Gallery",
    "GalleryEntries",
    "GalleryError",
    "drop_gallery",
    "get_gallery",
    "list_galleries",
    "read_calibration",
    "read_entries",
    "write_calibrations",
    "write_gallery",
]

GALLERY_DDL = """
CREATE TABLE IF NOT EXISTS galleries (
    name         VARCHAR PRIMARY KEY,
    run_id       VARCHAR NOT NULL,     -- the recognizer run that made the embeddings
    created_at   TIMESTAMP NOT NULL,   -- UTC
    source       VARCHAR NOT NULL,     -- snapshot:<name>/<split> or folder:<path>
    n_identities INTEGER NOT NULL,
    n_images     INTEGER NOT NULL,
    detector     VARCHAR,              -- how faces were found (a detector spec)
    crops        VARCHAR               -- bbox or aligned/<template>/<landmark run>
);
CREATE TABLE IF NOT EXISTS gallery_entries (
    gallery          VARCHAR NOT NULL,
    identity_name    VARCHAR NOT NULL,
    image_id_or_path VARCHAR NOT NULL,
    embedding        FLOAT[] NOT NULL,   -- L2-normalised
    PRIMARY KEY (gallery, image_id_or_path)
);
CREATE TABLE IF NOT EXISTS gallery_calibrations (
    gallery      VARCHAR NOT NULL,
    how          VARCHAR NOT NULL,     -- mean | max: the template the search scores with
    strangers    VARCHAR NOT NULL,     -- where the strangers' faces came from
    n_identities INTEGER NOT NULL,     -- how many people they show
    scores       FLOAT[] NOT NULL,     -- each stranger face's best cosine, ascending
    created_at   TIMESTAMP NOT NULL,   -- UTC
    PRIMARY KEY (gallery, how)
);
"""


class GalleryError(CatalogError, ValueError):
    """Unknown, duplicate or badly named gallery, or entries that do not fit one."""


@dataclass(frozen=True)
class Gallery:
    name: str
    run_id: str
    created_at: datetime
    source: str
    n_identities: int
    n_images: int
    detector: str | None
    crops: str | None


@dataclass(frozen=True)
class GalleryEntries:
    """A gallery's rows, ordered by identity name then image."""

    gallery: Gallery
    identity_name: np.ndarray  # (N,) str
    image: np.ndarray  # (N,) str: image id or path
    embeddings: np.ndarray  # (N, D) float32, L2-normalised

    def __len__(self) -> int:
        return len(self.identity_name)


@dataclass(frozen=True)
class Calibration:
    """How a gallery's search (template ``how``) scores ``len(scores)`` faces of
    ``n_identities`` people it does not hold, from ``strangers``: each face's best
    cosine in the gallery, ascending."""

    how: str
    strangers: str
    n_identities: int
    scores: np.ndarray  # (n,) float32, ascending
    created_at: datetime | None = None

    def __len__(self) -> int:
        return len(self.scores)


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(GALLERY_DDL)


def _has_tables(con: duckdb.DuckDBPyConnection) -> bool:
    return has_table(con, "galleries")


_COLUMNS = "name, run_id, created_at, source, n_identities, n_images, detector, crops"


def _unknown(con: duckdb.DuckDBPyConnection, name: str) -> GalleryError:
    known = (
        [r[0] for r in con.execute("SELECT name FROM galleries ORDER BY 1").fetchall()]
        if _has_tables(con)
        else []
    )
    hint = f"Known: {', '.join(known)}" if known else "There are none yet"
    near = suggest(name, known) or "."
    return GalleryError(f"No gallery {name!r}{near} {hint} (celebcat gallery add NAME ...).")


def write_gallery(
    db: str | os.PathLike[str] | None,
    name: str,
    run_id: str,
    source: str,
    identity_names: Sequence[str],
    images: Sequence[str],
    embeddings: Any,
    *,
    detector: str | None = None,
    crops: str | None = None,
    replace: bool = False,
    calibrations: Sequence[Calibration] = (),
) -> Gallery:
    """Store a gallery in one transaction (``replace``: over one of that name; else a
    GalleryError if it exists), with its ``calibrations``. Embeddings (N, D) are
    L2-normalised here. A gallery must hold at least one image, and an image only
    once."""
    try:
        check_name(name, "Gallery")
    except BadNameError as err:
        raise GalleryError(str(err)) from None
    matrix = np.asarray(embeddings, dtype=np.float32)
    n = len(identity_names)
    if n == 0:
        raise GalleryError(f"Gallery {name!r} would be empty: no face was embedded.")
    if matrix.ndim != 2 or len(matrix) != n or len(images) != n:
        raise GalleryError(
            f"{n} names, {len(images)} images and embeddings of shape "
            f"{matrix.shape} do not fit one gallery"
        )
    if not np.isfinite(matrix).all():
        raise GalleryError(f"Gallery {name!r}: the embeddings hold NaN or infinite values")
    if len(set(images)) != n:
        raise GalleryError(f"Gallery {name!r}: an image appears twice")
    matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    import pandas as pd

    frame = pd.DataFrame(
        {
            "gallery": name,
            "identity_name": [str(s) for s in identity_names],
            "image_id_or_path": [str(s) for s in images],
            "embedding": list(matrix),
        }
    )
    con = connect(db)
    try:
        with transaction(con):
            ensure_tables(con)
            exists = con.execute(
                "SELECT count(*) FROM galleries WHERE name = ?", [name]
            ).fetchone()[0]
            if exists and not replace:
                raise GalleryError(
                    f"Gallery {name!r} exists; drop it first (celebcat gallery "
                    "drop) or add with --replace."
                )
            con.execute("DELETE FROM gallery_entries WHERE gallery = ?", [name])
            con.execute("DELETE FROM gallery_calibrations WHERE gallery = ?", [name])
            con.execute("DELETE FROM galleries WHERE name = ?", [name])
            con.execute(
                f"INSERT INTO galleries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [name, run_id, now, source, len(set(frame["identity_name"])), n, detector, crops],
            )
            register_frame(con, "new_entries", frame)
            con.execute(
                "INSERT INTO gallery_entries SELECT gallery, identity_name, image_id_or_path, "
                "embedding::FLOAT[] FROM new_entries"
            )
            con.unregister("new_entries")
            _insert_calibrations(con, name, calibrations, now)
    finally:
        con.close()
    return get_gallery(db, name)


def _insert_calibrations(
    con: duckdb.DuckDBPyConnection,
    name: str,
    calibrations: Sequence[Calibration],
    now: datetime,
) -> None:
    for c in calibrations:
        scores = np.sort(np.asarray(c.scores, dtype=np.float32))
        if not len(scores) or not np.isfinite(scores).all():
            raise GalleryError(f"Gallery {name!r}: a calibration needs finite stranger scores")
        con.execute(
            "INSERT OR REPLACE INTO gallery_calibrations VALUES (?, ?, ?, ?, ?::FLOAT[], ?)",
            [name, c.how, c.strangers, int(c.n_identities), scores.tolist(), now],
        )


def write_calibrations(
    db: str | os.PathLike[str] | None, name: str, calibrations: Sequence[Calibration]
) -> None:
    """Store ``calibrations`` of gallery ``name`` in one transaction, replacing what it
    had (GalleryError for an unknown gallery)."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    con = connect(db)
    try:
        with transaction(con):
            ensure_tables(con)
            _find(con, name)
            con.execute("DELETE FROM gallery_calibrations WHERE gallery = ?", [name])
            _insert_calibrations(con, name, calibrations, now)
    finally:
        con.close()


def read_calibration(
    db: str | os.PathLike[str] | None, name: str, how: str = "mean"
) -> Calibration | None:
    """Gallery ``name``'s calibration for template ``how``, or None where it has none
    (built before calibrations existed, or with no strangers to measure)."""
    con = connect(db, read_only=True)
    try:
        _find(con, name)
        if not has_table(con, "gallery_calibrations"):
            return None
        row = con.execute(
            "SELECT how, strangers, n_identities, scores, created_at FROM "
            "gallery_calibrations WHERE gallery = ? AND how = ?",
            [name, how],
        ).fetchone()
    finally:
        con.close()
    if row is None:
        return None
    return Calibration(row[0], row[1], int(row[2]), np.asarray(row[3], np.float32), row[4])


def _gallery(row: tuple) -> Gallery:
    return Gallery(*row)


def _find(con: duckdb.DuckDBPyConnection, name: str) -> Gallery:
    """The gallery ``name`` on an open connection (GalleryError for an unknown name),
    so that :func:`read_entries` reads it and its rows on one connection."""
    row = (
        con.execute(f"SELECT {_COLUMNS} FROM galleries WHERE name = ?", [name]).fetchone()
        if _has_tables(con)
        else None
    )
    if row is None:
        raise _unknown(con, name)
    return _gallery(row)


def get_gallery(db: str | os.PathLike[str] | None, name: str) -> Gallery:
    """The gallery ``name`` (GalleryError for an unknown name)."""
    con = connect(db, read_only=True)
    try:
        return _find(con, name)
    finally:
        con.close()


def list_galleries(db: str | os.PathLike[str] | None = None) -> list[Gallery]:
    """Every gallery, by name."""
    con = connect(db, read_only=True)
    try:
        if not _has_tables(con):
            return []
        rows = con.execute(f"SELECT {_COLUMNS} FROM galleries ORDER BY name").fetchall()
    finally:
        con.close()
    return [_gallery(r) for r in rows]


def read_entries(db: str | os.PathLike[str] | None, name: str) -> GalleryEntries:
    """A gallery and its rows (GalleryError for an unknown name)."""
    con = connect(db, read_only=True)
    try:
        gallery = _find(con, name)
        # numpy straight from DuckDB: 4x faster than Python lists (0.4 s for 10,000 x 512)
        cols = con.execute(
            "SELECT identity_name, image_id_or_path, embedding FROM gallery_entries "
            "WHERE gallery = ? ORDER BY identity_name, image_id_or_path",
            [name],
        ).fetchnumpy()
    finally:
        con.close()
    n = len(cols["identity_name"])
    vectors = (
        np.stack(list(cols["embedding"])).astype(np.float32, copy=False)
        if n
        else np.zeros((0, 0), np.float32)
    )
    return GalleryEntries(
        gallery,
        np.asarray(cols["identity_name"], dtype=str),
        np.asarray(cols["image_id_or_path"], dtype=str),
        vectors,
    )


def drop_gallery(db: str | os.PathLike[str] | None, name: str) -> None:
    """Delete a gallery and its entries (GalleryError for an unknown name)."""
    con = connect(db)
    try:
        with transaction(con):
            ensure_tables(con)
            found = con.execute(
                "DELETE FROM galleries WHERE name = ? RETURNING name", [name]
            ).fetchall()
            if not found:
                raise _unknown(con, name)
            con.execute("DELETE FROM gallery_entries WHERE gallery = ?", [name])
            con.execute("DELETE FROM gallery_calibrations WHERE gallery = ?", [name])
    finally:
        con.close()
