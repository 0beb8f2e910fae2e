"""Benchmarks: scripts run from the repo root, and a package the tests import their shared measurement from."""
