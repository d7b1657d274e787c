"""Face recognition: backbones (``backbones``), softmax / ArcFace / CosFace / triplet
losses (``losses``), the protocols on embeddings (``metrics``: closed-set, verification,
open-set, triplet), embedding a snapshot and evaluating a run (``evaluate``), plots
(``plots``), the trainer's settings (``config``) and its training loop (``train``)."""
