"""Data is never markup: values that look like rich markup (``[/x]``, ``[red]``) print
as they are, in tables, notes, errors and progress, and never crash the output.

The CLI's consoles read no markup (``cli._console``); the few styled words are
``rich.text.Text`` pieces. Each case here crashed or lost text before that.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import attr_row, attr_txt, bbox_txt, celebcat, landmarks_txt, pairs_txt, write


def test_sql_values_and_names_print_as_they_are(tmp_path: Path, small_celeba: Path) -> None:
    db = tmp_path / "c.duckdb"
    assert celebcat("ingest", str(small_celeba), "--db", str(db))[0] == 0
    code, out = celebcat(
        "sql", "select '[/x]' as a, '[bold]B[/bold]' as \"[red]c\"", "--db", str(db)
    )
    assert code == 0, out
    assert "[/x]" in out and "[bold]B[/bold]" in out and "[red]c" in out
    assert "Traceback" not in out


def test_a_folder_and_an_image_id_that_look_like_markup(tmp_path: Path) -> None:
    """Ingest from ``x[/y]`` succeeds and says so (exit 0); ``check`` names the image
    ``[red]9.jpg`` (its file is missing) as it is."""
    name = "[red]9.jpg"
    data = write(
        tmp_path / "x[" / "y]",
        {
            "list_attr_celeba.txt": attr_txt([attr_row(name)]),
            "list_bbox_celeba.txt": bbox_txt({name: (1, 2, 30, 40)}),
            "list_landmarks_celeba.txt": landmarks_txt(
                {name: (5, 10, 20, 10, 12, 18, 6, 25, 18, 25)}
            ),
            "identity_CelebA.txt": pairs_txt({name: 1}),
            "list_eval_partition.txt": pairs_txt({name: 0}),
        },
    )
    (data / "img_celeba").mkdir()
    db = tmp_path / "c.duckdb"
    code, out = celebcat("ingest", str(tmp_path / "x[/y]"), "--db", str(db))
    assert code == 0 and "Traceback" not in out, out
    assert str(data) in out.replace("\n", "")
    code, out = celebcat("check", "--db", str(db))
    assert "Traceback" not in out, out
    assert name in out
    shutil.rmtree(data)
