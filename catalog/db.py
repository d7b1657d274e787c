"""The one place catalog connections are made.

A catalog is one DuckDB file. It can be named three ways, first match wins:
the ``db`` argument (a path or a SQLAlchemy URL ``duckdb:///path``), the
``CELEBCAT_DB`` environment variable, or ``./celeba.duckdb``.

Bulk work (ingest, views) uses DuckDB's own connection and readers; pandas and
other SQLAlchemy tools come in through :func:`engine`, which points at the same file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # keep `import catalog.db` free of heavy imports
    import duckdb
    import sqlalchemy

DEFAULT_DB = "celeba.duckdb"
ENV_VAR = "CELEBCAT_DB"
URL_PREFIX = "duckdb:///"


class CatalogNotFoundError(FileNotFoundError):
    """Raised when a read-only connection is asked for a catalog that does not exist."""


def resolve_db(db: str | os.PathLike[str] | None = None) -> Path:
    """The catalog file a command works on: ``db``, else ``$CELEBCAT_DB``, else the default.

    ``db`` may be a plain path or a SQLAlchemy URL (``duckdb:///relative.duckdb`` or
    ``duckdb:////abs/path.duckdb``).
    """
    value = os.fspath(db) if db is not None else os.environ.get(ENV_VAR) or DEFAULT_DB
    if value.startswith(URL_PREFIX):
        value = value[len(URL_PREFIX) :]
    elif value.startswith("duckdb:"):
        raise ValueError(f"Unsupported catalog URL {value!r}: use duckdb:///path/to/file.duckdb")
    if not value or value == ":memory:":
        raise ValueError("A catalog must be a file path; in-memory catalogs are not supported")
    return Path(value).expanduser()


def url(db: str | os.PathLike[str] | None = None) -> str:
    """The SQLAlchemy URL of the catalog (``duckdb:///<absolute path>``)."""
    return URL_PREFIX + str(resolve_db(db).resolve())


def connect(
    db: str | os.PathLike[str] | None = None, *, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """Open the catalog with DuckDB.

    Read-only connections refuse a missing file (with a hint) instead of creating an
    empty catalog; writable ones create it, and its parent folder.
    """
    import duckdb

    path = resolve_db(db)
    if read_only and not path.exists():
        raise CatalogNotFoundError(
            f"No catalog at {path}. Create one with `celebcat ingest DIR` "
            f"(or point --db / ${ENV_VAR} at an existing catalog)."
        )
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(path), read_only=read_only)


def engine(
    db: str | os.PathLike[str] | None = None, *, read_only: bool = True
) -> sqlalchemy.engine.Engine:
    """A SQLAlchemy engine on the catalog (duckdb-engine), e.g. for ``pandas.read_sql``."""
    import sqlalchemy

    path = resolve_db(db)
    if read_only and not path.exists():
        raise CatalogNotFoundError(f"No catalog at {path}. Create one with `celebcat ingest DIR`.")
    return sqlalchemy.create_engine(
        url(path), connect_args={"read_only": read_only} if read_only else {}
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
