"""`unet-pipeline`: one command per pipeline step; each maps onto a module with one job.

The CLI is the top of the house: it parses arguments, loads the config and hands plain values to
`pipeline.stages.<stage>.run`, the data importer or the predictor; nothing below imports it.
Imports of torch / MONAI / MLflow happen inside the handlers so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.commands import add_config_args, add_tool_commands, load_stage_config
from pipeline.errors import InputError, PipelineError
from pipeline.progress import quiet_library_bars

if TYPE_CHECKING:
    pass

# errors that carry a message meant for the user (file + problem); anything else is a bug: traceback
USER_ERRORS: tuple[type[BaseException], ...] = (PipelineError,)


# ------------------------------------------------------------------------------------ stages


def _add_checkpoint_arg(parser: argparse.ArgumentParser, default_text: str) -> None:
    parser.add_argument("--checkpoint", default=None, help=f"checkpoint to {default_text}")


def _train_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-epochs", type=int, default=None, help="stop after this epoch (resumable; LR schedule unchanged)"
    )


def _evaluate_args(parser: argparse.ArgumentParser) -> None:
    _add_checkpoint_arg(parser, "evaluate (default: each member's <train.output_dir>/fold_<k>/best.pt, averaged)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def _export_args(parser: argparse.ArgumentParser) -> None:
    _add_checkpoint_arg(parser, "export (default: the members' best.pt, as one ensemble)")


# name -> (help, options adder, the keyword arguments of `pipeline.stages.<name>.run` from the args)
STAGES: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[Any], dict[str, Any]]]] = {
    "preprocess": ("validate data/ and write preprocessed/ (DVC stage)", lambda p: None, lambda a: {}),
    "train": (
        "train the U-Net, resumable, tracked in MLflow (DVC stage)",
        _train_args,
        lambda a: {"max_epochs": a.max_epochs},
    ),
    "evaluate": (
        "predict held-out cases, write metrics and figures (DVC stage)",
        _evaluate_args,
        lambda a: {"checkpoint": a.checkpoint, "device": a.device},
    ),
    "export": (
        "export TorchScript + ONNX + MONAI bundle, verified (DVC stage)",
        _export_args,
        lambda a: {"checkpoint": a.checkpoint},
    ),
}


def _cmd_stage(args: argparse.Namespace) -> None:
    import importlib

    options = STAGES[args.command][2](args)
    cfg = load_stage_config(args)
    if args.command in ("train", "evaluate", "export") and os.environ.get("RANK", "0") == "0":
        from pipeline.tracking.availability import tracking_uri_for

        tracking_uri_for(cfg)  # a tracking server that is down is said (or refused) now, not minutes later
    importlib.import_module(f"pipeline.stages.{args.command}").run(cfg, **options)


# ------------------------------------------------------------------------------------ data


def dvc_add(out: Path) -> str:
    """Re-run `dvc add` when `out` lies in a DVC repo; returns what happened, for the summary."""
    repo = next((p for p in [out.resolve().parent, *out.resolve().parents] if (p / ".dvc").is_dir()), None)
    if repo is None:
        return "not in a DVC repo: no `dvc add`"
    # the venv's own dvc first: `.venv/bin/unet-pipeline` often runs without the venv on PATH
    beside = Path(sys.executable).parent / "dvc"
    dvc = str(beside) if beside.is_file() else shutil.which("dvc")
    if dvc is None:
        return "dvc not found on PATH: run `dvc add` yourself"
    proc = subprocess.run([dvc, "add", str(out.resolve().relative_to(repo))], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise InputError(f"`dvc add {out}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return f"`dvc add {out}` done"


def _cmd_data_import(args: argparse.Namespace) -> None:
    from pipeline.data.importer import detect_layout, import_dataset

    src = Path(args.src)
    layout = args.layout or (detect_layout(src) if src.exists() else None)
    dataset = import_dataset(args.src, args.out, layout, args.labels)
    dvc_note = dvc_add(Path(args.out))
    labels = ", ".join(f"{i}={n}" for i, n in enumerate(dataset["labels"]))
    mapping = f"; raw->class {dataset['label_mapping']}" if dataset["label_mapping"] else ""
    print(
        f"imported {dataset['numTraining']} {dataset['spatial_dims']}D cases ({layout} layout, "
        f"{len(dataset['channel_names'])} channel(s)) from {args.src} into {args.out}/ "
        f"(labels: {labels}{mapping}); {dvc_note}"
    )


def _cmd_data_synth(args: argparse.Namespace) -> None:
    from pipeline.data.synth import DEFAULTS, LABELS, synthesize

    out = synthesize(args.out, dims=args.dims, cases=args.cases, seed=args.seed)
    n = args.cases if args.cases is not None else DEFAULTS[args.dims]["cases"]
    print(f"wrote {n} synthetic {args.dims}D cases to {out}/ (labels: {', '.join(LABELS)})")


def _add_data_commands(sub: Any) -> None:
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


# ------------------------------------------------------------------------------------ predict


def is_batch(image: str | Path, output: str | Path) -> bool:
    """A folder in and a folder out (`-o results/`, no file suffix): every case under the input."""
    from pipeline.io import SEG_SUFFIX, WRITABLE_SUFFIXES, full_suffix

    out = Path(output)
    known = (*WRITABLE_SUFFIXES, SEG_SUFFIX)
    return Path(image).is_dir() and (out.is_dir() or full_suffix(out) not in known)


def predict(args: argparse.Namespace) -> int:
    """`unet-pipeline predict`; returns the number of failed cases (the exit status of a batch run)."""
    from pipeline.predict.predictor import Predictor

    kw = {
        "tta": True if getattr(args, "tta", False) else None,
        "device": getattr(args, "device", "cpu") or "cpu",
        "strict": bool(getattr(args, "strict", False)),
        "uncertainty": bool(getattr(args, "uncertainty", False)),
        "explain": bool(getattr(args, "explain", False)),
        "explain_layer": getattr(args, "explain_layer", None),
    }
    if is_batch(args.image, args.output):
        from pipeline.predict.batch import parse_shard, predict_folder, summary_table

        outcomes = predict_folder(
            args.model,
            args.image,
            args.output,
            fmt=getattr(args, "format", "nifti"),
            workers=getattr(args, "workers", 1),
            shard=parse_shard(getattr(args, "shard", None)),
            **kw,
        )
        print(summary_table(outcomes))
        return sum(o.status == "failed" for o in outcomes)
    predictor = Predictor(args.model, **kw)
    out = predictor.predict(args.image, args.output, progress=True)
    print(f"wrote {out}" + (f" and {predictor.last_instances}" if predictor.last_instances else ""))
    if predictor.last_uncertainty:
        print(f"wrote {predictor.last_uncertainty}")
    print(predictor.last_verdict)
    for path in predictor.last_explanations:
        print(f"wrote {path}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> None:
    failed = predict(args)
    if failed:
        print(f"error: {failed} case(s) failed (listed above)", file=sys.stderr)
        raise SystemExit(min(failed, 125))  # the exit status says how many failed


def _add_predict_command(sub: Any) -> None:
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
    pred.add_argument(
        "--workers", type=int, default=1, help="batch: processes, each loading the model once (default: 1)"
    )
    pred.add_argument(
        "--shard",
        metavar="I/N",
        default=None,
        help="batch: take every N-th case from the I-th (0-based), e.g. a Slurm array task's share",
    )
    pred.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    pred.add_argument(
        "--strict",
        action="store_true",
        help="refuse inputs unlike the training data (spacing 2x off, intensities or modality); default: warn",
    )
    pred.add_argument("--device", default="cpu", help="cpu or cuda (TorchScript only)")
    pred.add_argument(
        "--uncertainty",
        action="store_true",
        help="also write <mask>_uncertainty.nii.gz (per-voxel entropy / log K, in [0, 1]) and its .json beside the "
        "mask; a DICOM SEG output gets a DICOM Parametric Map, <mask>_uncertainty.dcm",
    )
    pred.add_argument(
        "--explain",
        action="store_true",
        help="also write a Grad-CAM map per foreground class beside the mask: <mask>_explain_<label>.nii.gz (3D) "
        "or .png overlay (2D); needs the exported model.ts",
    )
    pred.add_argument(
        "--explain-layer",
        metavar="MODULE",
        default=None,
        help="the U-Net block --explain reads: decoders.-1 (default, the last before the output), decoders.0, "
        "bottleneck, encoders.1, ...",
    )
    pred.set_defaults(func=_cmd_predict)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: data, the four DVC stages, predict and the config tools."""
    parser = argparse.ArgumentParser(
        prog="unet-pipeline",
        description="Medical-image segmentation with a custom 2D/3D U-Net: "
        "data -> preprocess -> train -> evaluate -> export.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_commands(sub)
    for name, (help_, add_options, _) in STAGES.items():
        p = sub.add_parser(name, help=help_)
        add_config_args(p)
        add_options(p)
        p.set_defaults(func=_cmd_stage)
    add_tool_commands(sub)
    _add_predict_command(sub)
    return parser


# warnings known to be harmless here, said once per process by libraries at every call (MONAI's
# DICOM reader once per evaluated case): message regexes
HARMLESS_WARNINGS = (
    r".*nvImageCodec.*",  # no GPU JPEG decoder: MONAI falls back to pydicom's decoders, as intended
    r".*The ``noload`` loader strategy is deprecated.*",  # MLflow's SQLAlchemy store, not ours
)


# loggers that say the same harmless thing through `logging` instead: logger name -> highest level
# kept quiet (MONAI's DICOM reader logs the missing GPU decoder once per reader it builds)
HARMLESS_LOGGERS = {
    "monai.data.nvimgcodec_pydicom_plugin": logging.WARNING,
    # MLflow's sqlite store logs the traceback of a database error and then raises it: the raise is
    # what the user sees (one line for a full disk, `_tracking_store_full`; a traceback otherwise)
    "mlflow.store.db.utils": logging.ERROR,
}


def quiet_harmless_warnings() -> None:
    """Filter the known-harmless warnings and log lines once, for the whole command."""
    import warnings

    for message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name, level in HARMLESS_LOGGERS.items():
        logging.getLogger(name).setLevel(level + 1)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a `PipelineError` is one `error: ...` line and exit status 2."""
    quiet_harmless_warnings()
    quiet_library_bars()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except USER_ERRORS as exc:
        if args.debug or os.environ.get("UNET_PIPELINE_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        full = _tracking_store_full(exc)
        if full is None or args.debug or os.environ.get("UNET_PIPELINE_DEBUG"):
            raise
        print(f"error: {full}", file=sys.stderr)
        return 2
    return 0


def _tracking_store_full(exc: Exception) -> Exception | None:
    """A local tracking store's full disk (sqlite's `disk I/O error`) as one line naming its file."""
    if "mlflow" not in sys.modules:
        return None
    import mlflow

    from pipeline.tracking.store_errors import store_full_error

    return store_full_error(exc, mlflow.get_tracking_uri())


if __name__ == "__main__":
    sys.exit(main())
