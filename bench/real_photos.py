"""Our models and dlib's on real photographs: landmarks (NME) and recognizer cosines.

    python bench/real_photos.py --db celebcat-demo/celeba.duckdb \\
        --landmarks LANDMARK_RUN --recognizer RECOGNITION_RUN [--photos .cache/test-photos]

The photos: the face_recognition 1.3.0 test images (``bash .ci/fetch-test-photos``)
and scikit-image's astronaut. Every face is found by dlib's HOG detector (the run
``detector-dlib-hog``, boxes mapped to the CelebA convention), so both models see the
same boxes. Needs the extra ``[dlib]``; the catalog is copied, never changed.

1. **Landmarks**: CelebA's five points from dlib's 68-point predictor run directly on
   the detector's square (the reference here, not ground truth) against (a) the
   ``landmarks-dlib-68`` run, which gets the face box crop every landmark run gets and
   maps the CelebA box back to dlib's square (what the mapping costs), (b) the
   ``landmarks-dlib-5`` run (CelebA's points where dlib's chip puts them on average),
   and (c) our landmark run. NME: mean point error over the reference's inter-ocular
   distance.
2. **Recognizers**: the cosine of every pair of faces, dlib's and ours: same person
   (the obama photos) against different people.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.pipeline.faces import FacePipeline  # noqa: E402
from models.pretrained import import_source  # noqa: E402
from models.pretrained.dlib import (  # noqa: E402
    DLIB_TO_CELEBA,
    HOG_RUN,
    LANDMARKS_68_RUN,
    RECOGNIZER_RUN,
    celeba_points,
)

ROOT = Path(__file__).resolve().parent.parent
PERSON = {"obama": "obama", "obama2": "obama", "obama3": "obama", "32bit": "obama"}


def load_photos(folder: Path) -> dict[str, np.ndarray]:
    from skimage import data

    names = ("obama", "obama2", "obama3", "32bit", "biden")
    files = {n: next(folder.glob(f"{n}.*")) for n in names}
    out = {n: np.asarray(Image.open(p).convert("RGB")) for n, p in files.items()}
    out["astronaut"] = data.astronaut()
    return out


def reference_points(image: np.ndarray, box: np.ndarray, predictor: object) -> np.ndarray:
    """CelebA's five points from the 68, dlib's predictor on its own square."""
    import dlib

    from models.detection.detectors import celeba_to_squares

    x, y, w, h = celeba_to_squares(box[None, :4], DLIB_TO_CELEBA)[0]
    rect = dlib.rectangle(round(x), round(y), round(x + w) - 1, round(y + h) - 1)
    shape = predictor(image, rect)  # type: ignore[operator]
    return celeba_points(np.array([(p.x, p.y) for p in shape.parts()], np.float64))


def nme(points: np.ndarray, reference: np.ndarray) -> float:
    iod = np.linalg.norm(reference[1] - reference[0])
    return float(np.linalg.norm(points - reference, axis=1).mean() / iod)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="a catalog with the trained runs")
    parser.add_argument("--landmarks", required=True, help="our landmark run")
    parser.add_argument("--recognizer", required=True, help="our recognition run")
    parser.add_argument("--photos", default=str(ROOT / ".cache" / "test-photos"))
    args = parser.parse_args()
    from models import store

    images = load_photos(Path(args.photos))
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(shutil.copy(args.db, Path(tmp) / "c.duckdb"))
        import_source(db, "dlib")
        predictor = store.load_landmarks(LANDMARKS_68_RUN, db).predictor
        names = list(images)
        photos = [images[n] for n in names]
        theirs = FacePipeline(f"run:{HOG_RUN}", None, RECOGNIZER_RUN, db).run(photos)
        with68 = FacePipeline(f"run:{HOG_RUN}", LANDMARKS_68_RUN, RECOGNIZER_RUN, db).run(photos)
        ours = FacePipeline(
            f"run:{HOG_RUN}", args.landmarks, args.recognizer, db, template=None
        ).run(photos)
        print("1. landmarks: NME against dlib's 68 points on its own square")
        columns = ("dlib-68 (crops)", "dlib-5", "ours")
        print(f"{'photo':<12}{'face':>6}" + "".join(f"{c:>18}" for c in columns))
        errors: list[list[float]] = []
        for k, name in enumerate(names):
            faces = zip(with68.faces_of(k), theirs.faces_of(k), ours.faces_of(k), strict=True)
            for j, found in enumerate(faces):
                ref = reference_points(images[name], found[0].box, predictor)
                errors.append([nme(f.landmarks, ref) for f in found])
                print(f"{name:<12}{j + 1:>6}" + "".join(f"{e:>18.4f}" for e in errors[-1]))
        print(f"{'mean':<18}" + "".join(f"{e:>18.4f}" for e in np.mean(errors, axis=0)))
        print(f"{'median':<18}" + "".join(f"{e:>18.4f}" for e in np.median(errors, axis=0)))

        print("\n2. recognizers: cosine of each pair of faces (first face of each photo)")
        firsts = [(n, k) for k, n in enumerate(names) if theirs.faces_of(k)]
        print(f"{'pair':<28}{'same person':>12}{'dlib':>8}{'ours':>8}")
        for (n1, k1), (n2, k2) in itertools.combinations(firsts, 2):
            same = PERSON.get(n1, n1) == PERSON.get(n2, n2)
            cos_dlib = float(theirs.faces_of(k1)[0].embedding @ theirs.faces_of(k2)[0].embedding)
            cos_ours = float(ours.faces_of(k1)[0].embedding @ ours.faces_of(k2)[0].embedding)
            pair = f"{n1} / {n2}"
            print(f"{pair:<28}{'yes' if same else 'no':>12}{cos_dlib:>8.3f}{cos_ours:>8.3f}")


if __name__ == "__main__":
    main()
