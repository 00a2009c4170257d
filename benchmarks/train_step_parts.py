"""Where a training step's time goes: the DataLoader with its augmentations, the network step, both.

`train_throughput.py` times the network on random tensors; a real epoch also draws patches and
augments them. This script times the parts of the trainer's own step separately, so that
transform time is not mistaken for network time:
- the loader alone (`pipeline.training.data.train_loader`, the trainer's): in-process
  (`train.num_workers: 0`, the default), with 2 worker processes, and MONAI's `ThreadDataLoader`
  (the same dataset, a background thread);
- the network step alone (zero_grad, forward, the preset's loss, backward, optimiser step) on one
  batch drawn from that loader, in float32 and with each speed option the trainer has;
- the loop as the trainer runs it (in-process loader, then the step) for the default.

Data: an accuracy benchmark's preprocessed work dir (`--workdir /tmp/bench_hippocampus` with
`--config configs/hippocampus-3d.yaml`), or by default the generated 3D dataset, preprocessed in a
temporary directory. The JSON line: the in-process loader's samples/s against the float32 network
step's (the named baseline); ratio < 1 means the loader, not the network, limits an epoch.

    .venv/bin/python benchmarks/train_step_parts.py [--quick] [--workdir DIR --config PRESET]
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO, base_parser, emit_result, machine_info, setup_torch


def loader_rate(loader: Any, batches: int, batch_size: int) -> float:
    """samples/s of drawing `batches` batches (after one untimed batch: worker start-up)."""
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - t0)


def step_rate(cfg: Any, manifest: Any, batch: dict[str, Any], steps: int, **speed: bool) -> float:
    """samples/s of the trainer's step on one fixed batch, with the given speed options."""
    import torch

    from pipeline.model import build_model
    from pipeline.model.layout import memory_format
    from pipeline.training.losses import build_loss
    from pipeline.training.optim import build_optimizer
    from pipeline.training.speed import step_autocast

    dims, classes = cfg.data.spatial_dims, len(manifest.labels)
    fmt = memory_format(dims, speed.get("channels_last", False))
    net = build_model(cfg.model, dims, int(manifest["in_channels"]), classes).to(memory_format=fmt).train()
    opt = build_optimizer(cfg, net.parameters())
    loss_fn = build_loss(cfg, classes)
    model = torch.compile(net) if speed.get("compile") else net
    image = batch["image"].contiguous(memory_format=fmt)
    weight = batch.get("weight") if cfg.train.uses_weight_map else None

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with step_autocast(torch.device("cpu"), speed.get("bf16", False)):
            logits = model(image)
        loss_fn(logits, batch["label"], weight).backward()
        opt.step()

    step()
    step()  # warm-up: oneDNN builds its kernels, compile traces
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * image.shape[0] / (time.perf_counter() - t0)


def prepared(args: Any, tmp: Path) -> tuple[Any, Any]:
    """(config, manifest) of preprocessed data: the given work dir's, or the synthetic 3D set's."""
    from pipeline.config import load_config
    from pipeline.data.manifest import load_manifest

    if args.workdir is not None:
        cfg = load_config(args.config, {"preprocess.output_dir": str(args.workdir / "preprocessed")})
        return cfg, load_manifest(cfg.preprocess.output_dir)
    from pipeline.data.synth import synthesize
    from pipeline.stages import preprocess

    cfg = load_config(args.config, {"data.root": str(tmp / "data"), "preprocess.output_dir": str(tmp / "preprocessed")})
    synthesize(tmp / "data", dims=cfg.data.spatial_dims, seed=0)
    preprocess.run(cfg)
    return cfg, load_manifest(cfg.preprocess.output_dir)


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=REPO / "configs" / "synthetic-3d.yaml", help="the preset")
    p.add_argument("--workdir", type=Path, default=None, help="a work dir whose preprocessed/ to use")
    args = p.parse_args()
    args.config = args.config.resolve()  # the work happens in a temporary directory
    args.workdir = args.workdir.resolve() if args.workdir is not None else None
    device = setup_torch("cpu", args.threads)
    import torch
    from monai.data import ThreadDataLoader

    from pipeline.training.data import train_dataset, train_loader

    batches, steps = (4, 3) if args.quick else (20, 10)
    with tempfile.TemporaryDirectory() as tmp:
        old = Path.cwd()
        os.chdir(tmp)
        try:
            cfg, manifest = prepared(args, Path(tmp))
            manifest = manifest.for_member(len(cfg.train.members), 0, cfg.seed)
            bs = cfg.train.batch_size
            cfg.train.iterations_per_epoch = batches + 2
            dataset = train_dataset(cfg, manifest)
            rows: list[tuple[str, float]] = []
            rows.append(
                (
                    "loader, in-process (num_workers 0, the default)",
                    loader_rate(train_loader(cfg, dataset, 1), batches, bs),
                )
            )
            two = cfg.model_copy(deep=True)
            two.train.num_workers = 2
            rows.append(("loader, 2 worker processes", loader_rate(train_loader(two, dataset, 1), batches, bs)))
            threaded = ThreadDataLoader(dataset, batch_size=bs, shuffle=True, num_workers=0, drop_last=True)
            rows.append(("loader, MONAI ThreadDataLoader (1 thread)", loader_rate(threaded, batches, bs)))
            batch = next(iter(train_loader(cfg, dataset, 2)))
            options = {
                "float32": {},
                "bf16": {"bf16": True},
                "channels_last": {"channels_last": True},
                "channels_last + bf16": {"channels_last": True, "bf16": True},
            }
            for name, speed in options.items():
                rows.append((f"network step, {name}", step_rate(cfg, manifest, batch, steps, **speed)))
            loader_s, net_s = rows[0][1], rows[3][1]
            both = 1.0 / (1.0 / loader_s + 1.0 / net_s)
            rows.append(("trainer loop: in-process loader, then the float32 step (from the rows above)", both))
        finally:
            os.chdir(old)
    where = args.workdir or "generated synthetic 3D data"
    print(f"## Training step parts: {args.config.name} on {where}; batch {bs}, patch {cfg.train.patch_size}")
    print(f"{machine_info(device)}; torch threads {torch.get_num_threads()}")
    print()
    print("| part | samples/s | ms per step |")
    print("|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:.2f} | {1e3 * bs / rate:.0f} |")
    emit_result(
        "train_loader_samples_per_s_vs_network_step",
        loader_s,
        net_s,
        "samples/s",
        config=args.config.name,
        quick=bool(args.quick),
    )


if __name__ == "__main__":
    main()
