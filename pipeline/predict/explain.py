"""`predict --explain`: a Grad-CAM map per foreground class beside each mask.

Grad-CAM takes gradients, so it runs the TorchScript model of the exported folder (`model.ts`, or
the bundle's `models/model.ts`), whatever runtime segments the case: ONNX Runtime gives none. MONAI's
hooks refuse a `ScriptModule`, so the scripted weights go into our eager `UNet`, built from the
metadata's `model_args` (`pipeline.model.eager.eager_copy`). The maps and files are
`pipeline.inference.saliency` and `pipeline.inference.saliency_files`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.predict.errors import PredictError
from pipeline.predict.metadata import read_metadata

TORCHSCRIPT_CANDIDATES = ("model.ts", "models/model.ts")


def torchscript_for(model_path: str | Path) -> Path:
    """The TorchScript file of the export `model_path` (a model file or the exported folder) belongs
    to: itself, or `model.ts` / `models/model.ts` there. Raises PredictError for an ONNX-only model."""
    model_path = Path(model_path)
    if model_path.suffix in (".ts", ".pt", ".pth"):
        return model_path
    folder = model_path if model_path.is_dir() else model_path.parent
    for rel in TORCHSCRIPT_CANDIDATES:
        if (folder / rel).is_file():
            return folder / rel
    raise PredictError(
        f"{model_path}: --explain needs the TorchScript model of the exported folder (model.ts): Grad-CAM "
        "takes gradients, which ONNX Runtime does not give; pass the exported folder or its model.ts"
    )


class Explainer:
    """The eager network of an export with its Grad-CAM hooks, built once for many cases."""

    def __init__(self, model_path: str | Path, settings: Any, device: str = "cpu", layer: str | None = None) -> None:
        from pipeline.inference.saliency import DEFAULT_LAYER, SegGradCAM
        from pipeline.model.eager import eager_copy
        from pipeline.model.jit import load_torchscript

        self.path = torchscript_for(model_path)
        self.meta, _ = read_metadata(self.path)  # the SHA-256 check, as for the segmenting model
        try:
            net = eager_copy(load_torchscript(self.path, device), self.meta.pipeline.model_args)
        except RuntimeError as exc:  # weights that do not fit the recorded model_args
            raise PredictError(f"{self.path}: cannot rebuild the network for --explain: {exc}") from None
        self.settings = settings
        self.cam = SegGradCAM(net, layer or DEFAULT_LAYER)

    def __call__(self, image: Any, image_path: str | Path, series_uid: str | None, mask_path: str | Path) -> list[Path]:
        """Write the maps of one case beside `mask_path`; `image` is the case as the predictor read it
        (read again through `pipeline.io` when the light path read it without MONAI)."""
        from monai.data import MetaTensor

        from pipeline.inference.saliency import explain_case
        from pipeline.inference.saliency_files import write_explanations
        from pipeline.io import read_image

        if not isinstance(image, MetaTensor):
            image = read_image(image_path, series_uid)
        up = self.meta.pipeline
        maps = explain_case(image, self.cam, up.preprocessing, self.settings)
        return write_explanations(maps, image, mask_path, up.labels)


class BundleExplainer:
    """The MONAI bundle's `explain` (`predict.bundle_run.infer_all`): the maps of each item its
    dataset preprocessed, with the bundle's own TorchScript network rebuilt eager."""

    def __init__(self, network: Any, bundle_root: str | Path, layer: str) -> None:
        from pipeline.inference.saliency import SegGradCAM
        from pipeline.inference.settings import InferenceSettings
        from pipeline.model.eager import eager_copy
        from pipeline.predict.metadata import load_metadata_file

        self.meta = load_metadata_file(Path(bundle_root) / "configs" / "metadata.json")
        self.settings = InferenceSettings.from_dict(self.meta.pipeline.inference)
        self.cam = SegGradCAM(eager_copy(network, self.meta.pipeline.model_args), layer)

    def __call__(self, item: dict[str, Any], transform: Any, out_dir: Path) -> list[Path]:
        """Write `<case>_explain_<label>` files of one dataset item into `out_dir`."""
        from pipeline.inference.saliency import explain_preprocessed
        from pipeline.inference.saliency_files import write_explanations
        from pipeline.io import read_image

        source = Path(str(item["image"].meta["filename_or_obj"]))
        maps = explain_preprocessed(item["image"], transform, self.cam, self.settings)
        return write_explanations(maps, read_image(source), out_dir / source.name, self.meta.pipeline.labels)
