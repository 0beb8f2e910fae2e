"""Training scripts for the bundled ``shapes-*`` models, each run as ``python -m lab.training.train_NAME``.

Design: one script per model, each writing its weights and a ``.metrics.json`` record into artgen/zoo; they are
modules of the lab package so they import ``lab.scenes`` and ``lab.shape_checker`` without path tricks.
"""
