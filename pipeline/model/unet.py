"""Our U-Net: one implementation for 2D and 3D, 'valid' (the paper's) or 'same' padding.

Kept deliberately plain -- ModuleLists, no data-dependent Python in `forward` -- so the same module
scripts, traces and exports to ONNX with dynamic batch and spatial sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pipeline.model.args import ModelArgs
from pipeline.model.norms import InstanceNorm

if TYPE_CHECKING:
    from pipeline.config import ModelConfig

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_DROPOUT = {2: nn.Dropout2d, 3: nn.Dropout3d}
_NORM = {
    "batch": {2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
    "instance": {2: InstanceNorm, 3: InstanceNorm},
}


class DoubleConv(nn.Sequential):
    """Two 3x3(x3) convolutions, each followed by optional normalisation and ReLU."""

    def __init__(self, dims: int, in_ch: int, out_ch: int, padding: str, norm: str | None) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_ch, out_ch):
            layers.append(_CONV[dims](c_in, out_ch, kernel_size=3, padding=1 if padding == "same" else 0))
            if norm is not None:
                layers.append(_NORM[norm][dims](out_ch))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Up(nn.Module):
    """Double the spatial size and halve the channels: 2x2 up-convolution, or interpolation + 1x1 conv."""

    def __init__(self, dims: int, in_ch: int, out_ch: int, mode: str) -> None:
        super().__init__()
        if mode == "transpose":
            self.up: nn.Module = _CONV_T[dims](in_ch, out_ch, kernel_size=2, stride=2)
        elif mode == "interpolate":
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2.0, mode="nearest"), _CONV[dims](in_ch, out_ch, kernel_size=1)
            )
        else:
            raise ValueError(f"upsample must be 'transpose' or 'interpolate', got {mode!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


def center_crop_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Crop x's spatial dims to ref's, centred: the paper's crop before concatenation."""
    for d in range(2, x.dim()):
        x = x.narrow(d, (x.size(d) - ref.size(d)) // 2, ref.size(d))
    return x


class UNet(nn.Module):
    """U-Net of Ronneberger et al. (2015), generalised to 3D (Cicek et al. 2016) and to 'same' padding.

    `features` holds one width per level, top to bottom; depth = len(features) - 1 poolings.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        padding: str = "valid",
        norm: str | None = None,
        dropout: float = 0.0,
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        norm = None if norm in (None, "none") else norm
        if norm is not None and norm not in _NORM:
            raise ValueError(f"norm must be none, batch or instance, got {norm!r}")
        if len(features) < 2 or any(int(f) <= 0 for f in features):
            raise ValueError(f"features needs >= 2 positive widths, got {list(features)}")
        self.spatial_dims = spatial_dims
        self.padding = padding
        self.depth = len(features) - 1
        feats = [int(f) for f in features]

        self.encoders = nn.ModuleList()
        c_in = in_channels
        for f in feats[:-1]:
            self.encoders.append(DoubleConv(spatial_dims, c_in, f, padding, norm))
            c_in = f
        self.pool = _POOL[spatial_dims](kernel_size=2, stride=2)
        self.bottleneck = DoubleConv(spatial_dims, feats[-2], feats[-1], padding, norm)
        # the paper's dropout sits at the end of the contracting path
        self.dropout = _DROPOUT[spatial_dims](dropout) if dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for f_low, f in zip(reversed(feats[1:]), reversed(feats[:-1])):
            self.ups.append(Up(spatial_dims, f_low, f, upsample))
            self.decoders.append(DoubleConv(spatial_dims, 2 * f, f, padding, norm))
        self.head = _CONV[spatial_dims](feats[0], out_channels, kernel_size=1)
        self._init_weights()

    def _init_weights(self) -> None:
        """He initialisation, as the paper recommends for ReLU networks."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder_features(x)[-1])

    def decoder_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each decoder level's output, coarsest first: the last one feeds `head`, the coarser
        ones feed deep supervision's extra heads (`pipeline.training.deep_supervision`)."""
        skips: list[torch.Tensor] = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bottleneck(x))
        levels: list[torch.Tensor] = []
        for i, (up, dec) in enumerate(zip(self.ups, self.decoders)):
            x = up(x)
            skip = skips[len(skips) - 1 - i]
            # 'same' padding has nothing to crop; skipping the no-op `narrow` keeps the sizes symbolic
            # for the ONNX exporter (otherwise data-dependent, which instance norm cannot export)
            if self.padding != "same":
                skip = center_crop_like(skip, x)
            x = dec(torch.cat([skip, x], dim=1))
            levels.append(x)
        return levels


def build_model(model_cfg: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int) -> UNet:
    """The network a config's `model` section describes; `model_args` gives the same arguments for checkpoints."""
    return UNet(**model_args(model_cfg, spatial_dims, in_channels, out_channels))


def model_args(model_cfg: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int) -> dict[str, Any]:
    """`ModelArgs.from_config(...).to_dict()`: the plain form a checkpoint stores."""
    return ModelArgs.from_config(model_cfg, spatial_dims, in_channels, out_channels).to_dict()
