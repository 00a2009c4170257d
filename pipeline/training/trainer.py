"""The training loop: resumable, deterministic, DDP-aware, tracked in MLflow.

Determinism: every epoch re-seeds torch / numpy / python and the MONAI transforms from
(seed, epoch, rank) before building its loader, so epoch e draws the same patches and
augmentations whether the run got there uninterrupted or was resumed from a checkpoint; the
checkpoint restores model, optimiser, scheduler, history and RNG state. A checkpoint written under a
different config (hash over seed + data + model + train) is not resumed: training starts over.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from pipeline.config import Config
from pipeline.data.manifest import load_manifest
from pipeline.training import checkpoint as ckpt
from pipeline.training import distributed as D
from pipeline.training.data import case_dicts, check_manifest, patch_geometry, train_dataset, train_loader
from pipeline.training.history import write_history
from pipeline.training.losses import build_loss
from pipeline.training.optim import build_optimizer, build_scheduler
from pipeline.training.validation import save_overlays, validate

HISTORY_FILE = "train_history.csv"
OVERLAY_FILE = "val_overlays.png"


@dataclass
class TrainOutcome:
    epochs_done: int
    best_metric: float
    best_epoch: int
    history: list[dict[str, Any]]
    run_id: str | None
    weights_sha256: str = ""  # of the parameters this process ended with (ckpt.weights_digest)


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed per epoch (what makes resume == uninterrupted)."""
    return (seed * 1_000_003 + epoch * 7_919 + 12_345) % (2**31 - 1)


def _say(info: D.DistInfo, msg: str) -> None:
    if info.is_main:
        tqdm.write(msg)


def _resume_state(cfg: Config, last: Path, info: D.DistInfo) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None (absent, or written under another config)."""
    if not last.is_file():
        return None
    state = ckpt.load_checkpoint(last)
    want = ckpt.config_hash(cfg)
    if state.get("config_hash") != want:
        _say(
            info,
            f"{last} was written by a different config (hash {state.get('config_hash')} != {want}): "
            "not resuming, training starts over",
        )
        return None
    return state


def _open_run(cfg: Config, state: dict[str, Any] | None, reports: Path, info: D.DistInfo) -> Any:
    """Rank 0: the MLflow run -- the checkpoint's when resuming, else a new one -- with params and tags."""
    if not info.is_main:
        return None
    from pipeline.tracking import PipelineRun, config_tags, write_run_ref

    tags = config_tags(cfg)
    run = None
    if state is not None and state.get("mlflow_run_id"):
        run = PipelineRun.reopen(cfg, state["mlflow_run_id"])
        if run is None:
            _say(info, f"MLflow run {state['mlflow_run_id']} not found in the tracking store; logging to a new run")
        else:
            _say(info, f"resuming MLflow run {run.run_id}")
    if run is None:
        run = PipelineRun.create(cfg, tags=tags)
    else:
        run.set_tags(tags)
    write_run_ref(reports, run.ref)
    run.log_params(cfg.flat())
    run.log_dict(cfg.model_dump(mode="json"), "config/config.yaml")
    fingerprint = Path(cfg.preprocess.output_dir) / "fingerprint.json"
    if fingerprint.is_file():
        run.log_artifact(fingerprint, "preprocess")
    return run


def train(cfg: Config, max_epochs: int | None = None) -> TrainOutcome:
    """Train per `cfg`; stop after epoch `max_epochs` at the latest (the LR schedule still spans
    cfg.train.epochs, so re-running without the cap continues the same run seamlessly)."""
    info = D.setup()
    try:
        outcome = _train(cfg, max_epochs, info)
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


def _train(cfg: Config, max_epochs: int | None, info: D.DistInfo) -> TrainOutcome:
    from monai.utils import set_determinism

    from pipeline.model import build_model, model_args

    root = Path(cfg.preprocess.output_dir)
    out_dir = Path(cfg.train.output_dir)
    reports = Path(cfg.evaluate.reports_dir)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"

    manifest = load_manifest(root)
    check_manifest(manifest, cfg, root)
    class_names: list[str] = list(manifest["labels"])
    num_classes, in_channels = len(class_names), int(manifest["in_channels"])
    geo = patch_geometry(cfg)
    margs = model_args(cfg.model, cfg.data.spatial_dims, in_channels, num_classes)

    state = _resume_state(cfg, last_path, info)
    D.barrier(info)  # every rank has read last.pt before rank 0 may overwrite it
    start = int(state["epoch"]) if state else 0
    stop = min(cfg.train.epochs, max_epochs) if max_epochs is not None else cfg.train.epochs
    history: list[dict[str, Any]] = list(state["history"]) if state else []
    best_metric = float(state["best_metric"]) if state else -math.inf
    best_epoch = int(state.get("best_epoch", 0)) if state else 0
    if state:
        _say(info, f"resuming from {last_path} after epoch {start}/{cfg.train.epochs}")

    set_determinism(seed=cfg.seed)
    net = build_model(cfg.model, cfg.data.spatial_dims, in_channels, num_classes).to(info.device)
    optimizer = build_optimizer(cfg, net.parameters())
    scheduler = build_scheduler(cfg, optimizer)
    if state:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
    model: torch.nn.Module = net
    if info.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[info.local_rank] if info.device.type == "cuda" else None
        )
    loss_fn = build_loss(cfg, num_classes)
    run = _open_run(cfg, state, reports, info)

    if start >= stop:
        _say(info, f"{last_path} already holds epoch {start}; nothing to train (train.epochs={cfg.train.epochs})")
        if info.is_main:
            write_history(history, class_names, reports / HISTORY_FILE)
            run.finish("FINISHED")
        return TrainOutcome(
            start,
            best_metric,
            best_epoch,
            history,
            run.run_id if run else None,
            ckpt.weights_digest(net.named_parameters()),
        )

    dataset = train_dataset(cfg, manifest, root, info.world_size, D.local_world_size())
    store = dataset.store
    val_cases = case_dicts(manifest, root, "val")
    with_weight = cfg.train.loss == "weighted_ce"
    _say(
        info,
        f"training {cfg.name}: {cfg.data.spatial_dims}D {cfg.model.padding} U-Net {list(cfg.model.features)}, "
        f"input patch {list(geo.input_size)} -> output {list(geo.output_size)}, "
        f"{len(manifest['splits']['train'])} train / {len(val_cases)} val cases, {info.world_size} process(es) on {info.device}; "
        f"{store.cached_cases}/{len(store)} train cases cached in RAM ({store.cached_bytes / 2**20:.0f} MiB), "
        "the rest read patch by patch",
    )

    status = "FAILED"
    try:
        for epoch in range(start + 1, stop + 1):
            seed = epoch_seed(cfg.seed, epoch)
            set_determinism(seed=seed + info.rank)
            loader = train_loader(cfg, dataset, seed, info.rank, info.world_size)
            lr = optimizer.param_groups[0]["lr"]
            model.train()
            t0 = time.perf_counter()
            total, steps, seen = 0.0, 0, 0
            bar = tqdm(
                loader,
                desc=f"epoch {epoch}/{cfg.train.epochs}",
                disable=not info.is_main,
                leave=False,
                dynamic_ncols=True,
            )
            for batch in bar:
                image = batch["image"].to(info.device, non_blocking=True)
                label = batch["label"].to(info.device, non_blocking=True)
                weight = batch["weight"].to(info.device, non_blocking=True) if with_weight else None
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device_type=info.device.type, dtype=torch.bfloat16, enabled=cfg.train.bf16):
                    logits = model(image)
                loss = loss_fn(logits.float(), label, weight)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"epoch {epoch}: training loss became {loss.item()}; lower train.lr or enable grad_clip"
                    )
                loss.backward()
                if cfg.train.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.train.grad_clip)
                optimizer.step()
                scheduler.step()
                total += float(loss.detach())
                steps += 1
                seen += image.shape[0]
                bar.set_postfix(
                    loss=f"{total / steps:.4f}", samples_s=f"{seen * info.world_size / (time.perf_counter() - t0):.1f}"
                )
            bar.close()
            train_loss = D.all_reduce_mean(info, total / max(steps, 1))
            row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "lr": lr}

            do_val = epoch % cfg.train.val_every == 0 or epoch == stop
            result = None
            if do_val and info.is_main:
                result = validate(net, val_cases, cfg, num_classes, info.device)
                row.update(result.metrics(class_names))
            row["epoch_time"] = time.perf_counter() - t0
            history.append(row)

            if info.is_main:
                improved = result is not None and result.dice_mean > best_metric
                if improved:
                    best_metric, best_epoch = result.dice_mean, epoch
                payload = {
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "best_metric": best_metric,
                    "best_epoch": best_epoch,
                    "history": history,
                    "model_args": margs,
                    "config": cfg.model_dump(mode="json"),
                    "config_hash": ckpt.config_hash(cfg),
                    "class_names": class_names,
                    "patch": {"input_size": list(geo.input_size), "output_size": list(geo.output_size)},
                    "rng": ckpt.rng_state(),
                    "mlflow_run_id": run.run_id,
                }
                ckpt.save_checkpoint(payload, last_path)
                if improved:
                    ckpt.save_checkpoint(payload, best_path)
                write_history(history, class_names, reports / HISTORY_FILE)
                run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
                if result is not None and result.examples:
                    overlay = save_overlays(result, reports / OVERLAY_FILE, cfg.data.spatial_dims, num_classes, epoch)
                    run.log_artifact(overlay, "validation")
                val_txt = (
                    f"  val dice {result.dice_mean:.4f} iou {result.iou_mean:.4f} (best {best_metric:.4f} @ {best_epoch})"
                    if result is not None
                    else ""
                )
                _say(
                    info,
                    f"epoch {epoch}/{cfg.train.epochs}  loss {train_loss:.4f}{val_txt}  lr {lr:.3g}  {row['epoch_time']:.1f} s",
                )
            D.barrier(info)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if info.is_main and run is not None:
            if status == "FINISHED":
                run.set_tags({"train_epochs_done": str(stop), "train_complete": str(stop == cfg.train.epochs).lower()})
                if stop == cfg.train.epochs:
                    run.log_artifact(reports / HISTORY_FILE, "train")
            run.finish(status)
    digest = ckpt.weights_digest(net.named_parameters())
    return TrainOutcome(stop, best_metric, best_epoch, history, run.run_id if run else None, digest)
