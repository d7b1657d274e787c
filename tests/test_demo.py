"""``celebcat demo`` end to end, in a reduced configuration, twice into one folder.

The reduced plan keeps every step (synthesis to report) and the shape of the data
(train / val / test, query and distractor identities), with one or two epochs each,
so the test checks the flow, not the figures; torch runs on one thread (as the
pipeline tests do). ``--no-train`` and a missing torch stop at the snapshot.
"""

from __future__ import annotations

import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import query
from typer.testing import CliRunner

import cli
from models.pipeline import demo

runner = CliRunner()

#: Every step, one or two epochs each: 30 identities, 10 images each (2 test images of
#: each training identity, so the test split has same-identity pairs).
TINY = demo.Plan(
    "tiny",
    ids=30,
    images_per_id=10,
    query_share=0.2,
    distractor_share=0.2,
    query_images=2,
    landmark_epochs=1,
    recognizer_epochs=2,
    detector_epochs=1,
    size=32,
    embedding_dim=16,
    known=2,
    strangers=2,
)

STEPS = (
    "1. synthesise",
    "4. select and freeze",
    "5. train landmarks",
    "6. align",
    "7. train the recognizer",
    "8. evaluate",
    "9. train the face detector",
    "10. gallery",
    "11. identify",
    "12. report",
    "time per step",
    "Summary:",
    "Report:",
)


def _cpu() -> float:
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def test_demo_runs_every_step_and_twice_into_one_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    monkeypatch.setitem(demo.PLANS, "default", TINY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path / "demo"
    pages = []
    try:
        for _ in range(2):
            start, cpu = time.perf_counter(), _cpu()
            result = runner.invoke(cli.app, ["demo", "--out", str(out)], env={"COLUMNS": "160"})
            print(f"demo: {time.perf_counter() - start:.1f} s wall, {_cpu() - cpu:.1f} s CPU")
            assert result.exit_code == 0, result.output + repr(result.exception)
            for step in STEPS:
                assert step in result.output, step
            assert re.search(
                r"the closest gallery person of \d+ of the\s+\d+ gallery", result.output
            )
            pages.append((out / "report" / "index.html").read_text())
    finally:
        torch.set_num_threads(threads)
    db = out / "celeba.duckdb"
    # the second demo replaced the first's snapshot, gallery and report; runs stay
    assert query(db, "SELECT count(*) FROM snapshots") == [(1,)]
    assert query(db, "SELECT name, source FROM galleries") == [("demo", "snapshot:demo/query")]
    kinds = query(
        db,
        "SELECT kind, count(*), count(*) FILTER (status = 'finished') FROM runs "
        "GROUP BY kind ORDER BY kind",
    )
    # two of each trained, and the shipped recognizer and detector, imported once
    assert kinds == [("detector", 3, 3), ("landmarks", 2, 2), ("recognition", 3, 3)]
    for shipped in (demo.SHIPPED, demo.SHIPPED_DETECTOR):
        assert query(db, "SELECT count(*) FROM runs WHERE run_id = ?", [shipped]) == [(1,)]
    newest = query(
        db,
        "SELECT max(run_id) FROM runs WHERE kind = 'landmarks' OR (kind = 'recognition' "
        "AND config->>'pretrained' IS NULL) GROUP BY kind ORDER BY kind",
    )
    assert [r[0] in result.output for r in newest] == [True, True]
    used = re.search(r"identify uses (recognition-[\w-]+)", result.output)
    assert used and used[1] in (newest[1][0], demo.SHIPPED)
    # which detector found the faces, measured on group photos of the test people
    detector = re.search(r"identify uses (?:detector )?(detector-[\w-]+)", result.output)
    said = " ".join(result.output.split())
    assert detector and "group photos of the snapshot's test people" in said
    html = pages[1]
    for run_id in (newest[0][0], used[1], detector[1]):
        assert run_id in html  # the page shows this demo's runs, not the first one's
    for anchor in ("selection", "landmarks", "recognizer", "identify", "timings"):
        assert f'id="{anchor}"' in html, anchor
    assert "reference: ArcFace" in html and html.count("<img ") >= 10
    # the photo and its truth: gallery people and strangers, identified and drawn
    assert (out / "group.png").is_file() and (out / "identified.png").is_file()
    rows = re.findall(r"<tr class=\"(ok|bad)\">", html)
    assert len(rows) == TINY.known + TINY.strangers
    assert html.count(">yes</td>") >= TINY.known  # the "in gallery" column at least
    assert "<th>closest</th>" in html  # whom each face is closest to, named or not


def test_the_photo_holds_gallery_people_from_images_the_snapshot_does_not_use(
    tmp_path: Path,
) -> None:
    from catalog.synth.group import GroupError, pick_images

    folder = demo.DemoFolder(tmp_path)
    demo.synthesize_data(folder, ids=TINY.ids)
    demo.ingest_data(folder)
    demo.select_and_freeze(folder, plan=TINY)
    photo = demo.group_photo(folder, TINY)
    db = folder.db
    split = dict(
        query(
            db,
            "SELECT image_id, coalesce(split, 'unused') FROM snapshot_images "
            "WHERE snapshot = 'demo'",
        )
    )
    roles = {
        i: s
        for i, s in query(
            db,
            "SELECT DISTINCT identity, split FROM snapshot_images "
            "WHERE split IN ('query', 'distractor')",
        )
    }
    assert sorted(f.role for f in photo.faces) == ["gallery"] * 2 + ["stranger"] * 2
    for face in photo.faces:
        assert roles[face.identity] == ("query" if face.role == "gallery" else "distractor")
        assert split.get(face.image_id, "unused") == "unused"  # not in the gallery, not trained
        x1, y1, x2, y2 = face.box
        assert 0 <= x1 < x2 <= photo.image.width and 0 <= y1 < y2 <= photo.image.height
        inside = (face.landmarks >= [x1, y1]) & (face.landmarks <= [x2, y2])
        assert inside.all()
    assert folder.photo.is_file()
    with pytest.raises(GroupError, match="No clean image left"):
        pick_images(
            db,
            [photo.faces[0].identity],
            exclude=[
                r[0]
                for r in query(
                    db,
                    "SELECT image_id FROM identities WHERE identity = ?",
                    [photo.faces[0].identity],
                )
            ],
        )


def test_the_photo_shows_only_people_with_an_image_left(tmp_path: Path) -> None:
    from dataclasses import replace

    from catalog.db import connect
    from catalog.synth.group import pick_images

    folder = demo.DemoFolder(tmp_path)
    demo.synthesize_data(folder, ids=TINY.ids)
    demo.ingest_data(folder)
    demo.select_and_freeze(folder, plan=TINY)
    con = connect(folder.db)
    try:
        held_out = dict(
            con.execute(
                "SELECT split, list(DISTINCT identity ORDER BY identity) FROM snapshot_images "
                "WHERE split IN ('query', 'distractor') GROUP BY split"
            ).fetchall()
        )
        gone = held_out["distractor"][0]  # every image the snapshot does not use: blurry
        con.execute(
            'UPDATE attributes SET "Blurry" = true WHERE image_id IN (SELECT image_id FROM '
            "identities WHERE identity = ?) AND image_id NOT IN (SELECT image_id FROM "
            "snapshot_images WHERE split IS NOT NULL)",
            [gone],
        )
    finally:
        con.close()
    known, strangers = demo.photo_people(folder, replace(TINY, known=100, strangers=100))
    assert sorted(known) == held_out["query"]
    assert sorted(strangers) == [i for i in held_out["distractor"] if i != gone]
    pick_images(folder.db, known + strangers, exclude=demo.used_images(folder))


def test_no_train_and_no_torch_stop_at_the_snapshot(tmp_path: Path) -> None:
    for _ in range(2):  # again into the same folder
        result = runner.invoke(
            cli.app, ["demo", "--ids", "12", "--no-train", "--out", str(tmp_path / "a")]
        )
        assert result.exit_code == 0, result.output
        assert "snapshot demo:" in result.output and "5. train" not in result.output
    code = (
        "import sys\nsys.modules['torch'] = None\nimport cli\n"
        f"sys.argv = ['celebcat', 'demo', '--ids', '12', '--out', {str(tmp_path / 'b')!r}]\n"
        "cli.main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": "", "PYTHONPATH": str(Path(cli.__file__).parent)},
    )
    assert done.returncode == 0, done.stderr
    assert "torch is not installed" in done.stdout and ".[torch]" in done.stdout
    assert "5. train" not in done.stdout and not (tmp_path / "b" / "report").exists()


def test_demo_help_says_what_was_measured() -> None:
    text = " ".join(
        runner.invoke(cli.app, ["demo", "--help"], env={"COLUMNS": "200"}).output.split()
    )
    assert "--full" in text and "--no-train" in text and "report/index.html" in text
    assert "idle 2-core machine" in text and "CPU" in text


def test_identify_uses_the_recognizer_with_the_higher_measured_tpir() -> None:
    from types import SimpleNamespace

    def ev(run_id: str, tpir: float | None) -> SimpleNamespace:
        figures = {} if tpir is None else {"tpir@fpir=0.01": tpir}
        return SimpleNamespace(run_id=run_id, metrics={"open_set": figures})

    own, shipped = ev("recognition-own", 0.4), ev(demo.SHIPPED, 0.8)
    run, why = demo.choose_recognizer(own, shipped)
    assert run == demo.SHIPPED and "0.800" in why and "0.400" in why
    run, why = demo.choose_recognizer(ev("recognition-own", 0.9), shipped)
    assert run == "recognition-own" and "0.900" in why and "0.800" in why
    assert demo.choose_recognizer(ev("recognition-own", 0.8), shipped)[0] == "recognition-own"
    assert demo.choose_recognizer(own, None)[0] == "recognition-own"  # none shipped
    assert demo.choose_recognizer(ev("recognition-own", None), shipped)[0] == demo.SHIPPED
    assert demo.choose_recognizer(own, ev(demo.SHIPPED, None))[0] == "recognition-own"


def test_most_held_out_people_are_strangers_to_calibrate_on() -> None:
    plan = demo.PLANS["default"]
    query, distractor = demo.held_out(126, plan)  # seed 0's eligible identities
    assert (query, distractor) == (13, 75)
    assert 126 - query - distractor >= 36  # as many people to train on as before
    for eligible in (4, 5, 6, 10, 60, 300):
        q, d = demo.held_out(eligible, TINY)
        assert q >= 2 and d >= min(2, eligible - 4) and eligible - q - d >= 2
    assert demo.held_out(3, TINY) == (1, 0)  # too few: training keeps two


def test_identify_uses_the_detector_that_found_more_faces() -> None:
    def check(run_id: str, found: int, extra: int = 0, iou: float = 0.8) -> demo.DetectorCheck:
        return demo.DetectorCheck(run_id, found, 24, extra, 4, iou)

    own, shipped = check("detector-own", 18), check(demo.SHIPPED_DETECTOR, 24)
    run, why = demo.choose_detector(own, shipped)
    assert run == demo.SHIPPED_DETECTOR and "24 of 24" in why and "18 of 24" in why
    assert demo.choose_detector(check("detector-own", 24), shipped)[0] == "detector-own"  # tie
    # as many found: fewer boxes on no face wins, then the boxes that fit better
    assert demo.choose_detector(check("detector-own", 24, 2), shipped)[0] == shipped.run_id
    run, why = demo.choose_detector(check("detector-own", 24, 0, 0.75), shipped)
    assert run == shipped.run_id and "mean IoU 0.800" in why and "mean IoU 0.750" in why
    assert demo.choose_detector(check("detector-own", 23, 0, 0.9), shipped)[0] == shipped.run_id
    run, why = demo.choose_detector(own, None)  # none shipped
    assert run == own.run_id and "trained here" in why
