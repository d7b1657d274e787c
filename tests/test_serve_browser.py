"""``celebcat serve`` in a real browser: uvicorn on a free port in a thread, Debian's
Chromium driven by Playwright (no browser download). The grid's attribute filter
changes the count shown, the face page draws the predicted landmarks as a visible SVG
layer that its checkbox hides, the SQL box shows a query's rows, and no page logs a
console error, throws, or fails a request.

Skipped where Playwright or Chromium is missing, except on CI (CI=true), where that
fails the test (as tests/test_report_html.py does for Chromium).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from conftest import query, snapshot_catalog
from test_serve import write_runs

from catalog.serve import create_app


def _missing(what: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is not installed on CI: .ci/run installs Debian's chromium")
    pytest.skip(f"{what} is not installed")


def chromium() -> str:
    """Chromium's executable: Debian's first, then whatever is on PATH."""
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    _missing("Chromium")
    raise AssertionError  # unreachable: _missing skips or fails


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    import uvicorn

    folder = tmp_path_factory.mktemp("browser")
    db = snapshot_catalog(folder, ids=6, seed=11)
    write_runs(db)
    app = create_app(db, thumbnails_dir=folder / "thumbs")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}", db=db)
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright")
    executable = chromium()
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def test_grid_face_and_sql_in_chromium(site: SimpleNamespace, browser: object) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on(
        "console",
        lambda m: (
            problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning")
            else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on(
        "response",
        lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None,
    )

    # the grid: an attribute filter changes the count shown
    page.goto(site.url + "/")
    before = int(page.text_content("#count").replace(",", ""))
    snapshot_size = query(site.db, "SELECT count(*) FROM snapshot_images")[0][0]
    assert before == snapshot_size
    page.wait_for_function(
        "[...document.querySelectorAll('#grid img')].slice(0, 8)"
        ".every(i => i.complete && i.naturalWidth === 128)"
    )
    page.select_option("#attr-Smiling", "Smiling:1")
    with page.expect_navigation():
        page.click("#apply")
    after = int(page.text_content("#count").replace(",", ""))
    smiling = query(
        site.db,
        'SELECT count(*) FROM snapshot_images JOIN attributes USING (image_id) WHERE "Smiling"',
    )[0][0]
    assert after == smiling and after != before
    assert "attr=Smiling%3A1" in page.url and "attr=&" not in page.url  # empty fields left out
    assert page.locator("#grid .tile").count() == min(after, 100)

    # a face: the predicted landmarks are a visible SVG layer, its checkbox hides it
    with page.expect_navigation():
        page.click("#grid .tile >> nth=0")
    assert "/face/" in page.url
    points = page.locator("#layer-pred circle")
    assert points.count() == 5
    for k in range(5):
        assert points.nth(k).is_visible()
    assert page.locator("#layer-truth circle").count() == 5
    page.wait_for_function("document.getElementById('face-image').naturalWidth > 0")
    page.uncheck("#toggle-pred")
    assert page.locator("#layer-pred").is_hidden()
    page.check("#toggle-pred")
    assert points.first.is_visible()

    # the SQL box
    page.goto(site.url + "/sql")
    page.fill("#sql-query", "SELECT image_id, identity FROM identities ORDER BY 1 LIMIT 5")
    with page.expect_navigation():
        page.click("#sql-run")
    rows = page.locator("#sql-result tbody tr")
    assert rows.count() == 5
    first = query(site.db, "SELECT min(image_id) FROM identities")[0][0]
    assert rows.first.locator("td").first.text_content() == first
    assert page.locator("#sql-faces .tile").count() == 5

    page.close()
    assert problems == []
