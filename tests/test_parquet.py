"""`celebcat snapshot export NAME OUT.parquet`: the frozen selection (and a run's results
for it) as Parquet, read back by DuckDB with the same rows and the hash in its footer."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest
from conftest import query, snapshot_catalog
from typer.testing import CliRunner

import cli
from catalog import results
from catalog.formats import LANDMARK_COLUMNS
from catalog.parquet import ParquetExportError, export_parquet, read_metadata
from catalog.snapshots import SnapshotError, list_snapshots


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_catalog(tmp_path_factory.mktemp("parquet"), ids=6, seed=2)


def read(path: Path, sql: str = "SELECT * FROM read_parquet(?) ORDER BY image_id") -> list:
    con = duckdb.connect()
    try:
        return con.execute(sql, [str(path)]).fetchall()
    finally:
        con.close()


def test_snapshot_reads_back_with_its_rows_and_hash(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "s.parquet"
    result = export_parquet("s", out, db)
    snap = next(s for s in list_snapshots(db) if s.name == "s")
    stored = query(
        db,
        "SELECT image_id, identity, split, label, x_1, y_1, x_2, y_2 "
        "FROM snapshot_images WHERE snapshot = 's' ORDER BY image_id",
    )
    back = read(
        out,
        "SELECT image_id, identity, split, label, x_1, y_1, x_2, y_2 "
        "FROM read_parquet(?) ORDER BY image_id",
    )
    assert back == stored and result.rows == len(stored) == snap.n_images
    meta = read_metadata(out)
    assert meta["snapshot_hash"] == snap.hash == result.snapshot_hash
    assert (meta["table"], meta["snapshot"], meta["n_images"]) == (
        "snapshot",
        "s",
        str(snap.n_images),
    )
    assert json.loads(meta["snapshot_params"]) == snap.params
    # the files, absolute, exist; the landmarks are the catalog's
    paths = read(out, "SELECT path, width FROM read_parquet(?)")
    assert all(Path(p).is_absolute() and Path(p).exists() and w > 0 for p, w in paths)
    marks = ", ".join(LANDMARK_COLUMNS)
    assert read(out, f"SELECT image_id, {marks} FROM read_parquet(?) ORDER BY 1") == query(
        db,
        f"SELECT image_id, {marks} FROM landmarks JOIN snapshot_images USING (image_id) "
        "WHERE snapshot = 's' ORDER BY 1",
    )
    assert [p.name for p in out.parent.iterdir()] == ["s.parquet"]  # no temporary left


def test_runs_results_framed_by_the_snapshot(db: Path, tmp_path: Path) -> None:
    ids = [
        r[0]
        for r in query(db, "SELECT image_id FROM snapshot_images WHERE snapshot = 's' ORDER BY 1")
    ]
    outside = query(
        db,
        "SELECT image_id FROM images WHERE image_id NOT IN (SELECT image_id "
        "FROM snapshot_images) LIMIT 1",
    )
    rec = results.start_run(db, "recognition", {"x": 1}, "s")
    rng = np.random.default_rng(0)
    embedded = ids[:5] + [r[0] for r in outside]
    results.write_embeddings(db, rec, embedded, rng.normal(size=(len(embedded), 8)), "bbox")
    out = tmp_path / "e.parquet"
    result = export_parquet("s", out, db, embeddings=rec)
    back = read(out, "SELECT image_id, split, embedding FROM read_parquet(?) ORDER BY 1")
    assert [r[0] for r in back] == ids[:5] and result.rows == 5  # the snapshot's images only
    _, vectors = results.read_embeddings(db, rec, ids[:5])
    np.testing.assert_allclose(np.array([r[2] for r in back]), vectors)
    meta = read_metadata(out)
    assert (meta["table"], meta["run_id"], meta["run_kind"]) == ("embeddings", rec, "recognition")
    assert meta["run_snapshot_hash"] == meta["snapshot_hash"]

    marks = results.start_run(db, "landmarks", {"x": 1}, "s")
    points = rng.uniform(0, 100, size=(3, 5, 2))
    results.write_landmark_predictions(db, marks, {"image_id": ids[:3], "landmarks": points})
    out = tmp_path / "p.parquet"
    export_parquet("s", out, db, predictions=marks)
    back = read(out, f"SELECT {', '.join(LANDMARK_COLUMNS)} FROM read_parquet(?) ORDER BY image_id")
    np.testing.assert_allclose(np.array(back).reshape(-1, 5, 2), points)

    with pytest.raises(ParquetExportError, match="landmarks runs"):
        export_parquet("s", tmp_path / "x.parquet", db, predictions=rec)
    with pytest.raises(ParquetExportError, match="no embeddings"):
        export_parquet(
            "s",
            tmp_path / "x.parquet",
            db,
            embeddings=results.start_run(db, "recognition", {}, "s"),
        )
    with pytest.raises(ParquetExportError, match="not both"):
        export_parquet("s", tmp_path / "x.parquet", db, embeddings=rec, predictions=marks)
    with pytest.raises(SnapshotError):
        export_parquet("nope", tmp_path / "x.parquet", db)
    assert not (tmp_path / "x.parquet").exists()


def test_cli_replaces_the_file(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    out.write_bytes(b"an older export")
    runner = CliRunner()
    result = runner.invoke(cli.app, ["snapshot", "export", "s", str(out), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "rows of snapshot s (hash" in result.output
    n = query(db, "SELECT count(*) FROM snapshot_images WHERE snapshot = 's'")[0][0]
    assert read(out, "SELECT count(*) FROM read_parquet(?)") == [(n,)]
