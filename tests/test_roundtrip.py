"""Synthetic CelebA -> files -> ingest -> tables, compared with the generator's truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import query

from catalog.formats import ATTRIBUTES, LANDMARK_COLUMNS
from catalog.ingest import ingest
from catalog.synth import synthesize
from catalog.synth.population import make_population

IDS, SEED = 5, 4


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("roundtrip") / "celeba"
    synthesize(out, ids=IDS, seed=SEED, layout="both", aligned=True, workers=1)
    return out


def test_ingest_gives_back_the_ground_truth(synth_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "c.duckdb"
    result = ingest(synth_dir, db, workers=1)
    truth = make_population(IDS, SEED)
    n = truth.images
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    assert result.rows["attributes"] == n and result.rows["images"] == n
    assert result.rows["images_aligned"] == n
    assert result.problems == {}

    cols = ", ".join(f'"{a}"' for a in ATTRIBUTES)
    attrs = np.array(query(db, f"SELECT {cols} FROM attributes ORDER BY image_id"))
    assert (attrs == (truth.attributes > 0)).all()
    boxes = np.array(query(db, "SELECT x_1, y_1, width, height FROM bboxes ORDER BY image_id"))
    assert (boxes == truth.layout.bbox).all()
    lm_cols = ", ".join(LANDMARK_COLUMNS)
    marks = np.array(query(db, f"SELECT {lm_cols} FROM landmarks ORDER BY image_id"))
    assert (marks == truth.layout.landmarks.reshape(n, 10)).all()
    aligned = np.array(query(db, f"SELECT {lm_cols} FROM landmarks_aligned ORDER BY image_id"))
    assert (aligned == truth.layout.aligned_landmarks.reshape(n, 10)).all()
    ident = query(db, "SELECT image_id, identity FROM identities ORDER BY image_id")
    assert ident == [(names[i], int(truth.identity[i]) + 1) for i in range(n)]
    part = query(db, "SELECT partition FROM partitions ORDER BY image_id")
    assert [p for (p,) in part] == [int(p) for p in truth.partition]
    sizes = query(db, "SELECT width, height FROM images ORDER BY image_id")
    assert sizes == [
        (int(w), int(h)) for w, h in zip(truth.poses.width, truth.poses.height, strict=True)
    ]
    assert query(db, "SELECT DISTINCT width, height FROM images_aligned") == [(178, 218)]


def test_the_txt_and_kaggle_layouts_load_the_same_tables(synth_dir: Path, tmp_path: Path):
    txt_db, csv_db = tmp_path / "txt.duckdb", tmp_path / "csv.duckdb"
    ingest(synth_dir, txt_db, scan_images=False)
    kaggle = tmp_path / "kaggle"
    kaggle.mkdir()
    for f in synth_dir.glob("*"):
        if f.suffix == ".csv" or f.name in ("identity_CelebA.txt", "list_landmarks_celeba.txt"):
            (kaggle / f.name).write_bytes(f.read_bytes())
    ingest(kaggle, csv_db, scan_images=False)
    layouts = dict(query(csv_db, "SELECT table_name, layout FROM ingested_files"))
    assert layouts["attributes"] == "csv" and layouts["identities"] == "txt"
    for name in (
        "attributes",
        "bboxes",
        "landmarks",
        "landmarks_aligned",
        "identities",
        "partitions",
    ):
        sql = f"SELECT * FROM {name} ORDER BY image_id"
        assert query(txt_db, sql) == query(csv_db, sql), name
