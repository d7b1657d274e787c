"""The HTML report: what the page holds, built from a small catalog, and that a real
browser (headless Chromium) loads it with every image and no console message.

The runs here are written straight into the catalog (no training): a landmark run
whose predictions are the true points moved by seeded noise, and a recognition run
whose embeddings are an identity's direction plus noise, with its test and open-set
figures. The Chromium check is skipped only where Chromium is absent and the suite is
not on CI (CI=true fails instead: ``.ci/run`` installs Debian's ``chromium``).
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
    for epoch, value in enumerate((0.3, 0.1, 0.06)):
        results.log_metrics(db, lm, epoch, "train", {"loss": 0.01 / (epoch + 1)})
        results.log_metrics(db, lm, epoch, "val", {"nme": value})
    results.write_landmark_predictions(db, lm, {"image_id": ids, "landmarks": pred, "nme": nme})
    results.log_metrics(db, lm, 2, "test", {"nme": float(nme.mean()), "failure_rate": 0.2})
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
    results.log_metrics(db, rec, 0, "train", {"loss": 12.0})
    results.log_metrics(db, rec, 0, "val", {"top1": 0.5, "auc": 0.8})
    results.log_metrics(db, rec, 0, "test", {"top1": 0.61, "top5": 0.9, "verif_auc": 0.85})
    results.log_metrics(
        db,
        rec,
        0,
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
        "Extra", ["a note"], [H.Table("t", H.QueryResult(["a"], [(1,)]), marks=["ok"])]
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
    for anchor in ("selection", "landmarks", "recognizer", "extra"):
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
