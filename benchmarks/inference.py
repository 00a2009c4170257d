"""Whole-image inference: our overlap-tile (valid net) and sliding window (same net) vs MONAI.

Two scenes: a whole ISBI 2012 slice (512x512, the real `slice_00.png` when the shared data is
present, else random) and a whole 3D volume (random 128^3, or `--volume file.nii.gz`). Rows:

- ours overlap-tile: `pipeline.inference.tiles` with a valid-padding `pipeline.model.UNet`
  (no blending, exact stitching), twice: with the config's output tile (`--tile2d/--tile3d`), and
  with one output tile covering the whole image (`inference.tile_size` >= the image size). A valid
  net gives the same answer for every tile size, so the tile is a pure speed/memory knob: larger
  tiles spend less on the mirrored context margin;
- ours sliding window: `pipeline.inference.windows` with the same-padding `UNet` at the same
  widths (gaussian blending, overlap 0.25 and 0.5);
- MONAI: `monai.inferers.sliding_window_inference` called directly (gaussian, overlap 0.25 and 0.5)
  with MONAI `BasicUNet` at matched widths, ReLU and the same normalisation when the widths have 5
  levels (BasicUNet's fixed depth); otherwise with our same-padding `UNet`. The overlap 0.5 row
  is the baseline.

No trained weights are involved (randomly initialised nets, same widths), so accuracy is compared
through the one thing the inference strategy changes: agreement with a single whole-image forward
pass of the same net (argmax agreement, max |logit difference|). Overlap-tile with batch norm in
eval mode reproduces the whole-image pass exactly; blended windows do not.

Overlap waste = 1 - image voxels / output voxels the net computed (counted from the real calls).
Input / image = input voxels the net was fed per image voxel (the valid net's context margin).

Headline (last line): 2D images/s of ours overlap-tile with the whole-image tile / MONAI sliding
window at overlap 0.5 (the row with the config's 196^2 tile is printed beside it).

    .venv/bin/python benchmarks/inference.py [--quick] [--device cuda]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import common


class CountingNet:
    """Wraps a net to count the voxels it reads and writes (one channel), per whole-image run."""

    def __init__(self, net: Any) -> None:
        self.net = net
        self.in_voxels = 0
        self.out_voxels = 0

    def __call__(self, x: Any) -> Any:
        y = self.net(x)
        self.in_voxels += x[:, 0].numel()
        self.out_voxels += y[:, 0].numel()
        return y

    def reset(self) -> None:
        self.in_voxels = self.out_voxels = 0


def load_volume(spec: str) -> tuple[Any, str]:
    """(1, x, y, z) z-scored volume: a NIfTI path, or an edge length for a random cube."""
    import numpy as np
    import torch

    if spec.isdigit():
        n = int(spec)
        arr = np.random.default_rng(0).normal(size=(n, n, n)).astype(np.float32)
        source = f"random {n}^3"
    else:
        import nibabel as nib

        arr = np.asarray(nib.load(spec).dataobj, dtype=np.float32)
        if arr.ndim != 3:
            raise SystemExit(f"error: --volume {spec}: expected a 3D image, got shape {arr.shape}")
        source = f"{spec} {arr.shape}"
    arr = (arr - arr.mean()) / (arr.std() + 1e-8)
    return torch.from_numpy(np.ascontiguousarray(arr))[None], source


def build_nets(dims: int, features: list[int], norm: str, device: str) -> dict[str, Any]:
    """valid and same `UNet`s and (5 widths) a matched MONAI BasicUNet, eval mode on device."""
    import torch

    from pipeline.model import UNet

    torch.manual_seed(0)
    nets: dict[str, Any] = {
        "valid": UNet(dims, 1, 2, features, padding="valid", norm=norm),
        "same": UNet(dims, 1, 2, features, padding="same", norm=norm),
    }
    if len(features) == 5:
        nets["monai"] = common.matched_basic_unet(dims, features, norm)
    else:
        nets["monai"] = nets["same"]
    return {k: v.to(device).eval() for k, v in nets.items()}


def whole_image_reference(image: Any, net: Any, depth: int, padding: str) -> Any:
    """Logits of one forward pass over the whole (padded) image, cropped to the image."""
    import torch
    import torch.nn.functional as F

    from pipeline.inference import mirror_pad
    from pipeline.model import legal_input_size, margin

    size = tuple(image.shape[1:])
    with torch.no_grad():
        if padding == "valid":
            m = margin(depth)
            legal = legal_input_size(size, depth, "valid")  # output >= size
            x = mirror_pad(image, [m] * len(size), [L - n - m for L, n in zip(legal, size)])
        else:
            step = 2**depth
            pads: list[int] = []
            for n in reversed(size):
                pads += [0, math.ceil(n / step) * step - n]
            x = F.pad(image, pads)
        out = net(x[None])[0]
    return out[(slice(None), *(slice(0, n) for n in size))]


def run_rows(
    scene: str,
    image: Any,
    nets: dict[str, Any],
    depth: int,
    tile: Sequence[int],
    roi: Sequence[int],
    batch: int,
    device: str,
    warmup: int,
    repeats: int,
    reference: bool,
    ours_layout: Any,
    overlaps: Sequence[float],
) -> list[dict[str, Any]]:
    """Time every strategy on one image; returns one record per table row."""
    import torch
    from monai.inferers import sliding_window_inference

    from pipeline.inference import overlap_tile, sliding_window
    from pipeline.inference.layout import channels_last

    image = image.to(device=device, dtype=torch.float32)
    voxels = image[0].numel()
    monai_label = "BasicUNet" if nets["monai"] is not nets["same"] else "our same UNet"
    whole = tuple(image.shape[1:])  # one output tile covering the image: legal for a valid net, same result
    # (row, net label, window, net, strategy, layout): ours run in the product's layout
    # (`inference.channels_last`, `ours_layout`); MONAI as a user calls it, and once more on a
    # channels-last net, which tells the layout's share of the gap from the strategy's
    cases: list[tuple[str, str, str, Any, Any, Any]] = [
        (
            "ours overlap-tile",
            "our valid UNet",
            f"tile out {tuple(tile)}",
            nets["valid"],
            lambda n: overlap_tile(image, n, depth, tile, batch),
            ours_layout,
        ),
        (
            "ours overlap-tile, whole-image tile",
            "our valid UNet",
            f"tile out >= {whole}",
            nets["valid"],
            lambda n: overlap_tile(image, n, depth, whole, batch),
            ours_layout,
        ),
    ]
    for ov in overlaps:
        cases.append(
            (
                f"ours sliding window {ov}",
                "our same UNet",
                f"roi {tuple(roi)}",
                nets["same"],
                lambda n, ov=ov: sliding_window(image, n, roi, ov, "gaussian", batch, depth),
                ours_layout,
            )
        )
    for ov, layout in [(ov, False) for ov in overlaps] + [(0.5, True)]:
        cases.append(
            (
                f"MONAI sliding_window_inference {ov}" + (", channels-last net" if layout else ""),
                monai_label,
                f"roi {tuple(roi)}",
                nets["monai"],
                lambda n, ov=ov: sliding_window_inference(image[None], roi, batch, n, overlap=ov, mode="gaussian")[0],
                layout,
            )
        )

    refs: dict[tuple[int, bool], Any] = {}
    rows = []
    for name, net_label, window, net, fn, layout in cases:
        with channels_last(net, len(tile), layout) as run:
            counter = CountingNet(run)
            with common.PeakMemory(device) as mem, torch.no_grad():
                times = common.time_calls(lambda fn=fn, counter=counter: fn(counter), device, warmup, repeats)
            runs = warmup + repeats
            out_vox, in_vox = counter.out_voxels / runs, counter.in_voxels / runs
            agree = max_diff = float("nan")
            if reference:  # against a whole pass in the row's own layout: the strategy's error alone
                with torch.no_grad():
                    pred = torch.as_tensor(fn(run))
                    key = (id(net), run is not net)
                    if key not in refs:
                        refs[key] = whole_image_reference(
                            image, run, depth, "valid" if net is nets["valid"] else "same"
                        )
                    ref = refs[key]
                agree = float((pred.argmax(0) == ref.argmax(0)).float().mean()) * 100
                max_diff = float((pred - ref).abs().max())
        sec = common.median(times)
        rows.append(
            {
                "scene": scene,
                "method": name,
                "net": net_label,
                "window": window,
                "sec": sec,
                "images_s": 1.0 / sec,
                "mvox_s": voxels / sec / 1e6,
                "waste": 1.0 - voxels / out_vox,
                "input_ratio": in_vox / voxels,
                "mem": mem.describe(),
                "agree": agree,
                "max_diff": max_diff,
            }
        )
        print(f"  done {scene}: {name} {sec:.3f} s", flush=True)
    if reference and (id(nets["valid"]), True) in refs:
        layouts = [refs.get((id(nets["valid"]), cl)) for cl in (False, True)]
        if layouts[0] is None:
            with torch.no_grad():
                layouts[0] = whole_image_reference(image, nets["valid"], depth, "valid")
        agree = float((layouts[0].argmax(0) == layouts[1].argmax(0)).float().mean()) * 100
        diff = float((layouts[0] - layouts[1]).abs().max())
        rows[0]["layout_note"] = (
            f"{scene}: the valid net's whole pass, channels-last vs default layout: argmax agreement {agree:.4f} %, "
            f"max |logit diff| {diff:.1e} (float rounding order)"
        )
    return rows


def main() -> None:
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--features2d", default="32,64,128,256,512", help="2D widths (default: configs/isbi2012-2d.yaml)")
    p.add_argument("--features3d", default="16,32,64,128", help="3D widths (default: configs/hippocampus-3d.yaml)")
    p.add_argument(
        "--norm2d", default="batch", choices=["batch", "instance", "none"], help="2D norm (ISBI config: batch)"
    )
    p.add_argument(
        "--norm3d",
        default="instance",
        choices=["batch", "instance", "none"],
        help="3D norm (hippocampus config: instance)",
    )
    p.add_argument("--tile2d", type=int, default=196, help="overlap-tile output tile edge, 2D (ISBI config: 196)")
    p.add_argument("--roi2d", type=int, default=256, help="sliding-window ROI edge, 2D")
    p.add_argument("--tile3d", type=int, default=64, help="overlap-tile output tile edge, 3D")
    p.add_argument("--roi3d", type=int, default=64, help="sliding-window ROI edge, 3D")
    p.add_argument(
        "--volume", default=None, help="3D volume: a NIfTI path or an edge length for a random cube (default: 128)"
    )
    p.add_argument("--batch", type=int, default=4, help="tiles/windows per forward pass (inference.batch_size)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per row (median reported)")
    p.add_argument("--no-reference", action="store_true", help="skip the whole-image-pass agreement columns")
    p.add_argument(
        "--ours-layout",
        default="auto",
        choices=["auto", "true", "false"],
        help="inference.channels_last for our rows (default auto: the product's default)",
    )
    args = p.parse_args()
    device = common.setup_torch(args.device, args.threads)

    f2 = [int(f) for f in args.features2d.split(",")]
    f3 = [int(f) for f in args.features3d.split(",")]
    overlaps: tuple[float, ...] = (0.25, 0.5)
    if args.quick:
        # the full run's scenes (the whole 512^2 slice under a 256^2 window, the 128^3 volume under
        # 64^3 windows) and its 2D widths; 3D nets half as wide at the same depth (same margin), two
        # timed runs, and overlap 0.5 only: a cheaper measurement of the same comparison, not
        # another comparison. (A 64^3 volume under 32^3 windows kept the window : image ratio but
        # not the valid net's margin : image ratio, and measured 0.28x where the full run measured
        # 1.22x; half-width 2D nets measured 4.73x where the full widths measure 3.19x, since
        # channels-last gains most on narrow layers.)
        slice_size, volume = None, args.volume or "128"
        if args.features3d == p.get_default("features3d"):
            f3 = [f // 2 for f in f3]
        tile3d, roi3d = args.tile3d, args.roi3d
        warmup, repeats = 1, args.repeats or 2
        overlaps = (0.5,)
    else:
        slice_size, volume = None, args.volume or "128"
        tile3d, roi3d = args.tile3d, args.roi3d
        warmup, repeats = 1, args.repeats or 3

    scenes = []
    image2d, src2d = common.isbi_slice(slice_size)
    scenes.append(("2D", image2d, src2d, f2, args.norm2d, [args.tile2d] * 2, [args.roi2d] * 2))
    image3d, src3d = load_volume(volume)
    scenes.append(("3D", image3d, src3d, f3, args.norm3d, [tile3d] * 3, [roi3d] * 3))

    rows: list[dict[str, Any]] = []
    notes = []
    for scene, image, source, feats, norm, tile, roi in scenes:
        depth = len(feats) - 1
        if any(r % 2**depth for r in roi):
            raise SystemExit(f"error: {scene} ROI {roi} must be a multiple of 2**depth = {2**depth}")
        nets = build_nets(len(tile), feats, norm, device)
        notes.append(
            f"{scene}: {source}, widths {feats} (depth {depth}), norm {norm}, batch {args.batch}, "
            f"our rows inference.channels_last={args.ours_layout}"
        )
        rows += run_rows(
            scene,
            image,
            nets,
            depth,
            tile,
            roi,
            args.batch,
            device,
            warmup,
            repeats,
            not args.no_reference,
            {"auto": "auto", "true": True, "false": False}[args.ours_layout],
            overlaps,
        )
        del nets

    mem_h = common.memory_header(device)
    headers = [
        "scene",
        "method",
        "net",
        "window",
        "s / image",
        "images/s",
        "Mvoxels/s",
        "overlap waste",
        "input / image",
        mem_h,
        "argmax agreement w/ whole pass (%)",
        "max abs logit diff",
    ]
    table = [
        [
            r["scene"],
            r["method"],
            r["net"],
            r["window"],
            r["sec"],
            r["images_s"],
            r["mvox_s"],
            r["waste"],
            r["input_ratio"],
            r["mem"],
            r["agree"],
            r["max_diff"],
        ]
        for r in rows
    ]
    print()
    print(f"## Whole-image inference ({'quick' if args.quick else 'full'} run, {device})")
    print(f"machine: {common.machine_info(device)}")
    for n in notes + [r["layout_note"] for r in rows if "layout_note" in r]:
        print(f"- {n}")
    print(
        f"- timing: median of {repeats} run(s) after {warmup} warm-up; random weights (no trained model), equal widths"
    )
    print()
    print(common.markdown_table(headers, table))
    print()
    for scene in ("2D", "3D"):
        by_method = {r["method"]: r for r in rows if r["scene"] == scene}
        for baseline in ("MONAI sliding_window_inference 0.5", "MONAI sliding_window_inference 0.5, channels-last net"):
            for method in ("ours overlap-tile", "ours overlap-tile, whole-image tile"):
                ratio = by_method[method]["images_s"] / by_method[baseline]["images_s"]
                print(f"{scene} {method} vs {baseline}: {ratio:.2f}x")
    row_2d = {r["method"]: r for r in rows if r["scene"] == "2D"}
    base = row_2d["MONAI sliding_window_inference 0.5"]
    ours = row_2d["ours overlap-tile, whole-image tile"]
    common.emit_result(
        "inference_2d_images_per_s_overlap_tile_vs_monai_swi_0.5", ours["images_s"], base["images_s"], "images/s"
    )


if __name__ == "__main__":
    main()
