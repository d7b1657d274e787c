"""Measure the map from a detector's square (OpenCV's Haar cascade, dlib's HOG) to the
catalog's (CelebA) face box.

The cascade's square sits on brows, eyes and mouth; CelebA's box runs from the hair
line to the chin. The pipeline crops detected boxes as the catalog's are cropped, so
the Haar detector maps its squares onto the CelebA convention
(``models.detection.detectors.HAAR_TO_CELEBA``). This script fits that map on a catalog's
images: each image's Haar detections, the one whose centre lies inside the true box
and nearest its centre matched to it, then the medians of (centre offset / side,
width / side, height / side). It prints the fit, the detection rate, and the IoU with
the true boxes before and after the map.

    python bench/haar_calibration.py --db synth.duckdb [--limit 500] [--detector dlib]

``--detector dlib`` fits ``models.pretrained.dlib.DLIB_TO_CELEBA`` the same way (the
extra ``[dlib]`` installed).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from catalog.db import connect  # noqa: E402
from models.detection.boxes import iou  # noqa: E402
from models.detection.detectors import HAAR_TO_CELEBA, HaarDetector, haar_to_celeba  # noqa: E402

IDENTITY = {"dx": 0.0, "dy": 0.0, "sw": 1.0, "sh": 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--detector", choices=("haar", "dlib"), default="haar")
    args = parser.parse_args()
    con = connect(args.db, read_only=True)
    try:
        root = con.execute("SELECT value FROM catalog_info WHERE key = 'image_root'").fetchone()[0]
        rows = con.execute(
            "SELECT b.image_id, i.path, b.x_1, b.y_1, b.x_1 + b.width, b.y_1 + b.height "
            "FROM bboxes b JOIN images i USING (image_id) ORDER BY image_id LIMIT ?",
            [args.limit],
        ).fetchall()
    finally:
        con.close()
    if args.detector == "dlib":
        from models.pretrained.dlib import DLIB_TO_CELEBA, DlibHogDetector

        detector, current = DlibHogDetector(), DLIB_TO_CELEBA
    else:
        detector, current = HaarDetector(), HAAR_TO_CELEBA
    pairs = []  # (haar x, y, side), true box
    for _, path, *box in rows:
        image = np.asarray(Image.open(os.path.join(root, path)).convert("RGB"))
        dets = detector.detect([image])[0]
        if not len(dets):
            continue
        # back to the detector's squares: undo the current map
        m = current
        w = dets[:, 2] - dets[:, 0]
        side = w / m["sw"]
        cx = (dets[:, 0] + dets[:, 2]) / 2 - m["dx"] * side
        cy = (dets[:, 1] + dets[:, 3]) / 2 - m["dy"] * side
        t = np.asarray(box, np.float64)
        tc = (t[:2] + t[2:]) / 2
        inside = (cx > t[0]) & (cx < t[2]) & (cy > t[1]) & (cy < t[3])
        if not inside.any():
            continue
        k = np.flatnonzero(inside)[np.argmin(np.hypot(cx - tc[0], cy - tc[1])[inside])]
        pairs.append((cx[k], cy[k], side[k], *t))
    p = np.asarray(pairs)
    cx, cy, side, t = p[:, 0], p[:, 1], p[:, 2], p[:, 3:]
    fit = {
        "dx": float(np.median(((t[:, 0] + t[:, 2]) / 2 - cx) / side)),
        "dy": float(np.median(((t[:, 1] + t[:, 3]) / 2 - cy) / side)),
        "sw": float(np.median((t[:, 2] - t[:, 0]) / side)),
        "sh": float(np.median((t[:, 3] - t[:, 1]) / side)),
    }
    squares = np.stack([cx - side / 2, cy - side / 2, side, side], axis=1)
    before = np.diag(iou(haar_to_celeba(squares, IDENTITY), t))
    after = np.diag(iou(haar_to_celeba(squares, fit), t))
    found = f"{len(p)} ({len(p) / len(rows):.0%})"
    print(f"images {len(rows)}, a {args.detector} box on the true face in {found}")
    print("fit:", {k: round(v, 3) for k, v in fit.items()})
    print(
        f"IoU with the true box: the square {before.mean():.3f} (median "
        f"{np.median(before):.3f}), mapped {after.mean():.3f} (median {np.median(after):.3f})"
    )


if __name__ == "__main__":
    main()
