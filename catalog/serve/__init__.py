"""``celebcat serve``: a local, read-only face browser over the catalog.

A Starlette application (:func:`create_app`) run by uvicorn (:func:`serve`), bound to
127.0.0.1 by default. Pages, all server-rendered HTML with a few lines of script and
nothing fetched from elsewhere:

- ``/``: a grid of face thumbnails of a snapshot (``snapshot=``, default the newest;
  ``snapshot=*``: the whole catalog), 100 a page (``page=``), filtered by ``split=``,
  ``identity=``, attributes (``attr=Smiling:1&attr=Male:0``), catalog problems
  (``problem=<check>``, ``problem=*``: any) and sorted by a stored figure
  (``sort=nme:<landmark run>``, ``sort=own_cosine:<recognition run>``, ``order=asc|desc``);
- ``/face/<image id>``: the image with its boxes, true and predicted landmarks
  (``run=``) as SVG layers, its annotation rows, the person's other faces and its
  nearest neighbours by a run's embeddings (``emb=``);
- ``/failures?run=``: a recognizer's false non-matches, false matches and confused
  identities (:func:`catalog.failures.recognition_failures`);
- ``/sql``: a read-only query box, the sandbox of ``celebcat sql``;
- ``/galleries``, ``/galleries/<name>``: the identification galleries and their people;
- ``/thumb/<image id>.jpg``, ``/image/<image id>``: thumbnails (from a crop cache or made
  and kept beside the catalog, :mod:`catalog.serve.thumbnails`) and the image files,
  only ever from inside the image root.

The catalog is opened read-only per request and closed before the answer
(:mod:`catalog.serve.app`), so training and ``celebcat sql`` run beside the browser; a
catalog being written answers 503 with ``Retry-After`` and a page that retries.
"""

from __future__ import annotations

import sys
from typing import Any

from catalog.serve.app import LOCK_WAIT, create_app
from catalog.serve.thumbnails import DEFAULT_CACHE_BYTES

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: Host names that keep the browser on this machine.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def serve(
    db: Any = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    thumbnails_dir: Any = None,
    thumb_size: int = 128,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> None:
    """Serve the browser of catalog ``db`` at http://host:port/ until interrupted.

    Prints the address; warns (on stderr) when ``host`` is not a loopback address,
    since the catalog's images are then reachable from other machines. Raises
    CatalogNotFoundError for a catalog that does not exist."""
    import uvicorn

    from catalog.db import CatalogBusyError, connect

    try:  # a missing catalog fails here, with its hint, not at the first page
        connect(db, read_only=True, timeout=LOCK_WAIT).close()
    except CatalogBusyError:
        pass  # written to right now: pages say so and retry
    local = is_loopback(host)
    allowed = (
        (["127.0.0.1", "localhost"] + ([host] if host not in LOOPBACK else [])) if local else None
    )
    app = create_app(
        db,
        thumbnails_dir=thumbnails_dir,
        thumb_size=thumb_size,
        cache_bytes=cache_bytes,
        allowed_hosts=allowed if host != "::1" else None,
    )
    shown = f"[{host}]" if ":" in host else host
    print(f"celebcat serve: http://{shown}:{port}/  (read-only; Ctrl-C stops)", flush=True)
    if not local:
        print(
            f"warning: listening on {host}, not 127.0.0.1: the catalog's pages and images "
            "are reachable from other machines on this network.",
            file=sys.stderr,
            flush=True,
        )
    uvicorn.run(app, host=host, port=port, log_level="warning")


__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "create_app",
    "is_loopback",
    "serve",
]
