"""The bundle's `configs/inference.json`: a MONAI bundle config equivalent to the standalone predictor.

It loads an image, applies the recorded preprocessing chain, runs `models/model.ts` with the
pipeline's inferer (whole-image tile, overlap-tile or sliding window, TTA: as `predict`), inverts
to the source grid and writes a NIfTI mask (and, for a DICOM series, a SEG).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.export.bundle_scripts import PACKAGE
from pipeline.predict.metadata import PipelineSection

BUNDLE_TS = "models/model.ts"


def _inferer(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline's own inferer, whatever the padding: the whole-image tile when the image fits
    `inference.whole_image_mb`, else the pipeline's windows, as `predict` and the evaluate stage run
    it. MONAI's `SlidingWindowInferer` tiles every image, so on a trained hippocampus model its masks
    differed from predict's on 0.5 % of the voxels (benchmarks/README.md, "Clinical tools, on a
    trained model")."""
    return {"_target_": f"{PACKAGE}.predict.inferer.UNetInferer", "settings": dict(settings)}


def _postprocessing(keep_largest: bool, num_classes: int) -> list[dict[str, Any]]:
    """As pipeline.inference.case.predict_case: the inferer's probabilities back to the source grid
    (linear interpolation), then argmax, then the optional largest-component clean-up, then the file."""
    post: list[dict[str, Any]] = [
        {
            "_target_": "Invertd",
            "keys": "pred",
            "transform": "@preprocessing",
            "orig_keys": "image",
            "nearest_interp": False,
            "to_tensor": True,
        },
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True, "dtype": "$torch.uint8"},
    ]
    if keep_largest and num_classes > 1:
        post.append(
            {
                "_target_": "KeepLargestConnectedComponentd",
                "keys": "pred",
                "applied_labels": list(range(1, num_classes)),
                "is_onehot": False,
                "independent": True,
            }
        )
    post.append(
        {
            "_target_": "SaveImaged",
            "keys": "pred",
            "output_dir": "@output_dir",
            "output_postfix": "@output_postfix",
            "output_ext": ".nii.gz",
            "output_dtype": "$numpy.uint8",
            "resample": False,
            "separate_folder": False,
            "print_log": False,
        }
    )
    return post


def inference_config(up: PipelineSection) -> dict[str, Any]:
    """A MONAI bundle config (inference.json) equivalent to the standalone predictor.

    Run it with `python -m monai.bundle run --config_file configs/inference.json --meta_file
    configs/metadata.json --bundle_root <bundle> --input_image <image.nii.gz> [--output_dir DIR]`;
    `--input_image <DICOM series folder> --output_format dicom-seg` also writes a DICOM SEG.
    """
    s = up.inference
    inferer = _inferer(s)
    post = _postprocessing(bool(s.get("keep_largest")), len(up.labels))
    return {
        # MONAI binds `import a.b` under the name "a.b", which an expression cannot use: import the names.
        # scripts/ is the bundle's own copy of the pipeline code these need (export.bundle_scripts).
        "imports": [
            "$import numpy",
            "$import torch",
            f"$from {PACKAGE}.inference.case import preprocessing_chain",
            f"$from {PACKAGE}.predict.bundle_run import infer_all",
        ],
        "bundle_root": ".",
        "input_image": "",
        "output_dir": "$@bundle_root + '/eval'",
        "output_postfix": "seg",
        # "dicom-seg": input_image is a DICOM series folder; a SEG referencing it is written beside the NIfTI
        "output_format": "nifti",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": "$torch.jit.load(@bundle_root + '/" + BUNDLE_TS + "', map_location='cpu')",
        "network": "$@network_def.to(@device)",
        "preprocessing_spec": up.preprocessing,
        "preprocessing": "$preprocessing_chain(@preprocessing_spec)",
        "dataset": {"_target_": "Dataset", "data": "$[{'image': @input_image}]", "transform": "@preprocessing"},
        "inferer": inferer,
        "postprocessing": {"_target_": "Compose", "transforms": post},
        # a seeded watershed's instance image beside each mask (null: none), as the predictor writes it
        "instances": up.instances,
        # a U-Net layer (e.g. "decoders.-1", the last decoder block) for Grad-CAM maps beside each mask; null: none
        "explain": None,
        # true: each mask's entropy map, sidecar and QC verdict beside it, as `predict --uncertainty`
        "uncertainty": False,
        "run": [
            "$infer_all(@dataset, @network, @inferer, @postprocessing, @device, "
            "seg_to=(@output_dir if @output_format == 'dicom-seg' else None), bundle_root=@bundle_root, "
            "instances=@instances, instances_to=@output_dir, explain=@explain, explain_to=@output_dir, "
            "uncertainty=@uncertainty, uncertainty_to=@output_dir)"
        ],
    }
