"""Issue 13, hardening: what a probe with Ctrl-C, full disks, read-only folders, empty
files and hostile SQL found, each closed and checked here.

Full disks and read-only folders are simulated in-process (a monkeypatched
``posix_fallocate``, ``json.dump``, ``copyfile`` or ``Path.mkdir`` failing as the
kernel would), so CI runs every check. Where this machine allows a private mount
namespace (``unshare -m``, root with CAP_SYS_ADMIN), the same commands also run
against a real full tmpfs and a real read-only bind mount; elsewhere those are
skipped.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
from conftest import attr_txt, pairs_txt, query, snapshot_catalog, snapshot_ids

import catalog.ingest as ingest_module
import cli
from catalog.cache import CacheError, build_cache, list_caches, store_crops
from catalog.db import connect
from catalog.export import ExportError, export_snapshot
from catalog.info import run_statements
from catalog.ingest import ingest

ROOT = Path(cli.__file__).parent


def celebcat(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str
) -> tuple[int, str]:
    """Run ``celebcat ARGS`` in this process through the users' entry point (``main``):
    an error that escapes it (a traceback for a user) fails the test."""
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(sys, "argv", ["celebcat", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic catalog with images and snapshot 's'."""
    return snapshot_catalog(tmp_path_factory.mktemp("harden"), ids=4, seed=1)


@pytest.fixture
def db(template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "cat" / "c.duckdb"
    path.parent.mkdir()
    shutil.copyfile(template, path)
    return path


# --- 1. Ctrl-C during ingest says what it left -------------------------------------------


class _CtrlCAtCommit:
    """A catalog connection hit by Ctrl-C at its COMMIT: ``before`` it runs, or while it
    runs, which DuckDB reports after the statement as RuntimeError("Query interrupted")."""

    def __init__(self, con: duckdb.DuckDBPyConnection, when: str) -> None:
        self._con, self._when = con, when

    def __getattr__(self, name: str):
        return getattr(self._con, name)

    def execute(self, sql: str, *args):
        if sql == "COMMIT":
            if self._when == "before":
                raise KeyboardInterrupt
            self._con.execute(sql, *args)
            raise RuntimeError("Query interrupted")
        return self._con.execute(sql, *args)


def _ctrl_c_at_commit(monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    real = ingest_module.connect
    monkeypatch.setattr(
        ingest_module, "connect", lambda *a, **k: _CtrlCAtCommit(real(*a, **k), when)
    )


def test_ctrl_c_during_the_commit_says_the_new_catalog_is_complete(
    small_celeba: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    db = tmp_path / "c.duckdb"
    ingest(small_celeba, db, scan_images=False)
    (small_celeba / "identity_CelebA.txt").write_text(pairs_txt({"000001.jpg": 7}))
    _ctrl_c_at_commit(monkeypatch, "during")
    code, out = celebcat(
        monkeypatch, capsys, "ingest", str(small_celeba), "--no-images", "--db", str(db)
    )
    assert code == 130, out
    assert "Interrupted after the commit: the new catalog" in out and "is complete" in out
    assert "Traceback" not in out
    assert query(db, "SELECT image_id, identity FROM identities") == [("000001.jpg", 7)]


def test_ctrl_c_before_the_commit_says_nothing_changed(
    small_celeba: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    db = tmp_path / "c.duckdb"
    ingest(small_celeba, db, scan_images=False)
    before = db.read_bytes()
    (small_celeba / "identity_CelebA.txt").write_text(pairs_txt({"000001.jpg": 7}))
    _ctrl_c_at_commit(monkeypatch, "before")
    code, out = celebcat(
        monkeypatch, capsys, "ingest", str(small_celeba), "--no-images", "--db", str(db)
    )
    assert code == 130, out
    assert "Interrupted: nothing changed; the catalog" in out and "was left as it was" in out
    assert db.read_bytes() == before  # the COMMIT never ran: the file is as it was


def test_ctrl_c_while_a_first_ingest_loads_is_not_silent_and_creates_nothing(
    small_celeba: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest_module, "load_annotation", interrupted)
    db = tmp_path / "new" / "c.duckdb"
    code, out = celebcat(
        monkeypatch, capsys, "ingest", str(small_celeba), "--no-images", "--db", str(db)
    )
    assert code == 130, out
    assert f"Interrupted: nothing changed; no catalog was created at {db}" in out
    assert not db.exists() and not Path(f"{db}.wal").exists()


def test_a_duckdb_interrupt_in_any_command_is_one_line(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import catalog.snapshots

    def interrupted(*args, **kwargs):
        raise RuntimeError("Query interrupted")  # Ctrl-C inside a DuckDB statement

    monkeypatch.setattr(catalog.snapshots, "create", interrupted)
    code, out = celebcat(monkeypatch, capsys, "snapshot", "create", "t", "--db", str(db))
    assert code == 130 and out.strip() == "Interrupted.", out


# --- 6. no empty catalog left behind, no empty tables by accident ------------------------


def test_a_failed_first_ingest_leaves_no_catalog(
    small_celeba: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    part = small_celeba / "list_eval_partition.txt"
    part.write_text(part.read_text() + "000009.jpg 7\n")
    db = tmp_path / "c.duckdb"
    code, out = celebcat(
        monkeypatch, capsys, "ingest", str(small_celeba), "--no-images", "--db", str(db)
    )
    assert code == 1 and "list_eval_partition.txt, line 4" in out, out
    assert not db.exists() and not Path(f"{db}.wal").exists()


@pytest.mark.parametrize("first", [False, True], ids=["again", "first"])
def test_an_ingest_that_cannot_write_the_catalog_is_one_line(
    first: bool, small_celeba: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """DuckDB failing to write (a full disk at the commit): one line saying what
    survived, the previous catalog or none, instead of a TransactionException."""
    db = tmp_path / "c.duckdb"
    if not first:
        assert celebcat(monkeypatch, capsys, "ingest", str(small_celeba), "--db", str(db))[0] == 0
        before = query(db, "SELECT count(*) FROM attributes")

    def full(*args: object, **kwargs: object) -> None:
        raise duckdb.TransactionException(
            "TransactionContext Error: Failed to commit: could not write: No space left on device"
        )

    monkeypatch.setattr(ingest_module, "_record", full)
    code, out = celebcat(monkeypatch, capsys, "ingest", str(small_celeba), "--db", str(db))
    assert code == 1 and "Traceback" not in out, out
    assert "Ingest could not write the catalog" in out and "No space left" in out
    if first:
        assert "no catalog was created" in out and not db.exists()
    else:
        assert "is as it was before this ingest" in " ".join(out.split())
        assert query(db, "SELECT count(*) FROM attributes") == before


def test_check_on_a_catalog_no_ingest_completed_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    db = tmp_path / "c.duckdb"
    duckdb.connect(str(db)).close()  # what a killed first ingest leaves
    code, out = celebcat(monkeypatch, capsys, "check", "--db", str(db))
    assert code == 1, out
    assert "holds no ingested data" in out and "celebcat ingest" in out
    assert "does not exist" not in out


@pytest.mark.parametrize(
    "name, text",
    [
        ("list_attr_celeba.txt", attr_txt([])),  # count 0 and the header
        (
            "list_attr_celeba.csv",
            "image_id," + ",".join(attr_txt([]).splitlines()[1].split()) + "\n",
        ),
    ],
)
def test_a_file_with_only_its_header_is_refused_unless_allowed(
    name: str,
    text: str,
    small_celeba: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    db = tmp_path / "c.duckdb"
    ingest(small_celeba, db, scan_images=False)
    before = db.read_bytes()
    (small_celeba / "list_attr_celeba.txt").unlink()
    (small_celeba / name).write_text(text)
    args = ["ingest", str(small_celeba), "--no-images", "--db", str(db)]
    code, out = celebcat(monkeypatch, capsys, *args)
    assert code == 1, out
    assert name in out and "no rows" in out and "--allow-empty" in out
    assert db.read_bytes() == before
    code, out = celebcat(monkeypatch, capsys, *args, "--allow-empty")
    assert code == 0, out
    assert query(db, "SELECT count(*) FROM attributes") == [(0,)]
    assert query(db, "SELECT count(*) FROM identities") == [(3,)]


# --- 7. `celebcat sql` without --write cannot reach the machine --------------------------


def test_sql_without_write_reads_the_catalog_and_nothing_else(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    made = [tmp_path / "out.csv", tmp_path / "dump", tmp_path / "other.duckdb"]
    refused = [
        f"COPY (SELECT 1) TO '{made[0]}'",
        f"COPY attributes TO '{made[0]}'",
        f"EXPORT DATABASE '{made[1]}'",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM glob('/etc/*')",
        "INSTALL httpfs",
        "LOAD httpfs",
        f"ATTACH '{made[2]}' AS other",
        "SET enable_external_access = true",
        "SET allow_community_extensions = true",
    ]
    for statement in refused:
        code, out = celebcat(monkeypatch, capsys, "sql", statement, "--db", str(db))
        assert code == 1, (statement, out)
        assert "Without --write, SQL reads the catalog only" in out, (statement, out)
    assert not any(p.exists() for p in made)
    # the catalog itself answers as before: tables, views, their param() macro
    code, out = celebcat(
        monkeypatch,
        capsys,
        "sql",
        "SELECT count(*) AS n, param('images_per_id') AS k FROM selection; "
        "SELECT current_database() AS c; SHOW TABLES; DESCRIBE attributes",
        "--json",
        "--db",
        str(db),
    )
    assert code == 0, out
    assert '"k": 10' in out and '"c": "c"' in out and "snapshot_images" in out
    # --write keeps all of DuckDB
    code, out = celebcat(monkeypatch, capsys, "sql", refused[0], "--write", "--db", str(db))
    assert code == 0 and made[0].exists(), out


def test_the_sql_sandbox_opens_a_catalog_whose_path_has_a_quote(db: Path, tmp_path: Path) -> None:
    # the sandbox attaches the file by a SQL literal (DuckDB 1.3 takes no parameter there)
    odd = tmp_path / "it's here" / "c.duckdb"
    odd.parent.mkdir()
    shutil.copy(db, odd)
    assert run_statements("SELECT count(*) FROM snapshot_images", odd)[0].rows[0][0] > 0


def test_the_sql_sandbox_is_its_own_and_leaves_the_library_alone(db: Path) -> None:
    """DuckDB's settings belong to a database instance, one per file and process: the
    sandbox must neither collide with a library connection open at the same time nor
    close external access for the library's later connections."""
    held = connect(db, read_only=True)
    try:
        assert run_statements("SELECT count(*) FROM snapshot_images", db)[0].rows[0][0] > 0
        assert held.execute("SELECT count(*) FROM snapshot_images").fetchone()[0] > 0
    finally:
        held.close()
    after = connect(db, read_only=True)
    try:
        assert after.execute("SELECT count(*) FROM read_text('/etc/hostname')").fetchone() == (1,)
    finally:
        after.close()
    # a writer of this process and the sandbox cannot both have the file: refused, not mixed
    writer = connect(db)
    try:
        with pytest.raises(duckdb.Error):
            run_statements("SELECT 1", db)
    finally:
        writer.close()


# --- 8. align --run with --source truth ----------------------------------------------------


def test_align_refuses_a_run_with_true_landmarks(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    code, out = celebcat(
        monkeypatch,
        capsys,
        "align",
        "--snapshot",
        "s",
        "--run",
        "r1",
        "--source",
        "truth",
        "--db",
        str(db),
    )
    assert code == 2 and "--run and --source truth exclude each other" in out, out


# --- 2. a full disk under a memory map: ENOSPC, not SIGBUS ---------------------------------


def _no_space(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """posix_fallocate as on a full disk; returns the sizes it was asked for."""
    asked: list[int] = []

    def full(fd: int, offset: int, length: int) -> None:
        asked.append(length)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    return asked


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".part")] if folder.exists() else []


def test_a_crop_cache_on_a_full_disk_is_a_clear_error_and_leaves_nothing(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_cache("s", db, size=32)  # a cache already there stays
    asked = _no_space(monkeypatch)
    with pytest.raises(CacheError, match="no space left on the device") as info:
        build_cache("s", db, size=48)
    assert "c.crops" in str(info.value) and "run the same command again" in str(info.value)
    n = len(snapshot_ids(db))
    assert asked and asked[0] >= n * 48 * 48 * 3  # the whole file, before any crop
    assert _temporaries(db.parent) == []
    assert [c.size for c in list_caches(db)] == [32]
    monkeypatch.undo()
    assert build_cache("s", db, size=48).built  # the retry, once there is space


def test_an_alignment_on_a_full_disk_is_a_clear_error_and_leaves_nothing(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = snapshot_ids(db)
    filled: list[int] = []

    def store():
        return store_crops(
            "s",
            db,
            size=32,
            source="aligned/reference/truth",
            crops=lambda a: filled.append(len(a)),
            image_ids=ids,
            matrices=np.tile(np.eye(3), (len(ids), 1, 1)),
        )

    _no_space(monkeypatch)
    with pytest.raises(CacheError, match="no space left on the device"):
        store()
    assert filled == []  # refused before a crop was written through the map
    assert _temporaries(db.parent) == [] and list_caches(db) == []
    monkeypatch.undo()
    assert store().built and filled == [len(ids)]


# --- 4. full disk, read-only folder: export, cache build, align -----------------------------


def test_an_export_that_fills_the_disk_then_resumes(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    real = json.dump

    def full(*args, **kwargs):  # export.json is the first file written
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(json, "dump", full)
    with pytest.raises(ExportError, match="no space left on the device"):
        export_snapshot("s", out, db)
    assert _temporaries(out) == []
    monkeypatch.setattr(json, "dump", real)
    result = export_snapshot("s", out, db)  # the retry is not refused as "not empty"
    assert result.n_written == result.n_images == len(snapshot_ids(db))


def test_an_export_copy_on_a_full_disk_is_not_blamed_on_the_images(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import catalog.export

    out = tmp_path / "out"
    real = shutil.copyfile
    copies: list[str] = []

    def fills_up(src: str, dst: str) -> None:
        if len(copies) >= 3:
            Path(dst).write_bytes(b"half a file")
            # what shutil's sendfile path raises: it names the *source*
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), src)
        copies.append(src)
        real(src, dst)

    monkeypatch.setattr(catalog.export.shutil, "copyfile", fills_up)
    with pytest.raises(ExportError, match="no space left on the device") as info:
        export_snapshot("s", out, db, workers=1, skip_bad=True)  # nothing may be skipped
    assert "image_decode_error" not in str(info.value) and "unreadable" not in str(info.value)
    assert _temporaries(out) == []
    monkeypatch.undo()
    result = export_snapshot("s", out, db, workers=1)
    assert result.n_skipped == 3 and result.skipped == ()
    assert result.n_written + 3 == result.n_images == len(snapshot_ids(db))


def _read_only_under(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Creating anything under ``folder`` fails as on a read-only mount (EROFS)."""
    real = Path.mkdir

    def mkdir(self: Path, *args, **kwargs) -> None:
        if self == folder or folder in self.parents:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)


def test_read_only_folders_are_one_clear_line(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    _read_only_under(monkeypatch, db.parent)
    commands = {
        "export": ["export", "--snapshot", "s", str(db.parent / "out")],
        "cache": ["cache", "build", "--snapshot", "s", "--size", "32"],
        "align": ["align", "--snapshot", "s", "--source", "truth", "--size", "112"],
    }
    for name, args in commands.items():
        code, out = celebcat(monkeypatch, capsys, *args, "--db", str(db))
        assert code == 1, (name, out)
        assert "the file system is read-only" in out and "Traceback" not in out, (name, out)
    monkeypatch.undo()
    for name, args in commands.items():  # and each succeeds once the folder is writable
        code, out = celebcat(monkeypatch, capsys, *args, "--db", str(db))
        assert code == 0, (name, out)


# --- the same on a real full disk and a real read-only mount (where the machine allows) ----


@functools.cache
def _can_mount() -> bool:
    if shutil.which("unshare") is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    probe = 'd=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs "$d" && umount "$d" && rmdir "$d"'
    try:
        return (
            subprocess.run(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", probe],
                capture_output=True,
                timeout=30,
            ).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        return False


needs_mount = pytest.mark.skipif(
    "not _can_mount()", reason="needs a private mount namespace (unshare -m as root)"
)


def _in_namespace(script: str) -> str:
    """Run a shell script in a private mount namespace (its mounts vanish with it);
    ``celebcat`` in it is this checkout's CLI. Returns stdout and stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250"}
    python = shlex.quote(sys.executable)
    prelude = f"celebcat() {{ {python} -c 'import cli; cli.main()' \"$@\"; }}\n"
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", prelude + script],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    return result.stdout + result.stderr


@needs_mount
def test_a_real_full_disk(db: Path, tmp_path: Path) -> None:
    """The crop cache, an alignment and an export on a tmpfs with 64 KiB left: one clear
    line each, no temporary left; each succeeds once the space is freed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    size = db.stat().st_size + (4 << 20)
    out = _in_namespace(f"""
        set -u
        D={shlex.quote(str(disk))}
        mount -t tmpfs -o size={size} tmpfs "$D" || exit 99
        cp {shlex.quote(str(db))} "$D/c.duckdb"
        free=$(df -B1 --output=avail "$D" | tail -1)
        head -c $((free - 65536)) /dev/zero > "$D/filler"
        for args in "cache build --snapshot s --size 64" "align --snapshot s --source truth" \\
                    "export --snapshot s $D/out"; do
            celebcat $args --db "$D/c.duckdb"; echo "rc=$? full: $args"
            find "$D" -name '*.part' | sed 's/^/LEFT /'
        done
        rm "$D/filler"
        for args in "cache build --snapshot s --size 64" "align --snapshot s --source truth" \\
                    "export --snapshot s $D/out"; do
            celebcat $args --db "$D/c.duckdb" > /dev/null 2>&1; echo "rc=$? freed: $args"
        done
    """)
    assert "rc=99" not in out, out
    for what in ("cache build", "align", "export"):
        assert f"rc=1 full: {what}" in out, out
        assert f"rc=0 freed: {what}" in out, out
    assert out.count("no space left on the device") == 3, out
    assert "LEFT" not in out and "Traceback" not in out and "Bus error" not in out, out


@needs_mount
def test_a_real_read_only_folder(db: Path, tmp_path: Path) -> None:
    """The catalog's folder (and the export's) bind-mounted read-only onto itself."""
    folder = db.parent
    out = _in_namespace(f"""
        F={shlex.quote(str(folder))}
        mount --bind "$F" "$F" && mount -o remount,bind,ro "$F" || exit 99
        for args in "cache build --snapshot s --size 64" "align --snapshot s --source truth" \\
                    "export --snapshot s $F/out"; do
            celebcat $args --db "$F/c.duckdb"; echo "rc=$? read-only: $args"
        done
    """)
    assert "rc=99" not in out, out
    for what in ("cache build", "align", "export"):
        assert f"rc=1 read-only: {what}" in out, out
    assert out.count("the file system is read-only") == 3 and "Traceback" not in out, out
    # the mount is gone with its namespace: the same commands now succeed
    assert build_cache("s", db, size=64).built
    assert export_snapshot("s", folder / "out", db).n_written > 0


def test_removing_a_temporary_never_hides_the_error_that_called_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from catalog import files

    def refused(path: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(os, "unlink", refused)
    files.discard(tmp_path / "x.part")  # a read-only folder: nothing raised from here


def test_frames_reach_an_older_duckdb_without_pandas_3_string_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # DuckDB 1.3 and 1.4.0 refuse pandas 3's `str` dtype ("Data type 'str' not recognized")
    import pandas as pd

    from catalog.db import register_frame

    frame = pd.DataFrame({"image_id": ["000001.jpg"], "n": [1]})
    seen: dict[str, object] = {}

    class Con:
        def register(self, name: str, registered: pd.DataFrame) -> None:
            seen.update(registered.dtypes.astype(str).to_dict())

    monkeypatch.setattr(duckdb, "__version__", "1.3.0")
    register_frame(Con(), "f", frame)  # type: ignore[arg-type]
    assert seen["image_id"] == "object" and seen["n"] == "int64"
    monkeypatch.setattr(duckdb, "__version__", "2.0.1")
    register_frame(Con(), "f", frame)  # type: ignore[arg-type]
    assert seen["image_id"] == str(frame["image_id"].dtype)  # as it is
