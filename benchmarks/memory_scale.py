"""Peak memory against dataset size: preprocess + a fixed number of training iterations.

Generates two 3D datasets of the same case size (default 20 and 400 cases of 128^3), runs the real
preprocess stage on each, then trains a fixed number of iterations through the pipeline's own
training data path (`pipeline.training.data.train_dataset` / `train_loader`, the trainer's model,
loss and optimiser builders). Each phase runs in its own process so its peak RSS (the process's
and its workers', `getrusage`) is its own.

Rows:
- small and large, with the RAM cache limited to `--cache-gb` (the large set's preprocessed bytes
  are many times that budget, so most of its patches come from memory-mapped arrays);
- small with every case in RAM (`train.cache_gb` above the set's size: the old all-in-RAM path,
  the speed baseline).

The large set's cases are the small set's source files linked under new case ids (generating
400 distinct volumes would take the run's whole budget); preprocess still reads, validates and
writes every one of them, and training reads 400 distinct preprocessed arrays.

Headline (last line): `ratio` = peak RSS at the large size / peak RSS at the small size (target
<= 1.3); the table also gives samples/s at the large size against the all-in-RAM small run
(target >= 0.9x).

    .venv/bin/python benchmarks/memory_scale.py [--quick] [--small 20] [--large 400] [--size 128]
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common  # puts the repo on sys.path: keep before the pipeline imports

CHILD = "--child"


def _peak_rss_mb() -> float:
    """Peak RSS of this process and of its (waited-for) children, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def _config(workdir: Path, args: Any, cache_gb: float, ids: list[str]) -> Any:
    from pipeline.config import parse_config

    size = args.size
    return parse_config(
        {
            "name": "memory-scale",
            "seed": 0,
            "data": {"root": str(workdir / "data"), "spatial_dims": 3, "modality": "other"},
            "preprocess": {
                "output_dir": str(workdir / "preprocessed"),
                "normalization": "zscore",
                "num_workers": 2,
                "split": {"train": ids[:-1], "val": ids[-1:]},
            },
            "model": {"features": [8, 16, 32], "padding": "same", "norm": "instance"},
            "train": {
                "batch_size": 2,
                "patch_size": [min(64, size)] * 3,
                "iterations_per_epoch": args.iterations,
                "cache_gb": cache_gb,
                "num_workers": 0,
                "augment": {"elastic": False, "rotate": True, "flip": True, "intensity": True},
            },
        },
        "<memory_scale>",
    )


# ------------------------------------------------------------------------------- child phases


def _child_preprocess(cfg: Any) -> dict[str, Any]:
    from pipeline.stages.preprocess import run

    t0 = time.perf_counter()
    run(cfg)
    return {"seconds": time.perf_counter() - t0}


def _child_train(cfg: Any, warmup: int) -> dict[str, Any]:
    """`iterations` training steps on the pipeline's data path; samples/s after `warmup` steps."""
    import torch

    from pipeline.data.manifest import load_manifest
    from pipeline.model import build_model
    from pipeline.training.data import train_dataset, train_loader
    from pipeline.training.losses import build_loss
    from pipeline.training.optim import build_optimizer

    torch.manual_seed(0)
    root = Path(cfg.preprocess.output_dir)
    manifest = load_manifest(root)
    t_build = time.perf_counter()
    dataset = train_dataset(cfg, manifest)
    build_s = time.perf_counter() - t_build
    n_classes = len(manifest["labels"])
    net = build_model(cfg.model, 3, 1, n_classes)
    loss_fn = build_loss(cfg, n_classes)
    opt = build_optimizer(cfg, net.parameters())
    steps, t0 = 0, 0.0
    for batch in train_loader(cfg, dataset, epoch_seed=1):
        if steps == warmup:
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(batch["image"]), batch["label"], None)
        loss.backward()
        opt.step()
        steps += 1
    timed = steps - warmup
    return {
        "samples_per_s": timed * cfg.train.batch_size / (time.perf_counter() - t0),
        "cached_cases": dataset.store.cached_cases,
        "cases": len(dataset.store),
        "cached_mib": dataset.store.cached_bytes / 2**20,
        "dataset_build_s": build_s,
    }


def child_main(argv: list[str]) -> None:
    phase, cfg_path, warmup = argv[0], Path(argv[1]), int(argv[2])
    import torch

    from pipeline.config import load_config

    torch.set_num_threads(common.cpu_cores())
    cfg = load_config(cfg_path)
    out = _child_preprocess(cfg) if phase == "preprocess" else _child_train(cfg, warmup)
    out["peak_rss_mb"] = _peak_rss_mb()
    print("RESULT " + json.dumps(out), flush=True)


def _run_child(phase: str, cfg: Any, workdir: Path, warmup: int) -> dict[str, Any]:
    import yaml

    cfg_path = workdir / f"{phase}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    proc = subprocess.run(
        [sys.executable, __file__, CHILD, phase, str(cfg_path), str(warmup)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if proc.returncode != 0:
        raise SystemExit(f"error: {phase} in {workdir} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines()[::-1] if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


# ------------------------------------------------------------------------------- datasets


def make_source(pool: Path, n: int, size: int) -> list[str]:
    """`n` distinct synthetic 3D cases of size^3 in `pool` (the embedded generator)."""
    from pipeline.data.synth import synthesize

    if not (pool / "dataset.json").is_file():
        synthesize(pool, dims=3, cases=n, seed=0, size=(size,) * 3)
    return sorted(e["id"] for e in json.loads((pool / "dataset.json").read_text())["training"])


def linked_dataset(pool: Path, pool_ids: list[str], n: int, dest: Path) -> list[str]:
    """A canonical dataset of `n` cases whose files link to the pool's, cycling through it."""
    from pipeline.data.canonical import DATASET_JSON, dumps, image_relpath, label_relpath

    meta = json.loads((pool / DATASET_JSON).read_text())
    (dest / "imagesTr").mkdir(parents=True)
    (dest / "labelsTr").mkdir()
    ids, training = [], []
    for i in range(n):
        src, cid = pool_ids[i % len(pool_ids)], f"case_{i:04d}"
        (dest / image_relpath(cid, 0)).symlink_to((pool / image_relpath(src, 0)).resolve())
        (dest / label_relpath(cid)).symlink_to((pool / label_relpath(src)).resolve())
        ids.append(cid)
        training.append({"id": cid, "images": [image_relpath(cid, 0)], "label": label_relpath(cid)})
    meta.update(training=training, numTraining=n)
    (dest / DATASET_JSON).write_text(dumps(meta))
    return ids


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--small", type=int, default=20, help="cases in the small dataset (default 20)")
    p.add_argument("--large", type=int, default=400, help="cases in the large dataset (default 400)")
    p.add_argument("--size", type=int, default=128, help="case edge length in voxels (default 128)")
    p.add_argument(
        "--iterations", type=int, default=40, help="training iterations per run (default 40; the first 5 are warm-up)"
    )
    p.add_argument("--cache-gb", type=float, default=0.1, help="train.cache_gb of the lazy runs (default 0.1)")
    p.add_argument(
        "--workdir", type=Path, default=Path("/tmp/bench_memory"), help="wiped first (default /tmp/bench_memory)"
    )
    args = p.parse_args()
    if args.quick:
        args.small, args.large, args.size, args.iterations, args.cache_gb = 4, 24, 48, 12, 0.005
    warmup = min(5, args.iterations // 3)
    common.setup_torch("cpu", args.threads)
    print(common.machine_info("cpu"))
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    pool = args.workdir / "pool"
    pool_ids = make_source(pool, args.small, args.size)

    rows, results = [], {}
    plan = [
        ("small", args.small, args.cache_gb),
        ("large", args.large, args.cache_gb),
        ("small, all in RAM", args.small, 1024.0),
    ]
    for label, n, cache_gb in plan:
        wd = args.workdir / label.split(",")[0]
        if not (wd / "preprocessed" / "manifest.json").is_file():
            ids = linked_dataset(pool, pool_ids, n, wd / "data")
            pre = _run_child("preprocess", _config(wd, args, cache_gb, ids), wd, warmup)
        else:  # the all-in-RAM row reuses the small set's preprocessed arrays
            ids = json.loads((wd / "data" / "dataset.json").read_text())["training"]
            ids = [e["id"] for e in ids]
            pre = results["small"]["pre"]
        train = _run_child("train", _config(wd, args, cache_gb, ids), wd, warmup)
        on_disk = _bytes(wd / "preprocessed" / "cases")
        results[label] = {"pre": pre, "train": train, "bytes": on_disk}
        peak = max(pre["peak_rss_mb"], train["peak_rss_mb"])
        rows.append(
            [
                label,
                n,
                f"{on_disk / 2**30:.2f}",
                f"{cache_gb:g}",
                f"{train['cached_cases']}/{train['cases']}",
                pre["seconds"],
                pre["peak_rss_mb"],
                train["peak_rss_mb"],
                peak,
                train["samples_per_s"],
            ]
        )
        print(f"{label}: {json.dumps(results[label])}", flush=True)

    print(
        f"\n{args.size}^3 cases, {args.iterations} iterations of batch 2 ({warmup} warm-up), patch "
        f"{min(64, args.size)}^3\n"
    )
    print(
        common.markdown_table(
            [
                "run",
                "cases",
                "preprocessed GiB",
                "cache_gb",
                "cached cases",
                "preprocess s",
                "preprocess peak RSS MiB",
                "train peak RSS MiB",
                "peak RSS MiB",
                "samples/s",
            ],
            rows,
        )
    )
    large, ram = results["large"], results["small, all in RAM"]
    peak = {k: max(v["pre"]["peak_rss_mb"], v["train"]["peak_rss_mb"]) for k, v in results.items()}
    speed = large["train"]["samples_per_s"] / ram["train"]["samples_per_s"]
    print(
        f"\npeak RSS large / small: {peak['large'] / peak['small']:.3f} (target <= 1.3); "
        f"samples/s large / small all-in-RAM: {speed:.3f} (target >= 0.9)"
    )
    assert large["bytes"] > args.cache_gb * 2**30, "the large set must exceed the cache budget"
    common.emit_result("peak_rss_mb_large_vs_small_dataset", peak["large"], peak["small"], "MiB")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        child_main(sys.argv[2:])
    else:
        main()
