"""Synthetic CelebA: procedural faces with exact ground truth, in CelebA's file formats.

No real CelebA is reachable from our machines, so tests and the demo run on data made
here. ``synthesize`` writes a dataset folder (annotation files in the official txt
and/or Kaggle CSV layout, in-the-wild JPEGs, optionally 178x218 aligned crops);
``render_face`` draws one face and is what tests use to flip one attribute and compare
pixels. Identities, landmarks, boxes and attributes are known by construction.

Modules: ``population`` (who is in the dataset, vectorised), ``geometry`` (landmarks,
boxes and the alignment transform, shared by files and pixels), ``faces`` (drawing),
``writer`` (files on disk, parallel).
"""

from catalog.synth.faces import RenderedFace, aligned_crop, render_face
from catalog.synth.population import FaceTraits, Layout, Population, Pose, make_population
from catalog.synth.writer import LAYOUTS, SynthSummary, annotation_specs, synthesize

__all__ = [
    "LAYOUTS",
    "FaceTraits",
    "Layout",
    "Pose",
    "Population",
    "RenderedFace",
    "SynthSummary",
    "aligned_crop",
    "annotation_specs",
    "make_population",
    "render_face",
    "synthesize",
]
