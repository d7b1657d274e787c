"""``celebcat serve``, the read-only face browser, through starlette's TestClient on a
small synthetic catalog: its pages and their filters against SQL, thumbnails (made,
kept, bounded, from a crop cache), that it never holds or writes the catalog, answers
a catalog being written with 503, serves no file from outside the image root, escapes
everything it shows, and keeps its SQL box read-only.

The runs are written straight into the catalog (no training): a landmark run whose
predictions are the true points plus seeded noise, and a recognition run whose
embeddings are an identity's direction plus noise.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import shutil
import subprocess
import sys
import time
from html import unescape
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from conftest import query, snapshot_catalog
from PIL import Image
from starlette.testclient import TestClient

from catalog import results
from catalog.db import connect
from catalog.formats import LANDMARK_COLUMNS
from catalog.serve import create_app, serve
from catalog.serve import thumbnails as T

XSS = "<script>alert(1)</script>"


def write_runs(db: Path) -> tuple[str, str]:
    """A landmark run predicting every snapshot image, a recognition run embedding every
    image of the catalog."""
    rng = np.random.default_rng(0)
    rows = query(
        db,
        "SELECT s.image_id, l.* EXCLUDE (image_id) FROM snapshot_images s "
        "JOIN landmarks l USING (image_id) WHERE s.snapshot = 's' ORDER BY 1",
    )
    ids = [r[0] for r in rows]
    true = np.array([r[1:] for r in rows], np.float64).reshape(-1, 5, 2)
    pred = true + rng.normal(0, 3.0, true.shape)
    eyes = np.linalg.norm(true[:, 1] - true[:, 0], axis=1)
    nme = np.linalg.norm(pred - true, axis=2).mean(axis=1) / eyes
    lm = results.start_run(db, "landmarks", {"model": "x"}, "s")
    results.write_landmark_predictions(db, lm, {"image_id": ids, "landmarks": pred, "nme": nme})
    results.finish_run(db, lm)
    rec = results.start_run(db, "recognition", {"backbone": "x"}, "s")
    every = query(db, "SELECT image_id, identity FROM identities ORDER BY 1")
    directions = {i: rng.normal(size=8) for i in {r[1] for r in every}}
    vectors = np.stack([directions[i] + rng.normal(0, 0.9, 8) for _, i in every])
    results.write_embeddings(db, rec, [r[0] for r in every], vectors, "bbox")
    results.finish_run(db, rec)
    return lm, rec


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = snapshot_catalog(tmp_path_factory.mktemp("serve"), ids=6, seed=11)
    write_runs(db)
    return db


@pytest.fixture(scope="module")
def runs(template: Path) -> SimpleNamespace:
    rows = dict(query(template, "SELECT kind, run_id FROM runs"))
    return SimpleNamespace(lm=rows["landmarks"], rec=rows["recognition"])


@pytest.fixture
def client(template: Path, tmp_path: Path) -> TestClient:
    """The browser of the module's catalog (read by every test, never changed)."""
    return TestClient(create_app(template, thumbnails_dir=tmp_path / "thumbs", lock_wait=0.2))


def count(page: str) -> int:
    found = re.search(r'id="count">([\d,]+)<', page)
    assert found, page[:2000]
    return int(found.group(1).replace(",", ""))


def tile_ids(page: str) -> list[str]:
    """The image ids of the page's face tiles, in order."""
    return [
        unescape(t) for t in re.findall(r'<a class="tile[^"]*" href="[^"]*" title="([^"]*)"', page)
    ]


def thumb_urls(page: str) -> list[str]:
    return [unescape(u) for u in re.findall(r'src="(/thumb/[^"]+)"', page)]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the grid ---------------------------------------------------------------------------


def test_grid_shows_the_newest_snapshot_paged_with_its_count(
    client: TestClient, template: Path
) -> None:
    page = client.get("/")
    assert page.status_code == 200
    ids = [r[0] for r in query(template, "SELECT image_id FROM snapshot_images ORDER BY 1")]
    assert count(page.text) == len(ids) >= 20
    assert tile_ids(page.text) == ids
    assert len(thumb_urls(page.text)) == len(ids)
    assert 'form class="filters"' in page.text and 'id="attr-Smiling"' in page.text
    assert "content-security-policy" in page.headers
    every = query(template, "SELECT image_id FROM images ORDER BY 1")
    whole = client.get("/", params={"snapshot": "*"}).text
    assert count(whole) == len(every) > 100
    assert tile_ids(whole) == [r[0] for r in every[:100]]
    second = client.get("/", params={"snapshot": "*", "page": 2}).text
    assert tile_ids(second) == [r[0] for r in every[100:200]]
    assert client.get("/", params={"snapshot": ""}).text.count('class="tile') == 100


def test_grid_filters_match_sql(client: TestClient, template: Path) -> None:
    def n(sql: str) -> int:
        return query(template, sql)[0][0]

    base = "FROM snapshot_images s JOIN attributes a USING (image_id) WHERE snapshot = 's'"
    assert count(client.get("/?split=train").text) == n(f"SELECT count(*) {base} AND split='train'")
    identity = query(template, "SELECT min(identity) FROM snapshot_images")[0][0]
    got = client.get("/", params={"identity": identity}).text
    assert count(got) == n(f"SELECT count(*) {base} AND identity = {identity}") == 10
    page = client.get("/?attr=Smiling:1&attr=Male:0").text
    expected = query(template, f'SELECT image_id {base} AND "Smiling" AND NOT "Male" ORDER BY 1')
    assert count(page) == len(expected) and tile_ids(page) == [r[0] for r in expected]
    # the filter state is kept by the form and the page links
    assert re.search(r'<option value="Smiling:1" selected>', page)
    assert re.search(r'<option value="Male:0" selected>', page)
    many = client.get("/?snapshot=*&attr=Young:1").text
    young = n('SELECT count(*) FROM attributes WHERE "Young"')
    assert count(many) == young
    if young > 100:
        nxt = unescape(re.search(r'href="([^"]+)" rel="next"', many).group(1))
        assert "attr=Young%3A1" in nxt and "snapshot=%2A" in nxt and "page=2" in nxt


def test_grid_problem_filter(db: Path, tmp_path: Path) -> None:
    ids = [r[0] for r in query(db, "SELECT image_id FROM snapshot_images ORDER BY 1")][:3]
    con = connect(db)
    con.executemany(
        "INSERT INTO problems VALUES (?, 'warning', 'bboxes', ?, 'x')",
        [["odd_box", ids[0]], ["odd_box", ids[1]], ["tiny_face", ids[2]]],
    )
    con.close()
    client = TestClient(create_app(db, thumbnails_dir=tmp_path / "t"))
    odd = client.get("/?problem=odd_box").text
    assert count(odd) == 2 and tile_ids(odd) == ids[:2]
    assert count(client.get("/?problem=*").text) == 3
    assert "odd_box (warning, 2)" in odd


def test_grid_sorts_by_stored_figures(
    client: TestClient, template: Path, runs: SimpleNamespace
) -> None:
    page = client.get("/", params={"sort": f"nme:{runs.lm}"}).text
    worst = query(
        template,
        "SELECT image_id FROM landmark_predictions WHERE run_id = ? ORDER BY nme DESC, image_id",
        [runs.lm],
    )
    assert tile_ids(page) == [r[0] for r in worst]  # worst (highest NME) first by default
    asc = client.get("/", params={"sort": f"nme:{runs.lm}", "order": "asc"}).text
    assert tile_ids(asc) == [r[0] for r in reversed(worst)]
    assert "NME 0." in page

    # own_cosine: cosine of each image's embedding to its identity's centre (all of the
    # person's embedded images), computed in SQL; here against numpy
    rows = query(
        template,
        "SELECT e.image_id, d.identity, e.embedding FROM embeddings e JOIN identities d "
        "USING (image_id) WHERE run_id = ?",
        [runs.rec],
    )
    vectors = {i: np.asarray(v) for i, _, v in rows}
    centre: dict[int, np.ndarray] = {}
    for i, ident, _ in rows:
        centre[ident] = centre.get(ident, 0) + vectors[i]
    cos = {
        i: float(vectors[i] @ centre[ident] / np.linalg.norm(centre[ident])) for i, ident, _ in rows
    }
    snap = [r[0] for r in query(template, "SELECT image_id FROM snapshot_images")]
    page = client.get("/", params={"sort": f"own_cosine:{runs.rec}"}).text
    got = tile_ids(page)
    assert got == sorted(snap, key=lambda i: (cos[i], i))  # lowest (worst) first
    shown = [float(v) for v in re.findall(r"cos (-?[\d.]+)</span>", page)]
    assert shown == pytest.approx([cos[i] for i in got], abs=1e-4)


def test_own_cosines_are_kept_until_the_catalog_changes(db: Path, tmp_path: Path) -> None:
    run = query(db, "SELECT run_id FROM runs WHERE kind = 'recognition'")[0][0]
    client = TestClient(create_app(db, thumbnails_dir=tmp_path / "t"))
    url = f"/?sort=own_cosine:{run}"
    first = tile_ids(client.get(url).text)
    assert tile_ids(client.get(url).text) == first
    # the run's embeddings rewritten: every image alike but the one that was best
    ids = [r[0] for r in query(db, "SELECT image_id FROM identities ORDER BY 1")]
    vectors = np.tile(np.eye(8)[0], (len(ids), 1))
    vectors[ids.index(first[-1])] = np.eye(8)[1]  # the best one becomes the worst
    results.write_embeddings(db, run, ids, vectors, "bbox")
    assert tile_ids(client.get(url).text)[0] == first[-1]


def test_grid_says_what_it_cannot_filter_by_escaped(client: TestClient) -> None:
    bad = client.get("/", params={"attr": f"{XSS}:1", "sort": "nme:nope", "identity": "x"})
    assert bad.status_code == 400
    assert XSS not in bad.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in bad.text
    assert "no run &#x27;nope&#x27;" in bad.text and "identity &#x27;x&#x27;" in bad.text
    missing = client.get("/", params={"snapshot": XSS})
    assert missing.status_code == 404 and XSS not in missing.text
    assert client.get("/?split=nosuch").status_code == 400


# --- one face ---------------------------------------------------------------------------


def test_face_page_draws_layers_rows_person_and_neighbours(
    client: TestClient, template: Path, runs: SimpleNamespace
) -> None:
    image_id = query(template, "SELECT min(image_id) FROM snapshot_images")[0][0]
    page = client.get(f"/face/{image_id}").text  # default: the newest runs with rows for it
    assert f'<option value="{runs.lm}" selected>' in page
    assert f'<option value="{runs.rec}" selected>' in page
    layer = re.search(r'<g id="layer-pred" class="([^"]*)">(.*?)</g>', page)
    assert layer and "pred-landmarks" in layer.group(1)
    circles = re.findall(r'<circle class="pred" cx="([\d.]+)" cy="([\d.]+)"', layer.group(2))
    pred = query(
        template,
        f"SELECT {', '.join(LANDMARK_COLUMNS)} FROM landmark_predictions "
        "WHERE run_id = ? AND image_id = ?",
        [runs.lm, image_id],
    )[0]
    assert np.allclose(np.array(circles, float).ravel(), pred, atol=0.01)
    assert page.count("<circle") == 10  # five true, five predicted
    assert 'id="layer-truth"' in page and 'id="layer-box"' in page
    assert 'data-layer="layer-pred"' in page  # the toggle
    identity, partition = query(
        template,
        "SELECT identity, partition_name FROM identities JOIN partitions USING (image_id) "
        "WHERE image_id = ?",
        [image_id],
    )[0]
    assert f"<th>identity</th><td>{identity}</td>" in page
    assert f"<th>partition</th><td>{partition}</td>" in page
    true_attrs = query(
        template, "SELECT * EXCLUDE (image_id) FROM attributes WHERE image_id = ?", [image_id]
    )
    assert "attributes true" in page and sum(true_attrs[0]) >= 0
    same = query(
        template,
        "SELECT image_id FROM identities WHERE identity = ? AND image_id <> ? ORDER BY 1",
        [identity, image_id],
    )
    assert f"{len(same)} other image" in page
    # nearest neighbours: cosines and same person, against numpy
    rows = query(
        template,
        "SELECT e.image_id, d.identity, e.embedding FROM embeddings e JOIN identities d "
        "USING (image_id) WHERE run_id = ? ORDER BY 1",
        [runs.rec],
    )
    me = next(np.asarray(v) for i, _, v in rows if i == image_id)
    near = sorted(
        ((float(np.asarray(v) @ me), i, d) for i, d, v in rows if i != image_id),
        key=lambda t: (-t[0], t[1]),
    )[:12]
    section = page.split('id="neighbours"')[1]
    shown = re.findall(
        r'title="([^"]+)".*?cos (-?[\d.]+)</span><span>id (\d+) · ([a-z ]+)<', section
    )
    assert [s[0] for s in shown] == [n[1] for n in near]
    assert [float(s[1]) for s in shown] == pytest.approx([n[0] for n in near], abs=1e-3)
    assert [s[3] == "same person" for s in shown] == [d == identity for _, _, d in near]
    # no run: no predicted points; an unknown image: 404
    plain = client.get(f"/face/{image_id}", params={"run": "", "emb": ""}).text
    assert plain.count('class="pred"') == 0 and 'id="neighbours"' not in plain
    assert client.get("/face/nope.jpg").status_code == 404


def test_face_image_is_served_whole(client: TestClient, template: Path) -> None:
    root = query(template, "SELECT value FROM catalog_info WHERE key = 'image_root'")[0][0]
    image_id, path = query(template, "SELECT image_id, path FROM images ORDER BY 1 LIMIT 1")[0]
    got = client.get(f"/image/{image_id}")
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    assert got.content == (Path(root) / path).read_bytes()


# --- failures, SQL, galleries ---------------------------------------------------------------


def test_failures_page_shows_the_worst_pairs(
    client: TestClient, template: Path, runs: SimpleNamespace
) -> None:
    from catalog.failures import recognition_failures

    expected = recognition_failures(template, runs.rec, split="train", top=5)
    page = client.get("/failures", params={"run": runs.rec, "split": "train", "top": 5}).text
    fnm = page.split('id="fnm"')[1].split("</h2>")[0]
    cosines = [float(c) for c in re.findall(r"cos (-?[\d.]+) ·", fnm)]
    assert cosines == pytest.approx([p.cosine for p in expected.false_non_matches], abs=1e-3)
    assert fnm.count("<img") == 2 * len(expected.false_non_matches)
    assert expected.false_matches[0].image_a in page
    assert page.count('class="pair"') == len(expected.false_non_matches) + len(
        expected.false_matches
    ) + len(expected.confused)
    default = client.get("/failures").text  # the newest run, its test split
    assert f'<option value="{runs.rec}" selected>' in default and 'id="fnm"' in default
    wrong = client.get("/failures", params={"run": "nope"})
    assert wrong.status_code == 400 and "No run" in unescape(wrong.text)


def test_sql_box_shows_rows_escaped_and_faces(client: TestClient, template: Path) -> None:
    page = client.get(
        "/sql",
        params={
            "q": f"SELECT image_id, identity, '{XSS}' AS note FROM identities ORDER BY 1 LIMIT 7"
        },
    )
    assert page.status_code == 200
    table = page.text.split('id="sql-result"')[1].split("</table>")[0]
    assert table.count("<tr>") == 8 and "7 rows" in page.text
    assert XSS not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in table
    first = query(template, "SELECT image_id FROM identities ORDER BY 1 LIMIT 7")
    assert tile_ids(page.text.split('id="sql-faces"')[1]) == [r[0] for r in first]
    error = client.get("/sql", params={"q": f"SELECT {XSS}"})
    assert error.status_code == 400 and 'id="sql-error"' in error.text
    assert XSS not in error.text
    assert "<td>42</td>" in client.get("/sql", params={"q": "SELECT 41 + 1 AS answer"}).text


def test_sql_box_cannot_write(client: TestClient, template: Path, tmp_path: Path) -> None:
    before = sha(template)
    tables = query(template, "SELECT table_name FROM duckdb_tables() ORDER BY 1")
    out = tmp_path / "out.csv"
    for statement in (
        "CREATE TABLE x (a INTEGER)",
        "DELETE FROM identities",
        f"COPY identities TO '{out}'",
        f"ATTACH '{tmp_path / 'other.duckdb'}' AS other",
        "INSTALL httpfs",
        "SET enable_external_access = true",
        "SELECT 1; DROP TABLE identities",
    ):
        got = client.get("/sql", params={"q": statement})
        assert got.status_code == 400, statement
        assert 'id="sql-error"' in got.text, statement
    assert not out.exists() and not (tmp_path / "other.duckdb").exists()
    assert sha(template) == before
    assert query(template, "SELECT table_name FROM duckdb_tables() ORDER BY 1") == tables


def test_gallery_names_are_escaped(db: Path, tmp_path: Path) -> None:
    from catalog.gallery import write_gallery

    image_id = query(db, "SELECT min(image_id) FROM images")[0][0]
    write_gallery(
        db,
        "friends",
        "recognition-x",
        "folder:/photos",
        [XSS, XSS, "Ann & <b>Bob</b>"],
        [f"/photos/{XSS}/1.jpg", image_id, '/photos/"onerror=alert(1)".jpg'],
        np.eye(3, 4),
    )
    client = TestClient(create_app(db, thumbnails_dir=tmp_path / "t"))
    listing = client.get("/galleries")
    assert listing.status_code == 200 and 'href="/galleries/friends"' in listing.text
    page = client.get("/galleries/friends")
    assert page.status_code == 200
    assert XSS not in page.text and "<b>Bob</b>" not in page.text
    assert page.text.count('<h2 class="person">&lt;script&gt;alert(1)&lt;/script&gt;</h2>') == 1
    assert "Ann &amp; &lt;b&gt;Bob&lt;/b&gt;" in page.text
    assert tile_ids(page.text) == [image_id]  # the catalog's image shown, the files named only
    assert "&quot;onerror=alert(1)&quot;.jpg" in page.text
    assert client.get("/galleries/nope").status_code == 404


def test_an_image_id_with_html_characters_is_escaped(db: Path, tmp_path: Path) -> None:
    old = query(db, "SELECT min(image_id) FROM snapshot_images")[0][0]
    new = '"><img src=x onerror=alert(1)>&.jpg'
    con = connect(db)
    for (table,) in con.execute(
        "SELECT table_name FROM duckdb_columns() WHERE column_name = 'image_id' "
        "AND schema_name = 'main' AND table_name IN (SELECT table_name FROM duckdb_tables())"
    ).fetchall():
        con.execute(f"UPDATE {table} SET image_id = ? WHERE image_id = ?", [new, old])
    con.close()
    client = TestClient(create_app(db, thumbnails_dir=tmp_path / "t"))
    grid = client.get("/").text
    assert new not in grid and "<img src=x" not in grid
    assert tile_ids(grid)[0] == new  # '"' sorts before the digits
    face = client.get("/face/" + new.replace("/", "%2F"))
    assert face.status_code == 200 and new not in face.text and "<img src=x" not in face.text
    thumb = thumb_urls(grid)[0]
    assert client.get(thumb).status_code == 200
    assert client.get("/image/" + new).status_code == 200


# --- thumbnails -------------------------------------------------------------------------------


def jpeg_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_thumbnails_are_made_once_kept_on_disk_and_bounded(template: Path, tmp_path: Path) -> None:
    folder = tmp_path / "thumbs"
    client = TestClient(create_app(template, thumbnails_dir=folder, thumb_size=64))
    urls = thumb_urls(client.get("/").text)
    first = client.get(urls[0])
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert jpeg_size(first.content) == (64, 64)
    kept = list(folder.rglob("*.jpg"))
    assert len(kept) == 1 and kept[0].read_bytes() == first.content
    assert kept[0].parent.parent.parent.name == "64"  # <folder>/<size>/<token>/<h[:2]>/
    kept[0].write_bytes(b"kept")  # the second answer comes from the disk
    assert client.get(urls[0]).content == b"kept"
    # the id form without the token looks the image up and finds the kept file too
    image_id = tile_ids(client.get("/").text)[0]
    assert client.get(f"/thumb/{image_id}.jpg").content == b"kept"
    assert client.get(f"/thumb/{image_id}").status_code == 200  # CelebA ids end in .jpg
    # bounded: past cache_bytes the oldest go
    small = TestClient(
        create_app(template, thumbnails_dir=tmp_path / "small", cache_bytes=12_000, thumb_size=64)
    )
    for u in thumb_urls(small.get("/").text):
        assert small.get(u).status_code == 200
    total = sum(p.stat().st_size for p in (tmp_path / "small").rglob("*.jpg"))
    assert 0 < total <= 12_000
    none = TestClient(create_app(template, thumbnails_dir=tmp_path / "none", cache_bytes=0))
    assert none.get(urls[1]).status_code == 200 and not (tmp_path / "none").exists()


def test_thumbnails_come_from_a_crop_cache_when_there_is_one(db: Path, tmp_path: Path) -> None:
    from catalog.cache import build_cache, find_cache
    from catalog.snapshots import get

    build_cache("s", db, size=64, workers=1)
    con = connect(db, read_only=True)
    cache = find_cache(con, get(con, "s").hash, 64)
    con.close()
    image_id = str(cache.image_ids[3])
    row = int(cache._rows[3])
    stored = np.load(cache.path, mmap_mode="r+")
    stored[row] = (200, 30, 60)  # a colour no face has: the thumbnail must be it
    stored.flush()
    del stored
    client = TestClient(create_app(db, thumbnails_dir=tmp_path / "t", thumb_size=64))
    got = np.asarray(Image.open(io.BytesIO(client.get(f"/thumb/{image_id}.jpg").content)))
    assert got.shape == (64, 64, 3)
    assert np.abs(got.astype(int) - (200, 30, 60)).max() <= 6
    wide = TestClient(create_app(db, thumbnails_dir=tmp_path / "w", thumb_size=96))
    got = np.asarray(Image.open(io.BytesIO(wide.get(f"/thumb/{image_id}.jpg").content)))
    assert got.shape == (96, 96, 3)  # resized from the 64 px cache
    assert np.abs(got.astype(int) - (200, 30, 60)).max() <= 6
    # a cache whose file is gone: made from the image instead
    cache.path.unlink()
    other = TestClient(create_app(db, thumbnails_dir=tmp_path / "u", thumb_size=64))
    assert jpeg_size(other.get(f"/thumb/{image_id}.jpg").content) == (64, 64)


def test_making_a_thumbnail_blocks_no_other_request(
    template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = T.render

    def slow(source: T.ThumbSource, size: int) -> bytes:
        time.sleep(1.0)
        return real(source, size)

    monkeypatch.setattr(T, "render", slow)
    app = create_app(template, thumbnails_dir=tmp_path / "t")
    image_id = query(template, "SELECT min(image_id) FROM images")[0][0]

    async def both() -> tuple[float, float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            t0 = time.perf_counter()

            async def timed(path: str) -> float:
                r = await c.get(path)
                assert r.status_code == 200
                return time.perf_counter() - t0

            return tuple(
                await asyncio.gather(timed(f"/thumb/{image_id}.jpg"), timed("/static/app.js"))
            )

    thumb, script = asyncio.run(both())
    assert thumb >= 1.0 and script < 0.5


# --- the files served ---------------------------------------------------------------------------


def test_no_file_outside_the_image_root_is_served(db: Path, tmp_path: Path) -> None:
    root = Path(query(db, "SELECT value FROM catalog_info WHERE key = 'image_root'")[0][0])
    secret = root.parent / "secret.jpg"
    shutil.copy(next(root.glob("*.jpg")), secret)  # a real JPEG: it would decode
    outside = tmp_path / "outside.jpg"
    shutil.copy(secret, outside)
    (root / "link.jpg").symlink_to(outside)
    (root / "sub").symlink_to(tmp_path, target_is_directory=True)
    ids = [r[0] for r in query(db, "SELECT image_id FROM images ORDER BY 1 LIMIT 5")]
    hostile = {
        ids[0]: "../secret.jpg",
        ids[1]: str(outside),  # absolute
        ids[2]: "link.jpg",  # a link leading out
        ids[3]: "sub/outside.jpg",  # a folder link leading out
        ids[4]: "a/../../secret.jpg",
    }
    con = connect(db)
    for image_id, path in hostile.items():
        con.execute("UPDATE images SET path = ? WHERE image_id = ?", [path, image_id])
    con.close()
    client = TestClient(create_app(db, thumbnails_dir=tmp_path / "t"))
    secret_bytes = secret.read_bytes()
    for image_id in hostile:
        for url in (f"/image/{image_id}", f"/thumb/{image_id}.jpg"):
            got = client.get(url)
            assert got.status_code == 403, (url, hostile[image_id])
            assert secret_bytes not in got.content
    # ids that are paths: not in the catalog, nothing served
    for url in (
        "/image/..%2Fsecret.jpg",
        "/image/%2Fetc%2Fpasswd",
        "/image/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/thumb/..%2Fsecret.jpg.jpg",
        "/thumb/x.jpg?v=..%2F..%2F..",
        "/face/..%2Fsecret.jpg",
    ):
        got = client.get(url)
        assert got.status_code == 404, url
        assert secret_bytes not in got.content and b"root:" not in got.content
    assert not list((tmp_path / "t").rglob("*.jpg"))  # nothing made from those files


def test_safe_image_path_refuses_every_way_out(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "ok.jpg").write_bytes(b"x")
    (tmp_path / "out.jpg").write_bytes(b"y")
    (root / "out.jpg").symlink_to(tmp_path / "out.jpg")
    (root / "in.jpg").symlink_to(root / "a" / "ok.jpg")
    assert T.safe_image_path(str(root), "a/ok.jpg") == str((root / "a" / "ok.jpg").resolve())
    assert T.safe_image_path(str(root), "in.jpg") == str((root / "a" / "ok.jpg").resolve())
    for bad in ("../out.jpg", str(tmp_path / "out.jpg"), "out.jpg", "a/../../out.jpg"):
        with pytest.raises(T.ImageRefused):
            T.safe_image_path(str(root), bad)
    for missing in ("a/none.jpg", "a", "", None):
        with pytest.raises(T.ImageMissing):
            T.safe_image_path(str(root), missing)


# --- the catalog: never held, never written, busy answered ---------------------------------------

HOLD = (
    "import duckdb, sys, time\n"
    "con = duckdb.connect(sys.argv[1])\n"
    "print('holding', flush=True)\n"
    "time.sleep(60)\n"
)


def test_a_catalog_being_written_answers_503_then_200(db: Path, tmp_path: Path) -> None:
    client = TestClient(create_app(db, thumbnails_dir=tmp_path / "t", lock_wait=0.2))
    thumb = thumb_urls(client.get("/").text)[0]
    assert client.get(thumb).status_code == 200  # made and kept before the writer comes
    writer = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "holding"
        busy = client.get("/")
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "2"
        assert '<meta http-equiv="refresh" content="2">' in busy.text and 'id="busy"' in busy.text
        as_json = client.get("/face/x.jpg", headers={"accept": "application/json"})
        assert as_json.status_code == 503 and as_json.json()["error"] == "busy"
        assert client.get("/sql", params={"q": "SELECT 1"}).status_code == 503
        assert client.get("/failures").status_code == 503
        assert client.get(thumb).status_code == 200  # a kept thumbnail needs no catalog
    finally:
        writer.kill()
        writer.wait()
    assert client.get("/").status_code == 200


def test_the_app_holds_nothing_open_between_requests(
    db: Path, tmp_path: Path, runs: SimpleNamespace
) -> None:
    before = sha(db)
    client = TestClient(create_app(db, thumbnails_dir=tmp_path / "t"))
    grid = client.get("/").text
    image_id = tile_ids(grid)[0]
    for url in (
        f"/face/{image_id}",
        f"/image/{image_id}",
        thumb_urls(grid)[0],
        "/failures",
        "/sql?q=SELECT+count(*)+FROM+images",
        "/galleries",
    ):
        assert client.get(url).status_code == 200, url
    assert sha(db) == before  # nothing written
    # another process writes at once (no wait), then this one
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1]); "
            "con.execute('CREATE TABLE scratch (a INTEGER)'); con.close()",
            str(db),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    con = connect(db, timeout=0)
    con.execute("DROP TABLE scratch")
    con.close()
    assert client.get("/").status_code == 200


def test_serve_binds_locally_and_warns_otherwise(
    template: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    serve(template)
    out = capsys.readouterr()
    assert calls[-1][1]["host"] == "127.0.0.1" and calls[-1][1]["port"] == 8765
    assert "http://127.0.0.1:8765/" in out.out and "warning" not in out.err
    local = TestClient(calls[-1][0], base_url="http://127.0.0.1:8765")
    assert local.get("/static/app.js").status_code == 200
    rebound = TestClient(calls[-1][0], base_url="http://evil.example:8765")
    assert rebound.get("/static/app.js").status_code == 400  # DNS rebinding refused
    serve(template, host="0.0.0.0", port=9000)
    out = capsys.readouterr()
    assert "http://0.0.0.0:9000/" in out.out
    assert "warning" in out.err and "other machines" in out.err
    with pytest.raises(FileNotFoundError):
        serve(template.parent / "none.duckdb")
