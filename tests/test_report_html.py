"""The HTML report: what the page holds, built from a small catalog, and that a real
browser (headless Chromium) loads it with every image and no console message, and
sorts a table by the header clicked.

The runs here are written straight into the catalog (no training): a landmark run
whose predictions are the true points moved by seeded noise, and a recognition run
whose embeddings are an identity's direction plus noise, with its test and open-set
figures, and test figures per attribute group (one group's label full of HTML
characters, as a hostile catalog could hold). The Chromium check is skipped only
where Chromium is absent and the suite is not on CI (CI=true fails instead: ``.ci/run``
installs Debian's ``chromium``); the click test also needs Playwright (it drives the
system's Chromium, no browser download), skipped without it in the same way.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import holdout_snapshot, query, snapshot_catalog
from PIL import Image

from catalog import html_report as H
from catalog import results

pytest.importorskip("matplotlib")


#: A hostile attribute-group label: it must reach the page escaped, as text.
ODD = '<img src=x onerror="alert(1)"> & <b>Bold</b>'
#: The recognizer's test figures per attribute group (metrics splits test:<group>).
GROUPS = {
    "Eyeglasses=False": {"top1": 0.65, "verif_auc": 0.88},
    "Eyeglasses=True": {"top1": 0.4, "verif_auc": 0.7},
    ODD: {"top1": 0.5, "verif_auc": 0.6},
}
#: The extra section's table, to sort in the browser: numbers (one with a thousands
#: comma), text in mixed case, a blank.
SORTABLE = [("b", 10), ("a", 2), ("C", 1000), ("d", None), ("a2", 300)]


def _fake_runs(db: Path) -> tuple[str, str]:
    """A landmark run with predictions and a recognition run with embeddings and
    figures, on snapshot ``h``."""
    rng = np.random.default_rng(0)
    rows = query(
        db,
        "SELECT s.image_id, s.identity, s.split, l.* EXCLUDE (image_id) FROM "
        "snapshot_images s JOIN landmarks l USING (image_id) WHERE s.snapshot = 'h' "
        "ORDER BY 1",
    )
    ids = [r[0] for r in rows]
    true = np.array([r[3:] for r in rows], np.float64).reshape(-1, 5, 2)
    pred = true + rng.normal(0, 2.0, true.shape) * np.linspace(0.2, 3, len(rows))[:, None, None]
    eyes = np.linalg.norm(true[:, 1] - true[:, 0], axis=1)
    nme = np.linalg.norm(pred - true, axis=2).mean(axis=1) / eyes
    lm = results.start_run(db, "landmarks", {"model": "hourglass_small"}, "h")
    for epoch, value in enumerate((0.3, 0.1, 0.06), start=1):  # numbered as training prints
        results.log_metrics(db, lm, epoch, "train", {"loss": 0.01 / epoch})
        results.log_metrics(db, lm, epoch, "val", {"nme": value})
    results.write_landmark_predictions(db, lm, {"image_id": ids, "landmarks": pred, "nme": nme})
    results.log_metrics(db, lm, 3, "test", {"nme": float(nme.mean()), "failure_rate": 0.2})
    results.finish_run(db, lm)

    rec = results.start_run(
        db,
        "recognition",
        {
            "backbone": "face_cpu",
            "loss": "arcface",
            "size": 64,
            "source": "aligned",
            "embedding_dim": 16,
        },
        "h",
    )
    identities = np.array([r[1] for r in rows])
    directions = {i: rng.normal(size=16) for i in np.unique(identities)}
    vectors = np.stack([directions[i] + rng.normal(0, 0.8, 16) for i in identities])
    results.write_embeddings(db, rec, ids, vectors, "aligned/arcface/" + lm)
    results.log_metrics(db, rec, 1, "train", {"loss": 12.0})
    results.log_metrics(db, rec, 1, "val", {"top1": 0.5, "auc": 0.8})
    results.log_metrics(db, rec, 1, "test", {"top1": 0.61, "top5": 0.9, "verif_auc": 0.85})
    for group, values in GROUPS.items():  # as eval recognizer --by stores them
        results.log_metrics(db, rec, 1, f"test:{group}", values)
    results.log_metrics(
        db,
        rec,
        1,
        "open_set",
        {
            "tpr@fpr=0.1": 0.55,
            "threshold@fpr=0.1": 0.31,
            "tpr@fpr=0.01": 0.2,
            "threshold@fpr=0.01": 0.62,
            "auc": 0.83,
        },
    )
    results.finish_run(db, rec)
    return lm, rec


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The page of a small catalog (written once for the module's tests)."""
    from models.pipeline.report import write_report

    root = tmp_path_factory.mktemp("report")
    db = snapshot_catalog(root, ids=24, seed=5)
    holdout_snapshot(db, images_per_id=8, train_per_id=4)
    lm, rec = _fake_runs(db)
    extra = H.Section(
        "Extra",
        ["a note"],
        [H.Table("t", H.QueryResult(["name", "n"], SORTABLE), marks=["ok"])],
    )
    path, notes = write_report(db, root / "out", sections=[extra], title="the test page")
    return SimpleNamespace(db=db, path=path, notes=notes, html=path.read_text(), lm=lm, rec=rec)


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.links: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.sources.append(a.get("src") or "")
        for name in ("href", "src"):
            value = a.get(name) or ""
            if value and not value.startswith(("data:", "#")):
                self.links.append((tag, value))


def test_the_page_holds_every_section_and_only_embedded_images(page: SimpleNamespace) -> None:
    html = page.html
    for anchor in ("selection", "landmarks", "recognizer", "failures", "extra"):
        assert f'id="{anchor}"' in html, anchor
    assert page.lm in html and page.rec in html and "<title>the test page</title>" in html
    parser = _Images()
    parser.feed(html)
    assert parser.links == []  # nothing fetched: no server, no network
    assert len(parser.sources) >= 5 + 1 + H.WORST + 3  # stats, CED, worst faces, ROC/hist/t-SNE
    for src in parser.sources:
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert image.format == "PNG" and min(image.size) > 16
    assert 'data-images="pending"' in html and "naturalWidth" in html  # the check script
    assert page.notes == []


def test_the_figures_stand_beside_the_reference_and_the_worst_faces_are_worst(
    page: SimpleNamespace,
) -> None:
    from catalog.reports import REFERENCE_ROWS

    html = page.html
    for name in (
        "reference: ArcFace",
        "reference: softmax CE",
        "reference: landmarks (hourglass, argmax)",
    ):
        assert name in html
    arcface = REFERENCE_ROWS["reference: ArcFace"]
    assert f">{arcface[('open_set', 'tpr@fpr=0.1')]:.4g}<" in html  # 0.86
    assert ">0.55<" in html and ">0.62<" in html  # our TPR and threshold at FPR 0.1 / 0.01
    # worst faces in order of NME, worst first
    worst = re.findall(r"#(\d+) (\d{6}\.jpg): NME ([0-9.]+)", html)
    assert [int(k) for k, _, _ in worst] == list(range(1, H.WORST + 1))
    values = [float(v) for _, _, v in worst]
    assert values == sorted(values, reverse=True)
    test_ids = {
        r[0]
        for r in query(
            page.db, "SELECT image_id FROM snapshot_images WHERE snapshot = 'h' AND split = 'test'"
        )
    }
    assert {i for _, i, _ in worst} <= test_ids
    top = query(
        page.db,
        "SELECT max(nme) FROM landmark_predictions p JOIN snapshot_images s "
        "USING (image_id) WHERE s.snapshot = 'h' AND s.split = 'test'",
    )[0][0]
    assert values[0] == pytest.approx(top, abs=5e-4)
    assert '<tr class="ok">' in html


def test_a_worst_face_shows_predicted_and_true_points(page: SimpleNamespace) -> None:
    (face,) = H.worst_faces(page.db, page.lm, n=1, size=160)
    pixels = np.asarray(Image.open(io.BytesIO(face.png)).convert("RGB")).reshape(-1, 3)
    for colour in (H.PREDICTED_COLOUR, H.TRUE_COLOUR):
        assert (np.abs(pixels - colour).max(axis=1) < 8).sum() >= 5 * 4, colour  # 5 dots
    assert face.caption.startswith("NME ") and face.width == 160


def test_report_html_command_writes_the_page(page: SimpleNamespace, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import cli

    result = CliRunner().invoke(
        cli.app,
        ["report", "html", "--out", str(tmp_path / "r"), "--run", page.rec, "--db", str(page.db)],
    )
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r" / "index.html").read_text()
    assert 'id="recognizer"' in html and 'id="landmarks"' not in html  # only the run given
    bad = CliRunner().invoke(
        cli.app,
        [
            "report",
            "html",
            "--out",
            str(tmp_path / "x"),
            "--run",
            page.lm,
            "--run",
            page.lm,
            "--db",
            str(page.db),
        ],
    )
    assert bad.exit_code != 0 and "Two landmarks runs given" in str(bad.exception)


# --- failures, charts, escaping ------------------------------------------------------------


def _section(html: str, anchor: str) -> str:
    found = re.search(rf'<section id="{anchor}">(.*?)</section>', html, re.S)
    assert found, anchor
    return found.group(1)


class _Parts(HTMLParser):
    """The face pairs (under the panel title they follow) and the SVG charts of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.heading: list[str] | None = None
        self.panel = ""
        self.pairs: dict[str, list[dict]] = {}
        self.pair: dict | None = None
        self.caption: list[str] | None = None
        self.charts: list[dict] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag == "h3":
            self.heading = []
        elif tag == "figure" and "pair" in classes:
            self.pair = {"bad": "bad" in classes, "alts": [], "srcs": [], "caption": ""}
        elif tag == "img" and self.pair is not None:
            self.pair["alts"].append(a["alt"])
            self.pair["srcs"].append(a["src"])
        elif tag == "figcaption" and self.pair is not None:
            self.caption = []
        elif tag == "svg":
            self.charts.append(
                {"kind": classes[-1], "title": a["aria-label"], "bars": [], "points": []}
            )
        elif tag == "rect" and "bar" in classes:
            self.charts[-1]["bars"].append((a["data-label"], float(a["data-value"])))
        elif tag == "circle" and "point" in classes:
            self.charts[-1]["points"].append((int(a["data-x"]), float(a["data-y"])))

    def handle_data(self, data: str) -> None:
        for buffer in (self.heading, self.caption):
            if buffer is not None:
                buffer.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "h3" and self.heading is not None:
            self.panel, self.heading = "".join(self.heading), None
        elif tag == "figcaption" and self.pair is not None and self.caption is not None:
            self.pair["caption"], self.caption = "".join(self.caption), None
        elif tag == "figure" and self.pair is not None:
            self.pairs.setdefault(self.panel, []).append(self.pair)
            self.pair = None


def _parts(html: str) -> _Parts:
    parser = _Parts()
    parser.feed(html)
    return parser


def _panel(parts: _Parts, starts: str) -> list[dict]:
    (title,) = [t for t in parts.pairs if t.startswith(starts)]
    return parts.pairs[title]


def test_the_failures_are_the_pairs_catalog_failures_finds_with_thumbnails(
    page: SimpleNamespace,
) -> None:
    from catalog.failures import recognition_failures

    found = recognition_failures(page.db, page.rec, top=H.FAILURES)
    assert found.threshold == pytest.approx(0.62) and found.false_matches  # the fixture's
    section = _section(page.html, "failures")
    assert f"Threshold: cosine {found.threshold:.3f}" in section
    assert "threshold@fpr=0.01" in section and "stored" in section  # where it came from
    parts = _parts(section)
    for starts, pairs, wrong in (
        ("false non-matches", found.false_non_matches, lambda c: c <= found.threshold),
        ("false matches", found.false_matches, lambda c: c > found.threshold),
    ):
        shown = _panel(parts, starts)
        assert len(shown) == len(pairs) == H.FAILURES
        for k, (pair, p) in enumerate(zip(shown, pairs, strict=True), 1):
            assert pair["alts"] == [
                f"{p.image_a} (identity {p.identity_a})",
                f"{p.image_b} (identity {p.identity_b})",
            ]
            assert pair["caption"].startswith(f"#{k} cosine {p.cosine:.3f}")
            assert pair["bad"] == wrong(p.cosine)
    confused = _panel(parts, "most confused identities")
    assert [c["alts"] for c in confused] == [
        [
            f"{c.closest.image_a} (identity {c.closest.identity_a})",
            f"{c.closest.image_b} (identity {c.closest.identity_b})",
        ]
        for c in found.confused
    ]
    assert confused[0]["caption"].startswith(
        f"#1 identities {found.confused[0].identity_a} and {found.confused[0].identity_b}"
    )
    # every face a thumbnail: a PNG of the crop's size, not a blank
    for pair in (p for pairs in parts.pairs.values() for p in pairs):
        assert len(pair["srcs"]) == 2
        for src in pair["srcs"]:
            assert src.startswith("data:image/png;base64,")
            image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
            assert image.size == (H.THUMB, H.THUMB)
            assert np.asarray(image.convert("L")).std() > 5


def test_a_thumbnail_is_the_snapshots_face_box_cropped(page: SimpleNamespace) -> None:
    (image_id, rel, x1, y1, x2, y2), *_ = query(
        page.db,
        "SELECT s.image_id, i.path, s.x_1, s.y_1, s.x_2, s.y_2 FROM snapshot_images s "
        "JOIN images i USING (image_id) WHERE s.snapshot = 'h' AND s.split = 'test' ORDER BY 1",
    )
    root = query(page.db, "SELECT value FROM catalog_info WHERE key = 'image_root'")[0][0]
    thumbs = H.face_thumbnails(page.db, "h", [image_id, "no-such.jpg"], size=64)
    assert list(thumbs) == [image_id]
    got = np.asarray(Image.open(io.BytesIO(thumbs[image_id])).convert("RGB"), np.float64)
    # the same square (1.4 times the box's longer side, about its centre) cut by PIL
    side = 1.4 * max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    with Image.open(Path(root) / rel) as opened:
        image = opened.convert("RGB")
    square = [round(v) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)]
    want = np.asarray(image.crop(square).resize((64, 64), Image.BILINEAR), np.float64)
    whole = np.asarray(image.resize((64, 64), Image.BILINEAR), np.float64)
    assert np.abs(got - want).mean() < 12 < np.abs(got - whole).mean()


def test_a_run_without_embeddings_says_what_to_run(page: SimpleNamespace) -> None:
    bare = results.start_run(page.db, "recognition", {"backbone": "face_cpu"}, "h")
    section = H.failures_section(page.db, bare)
    text = " ".join(section.paragraphs)
    assert f"celebcat embed --run {bare}" in text
    assert f"celebcat eval recognizer --run {bare}" in text
    assert section.panels == [] and section.tables == []
    assert "celebcat embed --run" in H.render("p", [section])


def test_nme_by_attribute_is_a_chart_with_a_bar_per_group(page: SimpleNamespace) -> None:
    charts = _parts(_section(page.html, "landmarks")).charts
    (bars,) = [c["bars"] for c in charts if c["kind"] == "bar-chart"]
    expected = {}
    for name in H.ATTRIBUTE_CHARTS:
        for value, nme in query(
            page.db,
            f'SELECT a."{name}", avg(p.nme) FROM landmark_predictions p JOIN snapshot_images s '
            "ON s.image_id = p.image_id AND s.snapshot = 'h' AND s.split = 'test' "
            "LEFT JOIN attributes a ON a.image_id = p.image_id WHERE p.run_id = ? "
            "GROUP BY 1 ORDER BY 1",
            [page.lm],
        ):
            expected[f"{name}={value}"] = nme
    assert [label for label, _ in bars] == list(expected)  # one bar a group, in order
    for label, value in bars:
        assert value == pytest.approx(expected[label], rel=1e-9), label
    assert "Eyeglasses=True" in expected and "Eyeglasses=False" in expected


def test_recognition_by_group_is_a_chart_with_a_bar_per_group(page: SimpleNamespace) -> None:
    charts = _parts(_section(page.html, "recognizer")).charts
    bars = {c["title"]: c["bars"] for c in charts if c["kind"] == "bar-chart"}
    named = {"top1": "top-1", "verif_auc": "verification AUC"}
    assert set(bars) == {f"test {n} by attribute group, run {page.rec}" for n in named.values()}
    for name, shown_as in named.items():
        shown = bars[f"test {shown_as} by attribute group, run {page.rec}"]
        assert shown == sorted((g, v[name]) for g, v in GROUPS.items())  # a bar a group
    assert "test:&lt;img" not in page.html  # the group's label, not the metric split's name


def test_training_curves_have_a_point_per_epoch_numbered_from_one(
    page: SimpleNamespace,
) -> None:
    lines = {
        c["title"]: c["points"]
        for anchor in ("landmarks", "recognizer")
        for c in _parts(_section(page.html, anchor)).charts
        if c["kind"] == "line-chart"
    }
    assert lines[f"train loss by epoch, run {page.lm}"] == [
        (1, 0.01),
        (2, 0.005),
        (3, pytest.approx(0.01 / 3)),
    ]
    assert lines[f"val NME by epoch, run {page.lm}"] == [(1, 0.3), (2, 0.1), (3, 0.06)]
    assert lines[f"train loss by epoch, run {page.rec}"] == [(1, 12.0)]
    assert lines[f"val top-1 by epoch, run {page.rec}"] == [(1, 0.5)]


def test_the_charts_draw_what_they_are_given() -> None:
    from catalog.report_charts import bar_chart, line_chart

    parts = _parts(
        bar_chart(["a", "b", "c"], [0.5, None, 2.0], counts=[1, 2, 3], reference=1.0)
        + line_chart([("loss", [1, 2, 3, 4], [3.0, float("nan"), 1.0, 0.5])])
    )
    bars, line = parts.charts
    assert bars["bars"] == [("a", 0.5), ("c", 2.0)]  # b has no value: its row says n/a
    assert line["points"] == [(1, 3.0), (3, 1.0), (4, 0.5)]
    svg = bar_chart(["x"], [1.0])
    widths = [float(w) for w in re.findall(r'class="bar"[^>]* width="([0-9.]+)"', svg)]
    longer = bar_chart(["x", "y"], [1.0, 2.0])
    assert [float(w) for w in re.findall(r'class="bar"[^>]* width="([0-9.]+)"', longer)] == [
        pytest.approx(widths[0] / 2, rel=0.01),  # bars to scale: 1 is half of 2
        pytest.approx(widths[0], rel=0.01),
    ]


def test_labels_with_html_characters_are_escaped(page: SimpleNamespace) -> None:
    from catalog.report_charts import bar_chart, line_chart

    escaped = "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; &lt;b&gt;Bold&lt;/b&gt;"
    assert ODD not in page.html and "<b>Bold" not in page.html
    assert escaped in page.html  # the group from the catalog, in the charts and the table
    assert any(label == ODD for c in _parts(page.html).charts for label, _ in c["bars"])
    for svg in (
        bar_chart([ODD], [1.0], title=ODD, reference=0.5, reference_label=ODD),
        line_chart([(ODD, [1], [1.0])], title=ODD, x_label=ODD, y_label=ODD),
    ):
        assert ODD not in svg and "<img" not in svg and "<b>" not in svg
        assert escaped in svg
    # what the page's own classes are given is escaped too
    out = H.render(
        ODD,
        [
            H.Section(
                ODD,
                [ODD],
                [H.Table(ODD, H.QueryResult([ODD], [(ODD,)]), note=ODD)],
                panels=[H.Panel(ODD, [H.FacePair(ODD, (ODD, ODD), (None, None), ODD)], ODD)],
            )
        ],
    )
    assert ODD not in out and "<b>" not in out


def test_every_table_of_several_rows_is_sortable(page: SimpleNamespace) -> None:
    tables = re.findall(r"<table( class=\"sortable\")?><thead>(.*?)</table>", page.html, re.S)
    assert len(tables) == page.html.count("<table") >= 8
    rows = [body.count("<tr") - 1 for _, body in tables]  # less the header's
    assert [bool(sortable) for sortable, _ in tables] == [n > 1 for n in rows]
    assert sum(n > 1 for n in rows) >= 6


# --- in a real browser --------------------------------------------------------------------

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium() -> str:
    """Chromium's executable; skips the test where there is none, except on CI
    (CI=true), where its absence fails the test."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("Chromium is not installed on CI: .ci/run installs Debian's chromium")
    pytest.skip("Chromium is not installed (apt-get install chromium)")


def _browse(page_path: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--window-size=1200,900",
            *args,
            page_path.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_chromium_loads_the_page_with_every_image_and_no_console_message(
    page: SimpleNamespace,
    tmp_path: Path,
) -> None:
    chromium()
    shot = tmp_path / "page.png"
    done = _browse(page.path, tmp_path / "profile", f"--screenshot={shot}")
    assert done.returncode == 0, done.stderr[-2000:]
    image = Image.open(shot)
    assert image.size == (1200, 900)
    assert len(np.unique(np.asarray(image.convert("L")))) > 10  # a page was drawn, not a blank
    dom = _browse(
        page.path, tmp_path / "profile2", "--dump-dom", "--enable-logging=stderr", "--v=0"
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    n = len(re.findall(r"<img ", page.html))
    assert f'data-images="{n}/{n}"' in dom.stdout  # every image decoded (the inline check)
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []  # no script error, no message at all


def test_a_click_on_a_header_sorts_the_table_in_chromium(page: SimpleNamespace) -> None:
    """Numbers numerically, text alphabetically, blanks last, a second click reverses;
    an arrow marks the column; the row's mark travels with it; no console message."""
    executable = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("Playwright is not installed on CI (the test extra should hold it)")
        pytest.skip("Playwright is not installed")
    messages: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            tab = browser.new_page()
            tab.on("console", lambda m: messages.append(f"console {m.type}: {m.text}"))
            tab.on("pageerror", lambda e: messages.append(f"page error: {e}"))
            tab.goto(page.path.resolve().as_uri())
            tab.wait_for_function("document.body.dataset.images !== 'pending'")
            n = page.html.count("<img ")
            assert tab.evaluate("document.body.dataset.images") == f"{n}/{n}"

            table = tab.locator("#extra table")
            name, number = table.locator("th").nth(0), table.locator("th").nth(1)

            def column(i: int) -> list[str]:
                return table.locator("tbody tr").evaluate_all(
                    f"rows => rows.map(r => r.cells[{i}].textContent)"
                )

            def arrow(th: object) -> str:
                return th.evaluate("th => getComputedStyle(th, '::after').content")  # type: ignore[attr-defined]

            assert column(0) == [r[0] for r in SORTABLE]  # as written
            number.click()
            assert column(1) == ["2", "10", "300", "1,000", ""]  # numbers, not "1,000" < "10"
            assert number.get_attribute("aria-sort") == "ascending" and "\u25b2" in arrow(number)
            number.click()
            assert column(1) == ["1,000", "300", "10", "2", ""]  # reversed, the blank last
            assert number.get_attribute("aria-sort") == "descending" and "\u25bc" in arrow(number)
            name.click()
            assert column(0) == ["a", "a2", "b", "C", "d"]
            assert number.get_attribute("aria-sort") is None and "\u2195" in arrow(number)
            assert table.locator("tr.ok td").first.text_content() == "b"  # its mark moved

            # a table of the report: the open-set thresholds, by FPR
            thresholds = tab.locator("#recognizer table").nth(1)
            cells = "rows => rows.map(r => r.cells[1].textContent)"
            assert thresholds.locator("tbody tr").evaluate_all(cells) == ["0.31", "0.62"]
            thresholds.locator("th").first.click()
            assert thresholds.locator("tbody tr").evaluate_all(cells) == ["0.62", "0.31"]
        finally:
            browser.close()
    assert messages == []
