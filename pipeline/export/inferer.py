"""Alias kept for bundles exported before 0.2: their inference.json names `pipeline.export.inferer`."""

from pipeline.predict.inferer import UNetInferer  # noqa: F401  (alias: old inference.json files import it from here)
