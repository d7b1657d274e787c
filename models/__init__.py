"""torch models, training and evaluation.

- ``models.registry``: ``create_model(name)`` / ``list_models(task)``.
- ``models.landmarks.hourglass``: the stacked hourglass and its heatmap loss.
- ``models.recognition.backbones``: face recognition ResNets with the ArcFace embedding head.
- ``models.recognition.losses``: softmax, ArcFace, CosFace and triplet losses (``make_loss``).
- ``models.recognition.metrics``: closed-set, verification, open-set and triplet
  metrics from embeddings (numpy).
- ``models.landmarks.heatmaps``: heatmap decoding (argmax, quarter shift, DARK).
- ``models.landmarks.metrics``: NME, failure rate, CED.
- ``models.alignment.similarity``: Umeyama similarity and face templates.

Imports flow one way: ``cli`` -> ``models`` -> ``catalog``. Nothing is imported here,
so ``import models`` stays free of torch.
"""
