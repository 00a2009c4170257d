"""How close is our U-Net to what this CPU can do? The paper's 572² -> 388² tile, layer by layer.

Every convolution of the forward pass (the 3x3 valid convolutions, the 2x2 up-convolutions, the
1x1 head) is recorded with its exact input shape by a forward hook. Each is then timed alone,
with the same threads, in every form oneDNN offers through torch:
- `nchw`: `F.conv2d` on contiguous tensors (torch's default dispatch to oneDNN);
- `channels_last`: input and weight in NHWC, the layout oneDNN's direct kernels prefer;
- `mkldnn`: weights prepacked for oneDNN once (`torch.utils.mkldnn.to_mkldnn`) and the input in
  oneDNN's blocked layout, its conversion excluded (3x3 and 1x1 only; torch has no prepacked
  transposed convolution).
The best of them per layer, summed, is the *ceiling*: the convolutions alone, each at its fastest,
with nothing else (ReLU, pooling, crops, concatenation, layout changes) costing anything. The
forward pass of our `UNet` as eager inference runs it (`torch.no_grad`, `inference.channels_last`
at its default `auto`: channels-last on the CPU, `pipeline.inference.layout`) is the measured
figure, torch's default layout printed beside it; the ratio ours / ceiling says how much is left
on the table. The paper's net (64..1024 wide, 2 classes,
no normalisation); `--quick` measures the same, timing each call once instead of the best of 5.

    .venv/bin/python benchmarks/ceiling.py [--quick] [--threads N]
"""

from __future__ import annotations

from typing import Any

from common import base_parser, emit_result, machine_info, setup_torch, time_calls

TILE = 572


def conv_layers(net: Any, x: Any) -> list[tuple[str, Any, tuple[int, ...]]]:
    """(name, module, input shape) of every convolution, in execution order."""
    import torch

    seen: list[tuple[str, Any, tuple[int, ...]]] = []
    hooks = []
    for name, mod in net.named_modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            hooks.append(
                mod.register_forward_hook(lambda m, inp, out, n=name: seen.append((n, m, tuple(inp[0].shape))))
            )
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return seen


def gflop(mod: Any, shape: tuple[int, ...]) -> float:
    """Multiply-adds x 2 of one convolution on an input of `shape`."""
    import torch

    n, c, h, w = shape
    kh, kw = mod.kernel_size
    if isinstance(mod, torch.nn.ConvTranspose2d):
        out_pixels = h * w * kh * kw  # each input pixel writes a kh x kw block (stride = kernel)
        return 2.0 * n * out_pixels * c * mod.out_channels / 1e9
    oh, ow = h - kh + 1 + 2 * mod.padding[0], w - kw + 1 + 2 * mod.padding[1]
    return 2.0 * n * oh * ow * c * mod.out_channels * kh * kw / 1e9


def variants(mod: Any, shape: tuple[int, ...]) -> dict[str, Any]:
    """Callables running this one convolution in each form oneDNN offers."""
    import torch

    x = torch.randn(shape)
    out: dict[str, Any] = {}
    with torch.no_grad():
        out["nchw"] = lambda: mod(x)
        cl_mod = _copy(mod).to(memory_format=torch.channels_last)
        cl_x = x.contiguous(memory_format=torch.channels_last)
        out["channels_last"] = lambda: cl_mod(cl_x)
        if isinstance(mod, torch.nn.Conv2d) and torch.backends.mkldnn.is_available():
            from torch.utils import mkldnn as mkldnn_utils

            packed = mkldnn_utils.to_mkldnn(_copy(mod))
            mk_x = x.to_mkldnn()
            out["mkldnn"] = lambda: packed(mk_x)
    return out


def _copy(mod: Any) -> Any:
    import copy

    return copy.deepcopy(mod).eval()


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="timed calls per layer and form (best kept; quick 1)")
    args = p.parse_args()
    device = setup_torch("cpu", args.threads)
    import torch

    from pipeline.inference.layout import channels_last
    from pipeline.model import UNet

    repeats = 1 if args.quick else args.repeats  # quick: the same net and tile, one timed call each
    features = [64, 128, 256, 512, 1024]
    net = UNet(2, 1, 2, features=features, padding="valid").eval()
    x = torch.randn(1, 1, TILE, TILE)
    layers = conv_layers(net, x)
    with torch.no_grad():
        forward_default = min(time_calls(lambda: net(x), device, 1, repeats))
        with channels_last(net, 2, "auto") as run:
            forward = min(time_calls(lambda: run(x), device, 1, repeats))
    rows, total_best, total_flop = [], 0.0, 0.0
    wins: dict[str, int] = {}
    for name, mod, shape in layers:
        times = {}
        with torch.no_grad():
            for form, fn in variants(mod, shape).items():
                times[form] = min(time_calls(fn, device, 1, repeats))
        best_form = min(times, key=times.get)
        wins[best_form] = wins.get(best_form, 0) + 1
        flop = gflop(mod, shape)
        total_best += times[best_form]
        total_flop += flop
        rows.append((name, shape, flop, times, best_form))
    forms = ["nchw", "channels_last", "mkldnn"]
    run = "quick" if args.quick else "full"
    print(f"## The paper's {TILE}² tile, features {features}, {run} run (best of {repeats} timed calls)")
    print(f"{machine_info(device)}; oneDNN available: {torch.backends.mkldnn.is_available()}")
    print()
    print("| layer | input | GFLOP | " + " | ".join(f"{f} ms" for f in forms) + " | best | GFLOP/s |")
    print("|---|---|---|" + "---|" * len(forms) + "---|---|")
    for name, shape, flop, times, best in rows:
        cells = " | ".join(f"{1e3 * times[f]:.1f}" if f in times else "-" for f in forms)
        print(
            f"| {name} | {'x'.join(map(str, shape[1:]))} | {flop:.2f} | {cells} | {best} | {flop / times[best]:.0f} |"
        )
    print()
    print("| figure | value |")
    print("|---|---|")
    print(f"| convolutions | {len(layers)} layers, {total_flop:.1f} GFLOP |")
    print(
        f"| ceiling: each convolution at its fastest form, summed | {total_best:.3f} s "
        f"({total_flop / total_best:.0f} GFLOP/s) |"
    )
    print(
        f"| our UNet forward, as inference runs it (channels-last; best of {repeats}) | {forward:.3f} s "
        f"({total_flop / forward:.0f} GFLOP/s) |"
    )
    default_rate = total_flop / forward_default
    print(f"| our UNet forward, torch's default layout | {forward_default:.3f} s ({default_rate:.0f} GFLOP/s) |")
    print(f"| ours / ceiling | {forward / total_best:.2f}x (default layout: {forward_default / total_best:.2f}x) |")
    print(f"| fastest form per layer | {', '.join(f'{k} {v}' for k, v in sorted(wins.items()))} |")
    emit_result(
        "paper_tile_572_forward_s_ours_vs_conv_ceiling",
        forward,
        total_best,
        "s",
        gflop=round(total_flop, 2),
        quick=bool(args.quick),
        default_layout_s=round(forward_default, 4),
    )


if __name__ == "__main__":
    main()
