"""Studies per minute of batch prediction (`predict FOLDER --workers N`) at 1 and 2 worker processes.

Each row predicts the same folder into a fresh output folder through `pipeline.predict.batch.
predict_folder`, each worker loading the model once and taking cores/N threads. Timed from the
call to its return, so the worker start-up (a fresh interpreter importing torch and loading the
model) is included, as a user pays it. The named baseline is 1 worker in the same process.

    .venv/bin/python benchmarks/batch_workers.py [--exported exported/] [--images data/imagesTr] [--copies 4]
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from common import REPO, base_parser, cpu_cores, emit_result, machine_info


def _folder(images: Path, copies: int, into: Path) -> int:
    """`copies` copies of every image under `images` (a study tree large enough to time)."""
    files = sorted(p for p in images.iterdir() if p.is_file())
    for k in range(copies):
        for f in files:
            shutil.copy2(f, into / f"c{k}_{f.name}")
    return len(files) * copies


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--exported", type=Path, default=REPO / "exported", help="an exported/ folder (dvc repro's)")
    p.add_argument("--images", type=Path, default=REPO / "data" / "imagesTr", help="a folder of images")
    p.add_argument("--copies", type=int, default=4, help="copies of the folder to predict (default 4, quick 1)")
    p.add_argument("--model", default="model.onnx", help="the exported file to run (default model.onnx)")
    args = p.parse_args()
    from pipeline.predict.batch import predict_folder

    copies = 1 if args.quick else args.copies
    rows: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "in"
        root.mkdir()
        n = _folder(args.images, copies, root)
        model = args.exported / args.model
        predict_folder(model, root, Path(tmp) / "warm", progress=False)  # file cache warm
        for workers in (1, 2):
            t0 = time.perf_counter()
            outcomes = predict_folder(model, root, Path(tmp) / f"out{workers}", workers=workers, progress=False)
            wall = time.perf_counter() - t0
            if any(o.status != "ok" for o in outcomes):
                raise SystemExit(f"error: {[o for o in outcomes if o.status != 'ok'][:3]}")
            rows[workers] = n / wall * 60
    print(f"# batch predict of {n} studies ({args.images}, {args.model}), {cpu_cores()} cores; {machine_info()}")
    print("| workers | studies/min |")
    print("|---|---|")
    for workers, rate in rows.items():
        print(f"| {workers} | {rate:.1f} |")
    emit_result("batch_predict_studies_per_min_2_workers_vs_1", rows[2], rows[1], "studies/min", studies=n)


if __name__ == "__main__":
    main()
