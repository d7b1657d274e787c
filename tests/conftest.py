"""Shared helpers: tiny hand-written CelebA files in the real byte formats."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest

from catalog.formats import ATTRIBUTES, LANDMARK_COLUMNS


def attr_row(image_id: str, positives: set[str] = frozenset()) -> str:
    """One list_attr_celeba.txt row, spaced like the real file ('-1  1 -1')."""
    return f"{image_id} " + " ".join(" 1" if a in positives else "-1" for a in ATTRIBUTES)


def attr_txt(rows: list[str], count: int | None = None, eol: str = "\n") -> str:
    count = len(rows) if count is None else count
    lines = [str(count), " ".join(ATTRIBUTES) + " ", *rows]
    return eol.join(lines) + eol


def bbox_txt(boxes: dict[str, tuple[int, int, int, int]], eol: str = "\n") -> str:
    lines = [str(len(boxes)), "image_id x_1 y_1 width height"]
    lines += [f"{i} " + "".join(f"{v:>5d}" for v in box) for i, box in boxes.items()]
    return eol.join(lines) + eol


def landmarks_txt(points: dict[str, tuple[int, ...]]) -> str:
    lines = [str(len(points)), " ".join(LANDMARK_COLUMNS)]
    lines += [f"{i} " + "".join(f"{v:>5d}" for v in p) for i, p in points.items()]
    return "\n".join(lines) + "\n"


def pairs_txt(values: dict[str, int]) -> str:
    """identity_CelebA.txt / list_eval_partition.txt: no count, no header."""
    return "".join(f"{i} {v}\n" for i, v in values.items())


def snapshot_ids(db: Path, snapshot: str = "s") -> list[str]:
    """A snapshot's image ids, sorted."""
    return [
        r[0]
        for r in query(
            db, "SELECT image_id FROM snapshot_images WHERE snapshot = ? ORDER BY 1", [snapshot]
        )
    ]


def query(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    """Rows of one query on a catalog, through a read-only connection closed at once."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def snapshot_catalog(
    root: Path,
    ids: int,
    seed: int,
    *,
    images: bool = True,
    name: str = "s",
    style: str | None = None,
) -> Path:
    """Synthetic CelebA in ``root/data`` -> ``root/c.duckdb`` -> a selection that fits
    it (10 clean images per identity) -> snapshot ``name``. Returns the catalog path.
    ``style``: the synth population style (default: synth's own)."""
    from catalog.ingest import ingest
    from catalog.selection import fitted_params, select
    from catalog.snapshots import create
    from catalog.synth import synthesize

    styled = {} if style is None else {"style": style}
    synthesize(root / "data", ids=ids, seed=seed, annotations_only=not images, workers=2, **styled)
    db = root / "c.duckdb"
    ingest(root / "data", db, workers=2)
    select(db, **fitted_params(db, images_per_id=10))
    create(name, db)
    return db


def holdout_snapshot(
    db: Path, images_per_id: int, train_per_id: int, name: str = "h"
) -> dict[str, Any]:
    """Select from ``db`` (``images_per_id`` clean images per identity) with 6 identities
    held out (3 query x 2 images, 3 distractor x 3) and ``train_per_id`` train, 2 val
    and 2 test images for the others, then create snapshot ``name``. Returns the fitted
    selection parameters (``n_ids``: the identities that fit)."""
    from catalog.selection import fitted_params, select
    from catalog.snapshots import create

    params = fitted_params(db, images_per_id=images_per_id)
    select(
        db,
        **{
            **params,
            "holdout_ids": 6,
            "query_ids": 3,
            "query_images": 2,
            "distractor_ids": 3,
            "distractor_images": 3,
            "train_per_id": train_per_id,
            "val_per_id": 2,
            "test_per_id": 2,
        },
    )
    create(name, db)
    return params


@pytest.fixture
def db(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the module's ``template`` catalog in the test's own folder (so its
    crop caches are its own too). A module defines ``template``, or its own ``db``."""
    return Path(shutil.copy(template, tmp_path / "c.duckdb"))


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread inside, the count restored after: on the shared 2-core
    machine two OpenMP threads wait on each other whenever another process holds a
    core, which made the small models here several times slower. torch is imported
    here, not above, so that the data layer's tests run without it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """:func:`one_torch_thread` around a test (modules take it for all their tests with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    with one_torch_thread():
        yield


def celebcat_process(
    *args: str, timeout: float = 120, columns: int = 200, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``celebcat ARGS`` in a fresh interpreter through the entry point users get
    (``cli.main``, its error handling included), with no PATH, ``columns`` wide (where
    rich wraps its messages) and ``env`` added."""
    import cli

    return subprocess.run(
        [sys.executable, "-c", "import cli; cli.main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            "COLUMNS": str(columns),
            "PATH": "",
            "PYTHONPATH": str(Path(cli.__file__).parent),
            **(env or {}),
        },
    )


def celebcat(*args: str, **options: Any) -> tuple[int, str]:
    """:func:`celebcat_process` (``options`` are its own): the exit code, and stdout and
    stderr together."""
    result = celebcat_process(*args, **options)
    return result.returncode, result.stdout + result.stderr


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_bytes(text.encode())
    return folder


@pytest.fixture
def small_celeba(tmp_path: Path) -> Path:
    """Three images, all six official txt files, consistent with each other."""
    ids = ["000001.jpg", "000002.jpg", "000003.jpg"]
    return write(
        tmp_path / "celeba",
        {
            "list_attr_celeba.txt": attr_txt(
                [
                    attr_row(ids[0], {"Male", "Smiling"}),
                    attr_row(ids[1]),
                    attr_row(ids[2], {"Young", "5_o_Clock_Shadow"}),
                ]
            ),
            "list_bbox_celeba.txt": bbox_txt(
                {ids[0]: (95, 71, 226, 313), ids[1]: (72, 94, 221, 306), ids[2]: (10, 20, 30, 40)}
            ),
            "list_landmarks_celeba.txt": landmarks_txt(
                {
                    ids[0]: (165, 184, 244, 176, 196, 249, 194, 271, 266, 260),
                    ids[1]: (140, 204, 220, 204, 168, 254, 146, 289, 226, 289),
                    ids[2]: (15, 30, 30, 30, 22, 40, 16, 50, 28, 50),
                }
            ),
            "list_landmarks_align_celeba.txt": landmarks_txt(
                {
                    ids[0]: (69, 109, 106, 113, 77, 142, 73, 152, 108, 154),
                    ids[1]: (69, 110, 107, 112, 81, 135, 70, 151, 108, 153),
                    ids[2]: (76, 112, 104, 106, 108, 128, 74, 156, 98, 158),
                }
            ),
            "identity_CelebA.txt": pairs_txt({ids[0]: 2880, ids[1]: 2937, ids[2]: 2880}),
            "list_eval_partition.txt": pairs_txt({ids[0]: 0, ids[1]: 1, ids[2]: 2}),
        },
    )
