"""The library's user-facing errors: one base class, so callers can tell them apart.

Every error whose message is the whole story for a user (a parameter the data cannot
meet, an unknown snapshot, a malformed annotation file, a busy catalog, ...) derives
from :class:`CatalogError`. The CLI prints those as one red line and lets anything
else keep its traceback: an exception of another class is a bug to report.

Subclasses live next to the code that raises them (``SnapshotError`` in
``catalog.snapshots``, ``InfeasibleSelection`` in ``catalog.selection``, ...); most
also keep the builtin class they had before (``ValueError``, ``RuntimeError``,
``FileNotFoundError``) so existing ``except`` clauses still catch them.
"""

from __future__ import annotations


class CatalogError(Exception):
    """An error a user can act on; its message names what to change."""


class ParameterError(CatalogError, ValueError):
    """A selection parameter is unknown or outside its valid range."""


class QueryError(CatalogError, ValueError):
    """SQL typed by the user failed (syntax, unknown column, a write on a read-only
    catalog); the message is DuckDB's, with a hint where there is one."""


class UnknownTableError(CatalogError, LookupError):
    """No table or view of that name in the catalog."""


class ReportError(CatalogError, ValueError):
    """A report cannot be made as asked (unknown attribute or split, stale snapshot)."""


class MissingExtraError(CatalogError, ImportError):
    """An optional dependency (an extra such as ``[torch]`` or ``[plots]``) is missing."""


#: The pip extra that brings each optional module, and what it is for.
EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("torch", "training, alignment and the torch Datasets"),
    "matplotlib": ("plots", "charts (stats --plots, report landmarks --ced)"),
    "starlette": ("serve", "celebcat serve"),
    "uvicorn": ("serve", "celebcat serve"),
}


def require(module: str) -> None:
    """Raise :class:`MissingExtraError` naming the pip command when ``module`` is missing.

    Cheap (no import of the module itself): ``importlib.util.find_spec`` only looks.
    """
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except ValueError:  # sys.modules[module] is None (a test hiding it) or has no spec
        found = False
    if found:
        return
    extra, purpose = EXTRAS.get(module, (module, module))
    hint = "pip install torch==2.13.0 && " if module == "torch" else ""
    raise MissingExtraError(
        f"{module} is not installed; it is needed for {purpose}. "
        f"Install it: {hint}pip install -e '.[{extra}]'"
    )
