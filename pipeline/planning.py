"""Automatic configuration from the dataset fingerprint, the way nnU-Net's experiment planner works.

`unet-pipeline plan -c base.yaml > params.yaml` (after `preprocess`, which writes
`preprocessed/fingerprint.json`) fills in what depends on the data, so a new dataset trains well
with no hand-written preset:

- **depth**: pool while the bottleneck keeps at least 4 voxels along the median case's shortest
  axis (nnU-Net's minimum feature-map edge), at most 4 poolings (the U-Net paper's depth);
- **patch**: the median case at the target spacing (preprocess.target_spacing: auto is the median
  spacing, so there its shape is the median shape), rounded up to what the depth allows, so that a patch
  sees a whole typical case; in valid padding the output tile whose input fits the budget;
- **batch**: as many patches as fit a per-step budget of network input voxels (`step_voxels`),
  at least 1 and at most what covers 5 % of the training voxels (nnU-Net's cap); patches that
  overflow the budget shrink along their largest axis first;
- **features**: 32 at the top in 2D (the paper's), 16 in 3D (a CPU's share of nnU-Net's 32),
  doubling per level, capped at 512 / 320.

The budget's default, 0.33 M input voxels per step, is the paper's 572 x 572 tile and about the
hand 3D preset's 4 x 40x48x40 (0.31 M voxels, 1.33 s a step on the 2-core EPYC; benchmarks/README.md).
The rest of the config (optimiser, schedule, augmentation, epochs) comes from the base config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.config import Config

STEP_VOXELS = 330_000  # network input voxels per training step (batch x patch)
MIN_BOTTLENECK = 4  # voxels along each axis at the deepest level (nnU-Net)
MAX_DEPTH = 4
BASE_FEATURES = {2: 32, 3: 16}
MAX_FEATURES = {2: 512, 3: 320}
DATASET_SHARE = 0.05  # a batch covers at most this share of the training voxels (nnU-Net)


@dataclass(frozen=True)
class Plan:
    """The data-dependent part of a config, with the reason for each choice."""

    features: list[int]
    patch_size: list[int]
    batch_size: int
    tile_size: list[int]
    reasons: list[str] = field(default_factory=list)

    def overrides(self) -> dict[str, Any]:
        """Dotted config keys -> planned values (what `-S` would take)."""
        return {
            "model.features": self.features,
            "train.patch_size": self.patch_size,
            "train.batch_size": self.batch_size,
            "inference.tile_size": self.tile_size,
        }


def _depth(median: list[float]) -> int:
    return max(1, min(MAX_DEPTH, min(int(math.floor(math.log2(max(m, 1.0) / MIN_BOTTLENECK))) for m in median)))


def _features(dims: int, depth: int) -> list[int]:
    return [min(BASE_FEATURES[dims] * 2**level, MAX_FEATURES[dims]) for level in range(depth + 1)]


def _input_voxels(patch: list[int], depth: int, padding: str) -> int:
    from pipeline.model.shapes import legal_input_size

    return math.prod(legal_input_size(patch, depth, padding))


def plan(
    fingerprint: dict[str, Any],
    padding: str = "same",
    step_voxels: int = STEP_VOXELS,
    target_spacing: list[float] | None = None,
) -> Plan:
    """The plan for a dataset described by `fingerprint` (preprocessed/fingerprint.json), resampled
    to `target_spacing` (None: the median spacing, which is what `auto` gives and no resampling
    keeps for data of one spacing)."""
    dims = int(fingerprint["spatial_dims"])
    spacing = [float(s) for s in fingerprint["spacing"]["median"]]
    target = [float(t) for t in target_spacing] if target_spacing else spacing
    median = [float(n) * s / t for n, s, t in zip(fingerprint["shape"]["median"], spacing, target)]
    depth = _depth(median)
    step = 2**depth
    reasons = [
        f"median case {[round(m, 1) for m in median]} voxels at spacing {target}: depth {depth} keeps the "
        f"bottleneck >= {MIN_BOTTLENECK} voxels on its shortest axis"
    ]
    patch = [int(math.ceil(m / step) * step) for m in median]  # the whole median case
    while _input_voxels(patch, depth, padding) > step_voxels and max(patch) > step:
        ratios = [p / m for p, m in zip(patch, median)]  # shrink the axis most over the median first
        axis = max(range(dims), key=lambda a: (ratios[a] if patch[a] > step else -1.0, patch[a]))
        patch[axis] -= step
    if padding == "valid":  # the whole output of that input: a legal input gives more than asked
        from pipeline.model.shapes import legal_input_size, output_size

        patch = [int(n) for n in output_size(legal_input_size(patch, depth, padding), depth, padding)]
    voxels = _input_voxels(patch, depth, padding)
    train_voxels = float(fingerprint.get("cases_per_split", {}).get("train") or fingerprint["cases"]) * math.prod(
        median
    )
    cap = max(1, int(DATASET_SHARE * train_voxels // voxels))
    batch = max(1, min(step_voxels // voxels, cap))
    covers = "covers the median case" if all(p >= m for p, m in zip(patch, median)) else "is the median case cut"
    reasons.append(
        f"patch {patch} ({padding} padding, input {voxels} voxels) {covers} to the budget of {step_voxels} "
        "input voxels per step"
    )
    reasons.append(
        f"batch {batch}: {step_voxels // voxels} patch(es) fit the budget; 5 % of the training voxels allows {cap}"
    )
    return Plan(_features(dims, depth), patch, batch, list(patch), reasons)


def read_fingerprint(cfg: Config) -> dict[str, Any]:
    """preprocessed/fingerprint.json, which the preprocess stage writes."""
    import json
    from pathlib import Path

    from pipeline.errors import MissingInputError

    path = Path(cfg.preprocess.output_dir) / "fingerprint.json"
    if not path.is_file():
        raise MissingInputError(f"{path} not found: run `unet-pipeline preprocess` with this config first")
    return json.loads(path.read_text())


def planned_config(
    cfg: Config, fingerprint: dict[str, Any], step_voxels: int = STEP_VOXELS, then: dict[str, Any] | None = None
) -> tuple[Any, Plan]:
    """`cfg` with the plan applied, then the dotted overrides `then` (validated again), and the plan."""
    from pipeline.config import apply_overrides, parse_config

    target = cfg.preprocess.target_spacing if isinstance(cfg.preprocess.target_spacing, list) else None
    p = plan(fingerprint, cfg.model.padding, step_voxels, target)
    keys = {**p.overrides(), **(then or {})}
    return parse_config(apply_overrides(cfg.model_dump(mode="json"), keys), "<plan>"), p
