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

`--peer nnunet` also trains nnU-Net v2 (3d_fullres, fold 0 = our split) in its own venv for the
same wall-clock minutes as our training took (`--peer-minutes` to change), predicts the 40 cases
and scores them with our metric code (benchmarks/peers/nnunet.py). It then prints one table, ours
beside nnU-Net, and the headline's baseline becomes nnU-Net's measured mean Dice.

    .venv/bin/python benchmarks/accuracy_hippocampus.py [--quick] [--minutes 60 | --epochs N] [-S key=value ...]
        [--peer nnunet [--peer-minutes M]] [--ablation]

`--fold K` validates on fold K of the preset's own split instead (`preprocess.folds` folds of all
cases, shuffled with the config's seed: 44 cases spread over every id, 176 train); the fixed split
above is the default because every earlier row used it. `cross_validation.py` runs every fold.

`--train-cases first:N` / `last:N` trains on only the first / last N of the fixed split's 180
training ids (the validation ids stay the last 40): how much the Dice owes to the amount of data,
and whether the ids next to the validation ids teach it more than the earliest ones do.

`--ablation` trains the preset and then each of nnU-Net's levers on top of it (ABLATIONS: deep
supervision, foreground oversampling at 1/3, SGD + Nesterov 0.99 + lr 1e-2 + poly), each at the
same budget (`--minutes` / `--epochs`) in `<wd>/ablation/<variant>/`, and prints one row per variant.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import accuracy_common as acc
import common  # puts the repo on sys.path: keep before the pipeline imports

from pipeline.data.manifest import load_manifest

NNUNET_DICE = {"anterior": 0.90, "posterior": 0.89}  # nnU-Net, Decathlon Task04 (SOURCE.md)
# `--ablation`: nnU-Net's levers, one at a time on top of the preset, each trained at the same budget
ABLATIONS: dict[str, dict[str, Any]] = {
    "preset": {},
    "deep supervision": {"train.deep_supervision": True},
    "foreground oversampling 1/3 (nnU-Net's rate)": {"train.pos_fraction": 0.33},
    "SGD Nesterov 0.99, lr 1e-2, poly 0.9 (nnU-Net's recipe)": {
        "train.optimizer": "sgd",
        "train.lr": 0.01,
        "train.momentum": 0.99,
        "train.scheduler": "poly",
    },
}
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


def our_inference_seconds(cfg: Any, data_dir: Path, val_ids: list[str], out_dir: Path) -> float:
    """Seconds per case of the standalone predictor's path on the exported ONNX model, loaded once:
    read, preprocess, predict, write -- the same steps nnU-Net's per-case time covers."""
    import time

    from pipeline.inference.case import predict_case
    from pipeline.inference.settings import InferenceSettings
    from pipeline.io import write_image
    from pipeline.predict.predictor import read_input, read_metadata
    from pipeline.predict.runtime import load_net

    model = Path(cfg.export.output_dir) / "model.onnx"
    up = read_metadata(model)[0].pipeline
    settings = InferenceSettings.from_dict(up.inference)
    net = load_net(model, "cpu")
    images = {
        e["id"]: data_dir / e["images"][0] for e in json.loads((data_dir / "dataset.json").read_text())["training"]
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for cid in val_ids:
        image = read_input(images[cid])
        mask, _ = predict_case(image, net, up.preprocessing, settings)
        write_image(mask, image, out_dir / f"{cid}.nii.gz")
    return (time.perf_counter() - t0) / len(val_ids)


def side_by_side(cfg: Any, rows: list[list[Any]], times: dict[str, float], ours_s: float, peer: Any) -> str:
    """One table: our row beside the peer's, per label and mean, minutes, iterations, inference."""
    labels = [r[0] for r in rows[:-1]]
    ours_dice = {r[0]: r[1] for r in rows[:-1]}
    ours_iou = {r[0]: r[4] for r in rows[:-1]}
    train_s = times["train"] + times.get("train_probe", 0.0)
    probe_epochs = 1 if "train_probe" in times else 0
    ours_it = (cfg.train.epochs + probe_epochs) * cfg.train.iterations_per_epoch
    table = [[f"Dice {n}", ours_dice[n], peer.dice[n]] for n in labels]
    table.append(["Dice mean of labels", rows[-1][1], peer.mean_dice])
    table += [[f"IoU {n}", ours_iou[n], peer.iou[n]] for n in labels]
    table.append(["IoU mean of labels", rows[-1][4], peer.mean_iou])
    table += [
        ["training minutes", train_s / 60, peer.train_s / 60],
        ["epochs", cfg.train.epochs + probe_epochs, peer.epochs],
        ["iterations (batch x patch)",
         f"{ours_it} ({cfg.train.batch_size} x {tuple(cfg.train.patch_size)})",
         f"{peer.iterations} ({peer.batch_size} x {tuple(peer.patch_size)})"],
        ["samples seen", ours_it * cfg.train.batch_size, peer.iterations * peer.batch_size],
        ["inference s/case (read, preprocess, predict, write)", ours_s, peer.infer_s_per_case],
    ]  # fmt: skip
    return common.markdown_table(["", "ours", "nnU-Net v2 (3d_fullres)"], table)


def ablation(args: Any, import_src: Path, wd: Path, split_layer: Any) -> None:
    """Each lever of ABLATIONS trained on its own at the same budget; one row each, Dice vs the preset."""
    import argparse

    table, base = [], None
    for name, overrides in ABLATIONS.items():
        sub = acc.prepare_workdir(wd / "ablation" / name.split(" (")[0].replace(" ", "_").replace(",", ""))
        sets = [*args.set, *(f"{k}={json.dumps(v)}" for k, v in overrides.items())]
        cfg, times = acc.run_pipeline(
            argparse.Namespace(**{**vars(args), "set": sets}),
            import_src,
            sub,
            layers=split_layer,
            quick=quick_overrides(),
        )
        _, means, _ = score(cfg, load_manifest(cfg.preprocess.output_dir)["labels"])
        base = means["mean"] if base is None else base
        train_min = (times["train"] + times.get("train_probe", 0.0)) / 60
        labels = [k for k in means if k != "mean"]
        table.append(
            [name, cfg.train.epochs, train_min, *(means[k] for k in labels), means["mean"], means["mean"] - base]
        )
    print(f"\n## Ablation: nnU-Net's levers, one at a time ({'quick' if args.quick else 'full'} run, same budget)")
    print(f"machine: {common.machine_info('cpu')}")
    headers = ["variant", "epochs", "train min", *(f"Dice {k}" for k in labels), "Dice mean", "vs preset"]
    print(common.markdown_table(headers, table))
    best = max(table, key=lambda r: r[-2])
    common.emit_result("hippocampus_ablation_best_mean_dice", best[-2], base, "Dice", best=best[0])


def train_cases(text: str) -> tuple[str, int]:
    """`first:N` / `last:N` -> ("first", N)."""
    end, _, n = text.partition(":")
    if end not in ("first", "last") or not n.isdigit() or int(n) < 1:
        raise argparse.ArgumentTypeError(f"expected first:N or last:N with N >= 1, got {text!r}")
    return end, int(n)


def add_split_options(parser: Any) -> None:
    parser.add_argument(
        "--fold",
        type=int,
        default=None,
        help="validate on this fold of the preset's K-fold split (all cases, the config's seed) "
        "instead of the fixed split (first 180 train, last 40 validate)",
    )
    parser.add_argument(
        "--train-cases",
        type=train_cases,
        default=None,
        metavar="{first,last}:N",
        help="train on only the first / last N of the fixed split's training ids (validation unchanged)",
    )


def main() -> None:
    args, src, wd = acc.start(
        __doc__.splitlines()[0],
        "hippocampus",
        "hippocampus-3d.yaml",
        "hippocampus-mri",
        "dataset.json",
        ("nnunet",),
        extend=add_split_options,
    )
    if args.ablation and args.peer:
        raise SystemExit("error: --ablation and --peer are separate runs; pick one")
    if args.train_cases and (args.fold is not None or args.peer or args.ablation):
        raise SystemExit(
            "error: --train-cases subsets the fixed split for our model; not with --fold, --peer, --ablation"
        )
    if args.fold is not None and (args.peer or args.quick):
        raise SystemExit("error: --fold is for our model on the full data; the peer and --quick use the fixed split")

    if args.rescore and (args.peer or args.ablation):
        raise SystemExit("error: --rescore re-scores our trained model only; --peer and --ablation train")
    import_src = quick_source(src, wd / "source_subset") if args.quick and not args.rescore else src
    n_val = QUICK_VAL if args.quick else N_VAL
    split: dict[str, list[str]] = {}

    def split_layer(data_dir: Path) -> list[dict[str, Any]]:
        if args.fold is not None:
            return [{"preprocess.fold": args.fold}]
        ids = acc.imported_ids(data_dir)
        if len(ids) <= n_val:
            raise SystemExit(f"error: {len(ids)} cases imported from {import_src}; need more than {n_val}")
        split.update(train=ids[:-n_val], val=ids[-n_val:])  # 220 cases: the first 180 train, the last 40 validate
        if args.train_cases:
            end, n = args.train_cases
            if n > len(split["train"]):
                raise SystemExit(
                    f"error: --train-cases {end}:{n}, but the split has {len(split['train'])} training cases"
                )
            split["train"] = split["train"][:n] if end == "first" else split["train"][-n:]
        return [{"preprocess.split": split}]

    if args.ablation:
        ablation(args, import_src, wd, split_layer)
        return
    cfg, times = acc.run_pipeline(args, import_src, wd, layers=split_layer, quick=quick_overrides())
    manifest = load_manifest(cfg.preprocess.output_dir)
    class_names = manifest["labels"]
    split.update(manifest["splits"])
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
    print("Which masks to check (issue 29; the evaluate stage's figures, reports/figures/):")
    print(acc.quality_tables(cfg))
    print()
    print(acc.stage_table(times))
    metric = "hippocampus_val_mean_dice_anterior_posterior"
    if args.peer is None:
        common.emit_result(metric, means["mean"], baseline, "Dice")
        return

    from peers.nnunet import run_peer

    ours_s = our_inference_seconds(cfg, wd / "data", val_ids, wd / "predictions_onnx")
    budget_s = 60.0 * args.peer_minutes if args.peer_minutes else times["train"] + times.get("train_probe", 0.0)
    print(f"\n=== nnU-Net v2 peer: {budget_s / 60:.1f} min training budget ===", flush=True)
    peer = run_peer(
        wd / "data", split, class_names, wd, budget_s, threads=args.threads or common.cpu_cores(), quick=args.quick
    )
    print(f"\n## Ours beside nnU-Net v2 ({'quick' if args.quick else 'full'} run, same split, same machine)")
    print(f"nnU-Net: plan + preprocess {peer.plan_s:.0f} s (not counted as training); log {peer.extra['log']}")
    print(side_by_side(cfg, rows, times, ours_s, peer))
    print()
    common.emit_result(
        metric, means["mean"], peer.mean_dice, "Dice", peer={"name": peer.name, "mean_dice": round(peer.mean_dice, 6)}
    )


if __name__ == "__main__":
    main()
