"""Five-point landmarks: the stacked hourglass (``hourglass``), heatmap decoding
(``heatmaps``), prediction in image pixels (``predict``), NME and CED (``metrics``),
the trainer's settings (``config``) and its training loop (``train``)."""
