"""`ModelArgs`: what builds a U-Net, as checkpoints and exported metadata record it.

Torch-free, so the light ONNX predictor can read an export's model arguments without importing
torch. Checkpoints and metadata.json hold the plain dict (`to_dict`); code passes the typed form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol


class _ModelSection(Protocol):
    """The config's `model` section, as far as the network needs it."""

    features: Any
    padding: str
    norm: str
    dropout: float
    upsample: str


@dataclass(frozen=True)
class ModelArgs:
    """The U-Net's constructor arguments; `depth` is the number of poolings."""

    spatial_dims: int
    in_channels: int
    out_channels: int
    features: tuple[int, ...]
    padding: str
    norm: str
    dropout: float
    upsample: str

    @property
    def depth(self) -> int:
        return len(self.features) - 1

    @classmethod
    def from_config(cls, model_cfg: _ModelSection, spatial_dims: int, in_channels: int, out_channels: int) -> ModelArgs:
        """The arguments a config's `model` section gives for this data.

        Args:
            model_cfg: `cfg.model`.
            spatial_dims: 2 or 3.
            in_channels: image channels.
            out_channels: classes, background included.
        """
        return cls(
            spatial_dims=int(spatial_dims),
            in_channels=int(in_channels),
            out_channels=int(out_channels),
            features=tuple(int(f) for f in model_cfg.features),
            padding=str(model_cfg.padding),
            norm=str(model_cfg.norm),
            dropout=float(model_cfg.dropout),
            upsample=str(model_cfg.upsample),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelArgs:
        """From a checkpoint's or metadata.json's `model_args`.

        Raises:
            KeyError: a field is missing (the caller names the file).
        """
        kw = {f.name: data[f.name] for f in fields(cls)}
        kw["features"] = tuple(int(f) for f in kw["features"])
        for name in ("spatial_dims", "in_channels", "out_channels"):
            kw[name] = int(kw[name])
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """The plain form checkpoints (loaded `weights_only`) and metadata.json hold."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["features"] = list(self.features)
        return out
