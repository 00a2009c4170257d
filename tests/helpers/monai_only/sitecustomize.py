"""Makes this interpreter a MONAI-only environment: with this folder on PYTHONPATH, importing this
project or any package outside the set an exported bundle may rely on (README, "Clinical tools")
fails as if it were not installed. Used to run exported bundles the way a hospital's MONAI install
would."""

import importlib.abc
import sys

ABSENT = {"pipeline", "unet_pipeline", "pydantic", "mlflow", "onnx", "onnxruntime", "onnxscript", "dvc", "pandas"}


class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, ANN201
        if fullname.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {fullname!r} (a MONAI-only environment)", name=fullname)
        return None


sys.meta_path.insert(0, _Absent())
