"""What every stage entry shares: `--config/--set` parsing and error reporting.

`python -m pipeline.stages.<name>` and `unet-pipeline <name>` both end up here, so a bad config,
a bad input file or a missing earlier output prints one `error: ...` line and exits with 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.config import Config, ConfigError

# errors that carry a message meant for the user (file + problem); anything else is a bug: traceback
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, ValueError, OSError, RuntimeError)


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


def report_errors(fn: Callable[[], None]) -> int:
    """Run `fn`; a user error becomes `error: <message>` on stderr and exit code 2."""
    try:
        fn()
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def stage_main(
    name: str,
    doc: str | None,
    run: Callable[[Config, argparse.Namespace], None],
    argv: Sequence[str] | None = None,
    extra_args: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """The `main()` of `python -m pipeline.stages.<name>`."""
    parser = argparse.ArgumentParser(prog=f"python -m pipeline.stages.{name}", description=(doc or "").splitlines()[0])
    add_config_args(parser)
    if extra_args is not None:
        extra_args(parser)
    args = parser.parse_args(argv)
    return report_errors(lambda: run(load_stage_config(args), args))
