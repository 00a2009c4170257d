"""The bundle's preprocessing: the recorded spec's chain, starting from an image path.

`pipeline.data.preprocessing_transforms(spec, keys=("image",))` is the one chain the preprocess
stage, the evaluate stage and the standalone predictor share. The bundle applies that very chain;
if it does not load images itself, `ReadImaged` (pipeline.io's reader) goes in front, so
`monai.bundle run` reads an image exactly as the predictor does.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.transforms import Compose, LoadImaged, MapTransform


class ReadImaged(MapTransform):
    """Replace each key's path (or list of per-channel paths) by the image read with `pipeline.io`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from pipeline.io import read_image

        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = read_image(d[key])
        return d


def bundle_preprocessing(spec: Mapping[str, Any]) -> Compose:
    """Path in, preprocessed (invertible) image out: the shared chain, with a loader if it lacks one."""
    from pipeline.data.transforms import preprocessing_transforms

    chain = preprocessing_transforms(dict(spec), keys=("image",))
    first = chain.transforms[0] if chain.transforms else None
    if isinstance(first, (LoadImaged, ReadImaged)):
        return chain
    return Compose([ReadImaged(keys="image"), chain])
