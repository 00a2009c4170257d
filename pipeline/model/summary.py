"""Human-readable sizes of the configured network (`unet-pipeline model-summary`)."""

from __future__ import annotations

from pipeline.config import Config
from pipeline.model.shapes import legal_input_size, margin, output_size
from pipeline.model.unet import build_model


def summary(cfg: Config, out_channels: int | None = None) -> str:
    n_classes = out_channels or len(cfg.data.labels or []) or 2
    net = build_model(cfg.model, cfg.data.spatial_dims, cfg.data.in_channels, n_classes)
    params = sum(p.numel() for p in net.parameters())
    inp = legal_input_size(cfg.train.patch_size, cfg.depth, cfg.model.padding)
    out = output_size(inp, cfg.depth, cfg.model.padding)
    fmt = "x".join
    return "\n".join(
        [
            f"config:         {cfg.name}",
            f"network:        {cfg.data.spatial_dims}D U-Net, features {cfg.model.features}, depth {cfg.depth}, "
            f"padding {cfg.model.padding}, norm {cfg.model.norm}, upsample {cfg.model.upsample}",
            f"channels:       {cfg.data.in_channels} in -> {n_classes} classes",
            f"training patch: input {fmt(map(str, inp))} -> output {fmt(map(str, out))}",
            f"margin:         {margin(cfg.depth, cfg.model.padding)} voxels per side",
            f"parameters:     {params:,}",
        ]
    )
