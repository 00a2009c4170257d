"""What every stage entry shares: `--config/--set` parsing and which errors are the user's.

`python -m pipeline.stages.<name>` hands its arguments to `unet-pipeline <name>` (pipeline.cli), so
both print a `PipelineError` (bad config, bad input file, missing earlier output) as one
`error: ...` line and exit with 2, and both take `--debug` for the traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from pipeline.config import Config
from pipeline.errors import PipelineError

# errors that carry a message meant for the user (file + problem); anything else is a bug: traceback
USER_ERRORS: tuple[type[BaseException], ...] = (PipelineError,)


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """`["train.epochs=2", ...]` -> `{"train.epochs": 2}` (values parsed as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"error: --set expects KEY=VALUE (e.g. train.epochs=2), got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def add_config_args(parser: argparse.ArgumentParser) -> None:
    # also after the sub-command (`python -m pipeline.stages.<name> --debug` lands here); SUPPRESS
    # keeps `unet-pipeline --debug <stage>` from being reset by this parser's default
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
    parser.add_argument("--config", "-c", default="params.yaml", help="config file (default: params.yaml)")
    parser.add_argument(
        "--set",
        "-S",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. -S train.epochs=2",
    )


def load_stage_config(args: argparse.Namespace) -> Config:
    from pipeline.config import load_config

    return load_config(args.config, parse_overrides(args.set))
