"""The face browser's Starlette application: routes, the catalog per request, busy
answers, thumbnails off the event loop, and the headers every answer carries.

The catalog is opened read-only for each request that needs it (:meth:`Browser.catalog`,
:func:`catalog.db.connect` with a short lock wait) and closed before the answer goes
out, so nothing holds it between requests: a training run or ``celebcat sql --write``
can take it at any time. A catalog another process is writing answers HTTP 503 with
``Retry-After`` (a page that reloads itself, or JSON for a client that asks for it).

Pages run their SQL in Starlette's thread pool (``run_in_threadpool``), and so does
every thumbnail that has to be made (JPEG decoding and resizing): the event loop only
routes, and serves the thumbnails already on disk.
"""

from __future__ import annotations

import mimetypes
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from catalog.db import CatalogBusyError, CatalogNotFoundError, connect, resolve_db
from catalog.errors import CatalogError
from catalog.serve import pages as P
from catalog.serve import queries as Q
from catalog.serve import thumbnails as T
from catalog.serve.static import ICON, JS

if TYPE_CHECKING:
    import duckdb
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Seconds a request waits for a catalog another process holds before answering 503.
LOCK_WAIT = 1.0
#: Image sources remembered from the pages shown (a grid's thumbnails then need no
#: catalog connection each).
HINTS = 20_000
#: Runs whose own-centre cosines are kept (each: one float per embedded image).
FIGURES_KEPT = 4

#: Every answer: no script but /static/app.js, nothing loaded from elsewhere, no framing.
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self'; "
        b"form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class _SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every HTTP answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    h for h in SECURITY_HEADERS if h[0] not in names
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


def _values(request: Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        out.setdefault(key, []).append(value)
    return out


def _plausible_id(image_id: str) -> bool:
    """An image id that can be a catalog's (ids are looked up, never used as paths)."""
    return 0 < len(image_id) <= 1024 and "\0" not in image_id


class _NotFound(Exception):
    pass


class Browser:
    """The application's state: the catalog's path, the thumbnail store, the lock wait."""

    def __init__(
        self,
        db: Any,
        thumbnails_dir: str | os.PathLike[str] | None,
        thumb_size: int,
        cache_bytes: int,
        lock_wait: float,
    ) -> None:
        self.db = resolve_db(db).resolve()
        self.label = str(self.db)
        folder = (
            Path(thumbnails_dir)
            if thumbnails_dir is not None
            else self.db.parent / f"{self.db.name.split('.')[0] or 'catalog'}.thumbs"
        )
        self.thumbs = T.ThumbnailStore(folder, thumb_size, cache_bytes, HINTS)
        self.size = int(thumb_size)
        self.lock_wait = float(lock_wait)
        self._figures: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._figures_lock = threading.Lock()

    # --- the catalog ---------------------------------------------------------------------

    @contextmanager
    def catalog(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection for one request, closed at the end of it;
        CatalogBusyError after :attr:`lock_wait` seconds of another process writing."""
        con = connect(self.db, read_only=True, timeout=self.lock_wait)
        try:
            yield con
        finally:
            con.close()

    def probe(self) -> None:
        """Raise CatalogBusyError now, rather than after the library's own long wait,
        when another process holds the catalog (before calling library functions
        that open it themselves)."""
        with self.catalog():
            pass

    def version(self) -> tuple[Any, ...]:
        """What changes whenever the catalog is written: its file's and its WAL's
        modification times and sizes."""
        out: list[Any] = []
        for path in (self.db, self.db.with_name(self.db.name + ".wal")):
            try:
                st = path.stat()
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def own_cosines(self, con: duckdb.DuckDBPyConnection, run: str) -> Any:
        """:func:`queries.own_cosines` of ``run``, kept until the catalog changes (a
        second or so for 25,000 images; paging a grid sorted by them then costs none)."""
        key = (run, self.version())
        with self._figures_lock:
            if key in self._figures:
                self._figures.move_to_end(key)
                return self._figures[key]
        frame = Q.own_cosines(con, run)
        with self._figures_lock:
            self._figures[key] = frame
            while len(self._figures) > FIGURES_KEPT:
                self._figures.popitem(last=False)
        return frame

    def remember(self, con: duckdb.DuckDBPyConnection, image_ids: Sequence[str]) -> set[str]:
        """Look up and remember where the thumbnails of ``image_ids`` come from; returns
        the ids the catalog knows."""
        sources = T.lookup_sources(con, list(dict.fromkeys(image_ids)), self.size)
        self.thumbs.remember(sources)
        return set(sources)

    # --- pages (sync: run in the thread pool) ------------------------------------------

    def grid(self, values: dict[str, list[str]]) -> tuple[int, str]:
        q = Q.parse_grid(values)
        errors = list(q.errors)
        status = 400 if errors else 200
        with self.catalog() as con:
            token = T.ingest_token(con)
            names = Q.snapshot_names(con)
            snapshot = q.snapshot if q.snapshot is not None else (names[0] if names else Q.WHOLE)
            result = None
            try:
                result = Q.grid(con, q, self.own_cosines)
            except Q.GridError as err:
                errors.append(str(err))
                status = 404 if "no snapshot" in str(err) else 400
            known_snapshot = snapshot == Q.WHOLE or snapshot in names
            split_counts = Q.splits(con, snapshot) if known_snapshot else []
            checks = Q.problem_checks(con)
            lm_runs, rec_runs = Q.landmark_runs(con), Q.recognition_runs(con)
            if result is not None:
                self.remember(con, [r.image_id for r in result.rows])
        page = P.grid_page(
            catalog=self.label,
            q=q,
            snapshot=snapshot,
            snapshots=names,
            split_counts=split_counts,
            checks=checks,
            landmark_runs=lm_runs,
            recognition_runs=rec_runs,
            result=result,
            token=token,
            errors=errors,
        )
        return status, page

    def face(self, image_id: str, values: dict[str, list[str]]) -> tuple[int, str]:
        with self.catalog() as con:
            token = T.ingest_token(con)
            lm_runs = Q.runs_of_image(con, "landmark_predictions", image_id)
            rec_runs = Q.runs_of_image(con, "embeddings", image_id)
            run = (values.get("run") or [lm_runs[0] if lm_runs else ""])[-1] or None
            emb = (values.get("emb") or [rec_runs[0] if rec_runs else ""])[-1] or None
            f = Q.face(con, image_id, run)
            if f is None:
                raise _NotFound(f"The catalog has no image {image_id!r}.")
            errors = []
            if run and f.predicted is None:
                errors.append(f"Run {run!r} predicted no landmarks for this image.")
            others = Q.same_identity(con, image_id, f.identity)
            near = Q.neighbours(con, emb, image_id) if emb else []
            self.remember(con, [image_id, *others[1], *(n[0] for n in near)])
        page = P.face_page(
            catalog=self.label,
            f=f,
            token=token,
            run=run,
            emb=emb,
            landmark_runs=lm_runs if run is None or run in lm_runs else [*lm_runs, run],
            recognition_runs=rec_runs if emb is None or emb in rec_runs else [*rec_runs, emb],
            others=others,
            near=near,
            errors=errors,
        )
        return 200, page

    def failures(self, values: dict[str, list[str]]) -> tuple[int, str]:
        from catalog.failures import recognition_failures

        def one(name: str, default: str = "") -> str:
            got = values.get(name) or []
            return got[-1].strip() if got and got[-1].strip() else default

        errors: list[str] = []
        with self.catalog() as con:
            token = T.ingest_token(con)
            runs = Q.recognition_runs(con)
        run = one("run", runs[0][0] if runs else "") or None
        split = one("split", "test")
        try:
            top = min(max(int(one("top", "12")), 1), 100)
        except ValueError:
            errors.append(f"pairs {one('top')!r} is not a number")
            top = 12
        result = None
        status = 200
        if run:
            try:
                result = recognition_failures(self.db, run, split=split, top=top)
            except CatalogBusyError:
                raise
            except (CatalogError, ValueError) as err:
                errors.append(str(err))
                status = 400
        if result is not None:
            ids = [p.image_a for p in result.false_non_matches + result.false_matches]
            ids += [p.image_b for p in result.false_non_matches + result.false_matches]
            ids += [i for c in result.confused for i in (c.closest.image_a, c.closest.image_b)]
            with self.catalog() as con:
                self.remember(con, ids)
        page = P.failures_page(
            catalog=self.label,
            runs=runs,
            run=run,
            split=split,
            top=top,
            result=result,
            token=token,
            errors=errors,
        )
        return status, page

    def sql(self, query: str) -> tuple[int, str]:
        from catalog.info import run_statements

        results: list[Any] = []
        error = None
        status = 200
        self.probe()
        if query.strip():
            try:
                # the sandbox of `celebcat sql` (read-only, nothing but the catalog)
                results = run_statements(query, self.db)
            except CatalogBusyError:
                raise
            except Exception as err:  # noqa: BLE001 - any failure of the query is shown
                error = str(err) or type(err).__name__
                status = 400
        ids = [
            row[r.columns.index("image_id")]
            for r in results
            if "image_id" in r.columns
            for row in r.rows[: Q.PAGE_SIZE * 4]
            if isinstance(row[r.columns.index("image_id")], str)
        ]
        with self.catalog() as con:
            token = T.ingest_token(con)
            known = self.remember(con, ids) if ids else set()
        page = P.sql_page(
            catalog=self.label,
            query=query,
            results=results,
            error=error,
            token=token,
            known_ids=known,
        )
        return status, page

    def galleries(self) -> tuple[int, str]:
        from catalog.gallery import list_galleries

        self.probe()
        return 200, P.galleries_page(catalog=self.label, galleries=list_galleries(self.db))

    def gallery(self, name: str) -> tuple[int, str]:
        from catalog.gallery import GalleryError, read_entries

        self.probe()
        try:
            entries = read_entries(self.db, name)
        except GalleryError as err:
            raise _NotFound(str(err)) from err
        people: dict[str, list[str]] = {}
        for person, image in zip(entries.identity_name, entries.image, strict=True):
            people.setdefault(str(person), []).append(str(image))
        with self.catalog() as con:
            token = T.ingest_token(con)
            known = self.remember(con, [i for images in people.values() for i in images])
        page = P.gallery_page(
            catalog=self.label,
            gallery=entries.gallery,
            people=list(people.items()),
            token=token,
            known_ids=known,
        )
        return 200, page

    # --- files ---------------------------------------------------------------------------

    def source(self, image_id: str) -> T.ThumbSource:
        """Where the image's pixels come from: remembered from a page, else looked up."""
        found = self.thumbs.recall(image_id)
        if found is None:
            with self.catalog() as con:
                found = T.lookup_sources(con, [image_id], self.size).get(image_id)
            if found is None:
                raise _NotFound(f"no image {image_id!r}")
            self.thumbs.remember({image_id: found})
        return found

    def thumbnail(self, image_id: str) -> tuple[bytes, bool]:
        """(JPEG bytes, whether they are the image's own thumbnail, not a placeholder)."""
        source = self.source(image_id)
        cached = self.thumbs.read(source.token, image_id)
        if cached is not None:
            return cached, True
        try:
            data = T.render(source, self.size)
        except T.ImageMissing:
            return T.placeholder(self.size), False
        self.thumbs.store(source.token, image_id, data)
        return data, True

    def image_path(self, image_id: str) -> str:
        source = self.source(image_id)
        return T.safe_image_path(source.root, source.path)


def _busy(request: Request, err: Exception) -> Response:
    headers = {"Retry-After": str(P.RETRY_AFTER), "Cache-Control": "no-store"}
    accept = request.headers.get("accept", "")
    path = request.url.path
    if path.startswith(("/thumb/", "/image/")):
        return Response("busy, retrying", 503, headers=headers, media_type="text/plain")
    if "application/json" in accept and "text/html" not in accept:
        return JSONResponse(
            {"error": "busy", "detail": str(err), "retry_after": P.RETRY_AFTER},
            503,
            headers=headers,
        )
    browser: Browser = request.app.state.browser
    return HTMLResponse(P.busy(browser.label, str(err)), 503, headers=headers)


def _missing_catalog(request: Request, err: Exception) -> Response:
    browser: Browser = request.app.state.browser
    return HTMLResponse(P.message_page(browser.label, "No catalog", [str(err)]), 500)


def _page(work: Callable[..., tuple[int, str]]) -> Callable[..., Any]:
    """An endpoint running ``work`` (sync, opening the catalog) in the thread pool."""

    async def endpoint(request: Request) -> Response:
        browser: Browser = request.app.state.browser
        try:
            status, page = await run_in_threadpool(work, browser, request)
        except _NotFound as err:
            return HTMLResponse(P.message_page(browser.label, "Not found", [str(err)]), 404)
        return HTMLResponse(page, status, headers={"Cache-Control": "no-store"})

    return endpoint


def _face_id(request: Request) -> str:
    image_id = request.path_params["image_id"]
    if not _plausible_id(image_id):
        raise _NotFound("no such image")
    return image_id


async def _thumb(request: Request) -> Response:
    """``/thumb/<image id>.jpg``; for ids that end in .jpg themselves (CelebA's),
    ``/thumb/000001.jpg`` is read as that image too when no id ``000001`` exists."""
    browser: Browser = request.app.state.browser
    name = request.path_params["name"]
    names = [n for n in (name[: -len(".jpg")], name) if n] if name.endswith(".jpg") else [name]
    names = [n for n in names if _plausible_id(n)]
    token = request.query_params.get("v", "")
    for image_id in names if token else ():
        data = browser.thumbs.read(token, image_id)
        if data is not None:  # made before: a few KB read here, no catalog, no thread
            return Response(
                data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
            )
    for image_id in names:
        try:
            data, real = await run_in_threadpool(browser.thumbnail, image_id)
        except _NotFound:
            continue
        except T.ImageRefused:
            return Response("forbidden", 403, media_type="text/plain")
        cache = "private, max-age=3600" if real else "no-store"
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": cache})
    return Response("not found", 404, media_type="text/plain")


async def _image(request: Request) -> Response:
    browser: Browser = request.app.state.browser
    image_id = request.path_params["image_id"]
    if not _plausible_id(image_id):
        return Response("not found", 404, media_type="text/plain")
    try:
        path = await run_in_threadpool(browser.image_path, image_id)
    except (_NotFound, T.ImageMissing):
        return Response("not found", 404, media_type="text/plain")
    except T.ImageRefused:
        return Response("forbidden", 403, media_type="text/plain")
    kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if not kind.startswith("image/") or kind == "image/svg+xml":
        kind = "application/octet-stream"
    return FileResponse(path, media_type=kind, headers={"Cache-Control": "private, max-age=600"})


async def _sql(request: Request) -> Response:
    browser: Browser = request.app.state.browser
    query = request.query_params.get("q", "")
    status, page = await run_in_threadpool(browser.sql, query)
    return HTMLResponse(page, status, headers={"Cache-Control": "no-store"})


async def _script(request: Request) -> Response:
    return Response(JS, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


async def _icon(request: Request) -> Response:
    return Response(ICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


def create_app(
    db: Any = None,
    *,
    thumbnails_dir: str | os.PathLike[str] | None = None,
    thumb_size: int = 128,
    cache_bytes: int = T.DEFAULT_CACHE_BYTES,
    lock_wait: float = LOCK_WAIT,
    allowed_hosts: Sequence[str] | None = None,
) -> Starlette:
    """The face browser of catalog ``db`` as an ASGI application (see the package).

    ``thumbnails_dir``: where made thumbnails are kept (default ``<catalog stem>.thumbs``
    beside the catalog), at most ``cache_bytes`` (0: none kept); ``thumb_size``: their
    side in pixels. ``lock_wait``: seconds a request waits for a catalog another process
    writes before answering 503. ``allowed_hosts``: the Host names answered (None: any;
    :func:`serve` names the loopback ones when it binds there, against DNS rebinding).
    """
    from catalog.files import check_size

    check_size(thumb_size)
    T.warm_up()
    browser = Browser(db, thumbnails_dir, thumb_size, cache_bytes, lock_wait)
    routes = [
        Route("/", _page(lambda b, r: b.grid(_values(r)))),
        Route("/face/{image_id:path}", _page(lambda b, r: b.face(_face_id(r), _values(r)))),
        Route("/failures", _page(lambda b, r: b.failures(_values(r)))),
        Route("/sql", _sql),
        Route("/galleries", _page(lambda b, r: b.galleries())),
        Route("/galleries/{name:path}", _page(lambda b, r: b.gallery(r.path_params["name"]))),
        Route("/thumb/{name:path}", _thumb),
        Route("/image/{image_id:path}", _image),
        Route("/static/app.js", _script),
        Route("/favicon.svg", _icon),
        Route("/favicon.ico", _icon),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            CatalogBusyError: _busy,
            CatalogNotFoundError: _missing_catalog,
        },
    )
    app.state.browser = browser
    app.add_middleware(_SecurityHeaders)
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    return app


__all__ = ["LOCK_WAIT", "Browser", "create_app"]
