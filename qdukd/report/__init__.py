"""Browsable HTML reports: one self-contained ``report.html`` per export and per training run.

- :mod:`.html`: the small HTML toolkit both pages share (tables, embedded PNGs, the page shell);
- :mod:`.panels`: pure image math for the crops (aligned boxes, nearest LR, difference maps);
- :mod:`.export_page`: the export's page (gate, per-image table, crops, model card), written by
  :func:`qdukd.export.export_checkpoint`;
- :mod:`.training_page`: a run's curves from ``log.csv`` / ``val.csv``, several runs overlaid,
  written at the end of ``qdukd.train`` and by ``python -m qdukd.report RUN_DIR ...``.

Nothing is imported here, so the export does not load matplotlib.
"""
