"""Runtimes: PyTorch eager vs TorchScript vs ONNX Runtime (CPU EP) for the exported U-Net.

The model goes through the export stage's own functions (`pipeline.export.export_torchscript`,
`export_onnx`) and is loaded back as the predictor loads it (`TorchScriptNet`, `OnnxNet` with
intra-op threads = cores), so the numbers are those of `unet-pipeline predict`. Two latencies:

- per tile: one forward pass of batch 1 at the legal input tile of the inference settings;
- per case: `pipeline.inference.predict_logits` over a whole image (overlap-tile for a valid net,
  sliding window for a same net), the evaluate stage's and the predictor's path.

Default model: a freshly initialised paper-like 2D valid net at the ISBI preset's widths
(32..512, batch norm, output tile 196^2) on a whole ISBI 2012 slice (512^2, `slice_00.png` from the
shared data, else random). `--exported DIR` benchmarks an `exported/` folder from `dvc repro`
instead (its `model.ts`, `model.onnx` and `configs/metadata.json`; eager = the TorchScript weights
loaded into `pipeline.model.UNet`); `--image` picks the whole case (preprocessed with the bundle's
recorded spec when one is given).

Headline (last line): per-case speedup of ONNX Runtime over PyTorch eager (s/case eager / s/case ONNX).

    .venv/bin/python benchmarks/runtimes.py [--quick] [--exported exported/] [--image IMG]
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import common


def fresh_model(out_dir: Path, features: list[int], norm: str, tile: int) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(eager net, model_args, inference settings dict) of a fresh 2D valid UNet, exported into out_dir."""
    import torch

    from pipeline.export import export_onnx, export_torchscript
    from pipeline.model import UNet

    torch.manual_seed(0)
    args = {
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 2,
        "features": features,
        "padding": "valid",
        "norm": norm,
        "dropout": 0.0,
        "upsample": "transpose",
    }
    net = UNet(**args).eval()
    # a fresh net's batch-norm running stats are 0/1; give them realistic values so eval mode is not trivial
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    export_torchscript(net, out_dir / "model.ts")
    export_onnx(net, out_dir / "model.onnx", 2, 1, len(features) - 1, "valid")
    settings = {
        "padding": "valid",
        "depth": len(features) - 1,
        "tile_size": [tile, tile],
        "overlap": 0.5,
        "blend": "gaussian",
        "batch_size": 4,
    }
    return net, args, settings


def exported_model(folder: Path) -> tuple[Any, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(eager net, model_args, inference settings, preprocessing spec) from an exported/ folder."""
    from pipeline.export import load_torchscript
    from pipeline.model import UNet

    meta_path = folder / "configs" / "metadata.json"
    for p in (meta_path, folder / "model.ts", folder / "model.onnx"):
        if not p.is_file():
            raise SystemExit(f"error: --exported {folder}: {p} not found; pass the export stage's output folder")
    up = json.loads(meta_path.read_text())["unet_pipeline"]
    args = dict(up["model_args"])
    net = UNet(**args)
    state = load_torchscript(folder / "model.ts").state_dict()
    net.load_state_dict({k: v.detach().clone() for k, v in state.items()})
    return net.eval(), args, dict(up["inference"]), dict(up.get("preprocessing") or {})


def whole_case(
    args_image: str | None, spec: dict[str, Any] | None, dims: int, size2d: int | None, tile: list[int]
) -> tuple[Any, str]:
    """The whole image (C, *spatial) the per-case latency is measured on, and a description."""
    import numpy as np
    import torch

    if args_image:
        if spec:
            from pipeline.inference.case import preprocess

            image, _ = preprocess(args_image, spec)
        else:
            from pipeline.io import read_image

            image = read_image(args_image)
            image = (image - image.mean()) / (image.std() + 1e-8)
        image = torch.as_tensor(image).as_subclass(torch.Tensor).float()  # plain tensor: no meta tracking in timing
        return image, f"{args_image} {tuple(image.shape)}"
    if dims == 2:
        return common.isbi_slice(size2d)
    shape = [2 * t for t in tile]
    arr = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    return torch.from_numpy(arr)[
        None
    ], f"random {'x'.join(map(str, shape))} (2x the tile; pass --image for a real case)"


def main() -> None:
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--exported", type=Path, default=None, help="an exported/ folder (default: export a fresh net)")
    p.add_argument(
        "--image", default=None, help="whole-case image file (default: ISBI slice 0, or a random volume in 3D)"
    )
    p.add_argument(
        "--features", default="32,64,128,256,512", help="fresh net widths (default: configs/isbi2012-2d.yaml)"
    )
    p.add_argument("--norm", default="batch", choices=["batch", "instance", "none"], help="fresh net normalisation")
    p.add_argument("--tile", type=int, default=196, help="fresh net output tile edge (ISBI config: 196)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per row (median reported)")
    args = p.parse_args()
    if args.device and args.device != "cpu":
        raise SystemExit("error: this benchmark compares CPU runtimes (ONNX Runtime CPU EP); use --device cpu")
    device = common.setup_torch("cpu", args.threads)
    threads = args.threads or common.cpu_cores()

    import torch

    from pipeline.inference import InferenceSettings, predict_logits
    from pipeline.inference.layout import channels_last
    from pipeline.model import legal_input_size
    from pipeline.model.jit import quiet_jit
    from pipeline.predict import OnnxNet, TorchScriptNet

    # quick: the full run's slice and widths, one timed run a row (half-width nets measured ONNX
    # Runtime 1.19x eager where the full widths measure 1.56x: channels-last eager gains most on
    # narrow layers)
    if args.quick:
        size2d, warmup, case_warmup, repeats = None, 1, 1, args.repeats or 1
    else:
        size2d, warmup, case_warmup, repeats = None, 1, 1, args.repeats or 3

    with tempfile.TemporaryDirectory(prefix="bench_runtimes_") as tmp:
        spec: dict[str, Any] | None = None
        if args.exported is not None:
            folder = args.exported
            net, margs, settings, spec = exported_model(folder)
            source = f"exported folder {folder}"
        else:
            folder = Path(tmp)
            feats = [int(f) for f in args.features.split(",")]
            net, margs, settings = fresh_model(folder, feats, args.norm, args.tile)
            source = f"fresh 2D valid UNet {feats}, norm {args.norm}, exported by pipeline.export"
        dims, depth, padding = int(margs["spatial_dims"]), len(margs["features"]) - 1, str(margs["padding"])
        tile = [int(t) for t in settings["tile_size"]]
        in_tile = list(legal_input_size(tile, depth, padding))
        image, case_src = whole_case(args.image, spec, dims, size2d, tile)
        runtimes: dict[str, Any] = {
            "PyTorch eager": net,
            "TorchScript": TorchScriptNet(folder / "model.ts", "cpu"),
            f"ONNX Runtime (CPU EP, {threads} threads)": OnnxNet(folder / "model.onnx", "cpu", threads=threads),
        }

        x_tile = torch.randn(1, int(margs["in_channels"]), *in_tile)
        case_settings = InferenceSettings.from_dict({**settings, "padding": padding, "depth": depth, "tile_size": tile})
        rows, per_case, ref = [], {}, None
        for name, rt in runtimes.items():
            # each runtime as inference runs it: eager in the layout `inference.channels_last` picks
            with torch.no_grad(), quiet_jit(), channels_last(rt, dims, case_settings.channels_last) as run:
                tile_times = common.time_calls(lambda run=run: run(x_tile), device, warmup, repeats)
                with common.PeakMemory(device) as mem:
                    case_times = common.time_calls(
                        lambda rt=rt: predict_logits(image, rt, case_settings), device, case_warmup, repeats
                    )
                out = predict_logits(image, rt, case_settings)
            if ref is None:
                ref = out
            diff = float((out - ref).abs().max())
            agree = float((out.argmax(0) == ref.argmax(0)).float().mean()) * 100
            t_tile, t_case = common.median(tile_times), common.median(case_times)
            per_case[name] = t_case
            rows.append([name, t_tile * 1e3, t_case, 1.0 / t_case, mem.describe(), diff, agree])
            print(f"  done {name}: tile {t_tile * 1e3:.0f} ms, case {t_case:.2f} s", flush=True)

    eager = per_case["PyTorch eager"]
    for r in rows:
        r.insert(4, eager / per_case[r[0]])
    headers = [
        "runtime",
        "ms / tile (batch 1)",
        "s / case",
        "cases/s",
        "speedup vs eager (case)",
        common.memory_header(device) + " (case)",
        "max abs logit diff vs eager",
        "argmax agreement (%)",
    ]
    print()
    print(f"## Runtimes: eager vs TorchScript vs ONNX Runtime ({'quick' if args.quick else 'full'} run, cpu)")
    print(f"machine: {common.machine_info(device)}")
    print(f"- model: {source}; {dims}D, {padding} padding, depth {depth}")
    print(
        f"- tile: input {tuple(in_tile)} -> output tile {tuple(tile)}; case: {case_src}, {padding} "
        f"{'overlap-tile' if padding == 'valid' else 'sliding window'}, batch {case_settings.batch_size}"
    )
    print(
        f"- timing: median of {repeats} run(s); per tile after {warmup} warm-up call(s), per case after "
        f"the tile runs and {case_warmup} warm-up case(s)"
    )
    print()
    print(common.markdown_table(headers, rows))
    onnx_name = next(n for n in per_case if n.startswith("ONNX"))
    print()
    print(f"ONNX Runtime vs PyTorch eager per case: {eager / per_case[onnx_name]:.2f}x")
    # ours = ONNX cases/s, baseline = eager cases/s: ratio = the speedup
    common.emit_result(
        "runtime_case_per_s_onnxruntime_vs_torch_eager", 1.0 / per_case[onnx_name], 1.0 / eager, "cases/s"
    )


if __name__ == "__main__":
    main()
