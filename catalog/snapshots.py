"""Frozen selections: ``celebcat snapshot create NAME`` and friends.

A snapshot copies the current selection, its split and face boxes, the identity ->
label mapping and the parameters into the catalog. It never changes afterwards:
changing parameters or re-ingesting changes the views, not the snapshots. Its
``hash`` (sha256 over the ordered ``image_id:identity:split:x_1,y_1,x_2,y_2``
lines) names exactly what a model saw; runs record it.

This module owns the ``snapshots``, ``snapshot_images`` and ``snapshot_labels`` tables.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from catalog.db import connect, has_table, transaction
from catalog.errors import CatalogError
from catalog.selection import rebuild
from catalog.views import get_params

if TYPE_CHECKING:
    import duckdb

SNAPSHOT_DDL = """
CREATE TABLE IF NOT EXISTS snapshots (
    name         VARCHAR PRIMARY KEY,
    hash         VARCHAR NOT NULL,     -- sha256 of the ordered 'image_id:identity:split:box' lines
    created_at   TIMESTAMP NOT NULL,   -- UTC
    params       JSON NOT NULL,        -- the selection parameters in force
    quotas       JSON NOT NULL,
    n_images     INTEGER NOT NULL,
    n_identities INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot_images (
    snapshot VARCHAR NOT NULL,
    image_id VARCHAR NOT NULL,
    identity INTEGER NOT NULL,
    split    VARCHAR,   -- train / val / test / query / distractor; NULL: selected, unused
    label    INTEGER,   -- 0..C-1 over the identities of train/val/test; NULL for held-out
    x_1 INTEGER, y_1 INTEGER, x_2 INTEGER, y_2 INTEGER,  -- face box (face_boxes view)
    PRIMARY KEY (snapshot, image_id)
);
CREATE TABLE IF NOT EXISTS snapshot_labels (
    snapshot VARCHAR NOT NULL, identity INTEGER NOT NULL, label INTEGER NOT NULL,
    PRIMARY KEY (snapshot, identity)
);
"""

_NAME_OK = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."


class SnapshotError(CatalogError, ValueError):
    """Unknown or duplicate snapshot name, or a selection that cannot be frozen."""


@dataclass(frozen=True)
class Snapshot:
    name: str
    hash: str
    created_at: Any
    params: dict[str, float]
    quotas: dict[str, float]
    n_images: int
    n_identities: int


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(SNAPSHOT_DDL)


def _has_tables(con: duckdb.DuckDBPyConnection) -> bool:
    return has_table(con, "snapshots")


def get(con: duckdb.DuckDBPyConnection, name: str) -> Snapshot:
    """The snapshot ``name``, or SnapshotError listing the known ones (read-only safe)."""
    row = None
    if _has_tables(con):
        row = con.execute("SELECT * FROM snapshots WHERE name = ?", [name]).fetchone()
    if row is None:
        known = [
            r[0] for r in con.execute("SELECT name FROM snapshots ORDER BY 1").fetchall()
        ] if _has_tables(con) else []
        hint = f"Known: {', '.join(known)}" if known else "There are none yet"
        raise SnapshotError(f"No snapshot {name!r}. {hint} (celebcat snapshot create NAME).")
    name, hash_, created, params, quotas, n_images, n_ids = row
    return Snapshot(name, hash_, created, json.loads(params), json.loads(quotas), n_images, n_ids)


def create(name: str, db: str | os.PathLike[str] | None = None) -> Snapshot:
    """Freeze the current selection as ``name`` (refused if the name is taken)."""
    if not name or any(c not in _NAME_OK for c in name):
        raise SnapshotError(
            f"Snapshot name {name!r}: use letters, digits, '_', '-' and '.' only"
        )
    con = connect(db)
    try:
        with transaction(con):
            ensure_tables(con)
            if con.execute("SELECT count(*) FROM snapshots WHERE name = ?", [name]).fetchone()[0]:
                raise SnapshotError(
                    f"Snapshot {name!r} exists and snapshots never change. "
                    f"Choose another name, or `celebcat snapshot drop {name}` first."
                )
            rebuild(con)
            has_boxes = con.execute("SELECT count(*) FROM images").fetchone()[0] > 0
            boxes = (
                "LEFT JOIN face_boxes AS f USING (image_id)" if has_boxes
                else "LEFT JOIN (SELECT NULL::VARCHAR AS image_id, NULL::INTEGER AS x_1, "
                "NULL::INTEGER AS y_1, NULL::INTEGER AS x_2, NULL::INTEGER AS y_2 "
                "WHERE false) AS f USING (image_id)"
            )
            con.execute(
                "INSERT INTO snapshot_labels SELECT ?, identity, "
                "(row_number() OVER (ORDER BY identity) - 1)::INTEGER "
                "FROM (SELECT DISTINCT identity FROM recognition_split "
                "WHERE split IN ('train', 'val', 'test'))",
                [name],
            )
            con.execute(
                "INSERT INTO snapshot_images SELECT ?, s.image_id, s.identity, r.split, l.label, "
                f"f.x_1, f.y_1, f.x_2, f.y_2 FROM selection AS s "
                "LEFT JOIN recognition_split AS r USING (image_id) "
                "LEFT JOIN snapshot_labels AS l ON l.snapshot = ? AND l.identity = s.identity "
                f"{boxes}",
                [name, name],
            )
            n_images, n_ids, digest = con.execute(
                "SELECT count(*), count(DISTINCT identity), "
                "sha256(coalesce(string_agg(concat_ws(':', image_id, identity, "
                "coalesce(split, ''), concat_ws(',', x_1, y_1, x_2, y_2)), chr(10) "
                "ORDER BY image_id), '')) "
                "FROM snapshot_images WHERE snapshot = ?",
                [name],
            ).fetchone()
            if n_images == 0:
                raise SnapshotError(
                    "The selection is empty: nothing to freeze (see `celebcat select`)."
                )
            quotas = dict(con.execute("SELECT attribute, share FROM quotas").fetchall())
            con.execute(
                "INSERT INTO snapshots VALUES (?, ?, now()::TIMESTAMP, ?, ?, ?, ?)",
                [name, digest, json.dumps(get_params(con)), json.dumps(quotas), n_images, n_ids],
            )
        return get(con, name)
    finally:
        con.close()


def list_snapshots(db: str | os.PathLike[str] | None = None) -> list[Snapshot]:
    con = connect(db, read_only=True)
    try:
        if not _has_tables(con):
            return []
        names = [r[0] for r in con.execute("SELECT name FROM snapshots ORDER BY created_at, name")
                 .fetchall()]
        return [get(con, n) for n in names]
    finally:
        con.close()


def show(
    name: str, db: str | os.PathLike[str] | None = None
) -> tuple[Snapshot, dict[str, tuple[int, int]]]:
    """The snapshot and its split sizes (split -> (images, identities))."""
    con = connect(db, read_only=True)
    try:
        snap = get(con, name)
        rows = con.execute(
            "SELECT coalesce(split, 'unused'), count(*), count(DISTINCT identity) "
            "FROM snapshot_images WHERE snapshot = ? GROUP BY 1 ORDER BY 1",
            [name],
        ).fetchall()
        return snap, {s: (n, i) for s, n, i in rows}
    finally:
        con.close()


@dataclass(frozen=True)
class SnapshotDiff:
    only_a: list[str]
    only_b: list[str]
    split_changed: list[tuple[str, str | None, str | None]]
    params_changed: dict[str, tuple[float | None, float | None]]


def diff(a: str, b: str, db: str | os.PathLike[str] | None = None) -> SnapshotDiff:
    con = connect(db, read_only=True)
    try:
        sa, sb = get(con, a), get(con, b)

        def ids(sql: str) -> list:
            return con.execute(sql, [a, b]).fetchall()

        only_a = ids(
            "SELECT image_id FROM snapshot_images WHERE snapshot = ? EXCEPT "
            "SELECT image_id FROM snapshot_images WHERE snapshot = ? ORDER BY 1"
        )
        only_b = con.execute(
            "SELECT image_id FROM snapshot_images WHERE snapshot = ? EXCEPT "
            "SELECT image_id FROM snapshot_images WHERE snapshot = ? ORDER BY 1",
            [b, a],
        ).fetchall()
        changed = ids(
            "SELECT x.image_id, x.split, y.split FROM snapshot_images x "
            "JOIN snapshot_images y USING (image_id) WHERE x.snapshot = ? AND y.snapshot = ? "
            "AND x.split IS DISTINCT FROM y.split ORDER BY 1"
        )
        keys = sorted(set(sa.params) | set(sb.params))
        params = {
            k: (sa.params.get(k), sb.params.get(k))
            for k in keys if sa.params.get(k) != sb.params.get(k)
        }
        return SnapshotDiff([r[0] for r in only_a], [r[0] for r in only_b], changed, params)
    finally:
        con.close()


def drop(name: str, db: str | os.PathLike[str] | None = None) -> None:
    con = connect(db)
    try:
        get(con, name)
        with transaction(con):
            for table in ("snapshot_images", "snapshot_labels"):
                con.execute(f"DELETE FROM {table} WHERE snapshot = ?", [name])
            con.execute("DELETE FROM snapshots WHERE name = ?", [name])
    finally:
        con.close()
