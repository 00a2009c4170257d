"""nnU-Net v2 as a measured peer: the same cases, split, machine and training minutes as ours.

Project-venv side. It lays an imported dataset out as nnU-Net raw data (links, not copies), writes
our split as fold 0 of `splits_final.json`, runs `nnUNetv2_plan_and_preprocess` and
`nnunet_run.py` (train under a wall-clock budget, predict) with the nnU-Net venv's python, and
scores the predictions with the pipeline's own Dice / IoU (`pipeline.evaluation.metrics`).

nnU-Net lives in its own venv (`benchmarks/peers/setup_nnunet.sh` -> `.venv-nnunet/`, or
`$NNUNET_VENV`), never in the project's dependencies.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
RUNNER = HERE / "nnunet_run.py"


@dataclass
class PeerResult:
    """What the side-by-side table prints for nnU-Net (same fields as our row)."""

    name: str
    dice: dict[str, float]
    iou: dict[str, float]
    train_s: float
    epochs: int
    iterations: int
    batch_size: int
    patch_size: list[int]
    infer_s_per_case: float
    plan_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_dice(self) -> float:
        return sum(self.dice.values()) / len(self.dice)

    @property
    def mean_iou(self) -> float:
        return sum(self.iou.values()) / len(self.iou)


def venv_python() -> Path:
    venv = Path(os.environ.get("NNUNET_VENV", REPO / ".venv-nnunet"))
    py = venv / "bin" / "python"
    if not py.is_file():
        raise SystemExit(f"error: no nnU-Net venv at {venv}: run benchmarks/peers/setup_nnunet.sh first")
    return py


def nnunet_env(root: Path, threads: int) -> dict[str, str]:
    """nnU-Net's three folders under `root`; one augmentation worker (nnU-Net's default of 12
    processes would fight the 2 training threads of a 2-core machine), no torch.compile (nnU-Net
    disables it on CPU anyway)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # nothing of the project's leaks into the peer's interpreter
    env.update(
        nnUNet_raw=str(root / "raw"),
        nnUNet_preprocessed=str(root / "preprocessed"),
        nnUNet_results=str(root / "results"),
        nnUNet_compile="false",
        OMP_NUM_THREADS=str(threads),
    )
    env.setdefault("nnUNet_n_proc_DA", "1")
    return env


def write_raw(data_dir: Path, raw: Path, dataset: str, ids: list[str]) -> Path:
    """An imported dataset (already nnU-Net's naming: imagesTr/<id>_0000, labelsTr/<id>) as
    nnU-Net raw data: the listed cases linked, and nnU-Net's dataset.json."""
    meta = json.loads((data_dir / "dataset.json").read_text())
    by_id = {e["id"]: e for e in meta["training"]}
    out = raw / dataset
    for sub in ("imagesTr", "labelsTr"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    ending = meta.get("file_ending", ".nii.gz")
    for cid in ids:
        entry = by_id[cid]
        for c, img in enumerate(entry["images"]):
            (out / "imagesTr" / f"{cid}_{c:04d}{ending}").symlink_to((data_dir / img).resolve())
        (out / "labelsTr" / f"{cid}{ending}").symlink_to((data_dir / entry["label"]).resolve())
    nn_meta = {
        "channel_names": meta["channel_names"],
        "labels": meta["labels"],
        "numTraining": len(ids),
        "file_ending": ending,
        "name": meta.get("name", dataset),
    }
    (out / "dataset.json").write_text(json.dumps(nn_meta, indent=2))
    return out


def _run(cmd: list[str], env: dict[str, str], log: Path) -> float:
    print("$ " + " ".join(str(c) for c in cmd) + f"   (log: {log})", flush=True)
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        proc = subprocess.run([str(c) for c in cmd], env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"error: nnU-Net step failed (exit {proc.returncode}): {cmd[1:3]}\n{tail}")
    return time.perf_counter() - t0


def score(pred_dir: Path, data_dir: Path, val_ids: list[str], class_names: list[str]) -> tuple[dict, dict]:
    """Mean Dice / IoU per foreground label, with the pipeline's own metric (`dice_iou`)."""
    import numpy as np

    from pipeline.evaluation.metrics import dice_iou
    from pipeline.io import read_image

    meta = json.loads((data_dir / "dataset.json").read_text())
    labels = {e["id"]: data_dir / e["label"] for e in meta["training"]}
    per: dict[str, list[tuple[float, float]]] = {n: [] for n in class_names[1:]}
    for cid in val_ids:
        pred = np.asarray(read_image(pred_dir / f"{cid}.nii.gz"))[0].astype(np.int64)
        lab = np.asarray(read_image(labels[cid]))[0].astype(np.int64)
        if pred.shape != lab.shape:
            raise SystemExit(f"error: nnU-Net prediction {cid}: shape {pred.shape} differs from label {lab.shape}")
        dice, iou = dice_iou(pred, lab, len(class_names))
        for k, name in enumerate(class_names[1:], start=1):
            per[name].append((dice[k], iou[k]))
    dice_m = {n: float(np.mean([d for d, _ in v])) for n, v in per.items()}
    iou_m = {n: float(np.mean([i for _, i in v])) for n, v in per.items()}
    return dice_m, iou_m


def run_peer(
    data_dir: Path,
    split: dict[str, list[str]],
    class_names: list[str],
    workdir: Path,
    budget_s: float,
    *,
    threads: int,
    quick: bool = False,
    dataset: str = "Dataset004_Hippocampus",
) -> PeerResult:
    """Plan, preprocess, train fold 0 for `budget_s` wall seconds, predict the val cases, score."""
    py = venv_python()
    root = workdir / "nnunet"
    root.mkdir(parents=True, exist_ok=True)
    env = nnunet_env(root, threads)
    log = root / "nnunet.log"
    raw = write_raw(data_dir, root / "raw", dataset, split["train"] + split["val"])
    dataset_id = str(int(dataset.removeprefix("Dataset")[:3]))
    plan_cmd = [py.parent / "nnUNetv2_plan_and_preprocess", "-d", dataset_id, "-c", "3d_fullres", "-np", "1"]
    plan_s = _run(plan_cmd, env, log)
    pre = root / "preprocessed" / dataset
    (pre / "splits_final.json").write_text(json.dumps([{"train": split["train"], "val": split["val"]}], indent=1))

    train_json = root / "train_summary.json"
    train_cmd = [py, RUNNER, "--threads", threads, "train", "--dataset", dataset, "--budget-s", budget_s]
    if quick:
        train_cmd += ["--iterations", 2, "--val-iterations", 1, "--max-epochs", 1]
    _run([*train_cmd, "--summary", train_json], env, log)
    trained = json.loads(train_json.read_text())

    pred_dir, pred_json = root / "predictions", root / "predict_summary.json"
    images = [str(raw / "imagesTr" / f"{cid}_0000.nii.gz") for cid in split["val"]]
    _run([py, RUNNER, "--threads", threads, "predict", "--dataset", dataset, "--cases", *images,
          "--out", pred_dir, "--summary", pred_json], env, log)  # fmt: skip
    seconds = json.loads(pred_json.read_text())["seconds"]
    dice, iou = score(pred_dir, data_dir, split["val"], class_names)
    return PeerResult(
        name="nnunetv2",
        dice=dice,
        iou=iou,
        train_s=float(trained["train_s"]),
        epochs=int(trained["epochs"]),
        iterations=int(trained["iterations"]),
        batch_size=int(trained["batch_size"]),
        patch_size=list(trained["patch_size"]),
        infer_s_per_case=sum(seconds.values()) / len(seconds),
        plan_s=plan_s,
        extra={"features": trained.get("features"), "startup_s": trained.get("startup_s"), "log": str(log)},
    )
