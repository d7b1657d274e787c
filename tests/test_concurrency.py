"""Two processes on one catalog: a writer and readers take turns instead of failing.

DuckDB lets one process write a file or several read it, never both at once; every
connection waits for the other side's short transaction (catalog.db.connect).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import snapshot_catalog

from catalog import results
from catalog.db import CatalogBusyError, connect, engine
from catalog.info import run_query

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_catalog(tmp_path_factory.mktemp("conc"), ids=12, seed=3, images=False)


def _python(code: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def test_connection_and_engine_in_one_process(db: Path):
    """The README's pair: a read-only DuckDB connection and a SQLAlchemy engine, both
    orders (DuckDB refuses two connections to one file with different settings)."""
    con = connect(db, read_only=True)
    frame = pd.read_sql("select count(*) as n from bboxes", engine(db))
    assert frame["n"][0] == con.execute("select count(*) from bboxes").fetchone()[0] > 0
    con.close()
    eng = engine(db)
    assert pd.read_sql("select 1 as x", eng)["x"][0] == 1
    con = connect(db, read_only=True)
    assert pd.read_sql("select 2 as x", eng)["x"][0] == 2
    con.close()


def test_idle_engine_does_not_block_a_writer(db: Path):
    eng = engine(db)
    pd.read_sql("select 1", eng)  # the engine has been used; now it sits idle
    writer = _python(f"""
        from catalog.db import connect
        con = connect({str(db)!r}, timeout=0)
        con.execute("create table written as select 1 as x")
        con.close()
    """)
    _, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert pd.read_sql("select x from written", eng)["x"][0] == 1


def test_writer_and_readers_side_by_side(db: Path):
    """A run logging metrics while another process queries, as `celebcat sql` in a loop
    beside `celebcat train` does: every write and every query succeeds."""
    run_id = results.start_run(db, "landmarks", {}, "s")
    writer = _python(f"""
        import time
        from catalog import results
        end, epoch = time.monotonic() + 4, 0
        while time.monotonic() < end:
            results.log_metrics({str(db)!r}, {run_id!r}, epoch, "val", {{"nme": 1 / (epoch + 1)}})
            epoch += 1
        print(epoch)
    """)
    queries = 0
    while writer.poll() is None:
        rows = run_query("select count(*) from metrics", db).rows
        assert rows[0][0] >= 0
        queries += 1
    out, err = writer.communicate()
    assert writer.returncode == 0, err
    epochs = int(out)
    assert queries >= 10 and epochs >= 10
    assert run_query("select count(*) from metrics", db).rows[0][0] == epochs


def test_busy_catalog_names_its_holder(db: Path):
    holder = _python(f"""
        import time
        import duckdb
        con = duckdb.connect({str(db)!r})
        print("open", flush=True)
        time.sleep(30)
    """)
    try:
        assert holder.stdout.readline().strip() == "open"
        start = time.monotonic()
        with pytest.raises(CatalogBusyError, match=rf"process {holder.pid} .*CELEBCAT_LOCK"):
            connect(db, read_only=True, timeout=0.5)
        assert 0.4 < time.monotonic() - start < 5
    finally:
        holder.kill()
        holder.wait()
    connect(db, read_only=True, timeout=0).close()  # free again


def test_a_killed_run_shows_as_died(db: Path):
    killed = _python(f"""
        import os, signal
        from catalog import results
        print(results.start_run({str(db)!r}, "landmarks", {{}}, "s"), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    run_id = killed.stdout.readline().strip()
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    alive = results.start_run(db, "landmarks", {}, "s")  # this process: alive
    status = {r.run_id: r.status for r in results.list_runs(db)}
    assert status == {run_id: results.DIED, alive: "running"}
    assert results.get_run(db, run_id).pid not in (None, os.getpid())
    results.finish_run(db, alive)
    assert results.get_run(db, alive).status == "finished"
