"""The training loop: resumable, deterministic, DDP-aware, tracked in MLflow.

Determinism: every epoch re-seeds torch / numpy / python and the MONAI transforms from
(seed, epoch, rank) before building its loader, so epoch e draws the same patches and
augmentations whether the run got there uninterrupted or was resumed from a checkpoint; the
checkpoint restores model, optimiser, scheduler, history and RNG state. A checkpoint written under a
different config, by other code or on another preprocessed dataset (`checkpoint.resume_key`) is not
resumed: training starts over.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from pipeline.config import Config
from pipeline.data.manifest import Manifest, load_manifest
from pipeline.errors import PipelineError
from pipeline.io.digests import weights_digest
from pipeline.model.layout import memory_format
from pipeline.progress import progress
from pipeline.training import checkpoint as ckpt
from pipeline.training import distributed as D
from pipeline.training.config_notes import batch_norm_note
from pipeline.training.data import patch_geometry, train_dataset, train_loader
from pipeline.training.history import write_history
from pipeline.training.losses import build_loss
from pipeline.training.optim import build_optimizer, build_scheduler
from pipeline.training.speed import speed_summary, step_autocast, use_bf16
from pipeline.training.validation import ValidationResult, save_overlays, validate

if TYPE_CHECKING:
    from torch.optim.swa_utils import AveragedModel

    from pipeline.tracking.training_run import TrainingTracker

HISTORY_FILE = "train_history.csv"
OVERLAY_FILE = "val_overlays.png"


class TrainingDiverged(PipelineError, FloatingPointError):
    """The loss became NaN or infinite: the settings, not the code, need changing."""


@dataclass
class TrainOutcome:
    epochs_done: int
    best_metric: float
    best_epoch: int
    history: list[dict[str, Any]]
    run_id: str | None
    weights_sha256: str = ""  # of the parameters this process ended with (pipeline.io.digests)


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed per epoch (what makes resume == uninterrupted)."""
    return (seed * 1_000_003 + epoch * 7_919 + 12_345) % (2**31 - 1)


def _say(info: D.DistInfo, msg: str) -> None:
    if info.is_main:
        tqdm.write(msg)


def _resume_state(last: Path, want: str, info: D.DistInfo) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None (absent, or written under another resume key: another
    config, code or data)."""
    if not last.is_file():
        return None
    state = ckpt.load_for_resume(last)  # best.pt too: either one damaged is one error naming it
    if state.get("resume_key") != want:
        _say(
            info,
            f"{last} was written by a different config, code or preprocessed dataset "
            f"(key {state.get('resume_key')} != {want}): not resuming, training starts over",
        )
        return None
    return state


def train(cfg: Config, max_epochs: int | None = None) -> TrainOutcome:
    """Train per `cfg`; stop after epoch `max_epochs` at the latest (the LR schedule still spans
    cfg.train.epochs, so re-running without the cap continues the same run seamlessly)."""
    info = D.setup()
    try:
        outcome = _train(cfg.for_member(), max_epochs, info)
        if info.distributed:  # every rank says it got through (the one line a non-zero rank prints)
            print(
                f"rank {info.rank}/{info.world_size}: finished at epoch {outcome.epochs_done}, "
                f"weights sha256 {outcome.weights_sha256}",
                file=sys.stderr,
                flush=True,
            )
        return outcome
    finally:
        D.teardown(info)


@dataclass
class _Run:
    """What one training run carries from epoch to epoch."""

    cfg: Config
    info: D.DistInfo
    manifest: Manifest
    net: torch.nn.Module
    trained: torch.nn.Module  # the net, or the net with deep supervision's extra heads
    model: torch.nn.Module  # `trained`, or `trained` inside DistributedDataParallel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: Any
    model_args: dict[str, Any]
    resume_key: str  # computed once: config, code and data do not change during a run
    tracker: TrainingTracker | None  # the MLflow run (rank 0), else None
    ema: AveragedModel | None = None  # the weights' moving average (train.ema_decay), else None
    start: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float = -math.inf
    best_epoch: int = 0

    @property
    def class_names(self) -> list[str]:
        return self.manifest.labels

    @property
    def heads(self) -> torch.nn.Module | None:
        """Deep supervision's extra heads (saved beside the net), or None without deep supervision."""
        return self.trained.heads if self.trained is not self.net else None

    @property
    def validated(self) -> torch.nn.Module:
        """The weights validation scores, best.pt keeps and export ships: the average, or the net."""
        return self.ema.module if self.ema is not None else self.net

    @property
    def reports(self) -> Path:
        """The member's folder: its history, overlays and MLflow run reference sit by its checkpoints."""
        return self.cfg.train.member_dir()

    def outcome(self, epochs_done: int) -> TrainOutcome:
        run_id = self.tracker.run_id if self.tracker else None
        digest = weights_digest(self.net.named_parameters())
        return TrainOutcome(epochs_done, self.best_metric, self.best_epoch, self.history, run_id, digest)


def _build(cfg: Config, info: D.DistInfo) -> _Run:
    """Network, optimiser, schedule and loss, resumed from last.pt when it was written by this config."""
    from monai.utils import set_determinism

    from pipeline.model import build_model, model_args

    manifest = load_manifest(cfg.preprocess.output_dir)
    manifest.check_trainable(cfg)
    if cfg.train.ensemble == "folds":  # a seed ensemble's members train and validate on the config's split
        manifest = manifest.for_member(len(cfg.train.members), cfg.train.member, cfg.seed)
    num_classes, in_channels = len(manifest.labels), int(manifest["in_channels"])
    last = cfg.train.member_dir() / "last.pt"
    key = ckpt.resume_key(cfg)
    state = _resume_state(last, key, info)
    D.barrier(info)  # every rank has read last.pt before rank 0 may overwrite it
    set_determinism(seed=cfg.seed)
    fmt = memory_format(cfg.data.spatial_dims, cfg.train.channels_last)
    net = build_model(cfg.model, cfg.data.spatial_dims, in_channels, num_classes).to(info.device, memory_format=fmt)
    trained: torch.nn.Module = net
    if cfg.train.deep_supervision:
        from pipeline.training.deep_supervision import DeepSupervisedNet

        trained = DeepSupervisedNet(net).to(info.device)
    optimizer = build_optimizer(cfg, trained.parameters())
    scheduler = build_scheduler(cfg, optimizer)
    model: torch.nn.Module = trained
    if info.distributed:
        ids = [info.local_rank] if info.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(trained, device_ids=ids)
    if cfg.train.compile:
        model = torch.compile(model)
    margs = model_args(cfg.model, cfg.data.spatial_dims, in_channels, num_classes)
    loss = build_loss(cfg, num_classes)
    run = _Run(cfg, info, manifest, net, trained, model, optimizer, scheduler, loss, margs, key, None)
    if cfg.train.ema_decay is not None:
        from pipeline.training.ema import build_ema

        run.ema = build_ema(net, cfg.train.ema_decay)
    if state:
        _say(info, f"resuming from {last} after epoch {state['epoch']}/{cfg.train.epochs}")
        run.start, run.history, run.best_metric, run.best_epoch = ckpt.restore(
            state, net, run.heads, optimizer, scheduler, run.ema
        )
    if info.is_main:
        from pipeline.tracking.training_run import TrainingTracker

        resume_run_id = state.get("mlflow_run_id") if state is not None else None
        run.tracker = TrainingTracker.open(cfg, run.reports, resume_run_id, partial(_say, info))
    return run


def _train_epoch(r: _Run, loader: Any, epoch: int) -> float:
    """One pass over the loader; returns the mean training loss over all ranks."""
    cfg, info = r.cfg, r.info
    with_weight = cfg.train.uses_weight_map
    fmt = memory_format(cfg.data.spatial_dims, cfg.train.channels_last)
    bf16 = use_bf16(cfg.train.bf16, info.device)
    r.model.train()
    t0 = time.perf_counter()
    total, steps, seen = 0.0, 0, 0
    bar = progress(loader, show=info.is_main, desc=f"epoch {epoch}/{cfg.train.epochs}", leave=False)
    for batch in bar:
        image = batch["image"].to(info.device, non_blocking=True).contiguous(memory_format=fmt)
        label = batch["label"].to(info.device, non_blocking=True)
        weight = batch["weight"].to(info.device, non_blocking=True) if with_weight else None
        r.optimizer.zero_grad(set_to_none=True)
        with step_autocast(info.device, bf16):
            logits = r.model(image)
        loss = r.loss_fn(logits, label, weight)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"epoch {epoch}: training loss became {loss.item()}; lower train.lr or enable grad_clip"
            )
        loss.backward()
        if cfg.train.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(r.trained.parameters(), cfg.train.grad_clip)
        r.optimizer.step()
        r.scheduler.step()
        if r.ema is not None:
            r.ema.update_parameters(r.net)
        total, steps, seen = total + float(loss.detach()), steps + 1, seen + image.shape[0]
        rate = seen * info.world_size / (time.perf_counter() - t0)
        bar.set_postfix(loss=f"{total / steps:.4f}", samples_s=f"{rate:.1f}")
    bar.close()
    return D.all_reduce_mean(info, total / max(steps, 1))


def _payload(r: _Run, epoch: int) -> dict[str, Any]:
    """The checkpoint of this run after `epoch` (`checkpoint.checkpoint_payload`)."""
    return ckpt.checkpoint_payload(
        r.cfg,
        net=r.net,
        heads=r.heads,
        optimizer=r.optimizer,
        scheduler=r.scheduler,
        epoch=epoch,
        best_metric=r.best_metric,
        best_epoch=r.best_epoch,
        history=r.history,
        model_args=r.model_args,
        key=r.resume_key,
        class_names=r.class_names,
        geometry=patch_geometry(r.cfg),
        mlflow_run_id=r.tracker.run_id if r.tracker is not None else None,
        ema=r.ema,
    )


def _record_epoch(r: _Run, row: dict[str, Any], result: ValidationResult | None) -> None:
    """Rank 0: checkpoints (best.pt when validation improved), history CSV, MLflow, overlays, one line."""
    epoch, out_dir = row["epoch"], r.cfg.train.member_dir()
    improved = result is not None and result.dice_mean > r.best_metric
    if improved:
        r.best_metric, r.best_epoch = result.dice_mean, epoch
    payload = _payload(r, epoch)
    if improved:  # best.pt first: a kill between the two leaves last.pt behind, so this epoch reruns
        ckpt.save_checkpoint(payload, out_dir / "best.pt")
    ckpt.save_checkpoint(payload, out_dir / "last.pt")
    write_history(r.history, r.class_names, r.reports / HISTORY_FILE)
    overlay = None
    if result is not None and result.examples:
        overlay = save_overlays(result, r.reports / OVERLAY_FILE, r.cfg.data.spatial_dims, epoch)
    if r.tracker is not None:
        r.tracker.log_epoch(epoch, row, overlay)
    val_txt = ""
    if result is not None:
        best = f"(best {r.best_metric:.4f} @ {r.best_epoch})"
        val_txt = f"  val dice {result.dice_mean:.4f} iou {result.iou_mean:.4f} {best}"
    loss, lr, secs = row["train_loss"], row["lr"], row["epoch_time"]
    _say(r.info, f"epoch {epoch}/{r.cfg.train.epochs}  loss {loss:.4f}{val_txt}  lr {lr:.3g}  {secs:.1f} s")


def _finish(r: _Run, status: str, stop: int) -> None:
    """Rank 0: close the MLflow run, tagging how far training got."""
    if r.tracker is not None:  # None on the other ranks
        r.tracker.finish(status, stop, stop == r.cfg.train.epochs, r.reports / HISTORY_FILE)


def _train(cfg: Config, max_epochs: int | None, info: D.DistInfo) -> TrainOutcome:
    from monai.utils import set_determinism

    r = _build(cfg, info)
    stop = min(cfg.train.epochs, max_epochs) if max_epochs is not None else cfg.train.epochs
    if r.start >= stop:
        _say(info, f"{cfg.train.member_dir()}/last.pt already holds epoch {r.start}; nothing to train")
        if info.is_main:  # rewrite what the stage outputs besides checkpoints/ (DVC removed them)
            write_history(r.history, r.class_names, r.reports / HISTORY_FILE)
            result = validate(r.validated, r.manifest, r.manifest.split("val"), cfg, info.device)
            save_overlays(result, r.reports / OVERLAY_FILE, cfg.data.spatial_dims, r.start)
        _finish(r, "FINISHED", r.start)
        return r.outcome(r.start)
    dataset = train_dataset(cfg, r.manifest, info.world_size, D.local_world_size())
    val_ids = r.manifest.split("val")
    _say(info, _describe(cfg, r.manifest, dataset.store, len(val_ids), info))
    if note := batch_norm_note(cfg):
        _say(info, note)
    status = "FAILED"
    try:
        for epoch in range(r.start + 1, stop + 1):
            t0, seed = time.perf_counter(), epoch_seed(cfg.seed, epoch)
            set_determinism(seed=seed + info.rank)
            lr = r.optimizer.param_groups[0]["lr"]
            train_loss = _train_epoch(r, train_loader(cfg, dataset, seed, info.rank, info.world_size), epoch)
            row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "lr": lr}
            result = None
            if info.is_main and (epoch % cfg.train.val_every == 0 or epoch == stop):
                result = validate(r.validated, r.manifest, val_ids, cfg, info.device)
                row.update(result.metrics(r.class_names))
            row["epoch_time"] = time.perf_counter() - t0
            r.history.append(row)
            if info.is_main:
                _record_epoch(r, row, result)
            D.barrier(info)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        _finish(r, status, stop)
    return r.outcome(stop)


def _describe(cfg: Config, manifest: Manifest, store: Any, n_val: int, info: D.DistInfo) -> str:
    """The one line that says what is about to be trained, on what and where."""
    geo = patch_geometry(cfg)
    return (
        f"training {cfg.name}: {cfg.data.spatial_dims}D {cfg.model.padding} U-Net {list(cfg.model.features)}, "
        f"input patch {list(geo.input_size)} -> output {list(geo.output_size)}, "
        f"{len(store)} train / {n_val} val cases, {info.world_size} process(es) on {info.device}"
        f"{speed_summary(cfg.train, info.device)}; {store.cached_cases}/{len(store)} train cases cached in RAM "
        f"({store.cached_bytes / 2**20:.0f} MiB), "
        "the rest read patch by patch"
    )
