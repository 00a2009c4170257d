"""`unet-pipeline`: one command per pipeline step; each maps onto a module with one job.

Imports of torch / MONAI / MLflow happen inside the handlers so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from pipeline.stages.common import USER_ERRORS, add_config_args, load_stage_config

STAGES = {
    "preprocess": "validate data/ and write preprocessed/ (DVC stage)",
    "train": "train the U-Net, resumable, tracked in MLflow (DVC stage)",
    "evaluate": "predict held-out cases, write metrics and figures (DVC stage)",
    "export": "export TorchScript + ONNX + MONAI bundle, verified (DVC stage)",
}


def _cmd_data_import(args: argparse.Namespace) -> None:
    from pipeline.data.importer import main

    main(args)


def _cmd_data_synth(args: argparse.Namespace) -> None:
    from pipeline.data.synth import main

    main(args)


def _stage_module(name: str) -> Any:
    import importlib

    return importlib.import_module(f"pipeline.stages.{name}")


def _cmd_stage(args: argparse.Namespace) -> None:
    _stage_module(args.command).run_from_args(load_stage_config(args), args)


def _cmd_predict(args: argparse.Namespace) -> None:
    from pipeline.export.predictor import main

    failed = main(args)
    if failed:
        print(f"error: {failed} case(s) failed (listed above)", file=sys.stderr)
        raise SystemExit(min(failed, 125))  # the exit status says how many failed


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unet-pipeline",
        description="Medical-image segmentation with a custom 2D/3D U-Net: "
        "data -> preprocess -> train -> evaluate -> export.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="import a real dataset or generate the embedded synthetic one into data/")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    imp = data_sub.add_parser("import", help="convert an MSD/nnU-Net, pairs or TIFF-stack dataset into data/")
    imp.add_argument("src", help="dataset folder (or TIFF stack file)")
    imp.add_argument("--layout", choices=["msd", "pairs", "stack"], help="source layout (detected when omitted)")
    imp.add_argument(
        "--labels",
        metavar="NAME=RAW,...",
        help="classes in index order with their raw mask values, e.g. cell=255,membrane=0",
    )
    imp.add_argument("--out", default="data", help="destination (default: data)")
    imp.set_defaults(func=_cmd_data_import)
    syn = data_sub.add_parser("synth", help="write the small deterministic synthetic dataset (the embedded default)")
    syn.add_argument("--dims", type=int, choices=[2, 3], default=2, help="2D or 3D variant (default: 2)")
    syn.add_argument("--out", default="data", help="destination (default: data)")
    syn.add_argument("--cases", type=int, default=None, help="number of cases (default: the variant's)")
    syn.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    syn.set_defaults(func=_cmd_data_synth)

    for name, help_ in STAGES.items():
        p = sub.add_parser(name, help=help_)
        add_config_args(p)
        _stage_module(name).add_arguments(p)
        p.set_defaults(func=_cmd_stage)
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

    pred = sub.add_parser("predict", help="segment an image with an exported model (needs only exported/)")
    pred.add_argument(
        "image",
        help="NIfTI / NRRD / MHA / DICOM series folder / PNG / TIFF; or a folder of many cases (with -o FOLDER)",
    )
    pred.add_argument("--model", "-m", required=True, help="exported/ folder, exported/model.onnx or model.ts")
    pred.add_argument(
        "--output",
        "-o",
        required=True,
        help="mask file (mask.nii.gz), DICOM SEG (seg.dcm, from a DICOM series), or a folder for a batch",
    )
    pred.add_argument(
        "--format",
        choices=["nifti", "dicom-seg"],
        default="nifti",
        help="batch output for DICOM series (image files always give NIfTI)",
    )
    pred.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    pred.add_argument(
        "--strict",
        action="store_true",
        help="refuse inputs unlike the training data (spacing 2x off, intensities or modality); default: warn",
    )
    pred.add_argument("--device", default="cpu", help="cpu or cuda (TorchScript only)")
    pred.set_defaults(func=_cmd_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except USER_ERRORS as exc:
        if args.debug or os.environ.get("UNET_PIPELINE_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
