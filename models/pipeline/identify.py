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

**The threshold** is not guessed: it is the one the open-set evaluation of the
recognizer run measured (``celebcat eval recognizer``,
:func:`models.recognition.evaluate.evaluate_recognizer`; ``metrics`` split ``open_set``,
``threshold@fpr=<f>``), at which a pair of faces of two different held-out people
scores above it with probability f (the reference's protocol: query faces against
each other and against distractors). A face is named when its best match's cosine
is above it (strictly, as the evaluation counted). Searching a gallery of I
identities gives an unknown face I chances, so its chance to be wrongly named is up
to about I x f: choose a smaller ``fpr`` for a large gallery.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from catalog import gallery as G
from catalog import results, snapshots
from catalog.errors import CatalogError
from catalog.metric_names import at_fpr, operating_points
from models.pipeline.faces import FacePipeline, LoadedImage, load_image
from models.recognition.metrics import OPEN_SET_FPRS, l2_normalize

__all__ = [
    "UNKNOWN",
    "GalleryBuild",
    "GalleryIndex",
    "IdentifiedFace",
    "IdentifyError",
    "IdentifyResult",
    "Match",
    "Threshold",
    "add_gallery",
    "draw_faces",
    "identify",
    "open_set_threshold",
]

UNKNOWN = "unknown"
#: What a gallery folder's images may be (by suffix); anything else is skipped, named.
IMAGE_SUFFIXES = frozenset(
    ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN
)


class IdentifyError(CatalogError, ValueError):
    """identify or gallery add cannot go on as asked; the message is one line saying
    what to do."""


# --- thresholds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """The cosine above which a match names a face, and where it comes from."""

    value: float
    run_id: str
    fpr: float | None  # None: given by the user
    epoch: int | None = None
    tpr: float | None = None  # at that FPR, same evaluation

    def explain(self) -> str:
        if self.fpr is None:
            return f"cosine > {self.value:.4f} (given)"
        tpr = f", accepting {self.tpr:.1%} of same-person pairs" if self.tpr is not None else ""
        return (
            f"cosine > {self.value:.4f}: run {self.run_id}'s open-set evaluation (epoch "
            f"{self.epoch}) measured that two different people's faces score above it at "
            f"a rate of {self.fpr:g}{tpr}"
        )


def open_set_threshold(
    db: str | os.PathLike[str] | None, run_id: str, fpr: float = 0.01, epoch: int | None = None
) -> Threshold:
    """The threshold the run's open-set evaluation stored at ``fpr`` (at ``epoch``,
    else the latest epoch evaluated). IdentifyError, saying what to run, where the
    run was never evaluated or not at that FPR."""
    stored = {
        (e, n): v for (e, s, n), v in results.get_metrics(db, run_id).items() if s == "open_set"
    }
    name = at_fpr("threshold", fpr)
    epochs = sorted({e for e, n in stored if n == name})
    if epoch is not None:
        epochs = [e for e in epochs if e == epoch] or epochs
    if not epochs:
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


def _folder_images(folder: Path) -> tuple[list[str], list[Path], list[tuple[str, str]]]:
    """(identity names, image paths, skipped (path, why)) of a gallery folder."""
    if not folder.is_dir():
        raise IdentifyError(
            f"{folder}: not a folder (a gallery folder holds one subfolder per person)"
        )
    people = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not people:
        raise IdentifyError(
            f"{folder} has no subfolders: a gallery folder holds one subfolder "
            "per person, named after them, with their photos in it."
        )
    names, paths, skipped = [], [], []
    for person in people:
        for path in sorted(p for p in person.rglob("*") if p.is_file()):
            if path.name.startswith("."):
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append((str(path), "not an image file (by its suffix)"))
                continue
            names.append(person.name)
            paths.append(path)
    if not paths:
        raise IdentifyError(f"{folder}: no image files in its person subfolders")
    return names, paths, skipped


def add_gallery(
    db: str | os.PathLike[str] | None,
    name: str,
    run: Any,
    *,
    snapshot: str | None = None,
    split: str | None = None,
    folder: str | os.PathLike[str] | None = None,
    detector: str | None = None,
    landmark_run: str | None = None,
    template: str | None = None,
    replace: bool = False,
    device: str = "cpu",
    pipeline: FacePipeline | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> GalleryBuild:
    """Build gallery ``name`` with recognizer ``run`` from a snapshot split or a folder
    (one of them) and store it. ``detector``: default ``catalog`` for a snapshot,
    ``haar`` for a folder. Images without a face (or, in a folder, not images) are
    left out and listed in ``skipped``; a gallery with no face at all is refused."""
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
    skipped: list[tuple[str, str]] = []
    if snapshot is not None:
        if split is None:
            raise IdentifyError("A snapshot gallery needs --split (e.g. query).")
        rows = snapshots.read_images(db, snapshot, split, boxes=True)
        names = [str(i) for i in rows.identity]
        sources: list[Any] = [str(p) for p in rows.path]
        labels = [str(i) for i in rows.image_id]
        where, spec = f"snapshot:{snapshot}/{split}", detector or "catalog"
    else:
        folder = Path(folder).resolve()  # type: ignore[arg-type]
        names, paths, skipped = _folder_images(folder)
        sources = [str(p) for p in paths]
        labels = [str(p) for p in paths]
        where, spec = f"folder:{folder}", detector or "haar"
    pipe = pipeline or FacePipeline(spec, landmark_run, run, db, template=template, device=device)
    keep_names, keep_images, vectors = [], [], []
    chunk = 64
    for first in range(0, len(sources), chunk):
        # a snapshot's images are named by image id, a folder's by file name
        out = pipe.run(
            sources[first : first + chunk],
            labels[first : first + chunk] if snapshot is not None else None,
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
            keep_images.append(labels[first + k])
            vectors.append(best.embedding)
        if progress is not None:
            progress(min(first + chunk, len(sources)), len(sources))
    if not vectors:
        raise IdentifyError(
            f"No face found in any of the {len(sources)} images ({pipe.detector.spec} "
            "detector): nothing to store. Try another --detector (run:<detector run>)."
        )
    stored = G.write_gallery(
        db,
        name,
        pipe.run_id,
        where,
        keep_names,
        keep_images,
        np.stack(vectors),
        detector=pipe.detector.spec,
        crops=str(pipe.plan.source),
        replace=replace,
    )
    return GalleryBuild(stored, skipped, time.perf_counter() - start)


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
    fpr: float = 0.01,
    threshold: float | None = None,
    how: str = "mean",
    device: str = "cpu",
    pipeline: FacePipeline | None = None,
) -> IdentifyResult:
    """Every face in ``images`` (paths, PIL images or arrays) matched against
    ``gallery`` (module docstring). Checked first, each failing with one line: the
    gallery exists and is not empty, ``run`` (default: the gallery's) is the one that
    made it, the threshold is known, every image reads."""
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
    if threshold is not None:
        limit = Threshold(float(threshold), run_id, None)
    else:
        if fpr not in OPEN_SET_FPRS:
            raise IdentifyError(
                f"--fpr {fpr:g}: the open-set evaluation measures FPR "
                f"{', '.join(f'{f:g}' for f in OPEN_SET_FPRS)}"
            )
        limit = open_set_threshold(db, run_id, fpr)
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
        x1, y1, x2, y2 = (float(v) for v in face.box)
        # the outline drawn inwards from the box's outermost pixels, whole pixels
        draw.rectangle(
            [round(x1), round(y1), round(x2) - 1, round(y2) - 1], outline=colour, width=width
        )
        if face.landmarks is not None:
            r = width + 1
            for x, y in face.landmarks:
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
