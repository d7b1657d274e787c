"""Face detection: every detector behind one interface (``detectors``: the catalog's
boxes, OpenCV's Haar cascade, a trained CenterNet, an ONNX file), box geometry
(``boxes``: IoU, NMS), the small CenterNet (``centernet``), the trainer's settings
(``config``) and its training loop (``train``)."""
