"""Checkpoints: atomic saves, weights_only loads, and the config hash that decides resumption.

A checkpoint holds only tensors and plain Python values (RNG states are converted), so
`torch.load(..., weights_only=True)` -- which refuses arbitrary pickles -- reads it.

A checkpoint that does not load (truncated, corrupt, or holding a pickled object) is a
`CheckpointError`: one line naming the file, what is wrong and what to do, by which file it is
(`last.pt`: resume from an intact best.pt or train from scratch; `best.pt`: take an intact last.pt
of the same epoch or train from scratch). Resuming checks both files, so a damaged best.pt is
found before the training continues, not only at evaluate.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from pipeline.config import Config
from pipeline.errors import InputError, MissingInputError

if TYPE_CHECKING:
    from torch.optim.swa_utils import AveragedModel

    from pipeline.training.data import PatchGeometry


class CheckpointError(InputError):
    """A checkpoint file that does not load: truncated, corrupt, or holding more than tensors and plain values."""


# settings that do not change the numbers a training produces; editing them keeps a checkpoint resumable
_NEUTRAL_TRAIN_KEYS = ("output_dir", "num_workers", "val_every", "cache_gb")


def config_hash(cfg: Config) -> str:
    """SHA-256 over what determines the trained weights: seed, data, model and train sections."""
    dump = cfg.model_dump(mode="json")
    train = {k: v for k, v in dump["train"].items() if k not in _NEUTRAL_TRAIN_KEYS}
    key = {"seed": dump["seed"], "data": dump["data"], "model": dump["model"], "train": train}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def resume_key(cfg: Config) -> str:
    """What a checkpoint must have been written under to be resumed: the config (`config_hash`), the
    package's code and the preprocessed dataset's manifest and fingerprint. `dvc repro` reruns the
    train stage when any of them changes, and a checkpoint from before the change must not pass for
    the new result (`checkpoints/` persists between runs so that a killed run can resume)."""
    import pipeline

    h = hashlib.sha256(config_hash(cfg).encode())
    package = Path(pipeline.__file__).parent
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode())
        h.update(path.read_bytes())
    for name in ("manifest.json", "fingerprint.json"):
        path = Path(cfg.preprocess.output_dir) / name
        h.update(path.read_bytes() if path.is_file() else b"")
    return h.hexdigest()[:16]


def rng_state() -> dict[str, Any]:
    """torch / numpy / python RNG states as tensors and lists (weights_only-loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back the RNG states `rng_state` captured, so a resumed training draws what it would have."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Progress(NamedTuple):
    """How far a checkpointed training got: its last epoch, history and best validation score."""

    epoch: int
    history: list[dict[str, Any]]
    best_metric: float
    best_epoch: int


def checkpoint_payload(
    cfg: Config,
    *,
    net: torch.nn.Module,
    heads: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    best_metric: float,
    best_epoch: int,
    history: list[dict[str, Any]],
    model_args: dict[str, Any],
    key: str,
    class_names: Sequence[str],
    geometry: PatchGeometry,
    mlflow_run_id: str | None,
    ema: AveragedModel | None = None,
) -> dict[str, Any]:
    """The checkpoint: everything resuming needs (`restore`), plus what evaluate and export read.

    Args:
        cfg: the training's config, stored whole.
        net: the U-Net being trained.
        heads: deep supervision's extra output heads, or None without deep supervision.
        optimizer: the optimiser, with its momentum buffers.
        scheduler: the learning-rate schedule.
        epoch: the last epoch trained.
        best_metric: the best mean validation Dice so far (best.pt's).
        best_epoch: the epoch of `best_metric`.
        history: one row per epoch trained (train_history.csv).
        model_args: the `UNet` arguments that rebuild `net` (`load_trained_net`).
        key: the `resume_key` the training runs under.
        class_names: the labels, one per output channel.
        geometry: the training's input and output patch sizes.
        mlflow_run_id: the MLflow run the training logs into, reopened on resume.
        ema: the moving average of `net` (`train.ema_decay`), or None. With one, `model` holds the
            average (what evaluate and export load) and `training_model` the trained weights.

    Returns:
        A dict of tensors and plain values (weights_only-loadable), current RNG states included.
    """
    averaged = {"training_model": net.state_dict(), "ema_updates": int(ema.n_averaged)} if ema is not None else {}
    return {
        "model": (ema.module if ema is not None else net).state_dict(),
        **averaged,
        **({"deep_supervision_heads": heads.state_dict()} if heads is not None else {}),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "best_metric": best_metric,
        "best_epoch": best_epoch,
        "history": history,
        "model_args": model_args,
        "config": cfg.model_dump(mode="json"),
        "resume_key": key,
        "class_names": class_names,
        "patch": {"input_size": list(geometry.input_size), "output_size": list(geometry.output_size)},
        "rng": rng_state(),
        "mlflow_run_id": mlflow_run_id,
    }


def restore(
    state: dict[str, Any],
    net: torch.nn.Module,
    heads: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: AveragedModel | None = None,
) -> Progress:
    """Load a `checkpoint_payload` back into freshly built training objects and set the RNGs, so the
    resumed training continues exactly as an uninterrupted one would.

    Args:
        state: the checkpoint dict (`load_checkpoint`).
        net: the U-Net.
        heads: deep supervision's extra heads, or None without deep supervision.
        optimizer: the optimiser.
        scheduler: the learning-rate schedule.
        ema: the moving average of `net`, or None (`train.ema_decay`; the resume key makes sure the
            checkpoint was written with the same setting).

    Returns:
        The epoch, history and best validation score the checkpoint was written at.
    """
    net.load_state_dict(state.get("training_model", state["model"]))
    if ema is not None:
        from pipeline.training.ema import restore_ema

        restore_ema(ema, state["model"], int(state["ema_updates"]))
    if heads is not None:
        heads.load_state_dict(state["deep_supervision_heads"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return Progress(
        int(state["epoch"]), list(state["history"]), float(state["best_metric"]), int(state.get("best_epoch", 0))
    )


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """torch.save to a temp file in the same directory, then rename: a kill never leaves half a file,
    and a full disk is a `DiskFullError` naming `path`, the previous checkpoint kept (`pipeline.io.atomic`)."""
    from pipeline.io.atomic import atomic_write

    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def _torch_load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


def _first_sentence(exc: Exception) -> str:
    """The first sentence of an error's message (torch's go on for a paragraph), with its type
    unless it is a plain RuntimeError."""
    first = re.split(r"(?<=[.!?])\s|\n", str(exc).strip(), maxsplit=1)[0].rstrip(".")[:200]
    return first if type(exc) is RuntimeError else f"{type(exc).__name__}: {first}"


def _problem(exc: Exception, size: int) -> str:
    """What is wrong with a checkpoint of `size` bytes that `torch.load` refused, in a few words."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text:
        found = re.search(r"GLOBAL (\S+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (
            f"holds a pickled Python object{what}, which the safe weights-only load refuses: a checkpoint of "
            "the train stage holds only tensors and plain values, so do not load a file from an unknown source"
        )
    if size == 0:
        return "is truncated or corrupt (it is empty: 0 bytes)"
    if isinstance(exc, EOFError) or not text.strip():
        return f"is truncated or corrupt (it ends before the data does: {type(exc).__name__})"
    return f"is truncated or corrupt ({_first_sentence(exc)})"


def _readable(path: Path) -> dict[str, Any] | None:
    """The checkpoint at `path`, or None when it is absent or does not load."""
    try:
        return _torch_load(path) if path.is_file() else None
    except Exception:
        return None


def _remedy(path: Path) -> str:
    """What to do about the unreadable checkpoint `path`: use its intact sibling where that is the
    same training, else train the member from scratch."""
    last, best = path.parent / "last.pt", path.parent / "best.pt"
    scratch = f"delete {last} and {best} and run the train stage again to train from scratch"
    if path.name == "last.pt":
        other = _readable(best)
        if other is not None and "epoch" in other:
            return f"copy {best} over it to resume from its epoch {other['epoch']}, or {scratch}"
        return scratch
    if path.name == "best.pt":
        other = _readable(last)
        if other is not None and other.get("epoch") is not None and other.get("epoch") == other.get("best_epoch"):
            return f"copy {last} over it (the same best epoch, {other['epoch']}), or {scratch}"
        return scratch
    return "use a checkpoint written by the train stage (last.pt or best.pt)"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with weights_only=True; a file that is missing, truncated, corrupt or holds a pickled
    object raises one error naming it and saying what to do (`CheckpointError`)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"checkpoint {path} not found")
    try:
        return _torch_load(path, map_location)
    except PermissionError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    except Exception as exc:
        if str(map_location) != "cpu" and _readable(path) is not None:  # the file is fine, the device is not
            where = f"checkpoint {path} cannot be loaded onto {map_location}"
            raise CheckpointError(f"{where}: {_first_sentence(exc)}") from exc
        raise CheckpointError(f"checkpoint {path} {_problem(exc, path.stat().st_size)}; {_remedy(path)}") from exc


def load_for_resume(last: Path) -> dict[str, Any]:
    """`last.pt` to resume from, once `best.pt` beside it loads too: a damaged best.pt is reported
    now, before more epochs are trained on top of it, not at evaluate."""
    state = load_checkpoint(last)
    best = Path(last).parent / "best.pt"
    if best.is_file():
        load_checkpoint(best)
    return state


def load_trained_net(
    checkpoint: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(U-Net in eval mode, the checkpoint dict) from a training checkpoint, loaded weights_only."""
    from pipeline.model import UNet

    ckpt = load_checkpoint(Path(checkpoint), map_location=device)
    if "model_args" not in ckpt or "model" not in ckpt:
        raise InputError(f"checkpoint {checkpoint} lacks 'model' or 'model_args'; was it written by the train stage?")
    net = UNet(**ckpt["model_args"])
    state = {k.removeprefix("module."): v for k, v in ckpt["model"].items()}  # a DDP-wrapped save, too
    net.load_state_dict(state)
    return net.to(device).eval(), ckpt


def load_best_checkpoint(
    cfg: Config, labels: list[str], checkpoint: str | Path | None = None, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any], list[Path]]:
    """The net the evaluate and export stages use, checked to predict one channel per label of the
    manifest: `checkpoint`, or else every member's best.pt (`<train.output_dir>/fold_<k>/`), as a
    `FoldEnsemble` when there are several. Returns (net, member 0's checkpoint dict, paths)."""
    paths = (
        [Path(checkpoint)]
        if checkpoint is not None
        else [cfg.train.member_dir(k) / "best.pt" for k in cfg.train.members]
    )
    nets, ckpts = [], []
    for path in paths:
        if not path.is_file():
            raise MissingInputError(f"{path} not found: run the train stage first (every member of train.members)")
        net, ckpt = load_trained_net(path, device)
        out_channels = int(ckpt["model_args"]["out_channels"])
        if out_channels != len(labels):
            raise InputError(f"{path} predicts {out_channels} classes but the manifest lists {len(labels)}: {labels}")
        if ckpts and ckpt["model_args"] != ckpts[0]["model_args"]:
            raise InputError(f"{path} has another architecture than {paths[0]}: {ckpt['model_args']}")
        nets.append(net)
        ckpts.append(ckpt)
    if len(nets) == 1:
        return nets[0], ckpts[0], paths
    from pipeline.model.ensemble import FoldEnsemble

    return FoldEnsemble(nets).to(device).eval(), ckpts[0], paths
