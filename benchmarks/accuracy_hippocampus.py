"""Accuracy on Hippocampus MRI (MSD Task04): the real 3D pipeline, first 180 cases train, last 40 validate.

Runs, in a work dir (default /tmp/bench_hippocampus, wiped first):

    unet-pipeline data import <shared>/hippocampus-mri --out <wd>/data
    preprocess -> train -> evaluate -> export   (pipeline.stages.*.run, configs/hippocampus-3d.yaml)

with `preprocess.split` set from the imported case ids in sorted order (the first 180 train, the
last 40 validate). Scores Dice and IoU of the anterior and posterior labels on the 40 validation
cases, from the evaluate stage's predictions/ (in source geometry) against the imported labels,
and reports the CPU wall time of training.

The exported model (<wd>/exported/) is what gets scored on the cases outside ../shared/.

Headline (last line): mean Dice of the two labels vs nnU-Net's Decathlon figure (0.90 / 0.89 -> 0.895).

    .venv/bin/python benchmarks/accuracy_hippocampus.py [--quick] [--minutes 60 | --epochs N] [-S key=value ...]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import accuracy_common as acc
import common  # puts the repo on sys.path: keep before the pipeline imports

from pipeline.data.manifest import load_manifest

NNUNET_DICE = {"anterior": 0.90, "posterior": 0.89}  # nnU-Net, Decathlon Task04 (SOURCE.md)
N_VAL = 40
QUICK_TRAIN, QUICK_VAL = 4, 2  # cases in the --quick subset: the first 4 and the last 2 in sorted order


def quick_overrides() -> dict[str, Any]:
    return {
        "preprocess.num_workers": 0,
        "model.features": [8, 16, 32],  # depth 2: a small graph, so training and the ONNX export are quick
        "train.epochs": 1,
        "train.iterations_per_epoch": 2,
        "train.batch_size": 1,
        "train.val_every": 1,
    }


def quick_source(src: Path, dest: Path) -> Path:
    """An MSD folder holding only the --quick subset: a trimmed dataset.json, the case files linked."""
    meta = json.loads((src / "dataset.json").read_text())
    entries = sorted(meta["training"], key=lambda e: e["image"])
    keep = entries[:QUICK_TRAIN] + entries[-QUICK_VAL:]
    for e in keep:
        for key in ("image", "label"):
            rel = Path(str(e[key]).removeprefix("./"))
            (dest / rel.parent).mkdir(parents=True, exist_ok=True)
            (dest / rel).symlink_to((src / rel).resolve())
    meta.update(training=keep, numTraining=len(keep))
    (dest / "dataset.json").write_text(json.dumps(meta, indent=2))
    return dest


def score(cfg: Any, class_names: list[str]) -> tuple[list[list[Any]], dict[str, float], list[str]]:
    """Mean / median Dice and IoU per foreground class over the validation cases."""
    import numpy as np

    val_ids = load_manifest(cfg.preprocess.output_dir)["splits"]["val"]
    scores = acc.eval_scores(cfg)
    fg = list(range(1, len(class_names)))
    per: dict[str, list[float]] = {f"{m}_{class_names[k]}": [] for k in fg for m in ("dice", "iou")}
    for cid in val_ids:
        for k in fg:
            for m in ("dice", "iou"):
                per[f"{m}_{class_names[k]}"].append(scores[cid, class_names[k]][m])
    rows, means = [], {}
    for k in fg:
        name = class_names[k]
        d, i = np.array(per[f"dice_{name}"]), np.array(per[f"iou_{name}"])
        means[name] = float(d.mean())
        ref = NNUNET_DICE.get(name.lower(), float("nan"))
        rows.append([name, float(d.mean()), float(np.median(d)), float(d.min()), float(i.mean()), ref])
    means["mean"] = float(np.mean([means[class_names[k]] for k in fg]))
    rows.append(
        [
            "mean of labels",
            means["mean"],
            float("nan"),
            float("nan"),
            float(np.mean([np.mean(per[f"iou_{class_names[k]}"]) for k in fg])),
            float(np.mean(list(NNUNET_DICE.values()))),
        ]
    )
    return rows, means, val_ids


def main() -> None:
    args, src, wd = acc.start(
        __doc__.splitlines()[0], "hippocampus", "hippocampus-3d.yaml", "hippocampus-mri", "dataset.json"
    )

    import_src = quick_source(src, wd / "source_subset") if args.quick else src
    n_val = QUICK_VAL if args.quick else N_VAL
    split: dict[str, list[str]] = {}

    def split_layer(data_dir: Path) -> list[dict[str, Any]]:
        ids = acc.imported_ids(data_dir)
        if len(ids) <= n_val:
            raise SystemExit(f"error: {len(ids)} cases imported from {import_src}; need more than {n_val}")
        split.update(train=ids[:-n_val], val=ids[-n_val:])  # 220 cases: the first 180 train, the last 40 validate
        return [{"preprocess.split": split}]

    cfg, times = acc.run_pipeline(args, import_src, wd, layers=split_layer, quick=quick_overrides())
    class_names = load_manifest(cfg.preprocess.output_dir)["labels"]
    rows, means, val_ids = score(cfg, class_names)
    baseline = float(sum(NNUNET_DICE.values()) / len(NNUNET_DICE))
    data = (
        f"train {len(split['train'])} cases ({split['train'][0]}..{split['train'][-1]}), "
        f"validate {len(val_ids)} ({val_ids[0]}..{val_ids[-1]})"
    )
    acc.print_header("Hippocampus (MSD Task04) accuracy", args, cfg, times, wd, data)
    print(
        common.markdown_table(
            ["label", "Dice mean", "Dice median", "Dice min", "IoU mean", "nnU-Net Dice (Decathlon)"], rows
        )
    )
    print()
    print(acc.stage_table(times))
    common.emit_result("hippocampus_val_mean_dice_anterior_posterior", means["mean"], baseline, "Dice")


if __name__ == "__main__":
    main()
