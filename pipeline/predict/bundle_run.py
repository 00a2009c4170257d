"""The loop a bundle's `run` expression calls: preprocess, infer, post-process (incl. save), per image.

MONAI's `SupervisedEvaluator` would do the same but needs pytorch-ignite; this keeps the bundle's
components (`preprocessing`, `inferer`, `network_def`, `postprocessing`) standard for MONAI Label
and MONAI Deploy, which read those keys and run their own loops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def infer_all(
    dataset: Iterable[dict[str, Any]],
    network: Callable[..., Any],
    inferer: Callable[..., Any],
    postprocessing: Callable[[dict[str, Any]], Any],
    device: Any = "cpu",
    seg_to: str | None = None,
    bundle_root: str | None = None,
    instances: dict[str, Any] | None = None,
    instances_to: str | None = None,
    explain: str | None = None,
    explain_to: str | None = None,
    uncertainty: bool = False,
    uncertainty_to: str | None = None,
) -> list[Any]:
    """Run `inferer(image[None], network)` on every preprocessed item and post-process it; with
    `seg_to`, also write a DICOM SEG of each mask there (the item's source must be a DICOM series
    folder); with `instances` (the metadata's watershed), also the instance image into
    `instances_to`; with `explain` (a U-Net layer, e.g. `decoders.-1`), Grad-CAM maps into
    `explain_to` (`predict.explain.BundleExplainer`); with `uncertainty`, each mask's entropy map,
    JSON sidecar and QC verdict (printed, `REVIEW` past the export's threshold) into `uncertainty_to`,
    as `predict --uncertainty` writes them. The DICOM, watershed, Grad-CAM and QC parts run here, in
    Python, never inside the network."""
    import torch

    explainer = None
    if explain:
        from pipeline.predict.explain import BundleExplainer

        explainer = BundleExplainer(network, bundle_root or ".", explain)
    results = []
    with torch.no_grad():
        for item in dataset:
            image = item["image"]
            pred = inferer(torch.as_tensor(image)[None].to(device), network)
            item["pred"] = torch.as_tensor(pred)[0].detach().cpu()
            if instances:
                _write_instances(item, postprocessing, instances, Path(instances_to or "."))
            if explainer is not None:
                explainer(item, dataset.transform, Path(explain_to or "."))
            if uncertainty:
                _write_uncertainty(item, postprocessing, inferer, Path(uncertainty_to or "."), Path(bundle_root or "."))
            out = postprocessing(item)
            if seg_to is not None:
                _write_seg(out, Path(seg_to), Path(bundle_root or "."))
            results.append(out)
    return results


def _write_seg(item: dict[str, Any], out_dir: Path, bundle_root: Path) -> Path:
    from pipeline.io import read_image
    from pipeline.predict.metadata import load_metadata_file
    from pipeline.predict.seg_output import write_prediction_seg

    source = Path(str(item["pred"].meta.get("filename_or_obj") or item["image"].meta["filename_or_obj"]))
    meta = load_metadata_file(bundle_root / "configs" / "metadata.json")
    image = read_image(source)  # the source geometry the mask was inverted to
    return write_prediction_seg(
        out_dir / f"{source.name}_seg.dcm", item["pred"], image, source, meta, bundle_root / "models" / "model.ts"
    )


def _source_probabilities(item: dict[str, Any], postprocessing: Any) -> Any:
    """The probabilities on the source grid: the bundle's own post-processing up to its `Invertd`
    (softmax first when the inferer returns logits), on a copy of the prediction."""
    from monai.transforms import Compose, Invertd

    steps = list(postprocessing.transforms)
    upto = next(i for i, t in enumerate(steps) if isinstance(t, Invertd)) + 1
    return Compose(steps[:upto])({**item, "pred": item["pred"].clone()})["pred"]


def _write_uncertainty(
    item: dict[str, Any], postprocessing: Any, inferer: Any, out_dir: Path, bundle_root: Path
) -> Path:
    """The entropy map and sidecar of the mask the bundle writes (`<source>_seg.nii.gz`), with the
    export's temperature and review threshold (`predict.quality`); prints the case's QC line."""
    import numpy as np

    from pipeline.io.suffixes import strip_image_suffix
    from pipeline.predict.metadata import load_metadata_file
    from pipeline.predict.quality import assess, write_uncertainty

    up = load_metadata_file(bundle_root / "configs" / "metadata.json").pipeline
    prob = _source_probabilities(item, postprocessing)
    calibrated, verdict = assess(prob, np.argmax(np.asarray(prob.detach().cpu()), axis=0), up)
    source = Path(str(item["image"].meta["filename_or_obj"]))
    mask_path = out_dir / f"{strip_image_suffix(source.name)}_seg.nii.gz"
    out = write_uncertainty(mask_path, calibrated, prob, inferer.settings, up, verdict)
    print(f"{source.name}: {verdict}", flush=True)
    return out


def _write_instances(item: dict[str, Any], postprocessing: Any, instances: dict[str, Any], out_dir: Path) -> Path:
    """The watershed's instance image, cut from the probabilities on the source grid."""
    from pipeline.inference.instances import WatershedSettings, instances_path, watershed_instances
    from pipeline.io import write_image

    prob = _source_probabilities(item, postprocessing)
    cut = watershed_instances(prob, WatershedSettings.from_dict(instances))
    source = Path(str(item["image"].meta["filename_or_obj"]))
    return write_image(cut[None], prob, instances_path(out_dir / source.name, suffix=".nii.gz"))
