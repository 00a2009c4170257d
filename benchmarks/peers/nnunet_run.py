"""The nnU-Net side of the side-by-side: train fold 0 under a wall-clock budget, then predict.

Runs with the nnU-Net venv's python (`setup_nnunet.sh`); imports nothing from `pipeline`.
`benchmarks/peers/nnunet.py` (project venv) prepares the raw and preprocessed folders, calls this
script, and scores the predictions with the pipeline's own metric code.

Why not `nnUNetv2_train` / `nnUNetv2_predict`: both look trainers up by name, which imports every
trainer module, and one of those imports torchvision, which fails beside the CPU torch wheel
("operator torchvision::nms does not exist", ../../shared/TOOLCHAIN.md). Here the trainer class is
imported directly, and the predictor is given its network with `manual_initialization`.

    python nnunet_run.py train --dataset Dataset004_Hippocampus --budget-s 2880 --summary train.json
    python nnunet_run.py predict --dataset Dataset004_Hippocampus --cases a.nii.gz ... --out DIR --summary p.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nnunet_budget_trainer import nnUNetTrainerWallClock  # noqa: E402

CONFIGURATION = "3d_fullres"
FOLD = 0


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def train(args: argparse.Namespace) -> None:
    pre = Path(os.environ["nnUNet_preprocessed"]) / args.dataset
    plans = _load_json(pre / "nnUNetPlans.json")
    plans["continue_training"] = False  # what nnUNetv2_train sets (the trainer pops it): a fresh run
    dataset_json = _load_json(pre / "dataset.json")
    trainer = nnUNetTrainerWallClock(plans, CONFIGURATION, FOLD, dataset_json, device=torch.device("cpu"))
    trainer.configure(args.budget_s, args.iterations, args.val_iterations, args.max_epochs)
    trainer.run_training()
    cm = trainer.configuration_manager
    summary = {
        "train_s": trainer.elapsed(),
        "epochs": trainer.current_epoch,
        "iterations": trainer.iterations_done,
        "startup_s": trainer.startup_s,
        "iterations_per_epoch": trainer.num_iterations_per_epoch,
        "batch_size": trainer.batch_size,
        "patch_size": list(cm.patch_size),
        "features": list(cm.network_arch_init_kwargs.get("features_per_stage", [])),
        "checkpoint": str(Path(trainer.output_folder) / "checkpoint_final.pth"),
    }
    Path(args.summary).write_text(json.dumps(summary, indent=2))


def _predictor(args: argparse.Namespace):  # noqa: ANN202 (nnU-Net type)
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = Path(os.environ["nnUNet_results"]) / args.dataset / f"nnUNetTrainerWallClock__nnUNetPlans__{CONFIGURATION}"
    ckpt = torch.load(folder / f"fold_{FOLD}" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    plans_manager = PlansManager(_load_json(folder / "plans.json"))
    dataset_json = _load_json(folder / "dataset.json")
    cm = plans_manager.get_configuration(CONFIGURATION)
    n_in = determine_num_input_channels(plans_manager, cm, dataset_json)
    n_out = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    net = nnUNetTrainerWallClock.build_network_architecture(
        plans_manager, cm, n_in, n_out, enable_deep_supervision=False
    )
    net.load_state_dict(ckpt["network_weights"])
    # nnU-Net's defaults for `nnUNetv2_predict`: step 0.5, gaussian, mirroring on
    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=True,
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    predictor.manual_initialization(
        net,
        plans_manager,
        cm,
        [ckpt["network_weights"]],
        dataset_json,
        "nnUNetTrainerWallClock",
        ckpt.get("inference_allowed_mirroring_axes"),
    )
    return predictor


def predict(args: argparse.Namespace) -> None:
    predictor = _predictor(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for image in args.cases:
        case = Path(image).name.removesuffix("_0000.nii.gz")
        t0 = time.perf_counter()
        predictor.predict_from_files_sequential([[image]], [str(out / case)], False, True, None)
        seconds[case] = time.perf_counter() - t0
    Path(args.summary).write_text(json.dumps({"seconds": seconds}, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--dataset", required=True)
    t.add_argument("--budget-s", type=float, required=True)
    t.add_argument("--iterations", type=int, default=250, help="per epoch (nnU-Net: 250)")
    t.add_argument("--val-iterations", type=int, default=50, help="per epoch (nnU-Net: 50)")
    t.add_argument("--max-epochs", type=int, default=None)
    t.add_argument("--summary", required=True)
    q = sub.add_parser("predict")
    q.add_argument("--dataset", required=True)
    q.add_argument("--cases", nargs="+", required=True, help="image files named <case>_0000.nii.gz")
    q.add_argument("--out", required=True)
    q.add_argument("--summary", required=True)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    {"train": train, "predict": predict}[args.command](args)


if __name__ == "__main__":
    main()
