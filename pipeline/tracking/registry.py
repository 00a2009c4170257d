"""Log the exported models to the pipeline's MLflow run and register the ONNX one.

ONNX goes in as an `mlflow.onnx` model (signature with free batch and spatial axes, an input
example) registered under `cfg.tracking.registered_model_name`, one new version per export. The
TorchScript module goes in as an `mlflow.pytorch` model in the 'pickle' format, which for a
ScriptModule is `torch.jit.save` (the 'pt2' default would pin the example's spatial size,
TOOLCHAIN.md); the whole bundle is logged as artifacts. Beside them, a scan-in, mask-out pyfunc
(the predict layer's `PythonModel`, handed in by the caller) is registered under its own name for
`mlflow models serve --env-manager local`. Requirements are passed explicitly (inferring them costs
seconds per call and may guess wrong).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pipeline.config import Config
    from pipeline.model.args import ModelArgs

ONNX_MODEL_NAME = "onnx_model"
TS_MODEL_NAME = "torchscript_model"
SERVED_MODEL_NAME = "scan_model"
BUNDLE_ARTIFACT_PATH = "bundle"


def pip_requirements(*names: str) -> list[str]:
    """Pinned requirements for the installed versions of `names` (the runtime needs only these)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in names:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out


def signature(
    in_channels: int,
    out_channels: int,
    spatial_dims: int,
    input_name: str | None = None,
    output_name: str | None = None,
) -> Any:
    """Tensor signature with -1 (free) batch and spatial axes: the model takes any legal size.

    Named tensors for ONNX (its pyfunc takes {name: array}); unnamed for PyTorch, whose pyfunc
    takes a plain array.
    """
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    free = (-1,) * spatial_dims
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, in_channels, *free), input_name)]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, out_channels, *free), output_name)]),
    )


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for log, _ in saved:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in saved:
            log.setLevel(level)


def served_signature(input_column: str, output_column: str) -> Any:
    """One string column in (a base64 image file or a server path), one out (a base64 mask)."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", input_column)]), outputs=Schema([ColSpec("string", output_column)])
    )


def log_served_model(
    python_model: Any, export_dir: str | Path, registered_model_name: str, extra_requirements: Sequence[str] = ()
) -> Any:
    """Log and register `python_model` with the exported files it reads as one artifact folder.

    Args:
        python_model: an `mlflow.pyfunc.PythonModel` naming what it needs: `artifact` (the folder's
            key), `files` (paths relative to the export), `input_column`, `output_column` and
            `default_config` (its `model_config`), as `pipeline.predict.served.ServedModel` does.
        export_dir: the exported folder.
        registered_model_name: the registered model to add a version to.
        extra_requirements: packages beyond the predictor's ONNX path.

    Returns:
        MLflow's `ModelInfo` (`model_uri`, `registered_model_version`).
    """
    import shutil
    import tempfile

    import mlflow.pyfunc

    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / python_model.artifact
        for rel in python_model.files:
            (staged / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(export_dir) / rel, staged / rel)
        requirements = ("mlflow", "pandas", "numpy", "onnxruntime", "SimpleITK", "nibabel", *extra_requirements)
        # the pickle is an importable class by reference and a small dict (cloudpickle's caution is moot),
        # and an input example would be a whole scan predicted at log time
        with _quiet("mlflow.pyfunc"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
            return mlflow.pyfunc.log_model(
                name=SERVED_MODEL_NAME,
                python_model=python_model,
                artifacts={python_model.artifact: str(staged)},
                signature=served_signature(python_model.input_column, python_model.output_column),
                model_config=dict(python_model.default_config),
                pip_requirements=pip_requirements(*requirements),
                registered_model_name=registered_model_name,
            )


def log_exported_models(
    *,
    onnx_path: str | Path,
    ts_path: str | Path,
    bundle_dir: str | Path,
    example: np.ndarray,
    model_args: ModelArgs,
    registered_model_name: str,
    input_name: str = "image",
    output_name: str = "logits",
    extra_requirements: Sequence[str] = (),
) -> dict[str, Any]:
    """Log both models and the bundle to the *active* MLflow run; register the ONNX model.

    `example` is one normalised input (1, C, *spatial) of a legal size. Returns the model URIs and
    the registered version.
    """
    import mlflow
    import mlflow.onnx
    import onnx

    from pipeline.model.jit import load_torchscript, quiet_jit

    dims = (model_args.in_channels, model_args.out_channels, model_args.spatial_dims)
    sig = signature(*dims, input_name, output_name)
    example = np.ascontiguousarray(example, dtype=np.float32)
    onnx_info = mlflow.onnx.log_model(
        onnx.load(str(onnx_path)),
        name=ONNX_MODEL_NAME,
        signature=sig,
        input_example={input_name: example},
        pip_requirements=pip_requirements("onnx", "onnxruntime", "numpy", *extra_requirements),
        registered_model_name=registered_model_name,
        onnx_execution_providers=["CPUExecutionProvider"],
        save_as_external_data=False,
    )

    import mlflow.pytorch

    # MLflow's pickle caution does not apply (a ScriptModule is saved by torch.jit.save), nor does
    # torch.load's note that it dispatched to torch.jit.load (nor jit's deprecation notice) when MLflow
    # checks the input example
    with _quiet("mlflow.pytorch"), quiet_jit(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive", category=UserWarning)
        ts_info = mlflow.pytorch.log_model(
            load_torchscript(ts_path),
            name=TS_MODEL_NAME,
            serialization_format="pickle",
            signature=signature(*dims),
            input_example=example,
            pip_requirements=pip_requirements("torch", "numpy", *extra_requirements),
        )
    mlflow.log_artifacts(str(bundle_dir), artifact_path=BUNDLE_ARTIFACT_PATH)
    return {
        "onnx_model_uri": onnx_info.model_uri,
        "torchscript_model_uri": ts_info.model_uri,
        "registered_model_name": registered_model_name,
        "registered_model_version": getattr(onnx_info, "registered_model_version", None),
        "run_id": mlflow.active_run().info.run_id,
    }


def log_export(
    cfg: Config,
    out: Path,
    verification: dict[str, Any],
    example: np.ndarray,
    model_args: ModelArgs,
    served_model: Any = None,
) -> dict[str, Any]:
    """Both models and the bundle (the ONNX model registered as a new version), the served pyfunc
    (registered under its own name), the parity report and its worst difference per runtime.

    Args:
        cfg: the pipeline config (tracking URI, registered model names).
        out: the exported folder (model.onnx, model.ts, the bundle).
        verification: the parity report the export recorded in metadata.json.
        example: one legal input (1, C, *spatial), MLflow's input example.
        model_args: the network's arguments (the signature's channels and dimensionality).
        served_model: the scan-in, mask-out `PythonModel` (see `log_served_model`); None logs none.

    Returns:
        Where the models went: URIs, registered names and versions, run id.
    """
    import mlflow

    from pipeline.tracking.runs import active_pipeline_run

    with active_pipeline_run(cfg):
        logged = log_exported_models(
            onnx_path=out / "model.onnx",
            ts_path=out / "model.ts",
            bundle_dir=out,
            example=example,
            model_args=model_args,
            registered_model_name=cfg.tracking.registered_model_name,
            extra_requirements=("monai",),
        )
        if served_model is not None:
            served = log_served_model(served_model, out, cfg.tracking.served_name)
            logged.update(
                served_model_uri=served.model_uri,
                served_model_name=cfg.tracking.served_name,
                served_model_version=getattr(served, "registered_model_version", None),
            )
        report = verification
        mlflow.log_dict(report, "export/verification.json")
        worst: dict[str, float] = {}
        for check in report["checks"]:
            worst[check["runtime"]] = max(worst.get(check["runtime"], 0.0), check["max_abs_diff"])
        mlflow.log_metrics({f"export_max_abs_diff_{k}": v for k, v in worst.items()})
    return logged
