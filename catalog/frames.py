"""A snapshot as one table: what a notebook reads first, and what the Parquet export writes.

``snapshot_frame("base-v1", db)`` is a pandas DataFrame with one row per image of the
snapshot, by image id; :func:`snapshot_query` is the SQL behind it, which
:mod:`catalog.parquet` streams to a file. Its columns, in order (:data:`COLUMNS`):

=====================================  ==================================================
``image_id``                           CelebA's file name, the catalog's key
``path``                               the in-the-wild file: absolute, or relative to the
                                       catalog's image root (the Parquet export; the root
                                       is in its metadata); NULL without an image index
``split``                              train / val / test / query / distractor; NULL:
                                       selected, in no split
``label``                              0..C-1 over train/val/test; NULL: held out
``identity``                           CelebA's identity number
``face_left .. face_bottom``           the snapshot's face box (CelebA's box shrunk by
                                       ``box_shrink`` and clamped to the image), in-the-
                                       wild pixels, right and bottom exclusive: the box
                                       the Datasets crop
``x_1, y_1, width, height``            CelebA's box as the ``bboxes`` table has it
``image_width, image_height``          the file's size in pixels
``lefteye_x .. rightmouth_y``          the five annotated landmarks, in-the-wild pixels
                                       (pixel indices)
the 40 attributes                      BOOLEAN, ``5_o_Clock_Shadow .. Young``
=====================================  ==================================================

A table the catalog lacks (a catalog ingested without landmarks, say) gives NULL
columns, so the layout never depends on what was ingested.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from catalog import snapshots
from catalog.db import DbArg, connect, has_table
from catalog.formats import ATTRIBUTES, BBOX_COLUMNS, LANDMARK_COLUMNS

if TYPE_CHECKING:
    import duckdb
    import numpy as np
    import pandas as pd

#: The snapshot's face box: not CelebA's ``x_1, y_1`` (a different box), so other names.
FACE_BOX_COLUMNS: tuple[str, ...] = ("face_left", "face_top", "face_right", "face_bottom")
IMAGE_SIZE_COLUMNS: tuple[str, ...] = ("image_width", "image_height")
#: The snapshot table's columns, in order.
COLUMNS: tuple[str, ...] = (
    "image_id",
    "path",
    "split",
    "label",
    "identity",
    *FACE_BOX_COLUMNS,
    *BBOX_COLUMNS,
    *IMAGE_SIZE_COLUMNS,
    *LANDMARK_COLUMNS,
    *ATTRIBUTES,
)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def image_root(con: duckdb.DuckDBPyConnection) -> str:
    """The catalog's image root ('' when it has no image index)."""
    if not has_table(con, "catalog_info"):
        return ""
    row = con.execute("SELECT value FROM catalog_info WHERE key = 'image_root'").fetchone()
    return (row[0] or "") if row else ""


def snapshot_query(
    con: duckdb.DuckDBPyConnection, snapshot: str, *, relative_paths: bool = False
) -> tuple[str, list[object]]:
    """The SQL of the snapshot's table (:data:`COLUMNS`) and its parameters."""
    root = image_root(con)
    joins, params = [], []
    if has_table(con, "images") and root:
        joins.append("LEFT JOIN images AS i USING (image_id)")
        if relative_paths:
            path = "i.path"
        else:
            path = "CASE WHEN i.path IS NULL THEN NULL ELSE ? || i.path END"
            params.append(os.path.join(root, ""))
        files = [f"{path} AS path", "i.width AS image_width", "i.height AS image_height"]
    else:
        files = ["NULL::VARCHAR AS path"] + [f"NULL::INTEGER AS {c}" for c in IMAGE_SIZE_COLUMNS]

    def table(name: str, alias: str, columns: tuple[str, ...], kind: str) -> list[str]:
        if has_table(con, name):
            joins.append(f"LEFT JOIN {name} AS {alias} USING (image_id)")
            return [f"{alias}.{_quoted(c)}" for c in columns]
        return [f"NULL::{kind} AS {_quoted(c)}" for c in columns]

    bbox = table("bboxes", "b", BBOX_COLUMNS, "INTEGER")
    marks = table("landmarks", "l", LANDMARK_COLUMNS, "INTEGER")
    attrs = table("attributes", "a", ATTRIBUTES, "BOOLEAN")
    face = [
        f"s.{c} AS {n}" for c, n in zip(("x_1", "y_1", "x_2", "y_2"), FACE_BOX_COLUMNS, strict=True)
    ]
    select = [
        "s.image_id",
        files[0],
        "s.split",
        "s.label",
        "s.identity",
        *face,
        *bbox,
        *files[1:],
        *marks,
        *attrs,
    ]
    sql = (
        f"SELECT {', '.join(select)} FROM snapshot_images AS s {' '.join(joins)} "
        "WHERE s.snapshot = ? ORDER BY s.image_id"
    )
    return sql, [*params, snapshot]


def _split_filter(
    con: duckdb.DuckDBPyConnection, snapshot: str, split: str | None, column: str
) -> tuple[str, list[object]]:
    """A WHERE clause keeping ``split`` of ``snapshot`` ('' for None or ``all``); a split
    the snapshot does not have raises SnapshotError listing those it has."""
    if split is None or split == snapshots.ALL:
        return "", []
    counts = dict(
        con.execute(
            f"SELECT coalesce(split, '{snapshots.UNUSED}'), count(*) FROM snapshot_images "
            "WHERE snapshot = ? GROUP BY ALL ORDER BY ALL",
            [snapshot],
        ).fetchall()
    )
    if split not in counts:
        available = ", ".join(f"{s} ({n})" for s, n in counts.items())
        raise snapshots.SnapshotError(
            f"Snapshot {snapshot!r} has no split {split!r}. Available: {available}."
        )
    if split == snapshots.UNUSED:
        return f"{column} IS NULL", []
    return f"{column} = ?", [split]


def snapshot_frame(
    snapshot: str, db: DbArg = None, *, split: str | None = None, relative_paths: bool = False
) -> pd.DataFrame:
    """Snapshot ``snapshot`` as a DataFrame, one row per image (columns: module docstring).

    ``split`` keeps one split (``unused``: selected images in no split). ``path`` is
    absolute unless ``relative_paths``; the image root is in ``frame.attrs["image_root"]``
    either way, beside ``snapshot`` and ``snapshot_hash``. Raises SnapshotError for an
    unknown snapshot or split."""
    con = connect(db, read_only=True)
    try:
        snap = snapshots.get(con, snapshot)
        sql, params = snapshot_query(con, snapshot, relative_paths=relative_paths)
        where, more = _split_filter(con, snapshot, split, "split")
        if where:
            sql, params = f"SELECT * FROM ({sql}) WHERE {where}", [*params, *more]
        frame = con.execute(sql, params).df()
        root = image_root(con)
    finally:
        con.close()
    frame.attrs.update(snapshot=snap.name, snapshot_hash=snap.hash, image_root=root)
    return frame


def embeddings(
    run_id: str, db: DbArg = None, *, snapshot: str | None = None, split: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A run's embeddings as numpy: ``(image_ids, vectors)``, a (N,) str array and a
    (N, d) float32 array (rows L2-normalised), ordered by image id.

    ``snapshot`` keeps the images of that snapshot (``split`` one of its splits): the
    ids line up with :func:`snapshot_frame`'s rows of the same snapshot and split,
    where the run embedded them. Raises RunError for an unknown run, SnapshotError for
    an unknown snapshot or split, ValueError when the run has no embeddings there."""
    import numpy as np

    from catalog import results

    results.get_run(db, run_id)  # RunError naming the known runs
    con = connect(db, read_only=True)
    try:
        where, params = ["e.run_id = ?"], [run_id]
        join = ""
        if snapshot is not None:
            snapshots.get(con, snapshot)
            join = "JOIN snapshot_images AS s ON s.image_id = e.image_id AND s.snapshot = ?"
            params.insert(0, snapshot)
            clause, more = _split_filter(con, snapshot, split, "s.split")
            if clause:
                where.append(clause)
                params.extend(more)
        elif split is not None:
            raise ValueError("split needs a snapshot: name the snapshot whose split to keep")
        rows: list[Any] = (
            con.execute(
                f"SELECT e.image_id, e.embedding FROM embeddings AS e {join} "
                f"WHERE {' AND '.join(where)} ORDER BY e.image_id",
                params,
            ).fetchall()
            if has_table(con, "embeddings")
            else []
        )
    finally:
        con.close()
    if not rows:
        where_text = f" for snapshot {snapshot!r}" if snapshot else ""
        raise ValueError(
            f"Run {run_id} has no embeddings{where_text}; make them with `celebcat embed "
            f"--run {run_id} --snapshot {snapshot or 'NAME'}`."
        )
    ids = np.array([r[0] for r in rows])
    return ids, np.asarray([r[1] for r in rows], dtype=np.float32)


__all__ = [
    "COLUMNS",
    "FACE_BOX_COLUMNS",
    "IMAGE_SIZE_COLUMNS",
    "embeddings",
    "image_root",
    "snapshot_frame",
    "snapshot_query",
]
