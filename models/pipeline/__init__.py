"""What the trained models are for: a photo -> faces -> landmarks -> aligned crops ->
embeddings (``faces``), galleries and ``celebcat identify`` (``identify``), the HTML
report's model sections (``report``) and ``celebcat demo`` (``demo``)."""
