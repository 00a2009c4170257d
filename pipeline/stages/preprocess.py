"""DVC stage `preprocess`: data/ (canonical raw layout) -> preprocessed/ (arrays + manifest).

Validates every case, then reorients, resamples, normalises and splits them
(`pipeline.data.preprocessing`); a failure leaves the previous `preprocessed/` intact.
Run as `unet-pipeline preprocess [-c params.yaml] [-S key=value]`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipeline.config import Config


def run(cfg: Config) -> None:
    """Validate data/, then write preprocessed/{manifest.json, fingerprint.json, cases/}."""
    from pipeline.data.preprocessing import preprocess_dataset

    manifest = preprocess_dataset(cfg)
    spec, splits = manifest["preprocessing"], manifest["splits"]
    print(
        f"preprocess: {len(manifest['cases'])} cases ({len(splits['train'])} train / {len(splits['val'])} val), "
        f"spacing {spec['spacing'] or 'unchanged'}, orientation {spec['orientation'] or 'unchanged'} "
        f"-> {cfg.preprocess.output_dir}/"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """preprocess takes no options beyond --config/--set."""


def run_from_args(cfg: Config, args: argparse.Namespace) -> None:
    run(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.cli import main as cli_main

    return cli_main(["preprocess", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
