"""What runs an exported model: the standalone predictor, batch prediction, the runtimes.

Needs only the exported folder. `Predictor` loads a model once (metadata checked against the file's
SHA-256) and segments images through `pipeline.inference.case.predict_case`, or through the
torch-free `onnx_light` path where that gives the same mask; `served.ServedModel` puts it behind
MLflow's pyfunc interface (`mlflow models serve`). `pipeline.export` (which writes the models) sits
one layer above and verifies its files with `runtime`.
"""

from pipeline._lazy import lazy_getattr

_EXPORTS = {
    "OnnxNet": "pipeline.predict.runtime",
    "PredictError": "pipeline.predict.predictor",
    "Predictor": "pipeline.predict.predictor",
    "ServedModel": "pipeline.predict.served",
    "TorchScriptNet": "pipeline.predict.runtime",
    "UNetInferer": "pipeline.predict.inferer",
    "load_net": "pipeline.predict.runtime",
    "predict_file": "pipeline.predict.predictor",
    "predict_folder": "pipeline.predict.batch",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
