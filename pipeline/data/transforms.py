"""The preprocessing chain: a JSON spec -> an invertible MONAI `Compose`.

The spec is the single description of how a raw image becomes a network input. The preprocess
stage builds the chain with `keys=("image", "label")`; the evaluate stage and the exported
predictor build it with `keys=("image",)` on a raw image path and put predictions back on the
source grid with `invert_to_source` (MONAI `Invertd` over the same chain).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from monai.transforms import Compose, MapTransform

from pipeline.errors import InputError

if TYPE_CHECKING:
    from pipeline.config import Config


def preprocessing_spec(cfg: Config, fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-able spec (docs/ARCHITECTURE.md) from the config and the dataset fingerprint."""
    p = cfg.preprocess
    if p.target_spacing == "auto":
        spacing = [float(s) for s in fingerprint["spacing"]["median"]]
    elif p.target_spacing is None:
        spacing = None
    else:
        spacing = [float(s) for s in p.target_spacing]
    norm: dict[str, Any] = {
        "scheme": p.normalization,
        "nonzero": bool(p.normalize_nonzero),
        "clip": None,
        "mean": None,
        "std": None,
    }
    if p.normalization == "ct":
        fg = fingerprint["intensity"][0]["foreground"]
        if fg["mean"] is None:
            raise InputError(
                "normalization 'ct' needs foreground voxels to compute its statistics; the labels hold none"
            )
        lo, hi = p.ct_window if p.ct_window is not None else (fg["p00_5"], fg["p99_5"])
        # nnU-Net's CT scheme: clip to the window, then z-score with the foreground mean / std
        norm.update(clip=[float(lo), float(hi)], mean=float(fg["mean"]), std=float(max(fg["std"], 1e-8)))
    return {
        "orientation": p.orientation,
        "spacing": spacing,
        "crop_foreground": bool(p.crop_foreground),
        "normalization": norm,
    }


class AlignLabelGridd(MapTransform):
    """Give the labels the image's affine (validation already checked they agree within
    tolerance), so orientation and resampling produce exactly the same grid for both."""

    def __init__(self, keys: Sequence[str], image_key: str = "image") -> None:
        super().__init__(keys)
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key].affine = d[self.image_key].affine.clone()
        return d


def preprocessing_transforms(spec: Mapping[str, Any], keys: Sequence[str] = ("image", "label")) -> Compose:
    """Build the chain: load (SimpleITK), channel-first, orientation, spacing (labels nearest),
    optional crop to foreground, intensity normalisation.

    `keys` holds "image" and optionally "label"; the input dict maps them to file paths (a list of
    paths = channels). Images come out float32; labels float32 holding class indices.
    """
    from monai.transforms import (
        CropForegroundd,
        EnsureChannelFirstd,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
    )

    from pipeline.io import SimpleITKReader

    keys = list(keys)
    if "image" not in keys:
        raise InputError(f"preprocessing_transforms needs the 'image' key, got {keys}")
    label_keys = [k for k in keys if k != "image"]
    chain: list[Any] = [
        LoadImaged(keys=keys, reader=SimpleITKReader(), image_only=True),
        EnsureChannelFirstd(keys=keys),
    ]
    if label_keys:
        chain.append(AlignLabelGridd(keys=label_keys))
    if spec.get("orientation"):
        # our affines are always RAS (pipeline.io), so the labels are the RAS ones
        chain.append(Orientationd(keys=keys, axcodes=spec["orientation"], labels=(("L", "R"), ("P", "A"), ("I", "S"))))
    if spec.get("spacing"):
        modes = ["bilinear"] + ["nearest"] * len(label_keys)
        chain.append(Spacingd(keys=keys, pixdim=list(spec["spacing"]), mode=modes))
    if spec.get("crop_foreground"):
        chain.append(CropForegroundd(keys=keys, source_key="image", allow_smaller=True))
    norm = spec.get("normalization") or {"scheme": "none"}
    if norm["scheme"] == "zscore":
        chain.append(NormalizeIntensityd(keys="image", nonzero=bool(norm.get("nonzero")), channel_wise=True))
    elif norm["scheme"] == "ct":
        lo, hi = norm["clip"]
        chain.append(ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=lo, b_max=hi, clip=True))
        chain.append(NormalizeIntensityd(keys="image", subtrahend=norm["mean"], divisor=norm["std"]))
    elif norm["scheme"] != "none":
        raise InputError(f"unknown normalization scheme {norm['scheme']!r}; use zscore, ct or none")
    return Compose(chain)


def invert_to_source(chain: Compose, data: Mapping[str, Any], pred: Any, nearest: bool = True):
    """Put `pred` (`(K, *spatial)` on the preprocessed grid of `data["image"]`) back onto the
    source image's grid: exactly its shape and affine. `nearest` for label maps; False for
    probabilities (linear interpolation).

    A chain with nothing to invert (no orientation, resampling or crop) is a valid identity here;
    MONAI warns about it on every call, so that one warning is silenced."""
    import warnings

    import torch
    from monai.data import MetaTensor
    from monai.transforms import Invertd

    image = data["image"]
    tensor = pred.as_tensor() if isinstance(pred, MetaTensor) else torch.as_tensor(pred)
    meta = {k: v for k, v in image.meta.items() if k != "affine"}
    wrapped = MetaTensor(tensor, affine=image.affine.clone(), meta=meta)
    d = {"image": image, "pred": wrapped}
    inverter = Invertd(keys="pred", transform=chain, orig_keys="image", nearest_interp=nearest, to_tensor=True)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="inverse has been called but no invertible transforms", category=UserWarning
        )
        return inverter(d)["pred"]
