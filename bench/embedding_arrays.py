"""Embeddings as a list (FLOAT[], today) or a fixed-size array (FLOAT[d]): catalog size
and the SQL nearest-neighbour query, side by side.

Run:  python bench/embedding_arrays.py [--rows 100000] [--dim 512] [--repeat 3]

Writes ``rows`` random L2-normalised d-dimensional embeddings into two fresh DuckDB
files, one with ``embedding FLOAT[]`` (what ``catalog.results`` stores: one column for
runs of any embedding size) and one with ``embedding FLOAT[d]``, then times, best of
``repeat``:

  nn        the 10 nearest neighbours of one image over all rows
            (list_cosine_similarity vs array_cosine_similarity)
  nn-cast   the same on the list table, cast to FLOAT[d] inside the query
            (what a user can do today without a schema change)
  self-join the 5 nearest of 200 query images (a join of 200 x rows)

and prints each file's size and the ratios array / list.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.timing import best_of  # noqa: E402


def build(path: Path, rows: int, dim: int, fixed: bool) -> int:
    import duckdb
    import numpy as np

    rng = np.random.default_rng(0)
    con = duckdb.connect(str(path))
    kind = f"FLOAT[{dim}]" if fixed else "FLOAT[]"
    con.execute(
        f"CREATE TABLE embeddings (run_id VARCHAR, image_id VARCHAR, embedding {kind}, "
        "PRIMARY KEY (run_id, image_id))"
    )
    step = 20_000
    for start in range(0, rows, step):
        n = min(step, rows - start)
        x = rng.normal(size=(n, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        import pandas as pd

        frame = pd.DataFrame(
            {
                "run_id": "r",
                "image_id": [f"{i:06d}.jpg" for i in range(start, start + n)],
                "embedding": list(x),
            }
        )
        con.register("f", frame)
        con.execute(f"INSERT INTO embeddings SELECT run_id, image_id, embedding::{kind} FROM f")
        con.unregister("f")
    con.execute("CHECKPOINT")
    con.close()
    return path.stat().st_size


def main() -> None:
    import duckdb

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    d = args.dim
    with tempfile.TemporaryDirectory() as tmp:
        lst, arr = Path(tmp) / "list.duckdb", Path(tmp) / "array.duckdb"
        sizes = {"list": build(lst, args.rows, d, False), "array": build(arr, args.rows, d, True)}
        nn = (
            "SELECT b.image_id, {f}(a.embedding{c}, b.embedding{c}) AS s FROM embeddings a, "
            "embeddings b WHERE a.image_id = '000123.jpg' AND b.image_id <> a.image_id "
            "ORDER BY s DESC LIMIT 10"
        )
        join = (
            "SELECT a.image_id, max_by(b.image_id, {f}(a.embedding{c}, b.embedding{c}), 5) "
            "FROM (SELECT * FROM embeddings WHERE image_id < '000200.jpg') a, embeddings b "
            "WHERE b.image_id <> a.image_id GROUP BY a.image_id"
        )
        cast = f"::FLOAT[{d}]"
        cases = {
            "nn": (
                (lst, nn.format(f="list_cosine_similarity", c="")),
                (arr, nn.format(f="array_cosine_similarity", c="")),
            ),
            "nn-cast": (
                (lst, nn.format(f="list_cosine_similarity", c="")),
                (lst, nn.format(f="array_cosine_similarity", c=cast)),
            ),
            "self-join": (
                (lst, join.format(f="list_cosine_similarity", c="")),
                (arr, join.format(f="array_cosine_similarity", c="")),
            ),
        }
        print(
            f"{args.rows:,} embeddings of {d} floats, DuckDB {duckdb.__version__}, "
            f"{os.cpu_count()} CPUs"
        )
        print(
            f"catalog size: list {sizes['list'] / 1e6:.1f} MB, array "
            f"{sizes['array'] / 1e6:.1f} MB, ratio {sizes['array'] / sizes['list']:.3f}"
        )
        for name, ((db_a, sql_a), (db_b, sql_b)) in cases.items():
            times = []
            for db, sql in ((db_a, sql_a), (db_b, sql_b)):
                con = duckdb.connect(str(db), read_only=True)
                con.execute(sql).fetchall()  # warm
                times.append(
                    best_of(lambda con=con, sql=sql: con.execute(sql).fetchall(), args.repeat)
                )
                con.close()
            print(
                f"{name:10s} list {times[0] * 1e3:8.1f} ms   array {times[1] * 1e3:8.1f} ms"
                f"   ratio {times[1] / times[0]:.2f}"
            )


if __name__ == "__main__":
    main()
