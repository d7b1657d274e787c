"""``celebcat report html``: the catalog's HTML page (:mod:`catalog.html_report`) with
the figures that need the models side.

- :func:`recognizer_figures`: ROC, cosine histograms and t-SNE of a recognizer run,
  drawn (:mod:`models.recognition.plots`) from the embeddings ``celebcat eval
  recognizer`` stored in the catalog, split by the run's snapshot: no model is
  loaded, no torch is needed.
- :func:`identify_section`: an identify result (:func:`models.pipeline.identify.identify`):
  the photo with the answer drawn and one row per face; given the truth of a
  synthetic group photo (:mod:`catalog.synth.group`), each person, whether a face
  was found where they are (IoU >= 0.5), what it was named and whether that is right.
- :func:`write_report`: the page, from runs (default: the newest landmark and
  recognition runs) and whatever sections a caller adds (the demo adds its identify
  result and step timings): the selection, the landmark run (figures, NME by
  attribute, training curves, CED, worst faces), the recognizer (figures, figures by
  attribute group, training curves, ROC...) and its failures (pairs of faces).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from catalog import html_report as H
from catalog import results, snapshots
from catalog.errors import CatalogError
from catalog.info import QueryResult
from models.detection.boxes import match

if TYPE_CHECKING:
    from catalog.synth.group import GroupPhoto

__all__ = [
    "MATCH_IOU",
    "ReportError",
    "StoredEmbeddings",
    "identify_rows",
    "identify_section",
    "recognizer_figures",
    "write_report",
]

#: A detected face is the person whose true box it overlaps by at least this IoU.
MATCH_IOU = 0.5


class ReportError(CatalogError, ValueError):
    """The page cannot be made as asked (no such run, a run of another kind, ...)."""


@dataclass
class StoredEmbeddings:
    """A run's stored embeddings with their snapshot split: what
    :mod:`models.recognition.plots` draws (its ``Embedded`` without logits)."""

    run_id: str
    image_id: np.ndarray
    identity: np.ndarray
    label: np.ndarray  # the identity: pairs are same / different person either way
    split: np.ndarray
    embeddings: np.ndarray

    def where(self, split: str) -> np.ndarray:
        return self.split == split


def stored_embeddings(db: str | os.PathLike[str] | None, run_id: str) -> StoredEmbeddings:
    """ReportError where the run has no embeddings or its snapshot changed since."""
    run = results.get_run(db, run_id)
    ids, vectors = results.read_embeddings(db, run_id)
    if not ids:
        raise ReportError(
            f"Run {run_id} has no stored embeddings: run `celebcat eval "
            f"recognizer --run {run_id}` first."
        )
    snap = snapshots.read_images(db, run.snapshot, files=False, boxes=False)
    if snap.hash != run.snapshot_hash:
        raise ReportError(
            f"Snapshot {run.snapshot!r} was recreated since run {run_id} "
            "trained on it: its splits are not the run's."
        )
    where = {str(i): k for k, i in enumerate(snap.image_id)}
    keep = [k for k, i in enumerate(ids) if i in where]
    rows = np.array([where[ids[k]] for k in keep], dtype=np.int64)
    return StoredEmbeddings(
        run_id,
        snap.image_id[rows],
        snap.identity[rows],
        snap.identity[rows],
        snap.split[rows],
        np.asarray(vectors, np.float32)[keep],
    )


def recognizer_figures(
    db: str | os.PathLike[str] | None, run_id: str
) -> tuple[list[H.Figure], list[str]]:
    """(ROC, cosine histograms, t-SNE of the run's stored embeddings; notes on what
    could not be drawn)."""
    if importlib.util.find_spec("matplotlib") is None:
        return [], [H.NO_PLOTS]
    from models.recognition import plots as P

    e = stored_embeddings(db, run_id)
    figures, notes = [], []
    with tempfile.TemporaryDirectory(prefix="celebcat-report-") as temp:
        for title, draw, caption in (
            ("ROC", P.draw_roc, "test pairs and the open-set protocol, log FPR"),
            ("cosine similarities", P.draw_histograms, "same and different identity"),
            ("t-SNE", P.draw_tsne, "test, val and query images, a colour per identity"),
        ):
            try:
                path = draw(e, Path(temp) / f"{title}.png")  # type: ignore[arg-type]
            except ImportError as err:  # t-SNE without scikit-learn
                notes.append(f"No {title} plot: {err}")
                continue
            figures.append(H.Figure(title, path.read_bytes(), caption))
    return figures, notes


# --- identify ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TruthRow:
    """One person of a group photo and what identify made of them."""

    identity: int
    role: str  # gallery | stranger
    image_id: str
    iou: float  # of the matched detection, 0 where none
    named: str | None  # the face's name (an identity or "unknown"); None: not detected
    cosine: float | None  # its best match's
    right: bool  # found, and named as themselves (gallery) or unknown (stranger)
    closest: str | None = None  # the closest gallery identity, above the threshold or not


def identify_rows(result: Any, truth: GroupPhoto, image: int = 0) -> tuple[list[TruthRow], int]:
    """Each person of ``truth`` matched to the detected face of image ``image`` that
    overlaps their box most (IoU >= :data:`MATCH_IOU`, each face used once, best
    overlaps first); (rows, detections that matched no one)."""
    from models.pipeline.identify import UNKNOWN

    faces = result.faces_of(image)
    taken_p = match(
        np.array([p.box for p in truth.faces], np.float64),
        np.array([f.box for f in faces], np.float64),
    )
    rows = []
    for i, person in enumerate(truth.faces):
        if i not in taken_p:
            rows.append(
                TruthRow(person.identity, person.role, person.image_id, 0.0, None, None, False)
            )
            continue
        j, overlap = taken_p[i]
        face = faces[j]
        expected = str(person.identity) if person.role == "gallery" else UNKNOWN
        rows.append(
            TruthRow(
                person.identity,
                person.role,
                person.image_id,
                overlap,
                face.identity,
                face.matches[0].cosine,
                face.identity == expected,
                face.matches[0].identity,
            )
        )
    return rows, len(faces) - len(taken_p)


def identify_section(
    result: Any, drawn_png: bytes, truth: GroupPhoto | None = None, photo_name: str = ""
) -> H.Section:
    """The identify result as a page section: the drawn photo, and a row per person
    (``truth``) or per detected face."""
    section = H.Section("Who is in the photo: identify", anchor="identify", figures_first=True)
    threshold = result.threshold
    section.paragraphs.append(
        f"Gallery {result.gallery.name!r}: {result.gallery.n_identities} people, "
        f"{result.gallery.n_images} images ({result.gallery.source}), made by recognizer "
        f"run {result.run_id}. A face is named after its closest gallery identity (the cosine "
        f"to the mean of that person's embeddings) where the cosine is above the threshold, "
        f"else it is unknown. Threshold: {threshold.explain()}."
    )
    if truth is not None:
        rows, extra = identify_rows(result, truth)
        found = sum(r.named is not None for r in rows)
        right = sum(r.right for r in rows)
        section.paragraphs.append(
            f"{len(truth.faces)} people in the photo, {found} found by the detector, "
            f"{right} answered right (a gallery person named as themselves, a stranger "
            f"called unknown); {extra} detection(s) where no one is."
        )
        table = QueryResult(
            [
                "#",
                "who (truth)",
                "in gallery",
                "cut from",
                "found (IoU)",
                "named",
                "closest",
                "cosine",
                "threshold",
                "right",
            ],
            [
                (
                    k + 1,
                    r.identity,
                    "yes" if r.role == "gallery" else "no",
                    r.image_id,
                    round(r.iou, 2) if r.named is not None else "not found",
                    r.named or "",
                    r.closest or "",
                    r.cosine,
                    threshold.short() if r.named is not None else "",
                    "yes" if r.right else "no",
                )
                for k, r in enumerate(rows)
            ],
        )
        section.tables.append(
            H.Table(
                "each person, left to right and top to bottom",
                table,
                marks=["ok" if r.right else "bad" for r in rows],
            )
        )
    else:
        faces = result.faces_of(0)
        table = QueryResult(
            ["#", "box", "detector score", "named", "best match", "cosine", "threshold"],
            [
                (
                    k + 1,
                    ", ".join(f"{v:.0f}" for v in f.box),
                    round(f.score, 3),
                    f.identity,
                    f.matches[0].identity,
                    f.matches[0].cosine,
                    threshold.short(),
                )
                for k, f in enumerate(faces)
            ],
        )
        section.tables.append(H.Table(f"{len(faces)} faces found", table))
    section.figures.append(
        H.Figure(
            photo_name or "the photo",
            drawn_png,
            width=min(2 * result.images[0].width, 1000),
            caption="green: named, red: unknown (its closest match in brackets), yellow: landmarks",
        )
    )
    return section


# --- the page ---------------------------------------------------------------------------


def _newest(db: str | os.PathLike[str] | None, kind: str) -> str | None:
    runs = [r for r in results.list_runs(db, kind) if r.status == "finished"]
    return runs[-1].run_id if runs else None


def _has_predictions(db: str | os.PathLike[str] | None, run_id: str) -> bool:
    from catalog.db import connect, has_table

    con = connect(db, read_only=True)
    try:
        return has_table(con, "landmark_predictions") and bool(
            con.execute(
                "SELECT count(*) FROM landmark_predictions WHERE run_id = ?", [run_id]
            ).fetchone()[0]
        )
    finally:
        con.close()


def resolve_runs(
    db: str | os.PathLike[str] | None, runs: Sequence[str] = ()
) -> tuple[str | None, str | None]:
    """(landmark run, recognition run): those of ``runs`` by kind, else the newest
    finished run of each kind. ReportError for a run of another kind or two of one."""
    by_kind: dict[str, str] = {}
    for run_id in runs:
        run = results.get_run(db, run_id)  # RunError names an unknown id
        if run.kind not in ("landmarks", "recognition"):
            raise ReportError(
                f"Run {run_id} is a {run.kind} run: the page shows a landmark "
                "run and a recognition run."
            )
        if run.kind in by_kind:
            raise ReportError(
                f"Two {run.kind} runs given ({by_kind[run.kind]}, {run_id}): give one of each kind."
            )
        by_kind[run.kind] = run_id
    landmarks = by_kind.get("landmarks") or (None if runs else _newest(db, "landmarks"))
    recognition = by_kind.get("recognition") or (None if runs else _newest(db, "recognition"))
    return landmarks, recognition


def write_report(
    db: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    *,
    runs: Sequence[str] = (),
    snapshot: str | None = None,
    sections: Sequence[H.Section] = (),
    title: str = "celebcat report",
    subtitle: str = "",
    worst: int = H.WORST,
) -> tuple[Path, list[str]]:
    """Write ``out/index.html``: the snapshot's statistics (default: the runs'
    snapshot), the landmark run's figures, CED and worst faces, the recognition run's
    figures beside the reference's and its plots, its failures (false non-matches,
    false matches, confused identities: :func:`catalog.html_report.failures_section`),
    then ``sections``. Returns (the page, notes on what was left out and why)."""
    landmark_run, recognition_run = resolve_runs(db, runs)
    notes: list[str] = []
    if snapshot is None:
        for run_id in (recognition_run, landmark_run):
            if run_id is not None:
                snapshot = results.get_run(db, run_id).snapshot
                break
    page: list[H.Section] = []
    if snapshot is not None:
        page.append(H.stats_section(db, snapshot))
    else:
        notes.append("no snapshot given and no run to take one from: no statistics")
    if landmark_run is not None and _has_predictions(db, landmark_run):
        page.append(H.landmark_section(db, landmark_run, worst=worst))
    elif landmark_run is not None:
        notes.append(
            f"landmark run {landmark_run} has no predictions (celebcat align "
            f"--run {landmark_run}): no landmark section"
        )
    else:
        notes.append("no landmark run")
    if recognition_run is not None:
        try:
            figures, plot_notes = recognizer_figures(db, recognition_run)
        except (ReportError, ValueError) as err:
            figures, plot_notes = [], [str(err)]
        section = H.recognizer_section(db, recognition_run, figures)
        section.paragraphs.extend(plot_notes)
        page.append(section)
        own = results.get_run(db, recognition_run).snapshot  # none: a pretrained model
        page.append(H.failures_section(db, recognition_run, snapshot=None if own else snapshot))
    else:
        notes.append("no recognition run")
    page.extend(sections)
    path = H.write_page(out, H.render(title, page, subtitle=subtitle))
    return path, notes


def draw_png(image: Any, faces: Sequence[Any]) -> bytes:
    """``models.pipeline.identify.draw_faces`` into PNG bytes."""
    from models.pipeline.identify import draw_faces

    with tempfile.TemporaryDirectory(prefix="celebcat-report-") as temp:
        return draw_faces(image, faces, Path(temp) / "drawn.png").read_bytes()


def photo_section(
    db: str | os.PathLike[str] | None,
    photo: str | os.PathLike[str],
    recognition_run: str,
    *,
    gallery: str | None = None,
    detector: str = "haar",
    fpir: float = 0.01,
    device: str = "auto",
) -> H.Section:
    """Identify the faces of ``photo`` against ``gallery`` (default: the newest one
    ``recognition_run`` made) as a page section. Needs torch."""
    from catalog.gallery import list_galleries
    from models.pipeline.identify import identify

    if gallery is None:
        made = sorted(
            (g for g in list_galleries(db) if g.run_id == recognition_run),
            key=lambda g: g.created_at,
        )
        if not made:
            raise ReportError(
                f"No gallery was made by recognizer run {recognition_run}: give "
                "one with --gallery (celebcat gallery list)."
            )
        gallery = made[-1].name
    result = identify(
        [photo], gallery, db, run=recognition_run, detector=detector, fpir=fpir, device=device
    )
    return identify_section(
        result, draw_png(result.images[0], result.faces), photo_name=Path(photo).name
    )
