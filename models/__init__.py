"""torch models, by task, and what uses them.

- ``models.store``: load any trained model (a run id, run folder or checkpoint) as
  its task's inference object: ``load_landmarks``, ``load_recognizer``,
  ``load_detector``.
- ``models.landmarks``: the stacked hourglass, heatmap decoding, prediction
  (``LandmarkModel``), NME, training.
- ``models.alignment``: the similarity onto a template, ``celebcat align``.
- ``models.recognition``: backbones, losses, a loaded ``Recognizer`` and its crop
  recipe, the evaluation protocols, embedding a snapshot, training.
- ``models.detection``: detectors behind one interface, box IoU and NMS, the small
  CenterNet, training.
- ``models.pipeline``: photo -> faces -> embeddings, galleries and identify, the
  report's model sections, the demo.
- Shared: ``registry`` (models by name), ``checkpoints`` (reading and checking
  files), ``config`` and ``env`` (settings, device), ``harness`` (the one training
  loop), ``distributed`` (torchrun).

Imports flow one way: ``cli`` -> ``models`` -> ``catalog``; inference never imports
a trainer (``tests/test_imports.py``). Nothing is imported here, so ``import models``
stays free of torch.
"""
