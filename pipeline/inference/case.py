"""One case from raw image to mask in the source geometry: the evaluate stage's and the exported
predictor's shared path, so both give the same mask for the same case.

raw image -> the manifest's preprocessing chain (reorient, resample, crop, normalise) -> whole-image
softmax (overlap-tile / sliding window, optional flip TTA) -> the chain inverted on the
*probabilities* (MONAI `Invertd`, linear interpolation, as nnU-Net resamples softmax rather than
labels) -> argmax -> optional largest-component clean-up -> a mask carrying the source image's
affine and shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import InputError
from pipeline.inference.settings import InferenceSettings
from pipeline.inference.tiles import Net
from pipeline.inference.whole_image import keep_largest, predict_probabilities

ImageSource = Any  # a path (file or DICOM folder) or a list of per-channel paths


def _paths(image: ImageSource) -> str | list[str]:
    if isinstance(image, (str, Path)):
        return str(image)
    if isinstance(image, Sequence) and image and all(isinstance(p, (str, Path)) for p in image):
        return [str(p) for p in image] if len(image) > 1 else str(image[0])
    raise TypeError(
        f"predict_case needs an image path, a list of per-channel paths or an image read by pipeline.io.read_image, "
        f"got {type(image).__name__}"
    )


def load_source_image(image: ImageSource) -> Any:
    """The raw image as a MetaTensor (C, *spatial) with its RAS affine, read through `pipeline.io`."""
    from pipeline.io import read_image

    return read_image(_paths(image))


def preprocessing_chain(spec: dict[str, Any], loaded: bool = False) -> Any:
    """The spec's invertible chain for the image alone (`pipeline.data.preprocessing_transforms`).

    `loaded=False`: the chain starts from a path (its `LoadImaged` reads with pipeline.io's
    SimpleITK reader) -- what the MONAI bundle's `inference.json` runs. `loaded=True`: the same chain
    without the loader, for an image already read by `pipeline.io.read_image` (same array, same
    meta), so the evaluate stage and the predictor read each file once.
    """
    from monai.transforms import Compose, LoadImaged

    from pipeline.data.transforms import preprocessing_transforms

    chain = preprocessing_transforms(spec, keys=("image",))
    if not loaded:
        return chain
    return Compose([t for t in chain.transforms if not isinstance(t, LoadImaged)])


def preprocess(image: ImageSource, spec: dict[str, Any]) -> tuple[Any, Any]:
    """(preprocessed MetaTensor carrying its applied operations, the chain that made it).

    `image` is a path, a list of per-channel paths, or a MetaTensor from `pipeline.io.read_image`.
    """
    from monai.data import MetaTensor

    if isinstance(image, MetaTensor):
        transform = preprocessing_chain(spec, loaded=True)
        return transform({"image": image.clone()})["image"], transform
    transform = preprocessing_chain(spec)
    return transform({"image": _paths(image)})["image"], transform


def predict_case(
    image: ImageSource,
    net: Net,
    spec: dict[str, Any],
    settings: InferenceSettings,
    *,
    progress: bool = False,
) -> tuple[Any, Any]:
    """(mask MetaTensor uint8 (1, *source spatial), probabilities MetaTensor float32 (K, *source spatial)).

    `image` is the raw file (or per-channel files), or that image as read by `pipeline.io.read_image`;
    `spec` the manifest's preprocessing spec.
    Both outputs carry the affine the source file was read with, and its shape; the inverted
    geometry is checked against it. `net` is any (B, C, *spatial) -> (B, K, *spatial') callable;
    a torch module must already be in eval mode.
    """
    from monai.data import MetaTensor

    from pipeline.data.transforms import invert_to_source

    x, transform = preprocess(image, spec)
    prob = predict_probabilities(x.as_tensor(), net, settings, progress=progress)
    prob = invert_to_source(transform, {"image": x}, prob.detach().float().cpu(), nearest=False)
    # the geometry pipeline.io recorded when it read the file; the mask is written with it exactly
    source_affine = torch.as_tensor(np.asarray(x.meta["original_affine"]), dtype=torch.float64)
    inverted_affine = torch.as_tensor(prob.affine, dtype=torch.float64)
    src_shape = tuple(int(n) for n in np.asarray(x.meta["spatial_shape"]).reshape(-1))
    if tuple(prob.shape[1:]) != src_shape or not torch.allclose(inverted_affine, source_affine, atol=1e-4):
        raise InputError(
            f"{x.meta.get('filename_or_obj') or 'image'}: inverting the preprocessing gave shape "
            f"{tuple(prob.shape[1:])}, affine "
            f"{inverted_affine.tolist()}; the source image has {src_shape}, {source_affine.tolist()}"
        )
    num_classes = prob.shape[0]
    mask = torch.argmax(prob.as_tensor(), dim=0, keepdim=True).to(torch.uint8)
    if settings.keep_largest:
        mask = torch.as_tensor(keep_largest(mask, num_classes)).to(torch.uint8)
    meta = {k: v for k, v in x.meta.items() if k != "affine"}
    mask = MetaTensor(mask, affine=source_affine.clone(), meta=dict(meta))
    probabilities = MetaTensor(prob.as_tensor(), affine=source_affine.clone(), meta=dict(meta))
    return mask, probabilities
