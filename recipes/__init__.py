"""The shipped training recipes (``python -m qdukd.train NAME``, e.g. ``demo`` or ``cpu/w4a4``),
installed as the data package ``qdukd.recipes`` (see pyproject.toml); qdukd.resources finds them
by name."""
