"""The one validated configuration schema, loaded from `params.yaml` or a preset in `configs/`.

Every stage reads its settings from here, so a typo or an impossible value fails once, at load,
with the key, the value and what is allowed -- never half-way through a training run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.errors import ConfigError


def _switch(value: Any) -> Any:
    """One clear message for a bad switch, instead of one per member of the union."""
    if isinstance(value, bool) or value == "auto":
        return value
    raise ValueError(f"expected true, false or auto, got {value!r}")


# on, off, or `auto`: decided per machine where the option is used
Switch = Annotated[bool | Literal["auto"], BeforeValidator(_switch)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Where the raw dataset lives (the DVC-tracked `data/`) and what it is."""

    root: Path = Path("data")
    spatial_dims: Literal[2, 3] = 2
    modality: Literal["ct", "mr", "microscopy", "other"] = "mr"
    in_channels: int = Field(1, ge=1)
    # class names in class-index order; None = take them from data/dataset.json
    labels: list[str] | None = None


class SplitConfig(_Strict):
    """A fixed train/validation split by case id (overrides the K-fold split)."""

    train: list[str]
    val: list[str]


class PreprocessConfig(_Strict):
    output_dir: Path = Path("preprocessed")
    # MONAI axcodes, e.g. RAS (3D) or RA (2D); None keeps the source orientation
    orientation: str | None = None
    # "auto" = the dataset's median spacing (nnU-Net); a list = fixed spacing; None = no resampling
    target_spacing: Literal["auto"] | list[float] | None = None
    normalization: Literal["zscore", "ct", "none"] = "zscore"
    normalize_nonzero: bool = False  # z-score over the foreground (nonzero voxels) only
    ct_window: tuple[float, float] | None = None  # None with `ct` = foreground 0.5-99.5 percentiles
    crop_foreground: bool = False
    border_weights: bool = False  # precompute the U-Net paper's weight map per case
    w0: float = Field(10.0, ge=0)
    sigma: float = Field(5.0, gt=0)
    # the class whose voxels separate objects in the weight map: 0 normally; the membrane class
    # for ISBI-style labels, so that the cells are the objects
    weight_background: int = Field(0, ge=0)
    folds: int = Field(5, ge=2)
    fold: int = Field(0, ge=0)
    split: SplitConfig | None = None
    num_workers: int = Field(2, ge=0)

    @field_validator("orientation")
    @classmethod
    def _axcodes(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.upper()
        pairs = [set("LR"), set("AP"), set("SI")]
        used = [next((i for i, p in enumerate(pairs) if c in p), None) for c in v]
        if None in used or len(set(used)) != len(v) or len(v) not in (2, 3):
            raise ValueError(f"{v!r} is not an orientation code; use 2 or 3 of L/R, A/P, S/I, e.g. 'RAS'")
        return v

    @field_validator("target_spacing")
    @classmethod
    def _spacing(cls, v: Any) -> Any:
        if isinstance(v, list) and any(s <= 0 for s in v):
            raise ValueError(f"spacings must be > 0, got {v}")
        return v

    @model_validator(mode="after")
    def _fold_in_range(self) -> PreprocessConfig:
        if self.fold >= self.folds:
            raise ValueError(f"fold={self.fold} must be < folds={self.folds}")
        return self


class ModelConfig(_Strict):
    features: list[int] = Field(default_factory=lambda: [64, 128, 256, 512, 1024])
    padding: Literal["valid", "same"] = "valid"
    norm: Literal["none", "batch", "instance"] = "none"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    upsample: Literal["transpose", "interpolate"] = "transpose"

    @field_validator("features")
    @classmethod
    def _features(cls, v: list[int]) -> list[int]:
        if len(v) < 2:
            raise ValueError(f"need at least 2 levels (one pooling), got {v}")
        bad = [f for f in v if f <= 0]
        if bad:
            raise ValueError(f"feature counts must be positive integers, got {bad} in {v}")
        return v


class AugmentConfig(_Strict):
    elastic: bool = True
    elastic_sigma: float = Field(10.0, gt=0)  # px/voxels: smoothness of the displacement field
    elastic_magnitude: float = Field(2.0, ge=0)  # displacement magnitude on the coarse grid
    flip: bool = True
    # spatial axes to mirror (0-based); None = every axis. Mirroring an axis the anatomy is not
    # symmetric along (anterior/posterior in RAS) teaches a symmetry the labels do not have.
    flip_axes: list[int] | None = None
    rotate: bool = True
    intensity: bool = True
    prob: float = Field(0.5, ge=0.0, le=1.0)  # `light`: each transform's chance
    # light: the first recipe; nnunet: nnU-Net v2's default augmentation (pipeline.training.recipes)
    recipe: Literal["light", "nnunet"] = "light"


class TrainConfig(_Strict):
    output_dir: Path = Path("checkpoints")
    epochs: int = Field(50, ge=1)
    iterations_per_epoch: int = Field(50, ge=1)
    batch_size: int = Field(2, ge=1)
    # network *output* patch size; in valid mode the input patch is the legal size around it
    patch_size: list[int] = Field(default_factory=lambda: [128, 128])
    pos_fraction: float = Field(0.67, ge=0.0, le=1.0)  # share of patches centred on foreground
    # dice_ce: MONAI Dice + CE; weighted_ce: the paper's border-weighted CE; dice_weighted_ce: Dice +
    # that weighted CE (the last two read preprocess.border_weights' map)
    loss: Literal["dice_ce", "weighted_ce", "dice_weighted_ce"] = "dice_ce"
    # loss on every decoder level, weights halving with depth (nnU-Net); 'same' padding only
    deep_supervision: bool = False
    ignore_label: int | None = None
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.99, ge=0.0, lt=1.0)
    weight_decay: float = Field(1e-5, ge=0)
    scheduler: Literal["poly", "cosine", "none"] = "poly"
    grad_clip: float | None = Field(12.0, gt=0)
    # validate, keep and export an exponential moving average of the weights (batch-norm statistics
    # included) over about 1/(1 - ema_decay) steps instead of the last step's (pipeline.training.ema);
    # None: the last step's weights
    ema_decay: float | None = Field(None, gt=0.0, lt=1.0)
    # speed options of the training step (pipeline.training.speed; measured in benchmarks/README.md):
    # bfloat16 autocast of the forward pass (auto: where the hardware has native bf16), NHWC / NDHWC
    # memory format, torch.compile of the network
    bf16: Switch = "auto"
    channels_last: bool = False
    compile: bool = False
    val_every: int = Field(1, ge=1)
    # DataLoader worker processes (each re-seeded per epoch and worker id); 0 = in the training process
    num_workers: int = Field(0, ge=0)
    # RAM cache of whole preprocessed cases, in GiB; the rest are read patch by patch from
    # memory-mapped arrays. None = 30 % of the memory available at start, split over the node's ranks.
    cache_gb: float | None = Field(None, ge=0)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    # an ensemble: [0] = one model trained on all the training cases; [0..K-1] = K members (dvc.yaml's
    # `foreach`). Evaluate, export and the exported model average their probabilities.
    members: list[int] = Field(default_factory=lambda: [0])
    member: int = Field(0, ge=0)  # the member this process trains (dvc.yaml: -S train.member=<k>)
    # how the members differ. folds: member k validates on fold k of the training cases and trains on
    # the rest. seeds (a deep ensemble): every member trains on all the training cases and validates
    # on the held-out split, with seed + k. On hippocampus 2 / 3 / 4 seeds of 15 minutes score 0.8774 /
    # 0.8788 / 0.8797, one model of 30-60 minutes 0.8771-0.8775 (benchmarks/README.md, "A seed ensemble").
    ensemble: Literal["folds", "seeds"] = "folds"

    @model_validator(mode="after")
    def _members(self) -> TrainConfig:
        if self.members != list(range(len(self.members))):
            raise ValueError(f"train.members={self.members} must be [0, 1, ..., K-1] (K = the number of folds)")
        if self.member not in self.members:
            raise ValueError(f"train.member={self.member} is not one of train.members={self.members}")
        return self

    def member_dir(self, member: int | None = None) -> Path:
        """Where a member's checkpoints, history, overlays and MLflow run reference go."""
        return self.output_dir / f"fold_{self.member if member is None else member}"

    @field_validator("patch_size")
    @classmethod
    def _patch(cls, v: list[int]) -> list[int]:
        if any(p <= 0 for p in v):
            raise ValueError(f"patch sizes must be > 0, got {v}")
        return v

    @property
    def uses_weight_map(self) -> bool:
        """The loss reads the preprocess stage's border weight map."""
        return self.loss in ("weighted_ce", "dice_weighted_ce")


class InferenceConfig(_Strict):
    # valid: output tile size (input tile = legal size around it); same: sliding-window ROI.
    # None = the training patch size.
    tile_size: list[int] | None = None
    # valid padding: one tile over the whole image when the net's estimated forward memory for it
    # (pipeline.model.shapes.forward_bytes_per_voxel) fits in this many MiB -- the fastest layout;
    # larger images fall back to tile_size. 0: always tile_size.
    whole_image_mb: float = Field(2048.0, ge=0.0)
    overlap: float = Field(0.5, ge=0.0, lt=1.0)  # sliding window only
    blend: Literal["gaussian", "constant"] = "gaussian"  # sliding window only
    batch_size: int = Field(4, ge=1)
    tta: bool = False
    keep_largest_component: bool = False
    # run torch nets channels-last (NHWC / NDHWC; auto: on the CPU, where it measured 1.4-1.8x faster)
    channels_last: Switch = "auto"


class WatershedConfig(_Strict):
    """The seeded watershed that cuts cells out of the boundary probability (pipeline.inference.instances).

    The defaults sit mid-plateau of a sweep on ISBI 2012 (benchmarks/README.md), not at its peak.
    """

    threshold: float = Field(0.8, gt=0.0, lt=1.0)  # seeds where p(cell) = 1 - p(boundary) exceeds this
    # px: distance maxima less prominent than this merge into one seed; 0: one seed per connected
    # region of p(cell) > threshold (the challenge's thinning, for nets whose membranes close)
    marker_h: float = Field(4.0, ge=0.0)
    sigma: float = Field(1.0, ge=0.0)  # px: Gaussian smoothing of p(boundary) first


class EvaluateConfig(_Strict):
    predictions_dir: Path = Path("predictions")
    reports_dir: Path = Path("reports")
    # EM: the ISBI challenge's V_Rand / V_Info after thinning (2D), cells = not `boundary_class`
    instance_metrics: bool = False
    boundary_class: str | None = None  # the label that separates instances, e.g. "membrane"
    # instances: an instance label image beside each mask (evaluate, predict, the bundle), scored
    # with the challenge's split / merge scores when instance_metrics is on
    instances: Literal["none", "watershed"] = "none"
    watershed: WatershedConfig = Field(default_factory=WatershedConfig)
    # onnxruntime: export the trained net to a temporary ONNX file, check it against eager as the
    # export stage does, and predict through ONNX Runtime on the CPU; pays for its export only
    # when there are many cases (benchmarks/README.md)
    runtime: Literal["torch", "onnxruntime"] = "torch"


class CodeConfig(_Strict):
    """A coded concept, as DICOM writes it: coding scheme (SCT = SNOMED CT, DCM, ...), code, meaning."""

    scheme: str = "SCT"
    value: str
    meaning: str

    @field_validator("value", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v  # YAML reads an unquoted SNOMED code as a number


class LabelCodes(_Strict):
    """What a label is, for DICOM SEG segments: property category and type, optional modifier."""

    category: CodeConfig
    type: CodeConfig
    modifier: CodeConfig | None = None  # e.g. laterality, or a region such as SCT 255549009 "Anterior"


class TrackingConfig(_Strict):
    experiment: str = "unet-pipeline"
    # None = $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory
    tracking_uri: str | None = None
    registered_model_name: str = "unet-pipeline"
    # a tracking server that does not answer at start: `local` trains and logs to a local store
    # (`unet-pipeline tracking sync` uploads it later); `fail` stops with exit 2 (README, "Tracking outages")
    on_unavailable: Literal["fail", "local"] = "local"
    # the scan-in, mask-out pyfunc for `mlflow models serve`; None = "<registered_model_name>-scan"
    served_model_name: str | None = None

    @property
    def served_name(self) -> str:
        return self.served_model_name or f"{self.registered_model_name}-scan"


class ExportConfig(_Strict):
    output_dir: Path = Path("exported")
    opset: int = Field(18, ge=13)
    tolerance: float = Field(1e-4, gt=0)
    version: str = "0.1.0"


class Config(_Strict):
    name: str = "unnamed"
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    # codes per label name, for DICOM SEG output; a label without codes gets a generic
    # "Tissue" / "Anatomical Structure" pair (and a warning when a SEG is written)
    labels: dict[str, LabelCodes] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _dims_agree(self) -> Config:
        d = self.data.spatial_dims
        checks = {"train.patch_size": self.train.patch_size, "inference.tile_size": self.inference.tile_size}
        if isinstance(self.preprocess.target_spacing, list):
            checks["preprocess.target_spacing"] = self.preprocess.target_spacing
        for key, val in checks.items():
            if val is not None and len(val) != d:
                raise ValueError(f"{key}={val} has {len(val)} entries but data.spatial_dims={d}")
        axes = self.train.augment.flip_axes
        if axes is not None and (not axes or len(set(axes)) != len(axes) or any(not 0 <= a < d for a in axes)):
            raise ValueError(
                f"train.augment.flip_axes={axes} must be distinct axes in 0..{d - 1} (data.spatial_dims={d}); "
                "use flip: false to turn mirroring off"
            )
        if self.evaluate.instance_metrics and (d != 2 or not self.evaluate.boundary_class):
            raise ValueError(
                "evaluate.instance_metrics needs data.spatial_dims: 2 and evaluate.boundary_class (the label that "
                "separates cells, e.g. membrane)"
            )
        if self.evaluate.instances != "none" and not self.evaluate.boundary_class:
            raise ValueError(
                f"evaluate.instances: {self.evaluate.instances} needs evaluate.boundary_class (the label that "
                "separates the instances, e.g. membrane)"
            )
        if self.train.deep_supervision and self.model.padding != "same":
            raise ValueError(
                "train.deep_supervision needs model.padding: same (with valid padding a coarse decoder level "
                "sees past the labelled output tile)"
            )
        if self.preprocess.orientation is not None and len(self.preprocess.orientation) != d:
            raise ValueError(
                f"preprocess.orientation={self.preprocess.orientation!r} has {len(self.preprocess.orientation)} "
                f"letters but data.spatial_dims={d}"
            )
        return self

    @property
    def depth(self) -> int:
        return len(self.model.features) - 1

    def for_member(self) -> Config:
        """The config member `train.member` trains with: in a seed ensemble member k draws with seed + k,
        so the members differ though they see the same cases."""
        if self.train.ensemble == "seeds" and self.train.member:
            return self.model_copy(update={"seed": self.seed + self.train.member})
        return self

    def flat(self) -> dict[str, Any]:
        """Dotted-key view for MLflow params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, obj: Any) -> None:
            if isinstance(obj, dict):
                for k, v in obj.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = obj

        walk("", self.model_dump(mode="json"))
        return out


class _FlowListDumper(yaml.SafeDumper):
    """Block mappings, one-line lists: how the presets in configs/ are written."""


_FlowListDumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


def complete_yaml(cfg: Config) -> str:
    """Every key of the schema with its value, defaults written out.

    `params.yaml` holds this form: DVC can only track a param key that the file spells out, and a
    default that changes in code then shows up as a changed key in `dvc params diff`.
    """
    return yaml.dump(cfg.model_dump(mode="json"), Dumper=_FlowListDumper, sort_keys=False, width=110)


def _describe(err: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if not err["loc"] and err["type"] == "value_error":
        # a cross-field check of Config: its message names the keys; the input would be the whole config
        return str(err["ctx"]["error"]) if "error" in err.get("ctx", {}) else err["msg"]
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key (value {err.get('input')!r}); check the spelling against configs/"
    if err["type"] == "value_error" and "error" in err.get("ctx", {}):
        return f"{key}: {err['ctx']['error']}"  # our validators' messages name the value themselves
    return f"{key}: {err['msg']} (got {err.get('input')!r})"


def parse_config(raw: dict[str, Any], source: str = "<dict>") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        lines = "\n  ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"invalid config {source}:\n  {lines}") from None


def load_config(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Config:
    """Load and validate a YAML config; `overrides` maps dotted keys (train.epochs) to values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, got {type(raw).__name__}")
    return parse_config(apply_overrides(raw, overrides or {}), str(path))


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`raw` (a config as plain data, changed in place) with each dotted key (train.epochs) set."""
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return raw


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """`-S/--set` items as dotted keys, for `load_config`.

    Args:
        items: `["train.epochs=2", ...]`; each value is parsed as YAML (`2` is an int, `[1, 2]` a list).

    Returns:
        `{"train.epochs": 2, ...}`.

    Raises:
        ConfigError: an item without `=` or without a key.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE (e.g. train.epochs=2), got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out
