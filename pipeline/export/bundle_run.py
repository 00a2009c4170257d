"""Alias kept for bundles exported before 0.2: their inference.json names `pipeline.export.bundle_run`."""

from pipeline.predict.bundle_run import infer_all  # noqa: F401  (alias: old inference.json files import it from here)
