"""Training-step throughput: our U-Net vs MONAI BasicUNet and MONAI UNet at matched widths.

One step = zero_grad + forward + cross-entropy + backward + AdamW step, on random data. All three
networks use padding "same" (ours) / the MONAI equivalent, the same widths per level, the same
normalisation, ReLU and no dropout:

- ours: `pipeline.model.UNet(padding="same")`: 2 convs per level, max-pool, 2x2 transposed conv.
- MONAI `BasicUNet(features=(f0..f4, f0), act=ReLU, norm=<same>, dropout=0, upsample="deconv")`:
  the same layout (2 convs per level, max-pool, transposed conv); its defaults (LeakyReLU,
  instance norm) are overridden to match ours. BasicUNet is fixed at 4 poolings, so `--features`
  must have 5 widths.
- MONAI `UNet(channels=(f0..f4), strides=(2,2,2,2), num_res_units=0, act=ReLU, norm=<same>)`:
  a different layout (strided convs instead of pooling, one conv per level and direction), the
  widths matched only.

Headline (last line): the geometric mean, over all configurations, of our samples/s divided by
BasicUNet's (= geomean of ours / geomean of BasicUNet's).

    .venv/bin/python benchmarks/train_throughput.py [--quick] [--device cuda]
"""

from __future__ import annotations

from typing import Any

import common


def build(name: str, dims: int, features: list[int], norm: str, out_channels: int = 2) -> Any:
    """One of the three networks, widths and normalisation matched."""
    from monai.networks.nets import UNet as MonaiUNet

    from pipeline.model import UNet

    monai_norm: Any = None if norm == "none" else ((norm, {"affine": True}) if norm == "instance" else norm)
    relu = ("relu", {"inplace": True})
    if name == "ours":
        return UNet(dims, 1, out_channels, features, padding="same", norm=norm, dropout=0.0, upsample="transpose")
    if name == "monai-basicunet":
        return common.matched_basic_unet(dims, features, norm, out_channels)
    if name == "monai-unet":
        return MonaiUNet(
            spatial_dims=dims,
            in_channels=1,
            out_channels=out_channels,
            channels=features,
            strides=[2] * (len(features) - 1),
            num_res_units=0,
            act=relu,
            norm=monai_norm,
        )
    raise ValueError(name)


# our training step's speed options (`train.channels_last`, `train.bf16`, `train.compile`), each
# measured as its own row of ours by `--variants`
VARIANTS: dict[str, dict[str, bool]] = {
    "channels_last": {"channels_last": True},
    "bf16": {"bf16": True},
    "channels_last+bf16": {"channels_last": True, "bf16": True},
}
COMPILE_VARIANT = {"compile": {"compile": True}}  # with --compile: ~1 min of compilation per configuration


def default_options(dims: int, device: str) -> dict[str, bool]:
    """The speed options the trainer's defaults (`auto`) turn on for this dimensionality here."""
    import torch

    from pipeline.config import TrainConfig
    from pipeline.training.speed import use_bf16

    t = TrainConfig()
    return {
        "bf16": use_bf16(t.bf16, torch.device(device)),
        "channels_last": bool(t.channels_last),
        "compile": bool(t.compile),
    }


def measure(
    name: str,
    dims: int,
    size: int,
    batch: int,
    features: list[int],
    norm: str,
    device: str,
    timing: dict[str, Any],
    channels_last: bool = False,
    bf16: bool = False,
    compile: bool = False,
) -> dict[str, Any]:
    """samples/s and peak memory of training steps for one network and configuration; the options
    are the trainer's (`pipeline.training.speed`), applied the way it applies them."""
    import torch
    import torch.nn.functional as F

    from pipeline.model.layout import memory_format
    from pipeline.training.speed import step_autocast

    torch.manual_seed(0)
    fmt = memory_format(dims, channels_last)
    with common.PeakMemory(device) as mem:
        net = build(name, dims, features, norm).to(device).train().to(memory_format=fmt)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        model = torch.compile(net) if compile else net
        x = torch.randn(batch, 1, *([size] * dims), device=device).contiguous(memory_format=fmt)
        y = torch.randint(0, 2, (batch, *([size] * dims)), device=device)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with step_autocast(torch.device(device), bf16):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            loss.backward()
            opt.step()

        steps, secs = common.time_until(step, device, **timing)
        params = sum(p.numel() for p in net.parameters())
    return {"samples_s": batch * steps / secs, "steps": steps, "mem": mem.describe(), "params": params}


def main() -> None:
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--features2d", default="32,64,128,256,512", help="2D widths per level (default: the ISBI config's)")
    p.add_argument("--features3d", default="16,32,64,128,256", help="3D widths per level")
    p.add_argument(
        "--norm",
        default="instance",
        choices=["instance", "batch", "none"],
        help="normalisation, all nets (default: instance, BasicUNet's)",
    )
    p.add_argument("--min-seconds", type=float, default=None, help="time each configuration at least this long")
    p.add_argument(
        "--variants",
        action="store_true",
        help="also time our step with each speed option (channels_last, bf16, both; --compile adds torch.compile)",
    )
    p.add_argument("--compile", action="store_true", help="with --variants: also time torch.compile")
    args = p.parse_args()
    device = common.setup_torch(args.device, args.threads)
    variants = {**VARIANTS, **(COMPILE_VARIANT if args.compile else {})}

    if args.quick:
        # the full run's smaller patch per dimensionality at both batch sizes (the same scenes), with
        # nets half as wide and shorter timing: a cheaper measurement of the same comparison
        sizes = {2: [256], 3: [64]}
        batches = [1, 4]
        timing = dict(
            warmup=2, min_steps=2, min_seconds=args.min_seconds or 1.0, max_steps=50
        )  # 2 warm-ups: oneDNN builds 3D kernels on first use
    else:
        sizes = {2: [256, 512], 3: [64, 96]}
        batches = [1, 4]
        timing = dict(warmup=2, min_steps=3, min_seconds=args.min_seconds or 5.0, max_steps=200)
    features = {2: [int(f) for f in args.features2d.split(",")], 3: [int(f) for f in args.features3d.split(",")]}
    if args.quick:
        features = {d: [max(1, f // 2) for f in fs] for d, fs in features.items()}
    models = ["ours", "monai-basicunet", "monai-unet"]

    rows, ratios, variant_rows, default_ratios = [], [], [], []
    ours_all, base_all, ours_default_all = [], [], []
    for dims in (2, 3):
        for size in sizes[dims]:
            for batch in batches:
                res = {m: measure(m, dims, size, batch, features[dims], args.norm, device, timing) for m in models}
                defaults = default_options(dims, device)
                res["ours-defaults"] = (
                    measure("ours", dims, size, batch, features[dims], args.norm, device, timing, **defaults)
                    if any(defaults.values())
                    else res["ours"]
                )
                r_default = res["ours-defaults"]["samples_s"] / res["monai-basicunet"]["samples_s"]
                default_ratios.append(r_default)
                ours_default_all.append(res["ours-defaults"]["samples_s"])
                r_basic = res["ours"]["samples_s"] / res["monai-basicunet"]["samples_s"]
                r_unet = res["ours"]["samples_s"] / res["monai-unet"]["samples_s"]
                ratios.append(r_basic)
                ours_all.append(res["ours"]["samples_s"])
                base_all.append(res["monai-basicunet"]["samples_s"])
                shape = "x".join([str(size)] * dims)
                rows.append(
                    [
                        f"{dims}D",
                        shape,
                        batch,
                        res["ours"]["samples_s"],
                        res["monai-basicunet"]["samples_s"],
                        res["monai-unet"]["samples_s"],
                        r_basic,
                        r_unet,
                        res["ours-defaults"]["samples_s"],
                        r_default,
                        res["ours"]["mem"],
                        res["monai-basicunet"]["mem"],
                        res["monai-unet"]["mem"],
                    ]
                )
                print(f"  done {dims}D {shape} batch {batch}: ours/BasicUNet {r_basic:.2f}x", flush=True)
                if args.variants:
                    base = res["ours"]["samples_s"]
                    cells = []
                    for opts in variants.values():
                        v = measure("ours", dims, size, batch, features[dims], args.norm, device, timing, **opts)
                        cells += [v["samples_s"], v["samples_s"] / base]
                    variant_rows.append([f"{dims}D", shape, batch, base, *cells])

    mem_h = common.memory_header(device)
    headers = [
        "dims",
        "patch",
        "batch",
        "ours samples/s",
        "BasicUNet samples/s",
        "MONAI UNet samples/s",
        "ours / BasicUNet",
        "ours / MONAI UNet",
        "ours, default options samples/s",
        "default options / BasicUNet",
        f"ours {mem_h}",
        f"BasicUNet {mem_h}",
        f"MONAI UNet {mem_h}",
    ]
    print()
    print(f"## Training step throughput ({'quick' if args.quick else 'full'} run, {device})")
    print(f"machine: {common.machine_info(device)}")
    print(
        f"widths 2D {features[2]}, 3D {features[3]}; norm {args.norm}; ReLU; no dropout; AdamW; 2 classes, "
        f"cross-entropy; timing: >= {timing['min_steps']} steps and >= {timing['min_seconds']} s after "
        f"{timing['warmup']} warm-up"
    )
    print()
    print(common.markdown_table(headers, rows))
    print()
    print(f"geometric mean ours / BasicUNet over {len(ratios)} configurations: {common.geometric_mean(ratios):.3f}x")
    if variant_rows:
        print()
        print("### Our step with each speed option (samples/s, and x the default step above)")
        v_headers = ["dims", "patch", "batch", "ours default"]
        for name in variants:
            v_headers += [name, "x"]
        print(common.markdown_table(v_headers, variant_rows))
        for k, name in enumerate(variants):
            gain = common.geometric_mean([r[5 + 2 * k] for r in variant_rows])
            print(f"geometric mean {name} / default: {gain:.3f}x")
    print(
        f"geometric mean ours with the trainer's default options / BasicUNet: "
        f"{common.geometric_mean(default_ratios):.3f}x"
    )
    common.emit_result(
        "train_samples_per_s_geomean_ours_default_options_vs_monai_basicunet",
        common.geometric_mean(ours_default_all),
        common.geometric_mean(base_all),
        "samples/s (geometric mean over configurations)",
        float32_ratio=round(common.geometric_mean(ratios), 4),
        default_options={d: default_options(d, device) for d in (2, 3)},
    )


if __name__ == "__main__":
    main()
