"""`celebcat export NAME OUT.parquet`: the frozen selection (and a run's results for it)
as Parquet, read back by DuckDB with the same rows and the hash in its footer, and by
the tools people open it with: pandas (pyarrow), pyarrow, polars, Hugging Face datasets."""

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
from catalog.formats import ATTRIBUTES, BBOX_COLUMNS, LANDMARK_COLUMNS
from catalog.frames import COLUMNS
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
        "SELECT image_id, identity, split, label, face_left, face_top, face_right, "
        "face_bottom FROM read_parquet(?) ORDER BY image_id",
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
    # paths relative to the image root in the metadata; the files exist there
    root = Path(meta["image_root"])
    paths = read(out, "SELECT path, image_width FROM read_parquet(?)")
    assert all(not Path(p).is_absolute() and (root / p).exists() and w > 0 for p, w in paths)
    # CelebA's box under the bboxes table's own names, the landmarks and the 40
    # attributes as the catalog has them
    cols = [*BBOX_COLUMNS, *LANDMARK_COLUMNS, *(f'"{a}"' for a in ATTRIBUTES)]
    assert read(out, f"SELECT image_id, {', '.join(cols)} FROM read_parquet(?) ORDER BY 1") == (
        query(
            db,
            f"SELECT image_id, {', '.join(('b.' if c in BBOX_COLUMNS else '') + c for c in cols)} "
            "FROM bboxes AS b "
            "JOIN landmarks USING (image_id) JOIN attributes USING (image_id) "
            "JOIN snapshot_images AS s USING (image_id) WHERE snapshot = 's' ORDER BY 1",
        )
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
    result = runner.invoke(cli.app, ["export", "--snapshot", "s", str(out), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "rows of snapshot s (hash" in result.output
    n = query(db, "SELECT count(*) FROM snapshot_images WHERE snapshot = 's'")[0][0]
    assert read(out, "SELECT count(*) FROM read_parquet(?)") == [(n,)]


def test_the_tools_people_open_it_with_read_it(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pandas (through pyarrow, a dependency of the package), pyarrow, polars and Hugging
    Face datasets read the same rows and columns; attributes stay booleans."""
    import pandas as pd

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a local file: nothing to fetch, ever
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import pyarrow.parquet as pq

    out = tmp_path / "s.parquet"
    export_parquet("s", out, db)
    frame = pd.read_parquet(out)
    assert tuple(frame.columns) == COLUMNS
    n = query(db, "SELECT count(*) FROM snapshot_images WHERE snapshot = 's'")[0][0]
    assert len(frame) == n and frame["Smiling"].dtype == bool
    table = pq.read_table(out)
    assert table.column_names == list(COLUMNS)
    assert pq.read_metadata(out).metadata[b"snapshot"] == b"s"
    polars = _required("polars")
    assert polars.read_parquet(out).shape == frame.shape
    datasets = _required("datasets")
    hf = datasets.Dataset.from_parquet(str(out), cache_dir=str(tmp_path / "hf"))
    assert hf.num_rows == n and hf.column_names == list(COLUMNS)
    assert hf[0]["image_id"] == frame["image_id"][0] and hf[0]["Smiling"] in (True, False)


def _required(name: str):  # noqa: ANN202
    """A reader the suite checks with: skipped where it is not installed, except on CI
    (`.ci/run` installs the [test] extra, so there it must be present)."""
    import importlib
    import os

    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")


def test_a_name_without_the_parquet_suffix_is_refused(db: Path, tmp_path: Path) -> None:
    for name in ("s.pq", "s.csv", "s"):
        with pytest.raises(ParquetExportError, match="ends in .parquet"):
            export_parquet("s", tmp_path / name, db)
    before = sorted(tmp_path.iterdir())
    runner = CliRunner()
    # the CLI goes by the suffix: .csv is neither a folder nor a format it writes
    result = runner.invoke(
        cli.app, ["export", "--snapshot", "s", str(tmp_path / "s.csv"), "--db", str(db)]
    )
    assert result.exit_code == 2 and "OUT.parquet" in result.output
    result = runner.invoke(
        cli.app,
        ["export", "--snapshot", "s", str(tmp_path / "o.parquet"), "--crop", "--db", str(db)],
    )
    assert result.exit_code == 2 and "only for --format folder" in result.output
    assert sorted(tmp_path.iterdir()) == before == [db]  # nothing written
