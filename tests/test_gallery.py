"""Galleries: stored in the catalog, built from a snapshot split or a folder of people."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from pipeline_helpers import copy_catalog, split_images, trained_catalog
from typer.testing import CliRunner

import cli
from catalog import gallery as G
from catalog import results
from models.pipeline.identify import IdentifyError, add_gallery

runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return trained_catalog(tmp_path_factory)


@pytest.fixture
def db(built: SimpleNamespace, tmp_path: Path) -> Path:
    return copy_catalog(built, tmp_path)


#: torch on one thread for every test (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_store_list_read_replace_drop(db: Path) -> None:
    vectors = np.array([[3.0, 4, 0], [0, 2, 0], [0, 0, 5]])
    g = G.write_gallery(
        db,
        "g1",
        "run-a",
        "folder:/x",
        ["b", "a", "a"],
        ["1.jpg", "2.jpg", "3.jpg"],
        vectors,
        detector="haar",
        crops="bbox",
    )
    assert (g.name, g.run_id, g.n_identities, g.n_images, g.detector) == (
        "g1",
        "run-a",
        2,
        3,
        "haar",
    )
    assert [x.name for x in G.list_galleries(db)] == ["g1"]
    entries = G.read_entries(db, "g1")
    assert entries.identity_name.tolist() == ["a", "a", "b"]
    assert entries.image.tolist() == ["2.jpg", "3.jpg", "1.jpg"]
    np.testing.assert_allclose(np.linalg.norm(entries.embeddings, axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(entries.embeddings[2], [0.6, 0.8, 0], rtol=1e-6)
    with pytest.raises(G.GalleryError, match="exists.*--replace"):
        G.write_gallery(db, "g1", "run-a", "x", ["c"], ["9.jpg"], vectors[:1])
    G.write_gallery(db, "g1", "run-b", "x", ["c"], ["9.jpg"], vectors[:1], replace=True)
    assert G.get_gallery(db, "g1").run_id == "run-b" and len(G.read_entries(db, "g1")) == 1
    for bad, match in (
        (dict(name="a b"), "Gallery name"),
        (dict(names=[]), "empty"),
        (dict(images=["x", "x"]), "appears twice"),
    ):
        names = bad.get("names", ["p", "q"])
        with pytest.raises(G.GalleryError, match=match):
            G.write_gallery(
                db,
                bad.get("name", "g2"),
                "r",
                "x",
                names,
                bad.get("images", ["1", "2"][: len(names)]),
                vectors[: len(names)],
            )
    G.drop_gallery(db, "g1")
    assert G.list_galleries(db) == []
    with pytest.raises(G.GalleryError, match="No gallery 'g1'. There are none yet"):
        G.drop_gallery(db, "g1")


def test_a_snapshot_split_gallery_holds_the_runs_embeddings(
    db: Path, built: SimpleNamespace
) -> None:
    done = add_gallery(db, "heldout", built.run_id, snapshot="h", split="query")
    g = done.gallery
    assert (g.source, g.detector, g.crops, g.run_id) == (
        "snapshot:h/query",
        "catalog",
        "bbox",
        built.run_id,
    )
    rows = split_images(db, "query")
    assert (g.n_identities, g.n_images) == (len({i for _, i, _ in rows}), len(rows))
    entries = G.read_entries(db, "heldout")
    by_image = dict(zip(entries.image.tolist(), entries.embeddings, strict=True))
    assert {entries.identity_name[k] for k in range(len(entries))} == {str(i) for _, i, _ in rows}
    ids, stored = results.read_embeddings(db, built.run_id, [i for i, _, _ in rows])
    np.testing.assert_allclose(np.stack([by_image[i] for i in ids]), stored, atol=1e-5)
    with pytest.raises(IdentifyError, match="exists"):
        add_gallery(db, "heldout", built.run_id, snapshot="h", split="query")
    with pytest.raises(IdentifyError, match="needs --split"):
        add_gallery(db, "other", built.run_id, snapshot="h")


def test_a_folder_gallery_names_people_by_subfolder(
    db: Path, built: SimpleNamespace, tmp_path: Path
) -> None:
    rows = split_images(db, "train")
    folder = tmp_path / "people"
    for person, picked in (("alice", rows[:2]), ("bob", rows[6:7])):
        (folder / person).mkdir(parents=True)
        for image_id, _, path in picked:  # catalog file names: the catalog detector knows them
            shutil.copy(built.images / path, folder / person / image_id)
    (folder / "alice" / "notes.txt").write_text("not a photo")
    (folder / "bob" / "000000.jpg").write_bytes(b"\xff\xd8 broken")
    (folder / ".hidden").mkdir()
    # out of the tree: a person folder and a photo that are links, and a linked folder
    # inside a person's (it walked /etc); a FIFO, which would block a read forever
    outside = tmp_path / "elsewhere"
    (outside / "deep").mkdir(parents=True)
    shutil.copy(built.images / rows[3][2], outside / rows[3][0])
    (folder / "mallory").symlink_to(outside, target_is_directory=True)
    (folder / "alice" / "linked.jpg").symlink_to(outside / rows[3][0])
    (folder / "bob" / "etc").symlink_to(outside, target_is_directory=True)
    os.mkfifo(folder / "bob" / "pipe.jpg")
    done = add_gallery(db, "friends", built.run_id, folder=folder, detector="catalog")
    g = done.gallery
    assert (g.n_identities, g.n_images, g.source) == (2, 3, f"folder:{folder.resolve()}")
    why = dict(done.skipped)
    assert why[str(folder / "alice" / "notes.txt")].startswith("not an image file")
    assert "not an image PIL can read" in why[str(folder / "bob" / "000000.jpg")]
    assert why[str(folder / ".hidden")].startswith("hidden")
    assert why[str(folder / "mallory")].startswith(f"leads out of {folder}")
    assert why[str(folder / "alice" / "linked.jpg")].startswith(f"leads out of {folder}")
    assert why[str(folder / "bob" / "etc")] == "a link to a folder: not followed"
    assert why[str(folder / "bob" / "pipe.jpg")] == "not a regular file"
    entries = G.read_entries(db, "friends")
    assert sorted(set(entries.identity_name.tolist())) == ["alice", "bob"]
    with pytest.raises(IdentifyError, match="has no subfolders"):
        add_gallery(db, "x", built.run_id, folder=folder / "bob")


def test_folder_faces_from_haar_and_images_without_one(
    db: Path, built: SimpleNamespace, tmp_path: Path
) -> None:
    from skimage import data

    folder = tmp_path / "photos"
    (folder / "eileen").mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(folder / "eileen" / "astronaut.png")
    Image.new("RGB", (200, 150), (128, 128, 128)).save(folder / "eileen" / "wall.png")
    done = add_gallery(db, "crew", built.run_id, folder=folder)  # haar by default
    assert (done.gallery.n_images, done.gallery.detector) == (1, "haar")
    assert done.skipped == [(str(folder / "eileen" / "wall.png"), "no face found (haar)")]
    (folder / "eileen" / "astronaut.png").unlink()
    with pytest.raises(IdentifyError, match="No face found in any of the 1 images") as err:
        add_gallery(db, "crew", built.run_id, folder=folder, replace=True)
    assert "\n" not in str(err.value)


def test_gallery_commands(db: Path, built: SimpleNamespace) -> None:
    base = ["--db", str(db)]
    result = runner.invoke(
        cli.app,
        [
            "gallery",
            "add",
            "heldout",
            "--run",
            built.run_id,
            "--snapshot",
            "h",
            "--split",
            "query",
            *base,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "gallery heldout: 3 identities, 6 images from snapshot:h/query" in " ".join(
        result.output.split()
    )
    listed = json.loads(runner.invoke(cli.app, ["gallery", "list", "--json", *base]).output)
    assert [(x["gallery"], x["identities"], x["run"]) for x in listed] == [
        ("heldout", 3, built.run_id)
    ]
    shown = json.loads(
        runner.invoke(cli.app, ["gallery", "show", "heldout", "--json", *base]).output
    )
    assert [x["images"] for x in shown] == [2, 2, 2]
    result = runner.invoke(cli.app, ["gallery", "drop", "heldout", *base])
    assert result.exit_code == 0 and "dropped gallery heldout" in result.output
    result = runner.invoke(cli.app, ["gallery", "show", "heldout", *base])
    assert isinstance(result.exception, cli.UserError)
    assert "No gallery 'heldout'" in str(result.exception)
    result = runner.invoke(cli.app, ["gallery", "add", "x", "--run", built.run_id, *base])
    assert result.exit_code == 2 and "give one of them" in result.output  # a usage error


def test_a_snapshot_gallery_goes_on_past_an_image_gone_since(
    db: Path, built: SimpleNamespace, tmp_path: Path
) -> None:
    """An image of the split deleted since the snapshot: left out of the gallery and
    said (the advice was --skip-bad, which gallery add does not have)."""
    image_id, _, rel = split_images(db, "query")[0]
    path = built.images / rel
    moved = tmp_path / "moved.jpg"
    shutil.move(path, moved)
    try:
        done = add_gallery(db, "held", built.run_id, snapshot="h", split="query")
    finally:
        shutil.move(moved, path)
    why = dict(done.skipped)
    assert image_id in why and "image_missing" in why[image_id]
    assert done.gallery.n_images == len(split_images(db, "query")) - 1
