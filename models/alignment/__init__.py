"""Face alignment: the similarity onto a template and the templates themselves
(``similarity``), and ``celebcat align``, a snapshot's aligned crop cache
(``snapshot``)."""
