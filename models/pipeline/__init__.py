"""What the trained models are for: a photo -> faces -> landmarks -> aligned crops ->
embeddings (``faces``), galleries, ``celebcat identify`` and ``verify`` (``identify``),
the unknown-face threshold each gallery measures (``calibration``), the HTML
report's model sections (``report``) and ``celebcat demo`` (``demo``)."""
