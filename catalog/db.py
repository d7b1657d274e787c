"""The one place catalog connections are made.

A catalog is one DuckDB file. It can be named three ways, first match wins:
the ``db`` argument (a path or a SQLAlchemy URL ``duckdb:///path``), the
``CELEBCAT_DB`` environment variable, or ``./celeba.duckdb``.

Bulk work (ingest, views) uses DuckDB's own connection and readers; pandas and
other SQLAlchemy tools come in through :func:`engine`, which points at the same file.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from catalog.errors import CatalogError

if TYPE_CHECKING:  # keep `import catalog.db` free of heavy imports
    import duckdb
    import pandas as pd
    import sqlalchemy

#: How every library function takes a catalog: a path, a ``duckdb:///`` URL, or None
#: for ``$CELEBCAT_DB`` / ``./celeba.duckdb`` (:func:`resolve_db`).
DbArg = str | os.PathLike[str] | None

DEFAULT_DB = "celeba.duckdb"
ENV_VAR = "CELEBCAT_DB"
URL_PREFIX = "duckdb:///"
#: Seconds a connection waits for another process to release the catalog's lock.
LOCK_TIMEOUT_ENV = "CELEBCAT_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 60.0


class CatalogNotFoundError(CatalogError, FileNotFoundError):
    """Raised when a read-only connection is asked for a catalog that does not exist."""


class CatalogBusyError(CatalogError, RuntimeError):
    """Another process held the catalog's lock for longer than the lock timeout."""


class CatalogPathError(CatalogError, ValueError):
    """The catalog is named in a way that cannot be a DuckDB file."""


def resolve_db(db: DbArg = None) -> Path:
    """The catalog file a command works on: ``db``, else ``$CELEBCAT_DB``, else the default.

    ``db`` may be a plain path or a SQLAlchemy URL (``duckdb:///relative.duckdb`` or
    ``duckdb:////abs/path.duckdb``).
    """
    value = os.fspath(db) if db is not None else os.environ.get(ENV_VAR) or DEFAULT_DB
    if value.startswith(URL_PREFIX):
        value = value[len(URL_PREFIX) :]
    elif value.startswith("duckdb:"):
        raise CatalogPathError(
            f"Unsupported catalog URL {value!r}: use duckdb:///path/to/file.duckdb"
        )
    if not value or value == ":memory:":
        raise CatalogPathError(
            "A catalog must be a file path; in-memory catalogs are not supported"
        )
    return Path(value).expanduser()


def url(db: DbArg = None) -> str:
    """The SQLAlchemy URL of the catalog (``duckdb:///<absolute path>``)."""
    return URL_PREFIX + str(resolve_db(db).resolve())


def lock_timeout() -> float:
    """Seconds to wait for a busy catalog: ``$CELEBCAT_LOCK_TIMEOUT`` or 60."""
    value = os.environ.get(LOCK_TIMEOUT_ENV)
    if not value:
        return DEFAULT_LOCK_TIMEOUT
    try:
        return max(float(value), 0.0)
    except ValueError:
        raise CatalogPathError(
            f"${LOCK_TIMEOUT_ENV}={value!r} is not a number of seconds"
        ) from None


#: What a sandboxed connection (``connect(sandboxed=True)``) sets before it runs SQL.
#: ``enable_external_access = false`` closes every file, network and extension access
#: but the catalog itself (COPY TO, EXPORT DATABASE, read_text, ATTACH, INSTALL, LOAD);
#: it cannot be turned on again on that database, and ``lock_configuration`` keeps the
#: rest (extension settings, profiling output files) as set here.
SANDBOX_SETTINGS: dict[str, str] = {
    "enable_external_access": "false",
    "allow_community_extensions": "false",
    "autoload_known_extensions": "false",
    "autoinstall_known_extensions": "false",
    "lock_configuration": "true",
}


def connect(
    db: DbArg = None,
    *,
    read_only: bool = False,
    timeout: float | None = None,
    sandboxed: bool = False,
) -> duckdb.DuckDBPyConnection:
    """Open the catalog with DuckDB.

    Read-only connections refuse a missing file (with a hint) instead of creating an
    empty catalog; writable ones create it, and its parent folder.

    ``sandboxed`` (read-only only; ``celebcat sql`` without ``--write``): the SQL run on
    the connection can read the catalog and nothing else on the machine
    (:data:`SANDBOX_SETTINGS`). DuckDB keeps one database instance per file and process,
    and its settings are the instance's, so a sandbox on that instance would also close
    the library's other connections to the file (and two configurations of one file are
    refused outright). A sandboxed connection is therefore its own in-memory instance
    with the catalog attached read-only and made the default database: views, macros
    and unqualified names work as on a plain connection.

    DuckDB lets one process write a database file, or several read it, never both at
    once (https://duckdb.org/docs/current/connect/concurrency). Every command holds its
    connection for one short piece of work, so a lock held by another process is
    waited for, with jittered exponential backoff, up to ``timeout`` seconds (default
    :func:`lock_timeout`); then :class:`CatalogBusyError` names the process holding it.
    This is what lets ``celebcat sql`` run while a training run writes its metrics.
    """
    import duckdb

    if sandboxed and not read_only:
        raise ValueError("a sandboxed connection is read-only: pass read_only=True")
    path = resolve_db(db)
    if read_only and not path.exists():
        raise CatalogNotFoundError(
            f"No catalog at {path}. Create one with `celebcat ingest DIR` "
            f"(or point --db / ${ENV_VAR} at an existing catalog)."
        )
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    wait = lock_timeout() if timeout is None else timeout
    deadline = time.monotonic() + wait
    delay = 0.002
    while True:
        try:
            if sandboxed:
                return _sandbox(path)
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as err:
            if not is_lock_conflict(err):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise CatalogBusyError(_busy_message(path, err, wait)) from err
        # jitter keeps two waiting processes from retrying in lockstep
        time.sleep(min(delay * random.uniform(0.5, 1.5), left))
        delay = min(delay * 2, 0.2)


def _sandbox(path: Path) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory instance with the catalog attached read-only as its default
    database, then closed to everything else (:data:`SANDBOX_SETTINGS`)."""
    import duckdb

    # The alias DuckDB itself gives the file (current_database() reads the same as on a
    # plain connection), unless that is one of the names an instance already holds.
    alias = path.name.split(".")[0]
    if not alias or alias.lower() in ("memory", "system", "temp", "main"):
        alias = "catalog"
    quoted = '"' + alias.replace('"', '""') + '"'
    con = duckdb.connect(":memory:")
    try:
        # the path as a literal: DuckDB 1.3 takes no parameter in ATTACH
        literal = "'" + str(path).replace("'", "''") + "'"
        con.execute(f"ATTACH {literal} AS {quoted} (READ_ONLY)")
        con.execute(f"USE {quoted}")
        for name, value in SANDBOX_SETTINGS.items():
            con.execute(f"SET {name} = {value}")
    except BaseException:
        con.close()
        raise
    return con


def is_interrupt(err: BaseException) -> bool:
    """True for Ctrl-C however it arrives: a KeyboardInterrupt, or DuckDB's own form
    when the signal lands while a statement runs (a RuntimeError "Query interrupted"
    after the statement; an InterruptException from ``interrupt()``)."""
    if isinstance(err, KeyboardInterrupt):
        return True
    if type(err).__name__ == "InterruptException":
        return True
    return type(err) is RuntimeError and str(err) == "Query interrupted"


def is_lock_conflict(err: BaseException) -> bool:
    """True for DuckDB's "another process holds this file" error."""
    return "Could not set lock" in str(err) or "Conflicting lock" in str(err)


def _busy_message(path: Path, err: BaseException, waited: float) -> str:
    holder = "another process"
    match = re.search(r"\(PID (\d+)\)", str(err))
    if match:
        pid = match.group(1)
        holder = f"process {pid}"
        try:  # Linux: show what the holder is running
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            command = " ".join(raw.decode(errors="replace").replace("\0", " ").split())
            if command:
                holder += f" ({command[:120]})"
        except OSError:
            pass
    return (
        f"The catalog {path} is held by {holder}; waited {waited:g} s for it. "
        f"Retry when it is done, raise ${LOCK_TIMEOUT_ENV}, or use another --db."
    )


def engine(db: DbArg = None, *, read_only: bool = True) -> sqlalchemy.engine.Engine:
    """A SQLAlchemy engine on the catalog (duckdb-engine), e.g. for ``pandas.read_sql``.

    Its connections come from :func:`connect`, so they have the library's settings (a
    process may hold ``connect(db, read_only=True)`` and use this engine at once; DuckDB
    refuses two connections to one file with different settings) and wait for a busy
    catalog the same way. No pool: a connection lives only while a query runs, so an
    idle engine never keeps another process from writing the catalog.
    """
    import sqlalchemy
    from duckdb_engine import ConnectionWrapper
    from sqlalchemy.pool import NullPool

    path = resolve_db(db)
    if read_only and not path.exists():
        raise CatalogNotFoundError(f"No catalog at {path}. Create one with `celebcat ingest DIR`.")
    return sqlalchemy.create_engine(
        url(path),
        creator=lambda: ConnectionWrapper(connect(path, read_only=read_only)),
        poolclass=NullPool,
    )


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """``BEGIN`` ... ``COMMIT``, or ``ROLLBACK`` on any error (Ctrl-C included)."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def register_frame(con: duckdb.DuckDBPyConnection, name: str, frame: pd.DataFrame) -> None:
    """``con.register(name, frame)``, where a DuckDB older than 1.5 gets pandas 3's
    string columns (dtype ``str``) as Python objects: 1.3 and 1.4.0 do not know that
    dtype ("Data type 'str' not recognized"; 1.4.5 does), and 1.3 is the lowest this
    package supports."""
    import duckdb

    old = tuple(int(p) for p in re.findall(r"\d+", duckdb.__version__)[:2]) < (1, 5)
    strings = [c for c in frame.columns if str(frame[c].dtype) == "str"] if old else []
    con.register(name, frame.astype({c: object for c in strings}) if strings else frame)


def has_table(con: duckdb.DuckDBPyConnection, *names: str, views: bool = False) -> bool:
    """True when every one of ``names`` is a table of the catalog (or, with ``views``,
    a table or view). Works on a read-only connection, where ``CREATE ... IF NOT
    EXISTS`` cannot run."""
    sql = "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'"
    if views:
        sql += " UNION ALL SELECT view_name FROM duckdb_views() WHERE schema_name = 'main'"
    found = {row[0] for row in con.execute(sql).fetchall()}
    return set(names) <= found
