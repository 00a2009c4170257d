"""Start-to-finish wall time of `unet-pipeline predict` on one 2D image: what a clinical tool waits
for when it calls the predictor once per study.

Each run is a fresh interpreter (`python -c` calling `pipeline.cli.main`), timed from process start
to exit. Rows:
- `model.onnx`, the torch-free path (`pipeline.predict.onnx_light`, the default where it applies);
- `model.onnx` through the full torch + MONAI path (the same CLI with `Predictor(light=False)`):
  the named baseline;
- `model.ts` (TorchScript always takes the full path).
The last line is the JSON record: predictions/s of the light path against the full path.

    .venv/bin/python benchmarks/predict_startup.py [--quick] [--exported exported/] [--image IMG]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, base_parser, emit_result, machine_info, median

HARNESS = """
import json, sys
light = sys.argv[1] == "light"
if not light:  # the same CLI, with the predictor's torch-free path switched off
    from pipeline.predict import predictor
    predictor.Predictor.__init__.__kwdefaults__["light"] = False
from pipeline.cli import main
rc = main(["predict", *sys.argv[2:]])
print(json.dumps({"rc": rc, "loaded": [m for m in ("torch", "monai") if m in sys.modules]}))
"""


def run_once(mode: str, model: Path, image: Path, out: Path) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", HARNESS, mode, str(image), "--model", str(model), "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"error: predict ({mode}, {model.name}) failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return wall, result["loaded"]


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--exported", type=Path, default=REPO / "exported", help="an exported/ folder (dvc repro's)")
    p.add_argument("--image", type=Path, default=None, help="one 2D image (default: the first data/imagesTr case)")
    p.add_argument("--repeats", type=int, default=5, help="runs per row (median reported; default 5, quick 2)")
    args = p.parse_args()
    repeats = 2 if args.quick else args.repeats
    image = args.image or sorted((REPO / "data" / "imagesTr").glob("*"))[0]
    for name in ("model.onnx", "model.ts"):
        if not (args.exported / name).is_file():
            raise SystemExit(f"error: {args.exported / name} not found; run `dvc repro` or pass --exported")
    rows = [("model.onnx", "light"), ("model.onnx", "full"), ("model.ts", "full")]
    walls: dict[tuple[str, str], list[float]] = {}
    loaded: dict[tuple[str, str], list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        run_once("light", args.exported / "model.onnx", image, Path(tmp) / "warm.nii.gz")  # file cache warm
        for k in range(repeats):
            for model, mode in rows:  # interleaved, so drift hits every row alike
                wall, mods = run_once(mode, args.exported / model, image, Path(tmp) / f"{k}_{mode}_{model}.nii.gz")
                walls.setdefault((model, mode), []).append(wall)
                loaded[(model, mode)] = mods
    print(f"# predict one 2D image ({image.name}), {repeats} runs a row, median wall s; {machine_info()}")
    print("| model | path | wall s (median) | min | torch / monai imported |")
    print("|---|---|---|---|---|")
    med = {}
    for key in rows:
        med[key] = median(walls[key])
        mods = ", ".join(loaded[key]) or "neither"
        print(f"| {key[0]} | {key[1]} | {med[key]:.2f} | {min(walls[key]):.2f} | {mods} |")
    light, full = med[("model.onnx", "light")], med[("model.onnx", "full")]
    emit_result(
        "predict_cli_one_2d_image_runs_per_s_onnx_light_vs_full_path",
        1.0 / light,
        1.0 / full,
        "runs/s",
        light_wall_s=round(light, 3),
        full_wall_s=round(full, 3),
    )


if __name__ == "__main__":
    main()
