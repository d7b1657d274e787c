"""Who is in a photo: galleries built with the face pipeline, searched by cosine.

``celebcat gallery add`` and ``celebcat identify``:

- :func:`add_gallery`: embed a snapshot split (identity names: CelebA's identity
  numbers; faces from the catalog's boxes) or a folder with one subfolder per person
  (identity names: the subfolder names; faces from a detector, the highest-scoring
  face of each image, which should show its person alone) through
  :class:`models.pipeline.faces.FacePipeline`, and store the embeddings in the catalog
  (:mod:`catalog.gallery`).
- :func:`identify`: every face of the given photos, its box, landmarks and top
  matches in a gallery by cosine similarity, named when the best match is above the
  threshold, "unknown" otherwise.

**The search** (:class:`GalleryIndex`) is one matrix product of the faces'
embeddings with one row per identity: the identity's *centre*, the mean of its
L2-normalised embeddings normalised again (as IJB-C compares templates, and as
:func:`models.recognition.metrics.class_centres` computes for the closed-set
figures; here one ``np.add.reduceat`` over the identity-sorted rows). Against the
maximum over an identity's images, the centre averages away a single image's pose,
light or mislabelling, costs one row per identity however many images it has, and
does not give identities with more images more chances to win by accident (an
impostor's best score over k images rises with k). ``how="max"`` is there for
comparison. Measured on one core (``bench/pipeline.py``): 0.8 ms for one face against
10,000 identities of 512-d, 14 ms against 100,000 (the scan of 200 MB of centres sets
the pace); an approximate index (faiss IVF or HNSW) pays off from about 100,000
identities, or for many searches a second; below that it would only add a dependency.

**The threshold** is measured for the gallery it searches
(:mod:`models.pipeline.calibration`): when a gallery is built, faces of people it does
not hold (``strangers``: a folder, or a snapshot's held-out people not in it) are
searched in it, and ``identify --fpir f`` names a face only above the cosine that at
most a share f of those strangers exceed; the answer says how many strangers that was
measured on, and where they are too few to measure f, that it was not measured. The
open-set evaluation's *pair* threshold (``threshold@fpr=f``: two faces of different
held-out people score above it at rate f) is the right one for one comparison
(:func:`verify`); a gallery without calibration falls back to it and says so, since a
stranger searched among I people gets I chances to pass it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from catalog import gallery as G
from catalog import results, snapshots
from catalog.crop_source import CropSource
from catalog.errors import CatalogError
from catalog.metric_names import at_fpr, operating_points
from models.pipeline.calibration import best_scores, threshold_at_fpir
from models.pipeline.faces import FacePipeline, LoadedImage, TruthAlignmentError, load_image
from models.recognition.metrics import OPEN_SET_FPRS, l2_normalize

__all__ = [
    "UNKNOWN",
    "GalleryBuild",
    "GalleryIndex",
    "IdentifiedFace",
    "IdentifyError",
    "IdentifyResult",
    "Match",
    "DEFAULT_FPIR",
    "DEFAULT_PAIR_FPR",
    "Threshold",
    "Verification",
    "add_gallery",
    "calibrate_gallery",
    "choose_threshold",
    "draw_faces",
    "gallery_threshold",
    "identify",
    "measure_strangers",
    "open_set_threshold",
    "verify",
]

UNKNOWN = "unknown"
#: progress(stage, done, total): stage ``faces`` (the gallery's) or ``strangers``.
StagedProgress = Callable[[str, int, int], None]
#: What a gallery folder's images may be (by suffix); anything else is skipped, named.
IMAGE_SUFFIXES = frozenset(
    ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN
)


class IdentifyError(CatalogError, ValueError):
    """identify or gallery add cannot go on as asked; the message is one line saying
    what to do."""


# --- thresholds ---------------------------------------------------------------------------


#: The default target rate at which a stranger is named as someone of the gallery.
DEFAULT_FPIR = 0.01
#: The pair FPR used where a gallery has no calibration (an older gallery).
DEFAULT_PAIR_FPR = 0.01


@dataclass(frozen=True)
class Threshold:
    """The cosine above which a match names a face, and where it comes from: ``kind``
    ``gallery`` (measured on strangers searched in this gallery, at target ``fpir``),
    ``pair`` (the recognizer's open-set evaluation: two faces of different people
    score above it at rate ``fpr``), ``published`` (a pretrained recognizer never
    evaluated here: the operating point its authors published, ``note`` says which)
    or ``given`` (by the user)."""

    value: float
    run_id: str
    fpr: float | None  # the pair threshold's rate (kind pair)
    epoch: int | None = None
    tpr: float | None = None  # at that FPR, same evaluation
    kind: str = "pair"
    fpir: float | None = None  # the target rate (kind gallery)
    named: int | None = None  # strangers named at value, of n_strangers
    n_strangers: int | None = None  # faces
    stranger_ids: int | None = None  # people
    gallery_size: int | None = None  # people in the gallery searched
    gallery: str = "NAME"  # its name, for the command that calibrates it again
    note: str = ""  # why this kind: a gallery without calibration

    def explain(self) -> str:
        if self.kind == "given":
            return f"cosine > {self.value:.4f} (given)"
        if self.kind == "gallery":
            return self._explain_gallery()
        if self.kind == "published":
            return (
                f"cosine > {self.value:.4f}: {self.note}; not measured on this catalog "
                f"(celebcat eval recognizer --run {self.run_id} --snapshot S measures it, "
                "celebcat gallery calibrate NAME --strangers DIR measures a gallery's)"
            )
        tpr = f", accepting {self.tpr:.1%} of same-person pairs" if self.tpr is not None else ""
        text = (
            f"cosine > {self.value:.4f}: run {self.run_id}'s open-set evaluation (epoch "
            f"{self.epoch}) measured that two different people's faces score above it at "
            f"a rate of {self.fpr:g}{tpr}"
        )
        return f"{text}. {self.note}" if self.note else text

    def _explain_gallery(self) -> str:
        assert self.fpir is not None and self.n_strangers and self.named is not None
        strangers = f"{self.n_strangers} faces of {self.stranger_ids} people not in it"
        if self.n_strangers * self.fpir < 1:
            return (
                f"cosine > {self.value:.4f}: the highest score of {strangers} in this gallery "
                f"of {self.gallery_size} people, so none of them is named; {self.n_strangers} "
                f"faces cannot measure a rate of {self.fpir:g} (that takes at least "
                f"{math.ceil(1 / self.fpir)}): calibrate on more strangers "
                f"(celebcat gallery calibrate {self.gallery} --strangers DIR)"
            )
        return (
            f"cosine > {self.value:.4f}: a face of someone not in this gallery of "
            f"{self.gallery_size} people is named as one of them at a rate of at most "
            f"{self.fpir:g} (measured on {strangers}: {self.named} named)"
        )

    def short(self) -> str:
        """The threshold and what it was measured on, in a few words (a table cell)."""
        if self.kind == "given":
            return f"{self.value:.4f} (given)"
        if self.kind == "pair":
            return f"{self.value:.4f} (pair FPR {self.fpr:g})"
        if self.kind == "published":
            return f"{self.value:.4f} (published, not measured here)"
        measured = (
            f"{self.named} of {self.n_strangers} strangers"
            if self.n_strangers and self.fpir and self.n_strangers * self.fpir >= 1
            else f"none of {self.n_strangers} strangers, {self.fpir:g} not measurable"
        )
        return f"{self.value:.4f} (FPIR {self.fpir:g}: {measured})"

    def as_dict(self) -> dict[str, Any]:
        """What ``identify --json`` and the report carry: the cosine, its kind, its
        rate and what it was measured on, and the explanation."""
        out: dict[str, Any] = {"cosine": round(self.value, 6), "kind": self.kind}
        if self.kind == "pair":
            out.update(fpr=self.fpr, run=self.run_id, epoch=self.epoch)
        elif self.kind == "published":
            out.update(run=self.run_id)
        elif self.kind == "gallery":
            out.update(
                fpir=self.fpir,
                measured_fpir=round(self.named / self.n_strangers, 6)
                if self.n_strangers and self.named is not None
                else None,
                strangers=self.n_strangers,
                stranger_identities=self.stranger_ids,
                gallery_identities=self.gallery_size,
                enough_strangers=bool(self.n_strangers and self.fpir)
                and self.n_strangers * self.fpir >= 1,  # type: ignore[operator]
            )
        out["explanation"] = self.explain()
        return out


def gallery_threshold(
    calibration: G.Calibration, fpir: float, run_id: str, gallery_size: int, gallery: str = "NAME"
) -> Threshold:
    """The threshold at which a stranger is named at rate ``fpir`` in the gallery that
    ``calibration`` measured (:func:`models.pipeline.calibration.threshold_at_fpir`)."""
    found = threshold_at_fpir(calibration.scores, fpir)
    return Threshold(
        found.value,
        run_id,
        None,
        kind="gallery",
        fpir=fpir,
        named=found.named,
        n_strangers=found.n,
        stranger_ids=calibration.n_identities,
        gallery_size=gallery_size,
        gallery=gallery,
    )


def choose_threshold(
    db: str | os.PathLike[str] | None,
    gallery: G.Gallery,
    run_id: str,
    gallery_size: int,
    *,
    how: str = "mean",
    fpir: float = DEFAULT_FPIR,
    fpr: float | None = None,
    threshold: float | None = None,
) -> Threshold:
    """The threshold ``identify`` names faces above (its docstring says which)."""
    if threshold is not None:
        if not -1 <= threshold <= 1:  # NaN fails too
            raise IdentifyError(
                f"--threshold {threshold:g}: a cosine lies between -1 and 1 (above 1 no face "
                "is ever named)"
            )
        return Threshold(float(threshold), run_id, None, kind="given")
    if fpr is not None:
        if fpr not in OPEN_SET_FPRS:
            raise IdentifyError(
                f"--fpr {fpr:g}: the open-set evaluation measures FPR "
                f"{', '.join(f'{f:g}' for f in OPEN_SET_FPRS)}"
            )
        return open_set_threshold(db, run_id, fpr)
    if not 0 < fpir < 1:
        raise IdentifyError(f"--fpir must be between 0 and 1, got {fpir:g}")
    calibration = G.read_calibration(db, gallery.name, how)
    if calibration is not None:
        return gallery_threshold(calibration, fpir, run_id, gallery_size, gallery.name)
    pair = open_set_threshold(db, run_id, DEFAULT_PAIR_FPR)
    note = (
        f"Gallery {gallery.name!r} has no calibration (built before galleries measured "
        f"their strangers, or with none to measure), so this pair threshold does not say "
        f"how often a stranger is named in a search of {gallery_size} people: run "
        f"`celebcat gallery calibrate {gallery.name}`, or rebuild it"
    )
    return replace(pair, note=f"{pair.note}. {note}" if pair.kind == "published" else note)


def open_set_threshold(
    db: str | os.PathLike[str] | None, run_id: str, fpr: float = 0.01, epoch: int | None = None
) -> Threshold:
    """The threshold the run's open-set evaluation stored at ``fpr`` (at ``epoch``,
    else the latest epoch evaluated): the right one for comparing two faces
    (``celebcat verify``). IdentifyError, saying what to run, where the run was never
    evaluated or not at that FPR."""
    stored = {
        (e, n): v for (e, s, n), v in results.get_metrics(db, run_id).items() if s == "open_set"
    }
    name = at_fpr("threshold", fpr)
    epochs = sorted({e for e, n in stored if n == name})
    if epoch is not None:
        epochs = [e for e in epochs if e == epoch] or epochs
    if not epochs:
        published = _published_threshold(db, run_id)
        if published is not None:
            return published
        have = operating_points({n for _, n in stored}, "threshold")[::-1]
        if have:
            raise IdentifyError(
                f"Run {run_id}'s open-set evaluation has thresholds at FPR "
                f"{', '.join(f'{f:g}' for f in have)}, not {fpr:g}: choose one with --fpr, or "
                "pass --threshold."
            )
        raise IdentifyError(
            f"Run {run_id} has no open-set evaluation to take the unknown-face threshold "
            f"from: run `celebcat eval recognizer --run {run_id}` (the library's "
            "models.recognition.evaluate.evaluate_recognizer), or pass --threshold."
        )
    e = epochs[-1]
    tpr = stored.get((e, at_fpr("tpr", fpr)))
    return Threshold(float(stored[(e, name)]), run_id, fpr, e, tpr)


def _published_threshold(db: str | os.PathLike[str] | None, run_id: str) -> Threshold | None:
    """A pretrained recognizer's published operating point (``config["threshold"]``),
    where ``run_id`` is one (models.pretrained)."""
    try:
        config = results.get_run(db, run_id).config
    except results.RunError:
        return None
    found = config.get("threshold") if "pretrained" in config else None
    if not isinstance(found, dict) or "cosine" not in found:
        return None
    note = (
        f"the operating point {config['pretrained'].get('source', 'its authors')} published "
        f"for {run_id} ({found.get('published', '')}, on {found.get('measured_on', '?')})"
    )
    return Threshold(float(found["cosine"]), run_id, None, kind="published", note=note)


# --- the gallery search ------------------------------------------------------------------


class GalleryIndex:
    """A gallery ready to search: one row per identity (``how="mean"``, the centre) or
    per image (``how="max"``, an identity scoring its best image)."""

    def __init__(self, entries: G.GalleryEntries, how: str = "mean") -> None:
        if how not in ("mean", "max"):
            raise ValueError(f"how must be mean or max, got {how!r}")
        if not len(entries):
            raise IdentifyError(
                f"Gallery {entries.gallery.name!r} is empty: add people to it "
                "(celebcat gallery add ... --replace)."
            )
        self.gallery, self.how = entries.gallery, how
        # each identity's rows together (read_entries gives them so: a no-op then)
        order = np.argsort(entries.identity_name, kind="stable")
        names = entries.identity_name[order]
        unit = l2_normalize(entries.embeddings[order])
        starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])
        self.names = names[starts]
        counts = np.diff(np.r_[starts, len(names)])
        self.counts = dict(zip(self.names.tolist(), counts.tolist(), strict=True))
        if how == "mean":  # class_centres' centres, summed per contiguous group
            self.matrix, self.starts = l2_normalize(np.add.reduceat(unit, starts, axis=0)), None
        else:  # an identity scores its best image: one reduceat over its columns
            self.matrix, self.starts = unit, starts
        self.matrix = np.ascontiguousarray(self.matrix, dtype=np.float32)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return len(self.names)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """(Q, I) cosines of L2-normalised queries (Q, D) with every identity."""
        s = np.asarray(queries, np.float32) @ self.matrix.T
        if self.starts is not None:
            s = np.maximum.reduceat(s, self.starts, axis=1)
        return s

    def search(self, queries: np.ndarray, top: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """The ``top`` identities per query: (indices into ``names`` (Q, k), cosines
        (Q, k)), best first (k = min(top, identities))."""
        s = self.scores(queries)
        k = min(top, s.shape[1])
        part = (
            np.argpartition(-s, k - 1, axis=1)[:, :k]
            if k < s.shape[1]
            else (np.broadcast_to(np.arange(s.shape[1]), s.shape))
        )
        picked = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-picked, axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1), np.take_along_axis(picked, order, axis=1)


# --- galleries ------------------------------------------------------------------------------


@dataclass
class GalleryBuild:
    gallery: G.Gallery
    skipped: list[tuple[str, str]]  # (image, why)
    seconds: float
    calibrations: list[G.Calibration] = field(default_factory=list)  # none: no strangers


def _folder_images(folder: Path) -> tuple[list[str], list[Path], list[tuple[str, str]]]:
    """(identity names, image paths, skipped (path, why)) of a gallery folder. What is
    not inside the folder once links are followed (a person folder or photo that is a
    link out of it), hidden (a name starting with '.') or not a regular file is
    skipped, and said."""
    if not folder.is_dir():
        raise IdentifyError(
            f"{folder}: not a folder (a gallery folder holds one subfolder per person)"
        )
    root = folder.resolve()
    skipped: list[tuple[str, str]] = []

    def inside(path: Path) -> bool:
        if path.resolve().is_relative_to(root):
            return True
        skipped.append((str(path), f"leads out of {folder}, to {path.resolve()}"))
        return False

    people = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            skipped.append((str(p), "hidden (its name starts with '.')"))
        elif p.is_dir() and inside(p):
            people.append(p)
    if not people:
        raise IdentifyError(
            f"{folder} has no subfolders: a gallery folder holds one subfolder "
            "per person, named after them, with their photos in it."
        )
    names, paths = [], []
    for person in people:
        for path in _walk(person, skipped):
            if any(part.startswith(".") for part in path.relative_to(person).parts):
                skipped.append((str(path), "hidden (its name starts with '.')"))
            elif not inside(path):
                continue
            elif not path.is_file():
                skipped.append((str(path), "not a regular file"))
            elif path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append((str(path), "not an image file (by its suffix)"))
            else:
                names.append(person.name)
                paths.append(path)
    if not paths:
        raise IdentifyError(f"{folder}: no image files in its person subfolders")
    return names, paths, skipped


def _walk(top: Path, skipped: list[tuple[str, str]]) -> list[Path]:
    """Every entry under ``top`` that is not a folder, sorted; links to folders are not
    followed (one out of the tree could walk the whole disk), and said."""
    found: list[Path] = []
    for here, dirs, entries in os.walk(top, followlinks=False):
        base = Path(here)
        for d in list(dirs):
            if (base / d).is_symlink():
                skipped.append((str(base / d), "a link to a folder: not followed"))
        found.extend(base / e for e in entries)
    return sorted(found)


def _embed_faces(
    pipe: FacePipeline,
    names: Sequence[str],
    sources: Sequence[str],
    labels: Sequence[str],
    by_label: bool,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[str], list[str], list[np.ndarray], list[tuple[str, str]]]:
    """The highest-scoring face of each image, embedded: (names, labels, embeddings,
    skipped (label, why)) of the images with a face. ``by_label``: the catalog
    detector finds each image by its label (a snapshot's image id)."""
    keep_names: list[str] = []
    keep_labels: list[str] = []
    vectors: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    chunk = 64
    for first in range(0, len(sources), chunk):
        out = pipe.run(
            list(sources[first : first + chunk]),
            list(labels[first : first + chunk]) if by_label else None,
            skip_bad=True,
        )
        for k, why in out.skipped:
            skipped.append((labels[first + k], why))
        for k in range(len(out.images)):
            faces = out.faces_of(k)
            if out.images[k] is None:
                continue
            if not faces:
                skipped.append((labels[first + k], f"no face found ({pipe.detector.spec})"))
                continue
            best = max(faces, key=lambda f: f.score)
            keep_names.append(names[first + k])
            keep_labels.append(labels[first + k])
            vectors.append(best.embedding)
        if progress is not None:
            progress(min(first + chunk, len(sources)), len(sources))
    return keep_names, keep_labels, vectors, skipped


@dataclass(frozen=True)
class _Faces:
    """Images to embed: each one's person, file and label; where they came from."""

    names: list[str]
    sources: list[str]
    labels: list[str]
    where: str
    by_label: bool  # found by the catalog detector by image id
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _snapshot_faces(
    db: str | os.PathLike[str] | None, snapshot: str, splits: Sequence[str]
) -> _Faces:
    names, sources, labels = [], [], []
    skipped: list[tuple[str, str]] = []
    for split in splits:
        # an image gone or changed since the snapshot: left out and said, as a photo
        # that does not decode is (a gallery is built from what can be read)
        rows = snapshots.read_images(db, snapshot, split, boxes=True, skip_bad=True)
        names += [str(i) for i in rows.identity]
        sources += [str(p) for p in rows.path]
        labels += [str(i) for i in rows.image_id]
        skipped += [(b.image_id, f"{b.reason}: {b.detail}") for b in rows.skipped]
    where = f"snapshot:{snapshot}/{'+'.join(splits)}"
    return _Faces(names, sources, labels, where, True, skipped)


def _folder_faces(folder: str | os.PathLike[str]) -> _Faces:
    path = Path(folder).resolve()
    names, paths, skipped = _folder_images(path)
    files = [str(p) for p in paths]
    return _Faces(names, files, files, f"folder:{path}", False, skipped)


#: The splits of a snapshot's held-out people (never trained on).
OPEN_SET_SPLITS = ("query", "distractor")


def _held_out_strangers(
    db: str | os.PathLike[str] | None, snapshot: str, people: set[str]
) -> _Faces | None:
    """The snapshot's held-out people (its ``query`` and ``distractor`` splits) not in
    ``people``: the strangers a snapshot gallery is calibrated on by default (None:
    there are none). Images that cannot be read are left out."""
    rows = snapshots.read_images(db, snapshot, boxes=True, skip_bad=True)
    keep = [
        k
        for k, (split, who) in enumerate(zip(rows.split, rows.identity, strict=True))
        if split in OPEN_SET_SPLITS and str(who) not in people
    ]
    if not keep:
        return None
    return _Faces(
        [str(rows.identity[k]) for k in keep],
        [str(rows.path[k]) for k in keep],
        [str(rows.image_id[k]) for k in keep],
        f"snapshot:{snapshot}/{'+'.join(OPEN_SET_SPLITS)} (people not in the gallery)",
        True,
    )


def measure_strangers(
    pipe: FacePipeline,
    names: Sequence[str],
    embeddings: np.ndarray,
    strangers: _Faces,
    progress: Callable[[int, int], None] | None = None,
) -> list[G.Calibration]:
    """Embed the strangers' faces with ``pipe`` and calibrate the gallery of ``names``
    / ``embeddings`` on them (:func:`calibrations`). A stranger who is one of the
    gallery's people (same name) is refused, naming them, before anything is embedded."""
    _refuse_overlap(names, strangers.names)
    s_names, _, vectors, _ = _embed_faces(
        pipe, strangers.names, strangers.sources, strangers.labels, strangers.by_label, progress
    )
    if not vectors:
        raise IdentifyError(f"No face found among the strangers ({strangers.where}).")
    return calibrations(names, embeddings, s_names, np.stack(vectors), strangers.where)


def _refuse_overlap(names: Sequence[str], stranger_names: Sequence[str]) -> None:
    overlap = sorted(set(stranger_names) & set(names))
    if overlap:
        more = ", ..." if len(overlap) > 5 else ""
        raise IdentifyError(
            f"{len(overlap)} of the strangers are people of the gallery "
            f"({', '.join(overlap[:5])}{more}): strangers must be people it does not hold."
        )


def calibrations(
    names: Sequence[str],
    embeddings: np.ndarray,
    stranger_names: Sequence[str],
    stranger_embeddings: np.ndarray,
    where: str,
) -> list[G.Calibration]:
    """Each stranger face's best cosine in the gallery of ``names`` / ``embeddings``,
    searched with each template (``mean`` and ``max``), as ``identify`` searches."""
    _refuse_overlap(names, stranger_names)
    entries = G.GalleryEntries(
        None,  # type: ignore[arg-type]  # an index in memory: no stored gallery yet
        np.asarray(names, dtype=str),
        np.asarray(names, dtype=str),
        np.asarray(embeddings, dtype=np.float32),
    )
    emb = l2_normalize(stranger_embeddings)
    people = len(set(stranger_names))
    return [
        G.Calibration(how, where, people, best_scores(GalleryIndex(entries, how).scores, emb))
        for how in ("mean", "max")
    ]


def _from_stored_crops(
    db: str | os.PathLike[str] | None,
    run: Any,
    snapshot: str,
    split: str,
    strangers: str | os.PathLike[str] | None,
    device: str,
    unseen: Collection[str] = (),
) -> tuple[str, list[str], list[str], np.ndarray, str, list[G.Calibration]]:
    """A snapshot gallery of a recognizer whose crops were aligned with the catalog's
    true landmarks: the snapshot's stored crops, embedded as ``celebcat embed`` embeds
    them (a photo has no true landmarks; a snapshot's images do). Returns (the run id,
    names, image ids, embeddings, crop source, calibrations on the held-out
    strangers)."""
    from models import store
    from models.recognition.evaluate import embed_snapshot

    if strangers is not None:
        raise IdentifyError(
            "This recognizer's crops were aligned with the catalog's true landmarks, which "
            "photos of strangers do not have: calibrate on the snapshot's held-out people "
            "(leave out --strangers), or pass a landmark run (--landmarks RUN)."
        )
    recognizer = store.load_recognizer(run, db, device)
    done = embed_snapshot(recognizer, snapshot, db, write=False)
    mine = done.split == split
    if not mine.any():
        raise IdentifyError(f"Snapshot {snapshot!r} has no images in split {split!r}.")
    names = [str(i) for i in done.identity[mine]]
    held = np.isin(done.split, OPEN_SET_SPLITS) & ~np.isin(
        done.identity.astype(str), np.asarray([*names, *unseen])
    )
    where = f"snapshot:{snapshot}/{'+'.join(OPEN_SET_SPLITS)} (people not in the gallery)"
    found = (
        calibrations(
            names,
            done.embeddings[mine],
            [str(i) for i in done.identity[held]],
            done.embeddings[held],
            where,
        )
        if held.any()
        else []
    )
    images = [str(i) for i in done.image_id[mine]]
    return recognizer.run_id, names, images, done.embeddings[mine], done.source, found


def add_gallery(
    db: str | os.PathLike[str] | None,
    name: str,
    run: Any,
    *,
    snapshot: str | None = None,
    split: str | None = None,
    folder: str | os.PathLike[str] | None = None,
    strangers: str | os.PathLike[str] | None = None,
    unseen: Collection[str] = (),
    detector: str | None = None,
    landmark_run: str | None = None,
    template: str | None = None,
    replace: bool = False,
    device: str = "cpu",
    pipeline: FacePipeline | None = None,
    progress: StagedProgress | None = None,
) -> GalleryBuild:
    """Build gallery ``name`` with recognizer ``run`` from a snapshot split or a folder
    (one of them), calibrate it and store both. ``detector``: default ``catalog`` for a
    snapshot, ``haar`` for a folder. Images without a face (or, in a folder, not
    images) are left out and listed in ``skipped``; a gallery with no face at all is
    refused.

    Calibration (:mod:`models.pipeline.calibration`): the faces of ``strangers`` (a
    folder with one subfolder per person, none of them in the gallery), else for a
    snapshot gallery its held-out people not in the gallery, are searched in it and
    their best scores stored; with no strangers the gallery has no calibration and
    ``identify`` says so. ``unseen``: held-out people to keep out of the calibration
    (say, those a test photo shows, so that it tests the threshold on people the
    calibration never saw)."""
    start = time.perf_counter()
    if (snapshot is None) == (folder is None):
        raise IdentifyError("Give either a snapshot (with its split) or a folder.")
    if not replace:
        try:
            G.get_gallery(db, name)
        except G.GalleryError:
            pass
        else:
            raise IdentifyError(
                f"Gallery {name!r} exists; drop it first (celebcat gallery "
                "drop) or add with --replace."
            )
    if snapshot is not None:
        if split is None:
            raise IdentifyError("A snapshot gallery needs --split (e.g. query).")
        faces, spec = _snapshot_faces(db, snapshot, [split]), detector or "catalog"
        faces = replace_where(faces, f"snapshot:{snapshot}/{split}")
    else:
        faces, spec = _folder_faces(folder), detector or "haar"  # type: ignore[arg-type]
    strange = _folder_faces(strangers) if strangers is not None else None
    if strange is None and snapshot is not None:
        strange = _held_out_strangers(db, snapshot, set(faces.names) | set(unseen))
    try:
        pipe = pipeline or FacePipeline(
            spec, landmark_run, run, db, template=template, device=device
        )
    except TruthAlignmentError:
        if snapshot is None:
            raise
        assert split is not None
        run_id, names, images, matrix, crops, found = _from_stored_crops(
            db, run, snapshot, split, strangers, device, unseen
        )
        stored = G.write_gallery(
            db,
            name,
            run_id,
            faces.where,
            names,
            images,
            matrix,
            detector="catalog",
            crops=crops,
            replace=replace,
            calibrations=found,
        )
        return GalleryBuild(stored, [], time.perf_counter() - start, found)
    names, images, vectors, skipped = _embed_faces(
        pipe, faces.names, faces.sources, faces.labels, faces.by_label, _stage(progress, "faces")
    )
    skipped = faces.skipped + skipped
    if not vectors:
        raise IdentifyError(
            f"No face found in any of the {len(faces.sources)} images ({pipe.detector.spec} "
            "detector): nothing to store. Try another --detector (run:<detector run>)."
        )
    calibrations = (
        measure_strangers(pipe, names, np.stack(vectors), strange, _stage(progress, "strangers"))
        if strange is not None
        else []
    )
    stored = G.write_gallery(
        db,
        name,
        pipe.run_id,
        faces.where,
        names,
        images,
        np.stack(vectors),
        detector=pipe.detector.spec,
        crops=str(pipe.plan.source),
        replace=replace,
        calibrations=calibrations,
    )
    return GalleryBuild(stored, skipped, time.perf_counter() - start, calibrations)


def replace_where(faces: _Faces, where: str) -> _Faces:
    return replace(faces, where=where)


def calibrate_gallery(
    db: str | os.PathLike[str] | None,
    name: str,
    *,
    strangers: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    pipeline: FacePipeline | None = None,
    progress: StagedProgress | None = None,
) -> list[G.Calibration]:
    """Measure gallery ``name`` again on ``strangers`` (a folder with one subfolder per
    person), else on its snapshot's held-out people not in it, with the recognizer,
    detector and crops it was built with; store and return the calibrations."""
    entries = G.read_entries(db, name)
    gallery = entries.gallery
    names = entries.identity_name.tolist()
    if strangers is not None:
        strange = _folder_faces(strangers)
    elif gallery.source.startswith("snapshot:"):
        snapshot = gallery.source.removeprefix("snapshot:").rsplit("/", 1)[0]
        strange = _held_out_strangers(db, snapshot, set(names))
    else:
        strange = None
    if strange is None:
        raise IdentifyError(
            f"No strangers to calibrate gallery {name!r} on: pass a folder of people it "
            "does not hold (--strangers DIR, one subfolder per person)."
        )
    pipe = pipeline or FacePipeline(
        gallery.detector or "haar",
        _landmark_run(gallery.crops),
        gallery.run_id,
        db,
        template=_template(gallery.crops),
        device=device,
    )
    calibrations = measure_strangers(
        pipe, names, entries.embeddings, strange, _stage(progress, "strangers")
    )
    G.write_calibrations(db, name, calibrations)
    return calibrations


def _stage(progress: StagedProgress | None, stage: str) -> Callable[[int, int], None] | None:
    return None if progress is None else (lambda done, total: progress(stage, done, total))


def _template(crops: str | None) -> str | None:
    return CropSource.parse(crops).template if crops else None


def _landmark_run(crops: str | None) -> str | None:
    return CropSource.parse(crops).run if crops else None


# --- identify -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    identity: str
    cosine: float


@dataclass
class IdentifiedFace:
    image: int  # index into IdentifyResult.images
    box: np.ndarray  # (4,) x_1, y_1, x_2, y_2 (the detector's, bboxes convention)
    score: float  # the detector's
    landmarks: np.ndarray | None  # (5, 2) image pixels
    matches: list[Match]  # best first
    identity: str  # the best match's name, or UNKNOWN below the threshold

    @property
    def known(self) -> bool:
        return self.identity != UNKNOWN

    def as_dict(self) -> dict[str, Any]:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "detector_score": round(self.score, 4),
            "landmarks": None
            if self.landmarks is None
            else [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "identity": self.identity,
            "matches": [
                {"identity": m.identity, "cosine": round(m.cosine, 4)} for m in self.matches
            ],
        }


@dataclass
class IdentifyResult:
    gallery: G.Gallery
    run_id: str
    threshold: Threshold
    images: list[LoadedImage]
    faces: list[IdentifiedFace]
    timings: dict[str, float] = field(default_factory=dict)  # pipeline stages + "search"

    def faces_of(self, image: int) -> list[IdentifiedFace]:
        return [f for f in self.faces if f.image == image]

    @property
    def without_faces(self) -> list[str]:
        return [im.name for k, im in enumerate(self.images) if not self.faces_of(k)]


def identify(
    images: Sequence[Any],
    gallery: str,
    db: str | os.PathLike[str] | None = None,
    *,
    run: str | None = None,
    detector: str = "haar",
    landmark_run: str | None = None,
    template: str | None = None,
    top: int = 5,
    fpir: float = DEFAULT_FPIR,
    fpr: float | None = None,
    threshold: float | None = None,
    how: str = "mean",
    device: str = "cpu",
    pipeline: FacePipeline | None = None,
) -> IdentifyResult:
    """Every face in ``images`` (paths, PIL images or arrays) matched against
    ``gallery`` (module docstring). Checked first, each failing with one line: the
    gallery exists and is not empty, ``run`` (default: the gallery's) is the one that
    made it, the threshold is known, every image reads.

    The threshold (:func:`choose_threshold`): ``threshold`` as given; else, with
    ``fpr``, the recognizer's pair threshold at that rate; else the gallery's own at
    which a stranger is named at rate ``fpir``; a gallery without calibration falls
    back to the pair threshold at :data:`DEFAULT_PAIR_FPR`, and says so."""
    if top < 1:
        raise IdentifyError(f"--top must be at least 1, got {top}")
    if not images:
        raise IdentifyError("No image given.")
    entries = G.read_entries(db, gallery)
    index = GalleryIndex(entries, how)
    made_by = entries.gallery.run_id
    run_id = run if run is not None else made_by
    if pipeline is not None:
        run_id = pipeline.run_id
    if run_id != made_by:
        raise IdentifyError(
            f"Gallery {gallery!r} was made by recognizer run {made_by}, not {run_id}: "
            "embeddings of two runs do not compare. Identify with its run, or rebuild it "
            f"with this one (celebcat gallery add {gallery} --run {run_id} --replace ...)."
        )
    limit = choose_threshold(
        db, entries.gallery, run_id, len(index), how=how, fpir=fpir, fpr=fpr, threshold=threshold
    )
    loaded = [src if isinstance(src, LoadedImage) else load_image(src) for src in images]
    pipe = pipeline or FacePipeline(
        detector, landmark_run, run_id, db, template=template, device=device
    )
    out = pipe.run(loaded)
    start = time.perf_counter()
    faces: list[IdentifiedFace] = []
    if out.faces:
        emb = out.embeddings
        if emb.shape[1] != index.dim:
            raise IdentifyError(
                f"Gallery {gallery!r} holds {index.dim}-d embeddings, run "
                f"{run_id} makes {emb.shape[1]}-d ones: rebuild the gallery."
            )
        found, cosines = index.search(emb, top)
        for face, rows, values in zip(out.faces, found, cosines, strict=True):
            matches = [
                Match(str(index.names[r]), float(v)) for r, v in zip(rows, values, strict=True)
            ]
            name = matches[0].identity if matches[0].cosine > limit.value else UNKNOWN
            faces.append(
                IdentifiedFace(face.image, face.box, face.score, face.landmarks, matches, name)
            )
    timings = dict(out.timings)
    timings["search"] = time.perf_counter() - start
    return IdentifyResult(entries.gallery, run_id, limit, loaded, faces, timings)


# --- 1:1 verification ---------------------------------------------------------------------


@dataclass
class Verification:
    """Two photos, the highest-scoring face of each, their cosine and the verdict."""

    images: tuple[LoadedImage, LoadedImage]
    faces_found: tuple[int, int]  # faces the detector found in each photo
    boxes: tuple[np.ndarray, np.ndarray]  # the faces compared (bboxes convention)
    cosine: float
    threshold: Threshold
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def same(self) -> bool:
        """The same person: the cosine is above the threshold (strictly)."""
        return self.cosine > self.threshold.value

    def explain(self) -> str:
        verdict = "the same person" if self.same else "different people"
        sign = ">" if self.same else "<="
        where = (
            f"{self.threshold.note}, not measured on this catalog"
            if self.threshold.kind == "published"
            else f"the threshold at which {self._rate()}"
        )
        return f"{verdict}: cosine {self.cosine:.4f} {sign} {self.threshold.value:.4f}, {where}"

    def _rate(self) -> str:
        t = self.threshold
        if t.kind == "given":
            return "you set it"
        tpr = f" and {t.tpr:.1%} of the same person's pairs" if t.tpr is not None else ""
        return (
            f"two faces of different people score above it at a rate of {t.fpr:g}{tpr} "
            f"(run {t.run_id}'s open-set evaluation, epoch {t.epoch})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": [im.name for im in self.images],
            "faces_found": list(self.faces_found),
            "boxes": [[round(float(v), 2) for v in b] for b in self.boxes],
            "cosine": round(self.cosine, 6),
            "same": self.same,
            "threshold": self.threshold.as_dict(),
            "explanation": self.explain(),
        }


def verify(
    a: Any,
    b: Any,
    db: str | os.PathLike[str] | None = None,
    *,
    run: str,
    fpr: float = DEFAULT_PAIR_FPR,
    threshold: float | None = None,
    detector: str = "haar",
    landmark_run: str | None = None,
    template: str | None = None,
    device: str = "cpu",
    pipeline: FacePipeline | None = None,
) -> Verification:
    """Whether photos ``a`` and ``b`` (paths, PIL images or arrays) show the same
    person: the highest-scoring face of each, embedded by recognizer ``run``, compared
    by cosine with the *pair* threshold its open-set evaluation measured at ``fpr``
    (the rate at which two faces of different people score above it: the right one
    for one comparison; ``threshold`` sets the cosine instead). IdentifyError where
    a photo has no face."""
    pipe = pipeline or FacePipeline(
        detector, landmark_run, run, db, template=template, device=device
    )
    limit = (
        Threshold(float(threshold), pipe.run_id, None, kind="given")
        if threshold is not None
        else open_set_threshold(db, pipe.run_id, fpr)
    )
    loaded = [src if isinstance(src, LoadedImage) else load_image(src) for src in (a, b)]
    out = pipe.run(loaded)
    best = []
    for k, image in enumerate(loaded):
        faces = out.faces_of(k)
        if not faces:
            raise IdentifyError(
                f"No face found in {image.name} (detector {pipe.detector.spec}); try another "
                "--detector (run:<detector run>, onnx:<model>)."
            )
        best.append(max(faces, key=lambda f: f.score))
    cosine = float(np.dot(best[0].embedding, best[1].embedding))
    return Verification(
        (loaded[0], loaded[1]),
        (len(out.faces_of(0)), len(out.faces_of(1))),
        (best[0].box, best[1].box),
        cosine,
        limit,
        dict(out.timings),
    )


# --- drawing ------------------------------------------------------------------------------

KNOWN_COLOUR = (0, 255, 0)
UNKNOWN_COLOUR = (255, 48, 48)
POINT_COLOUR = (255, 255, 0)


def draw_faces(
    image: LoadedImage, faces: Sequence[IdentifiedFace], path: str | os.PathLike[str]
) -> Path:
    """Write ``image`` with each face's box (green: named, red: unknown), its five
    points and its name and cosine above the box; the format from the suffix."""
    from PIL import ImageDraw, ImageFont

    canvas = Image.fromarray(image.pixels).copy()
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 250))
    try:
        font = ImageFont.load_default(size=max(12, round(max(canvas.size) / 40)))
    except TypeError:  # Pillow < 10.1: one size
        font = ImageFont.load_default()
    for face in faces:
        colour = KNOWN_COLOUR if face.known else UNKNOWN_COLOUR
        # faces are in the photo's pixels; a large photo is drawn as decoded, reduced
        x1, y1, x2, y2 = (float(v) / image.scale for v in face.box)
        # the outline drawn inwards from the box's outermost pixels, whole pixels
        draw.rectangle(
            [round(x1), round(y1), round(x2) - 1, round(y2) - 1], outline=colour, width=width
        )
        if face.landmarks is not None:
            r = width + 1
            for x, y in face.landmarks / image.scale:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=POINT_COLOUR)
        label = (
            f"{face.identity} {face.matches[0].cosine:.2f}"
            if face.known
            else f"{UNKNOWN} ({face.matches[0].identity} {face.matches[0].cosine:.2f})"
        )
        left, top, right, bottom = draw.textbbox((x1, y1), label, font=font)
        lift = bottom - top + 2 * width
        ty = y1 - lift if y1 - lift >= 0 else y2 + width
        draw.rectangle([x1, ty, x1 + right - left + 2 * width, ty + lift], fill=colour)
        draw.text((x1 + width, ty + width - (top - y1)), label, fill=(0, 0, 0), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        canvas.save(path)
    except (KeyError, ValueError) as err:  # an unknown suffix
        raise IdentifyError(
            f"--draw {path}: cannot write that format ({err}); use .png or .jpg"
        ) from None
    return path
