"""torch models, training and evaluation.

- ``models.registry``: ``create_model(name)`` / ``list_models()``.
- ``models.hourglass``: the stacked hourglass and its heatmap loss.
- ``models.heatmaps``: heatmap decoding (argmax, quarter shift, DARK).
- ``models.metrics``: NME, failure rate, CED.
- ``models.alignment``: Umeyama similarity and face templates.

Imports flow one way: ``cli`` -> ``models`` -> ``catalog``. Nothing is imported here,
so ``import models`` stays free of torch.
"""
