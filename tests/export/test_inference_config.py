"""The bundle's configs/inference.json (pipeline.export.inference_config) as MONAI's ConfigParser builds it."""

from __future__ import annotations

import json

import numpy as np


def test_bundle_inferer_mirrors_only_the_training_flip_axes(tmp_path) -> None:
    """Settings from a config with train.augment.flip_axes=[0] and TTA on: the bundle's inferer, as
    MONAI's ConfigParser builds it from inference.json, averages over identity + axis-0 flips only."""
    import torch
    from helpers.evaluation import RampNet, ramp_tta
    from helpers.training import make_config
    from monai.bundle import ConfigParser

    from pipeline.export.bundle_scripts import write_bundle_scripts
    from pipeline.export.bundle_verify import bundle_on_path
    from pipeline.export.inference_config import inference_config
    from pipeline.inference import InferenceSettings
    from pipeline.model.args import ModelArgs
    from pipeline.predict.metadata import PipelineSection

    cfg = make_config(
        2,
        "same",
        model={"features": [4, 8]},
        inference={"tta": True, "tile_size": [8, 12]},
        train={"patch_size": [8, 12], "augment": {"flip_axes": [0]}},
    )
    settings = InferenceSettings.from_config(cfg)
    assert settings.tta and settings.tta_axes == (0,)
    assert InferenceSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    section = PipelineSection(
        model_args=ModelArgs(2, 1, 2, (4, 8), "same", "batch", 0.0, "transpose"),
        labels=("background", "object"),
        preprocessing={},
        inference=settings.to_dict(),
        models={},
    )
    write_bundle_scripts(tmp_path)  # the bundle's own copy of the inferer, as `monai.bundle run` finds it
    parser = ConfigParser(inference_config(section))
    assert parser.get("inferer")["_target_"] == "scripts.unet_pipeline.predict.inferer.UNetInferer"
    # RampNet ignores its input and answers a ramp over both axes; its TTA over axis 0 alone has a
    # closed form that differs from the all-axes one
    image = torch.zeros(1, 1, 8, 12, dtype=torch.float64)
    with bundle_on_path(tmp_path):
        got = parser.get_parsed_content("inferer")(image, RampNet())[0, 0].numpy()
    np.testing.assert_allclose(got, ramp_tta((8, 12), [0]), atol=1e-6)
    assert not np.allclose(got, ramp_tta((8, 12), [0, 1]), atol=1e-3)
