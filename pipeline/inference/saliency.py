"""Grad-CAM for segmentation: where the evidence for each class's predicted region lies.

Seg-Grad-CAM (Vinogradova et al., 2020): the score of class k is its logit summed over the voxels
the network assigns to k (the argmax of the same forward pass); Grad-CAM (Selvaraju et al., 2017)
weights each channel of a chosen layer's activation by the spatial mean of the score's gradient,
sums them and keeps the positive part. MONAI's `monai.visualize.GradCAM` does the hooks and the
weighting; it is built for classifiers, so `RegionScore` wraps the U-Net into a (B, K)
"classifier" whose output k is that summed logit. The hooks need the eager module: a loaded
TorchScript model is rebuilt first (`pipeline.model.eager.eager_copy`).

Geometry: the preprocessed image (`pipeline.inference.case.preprocess`) is mirror-padded to a
legal input as overlap-tile pads it ('valid': `margin` on the low side), so output voxel i is image
voxel i. A layer `2**level` coarser than the output is scaled up by `2**level` (linear, voxel
centres aligned) and centre-cropped: every operation of the U-Net is symmetric, so all its feature
maps share one centre. The map is scaled to [0, 1] per class and goes back to the source grid with
the preprocessing's own inversion (`explain_case`). An image whose padded input is over the memory
budget is cropped to its predicted foreground (plus the net's receptive margin) after a no-grad
tiled pass. TTA plays no part: the map explains the plain forward pass.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import InputError
from pipeline.inference.settings import InferenceSettings
from pipeline.inference.tiles import mirror_pad
from pipeline.model.shapes import forward_bytes_per_voxel, legal_input_size, margin, output_size

DEFAULT_LAYER = "decoders.-1"  # the last decoder block: the features the output 1x1 convolution reads
EXPLAIN_MB = 2048.0  # memory for one forward and backward pass; larger images are cropped to the foreground
# a pass with gradients keeps every activation: measured peak RSS rise 59 bytes per padded input voxel
# per first-level width (3D 'same' 96^3, f0 16; 'valid' 32), against the no-grad estimate's 14
GRAD_COST = 5


class RegionScore(nn.Module):
    """A segmentation net as a classifier: output (B, K), entry k = class k's logit summed over the
    voxels whose argmax is k (the region is fixed, not differentiated)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        region = F.one_hot(logits.detach().argmax(1), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        return (logits * region).flatten(2).sum(2)


def _choices(unet: nn.Module) -> list[str]:
    """The blocks a layer name may pick: each level of a block list, and the single blocks."""
    names = []
    for name, mod in unet.named_children():
        if isinstance(mod, nn.ModuleList):
            names += [f"{name}.{i}" for i in range(len(mod))]
        elif name != "pool":
            names.append(name)
    return names


def resolve_layer(unet: nn.Module, layer: str) -> str:
    """`layer` (e.g. `decoders.-1`, `decoders.0`, `bottleneck`, `encoders.1`) as the module name in
    `unet`, negative indices resolved. Raises InputError naming the layers there are."""
    mod, parts = unet, []
    for part in layer.split("."):
        if part.lstrip("-").isdigit() and isinstance(mod, (nn.ModuleList, nn.Sequential)):
            idx = int(part)
            if not -len(mod) <= idx < len(mod):
                raise InputError(f"explain layer {layer!r}: index {idx} out of range (0..{len(mod) - 1})")
            mod, part = mod[idx], str(idx % len(mod))
        elif part in dict(mod.named_children()) and part != "pool":  # one pool serves every level
            mod = getattr(mod, part)
        else:
            raise InputError(f"explain layer {layer!r}: no such U-Net module; choose from {', '.join(_choices(unet))}")
        parts.append(part)
    return ".".join(parts)


def layer_level(name: str, depth: int) -> int:
    """How many poolings below full resolution the output of module `name` (resolved) lies."""
    top, _, rest = name.partition(".")
    index = int(rest.split(".")[0]) if rest else 0
    levels = {"encoders": index, "bottleneck": depth, "dropout": depth, "ups": depth - 1 - index}
    return {**levels, "decoders": depth - 1 - index, "head": 0}[top]


def to_output_grid(cam: torch.Tensor, out_size: Sequence[int], level: int) -> torch.Tensor:
    """A layer's map (B, 1, *s) on the net's output grid: scaled by 2**level, centre-cropped (or padded)."""
    if level:
        mode = "bilinear" if cam.dim() == 4 else "trilinear"
        cam = F.interpolate(cam, scale_factor=float(2**level), mode=mode, align_corners=False)
    for axis, n in enumerate(out_size, start=2):
        extra = cam.shape[axis] - int(n)
        if extra > 0:
            cam = cam.narrow(axis, extra // 2, int(n))
        elif extra < 0:
            pad = [0, 0] * (cam.dim() - axis - 1) + [-extra // 2, -extra - (-extra // 2)]
            cam = F.pad(cam, pad)
    return cam


class SegGradCAM:
    """Grad-CAM maps of an eager `UNet` (or `FoldEnsemble`: the members' maps averaged) at one layer.

    One forward and backward pass per class (per class and member for an ensemble, whose output,
    the log of the mean softmax, plays the logit). Built once per network: MONAI's hooks stay on its
    modules, so a second instance on the same net would add a second set. The net's weights stop
    requiring gradients.
    """

    def __init__(self, net: nn.Module, layer: str = DEFAULT_LAYER, budget_mb: float = EXPLAIN_MB) -> None:
        from monai.visualize import GradCAM

        self.net = net.eval()
        members = list(getattr(net, "members", [net]))
        unet = members[0]
        self.depth, self.padding = int(unet.depth), str(unet.padding)
        self.layer = resolve_layer(unet, layer)
        self.level = layer_level(self.layer, self.depth)
        names = [f"net.members.{i}.{self.layer}" for i in range(len(members))] if hasattr(net, "members") else []
        for p in net.parameters():
            p.requires_grad_(False)
        self.cam = GradCAM(RegionScore(net), target_layers=names or [f"net.{self.layer}"])
        self.n_layers = len(names) or 1
        width = [m for m in unet.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))][0].out_channels
        per_voxel = GRAD_COST * forward_bytes_per_voxel([width], unet.spatial_dims)
        self.budget_voxels = int(budget_mb * 2**20 / per_voxel)

    def maps(self, x: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
        """(len(classes), *spatial) float32 maps in [0, 1] for a preprocessed image x (C, *spatial)."""
        size = tuple(int(n) for n in x.shape[1:])
        legal = legal_input_size(size, self.depth, self.padding)
        low = margin(self.depth, self.padding)
        device = next(self.net.parameters()).device
        xin = mirror_pad(
            torch.as_tensor(x, dtype=torch.float32, device=device)[None],
            [low] * len(size),
            [n_in - n - low for n_in, n in zip(legal, size)],
        )
        xin.requires_grad_(True)
        out_size = output_size(legal, self.depth, self.padding)
        inside = (0, 0, *(slice(0, n) for n in size))
        maps = []
        try:
            for k in classes:
                with torch.enable_grad():  # callers may run under no_grad (a bundle's loop does)
                    raw = [
                        self.cam.compute_map(xin, class_idx=int(k), layer_idx=i).detach() for i in range(self.n_layers)
                    ]
                cam = sum(to_output_grid(r, out_size, self.level) for r in raw)[inside].float()
                peak = cam.max()
                maps.append(cam / peak if peak > 0 else cam)
        finally:  # the hooks keep the last activations and gradients: drop them
            self.cam.nn_module.activations.clear()
            self.cam.nn_module.gradients.clear()
        return torch.stack(maps).cpu() if maps else torch.zeros((0, *size))

    def explain(self, x: torch.Tensor, classes: Sequence[int], settings: InferenceSettings) -> torch.Tensor:
        """`maps` on the whole image when its padded input fits the budget, else on the box around
        the predicted foreground (found by a no-grad tiled pass with `settings`), zero elsewhere."""
        size = tuple(int(n) for n in x.shape[1:])
        if math.prod(legal_input_size(size, self.depth, self.padding)) <= self.budget_voxels:
            return self.maps(x, classes)
        from pipeline.inference.whole_image import predict_logits

        fg = predict_logits(torch.as_tensor(x), self.net, settings).argmax(0).cpu() > 0
        out = torch.zeros((len(classes), *size))
        if not fg.any():  # no region, no score: the maps are zero
            return out
        context = margin(self.depth, "valid")
        idx = fg.nonzero()
        box = tuple(
            slice(max(0, int(lo) - context), min(n, int(hi) + 1 + context))
            for lo, hi, n in zip(idx.min(0).values, idx.max(0).values, size)
        )
        cropped = tuple(s.stop - s.start for s in box)
        if math.prod(legal_input_size(cropped, self.depth, self.padding)) > self.budget_voxels:
            warnings.warn(
                f"explain: the foreground box {cropped} is over the {self.budget_voxels}-voxel budget; "
                "computing its map anyway",
                UserWarning,
                stacklevel=2,
            )
        out[(slice(None), *box)] = self.maps(torch.as_tensor(x)[(slice(None), *box)], classes)
        return out


def explain_case(image: Any, explainer: SegGradCAM, spec: dict[str, Any], settings: InferenceSettings) -> Any:
    """Grad-CAM maps of every foreground class (MetaTensor float32 (K-1, *source spatial), in [0, 1])
    on the source grid of `image` (a path or a `pipeline.io.read_image` MetaTensor): preprocessed
    by `pipeline.inference.case`'s chain, as `predict_case` does, and inverted by it."""
    from pipeline.inference.case import preprocess

    x, transform = preprocess(image, spec)
    return explain_preprocessed(x, transform, explainer, settings)


def explain_preprocessed(x: Any, transform: Any, explainer: SegGradCAM, settings: InferenceSettings) -> Any:
    """`explain_case` for an image the chain `transform` already preprocessed (a MetaTensor that
    carries its applied operations, as a bundle's dataset gives it)."""
    import numpy as np
    from monai.data import MetaTensor

    from pipeline.data.transforms import invert_to_source

    num_classes = int(getattr(explainer.net, "members", [explainer.net])[0].head.out_channels)
    maps = explainer.explain(x.as_tensor(), range(1, num_classes), settings)
    maps = invert_to_source(transform, {"image": x}, maps, nearest=False)
    affine = torch.as_tensor(np.asarray(x.meta["original_affine"]), dtype=torch.float64)
    meta = {k: v for k, v in x.meta.items() if k != "affine"}
    return MetaTensor(maps.as_tensor().clamp(0, 1).float(), affine=affine, meta=meta)
