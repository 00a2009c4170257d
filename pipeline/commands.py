"""The commands beside the stages: the config tools and the tracking store's upkeep, plus the
`--config` / `-S` options every config-reading command shares. `pipeline.cli` assembles them."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.config import Config


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """`--config/-c`, `--set/-S` and `--debug` (also after the sub-command)."""
    # SUPPRESS keeps `unet-pipeline --debug <stage>` from being reset by this parser's default
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
    """The config a command names, with its `-S` overrides applied and validated."""
    from pipeline.config import load_config, parse_overrides

    return load_config(args.config, parse_overrides(args.set))


# ------------------------------------------------------------------------------------ config tools


def _cmd_config(args: argparse.Namespace) -> None:
    from pipeline.config import complete_yaml

    print(complete_yaml(load_stage_config(args)), end="")


def _cmd_plan(args: argparse.Namespace) -> None:
    from pipeline.config import complete_yaml
    from pipeline.planning import planned_config, read_fingerprint

    cfg = load_stage_config(args)
    planned, plan = planned_config(cfg, read_fingerprint(cfg), args.step_voxels)
    print(f"# planned by `unet-pipeline plan` from {cfg.preprocess.output_dir}/fingerprint.json:")
    print("\n".join(f"# - {why}" for why in plan.reasons))
    print(complete_yaml(planned), end="")


def _cmd_model_summary(args: argparse.Namespace) -> None:
    from pipeline.model.summary import summary

    print(summary(load_stage_config(args)))


def _add_config_commands(sub: Any) -> None:
    config_parser = sub.add_parser(
        "config", help="print the complete config (every key, defaults written out), e.g. > params.yaml for dvc repro"
    )
    add_config_args(config_parser)
    config_parser.set_defaults(func=_cmd_config)
    plan_parser = sub.add_parser(
        "plan",
        help="print the config with patch, batch, depth and features planned from preprocessed/fingerprint.json "
        "(e.g. > params.yaml)",
    )
    add_config_args(plan_parser)
    plan_parser.add_argument(
        "--step-voxels",
        type=int,
        default=330_000,
        help="network input voxels per training step (batch x patch) the plan may use (default: 330000, "
        "the U-Net paper's 572x572 tile)",
    )
    plan_parser.set_defaults(func=_cmd_plan)
    summary_parser = sub.add_parser("model-summary", help="print the network's sizes, margin and parameter count")
    add_config_args(summary_parser)
    summary_parser.set_defaults(func=_cmd_model_summary)


# ------------------------------------------------------------------------------------ tracking


def _cmd_tracking_sync(args: argparse.Namespace) -> None:
    from pipeline.tracking.sync import repoint_run_refs, sync_offline
    from pipeline.tracking.uri import resolve_tracking_uri

    cfg = load_stage_config(args)
    target = args.to or resolve_tracking_uri(cfg.tracking.tracking_uri)
    uploaded = sync_offline(target, args.source)
    members = [cfg.train.member_dir(k) for k in cfg.train.members]
    for path in repoint_run_refs(members, uploaded, target):
        print(f"{path} now names the uploaded run")
    print(f"{len(uploaded)} run(s) uploaded to {target}")


def _add_tracking_commands(sub: Any) -> None:
    tracking = sub.add_parser("tracking", help="the MLflow tracking store: upload runs logged while a server was away")
    tracking_sub = tracking.add_subparsers(dest="tracking_command", required=True, metavar="ACTION")
    sync = tracking_sub.add_parser(
        "sync", help="replay the local store's runs (tracking.on_unavailable: local) into the tracking server"
    )
    add_config_args(sync)
    sync.add_argument("--to", default=None, help="the server (default: the configured tracking URI)")
    sync.add_argument(
        "--from", dest="source", default=None, help="the local store (default: sqlite:///mlflow-offline.db here)"
    )
    sync.set_defaults(func=_cmd_tracking_sync)


def add_tool_commands(sub: Any) -> None:
    """`config`, `plan`, `model-summary` and `tracking sync`."""
    _add_config_commands(sub)
    _add_tracking_commands(sub)
