"""Which watershed settings cut ISBI cells best, chosen on the training slices, checked on validation.

The evaluate stage, predict and the bundle cut cells with `evaluate.watershed` (Gaussian sigma on
p(membrane), seed threshold t on p(cell), h-maxima height of the distance transform;
`pipeline.inference.instances`). Picking those three on the validation slices tunes on the five
slices that are supposed to judge the result. This script picks them on the 20 *training* slices
instead, the way nnU-Net chooses its post-processing on training data, and only then reads the
validation slices:

1. loads the trained work dir of `accuracy_isbi.py` (best.pt, the preset plus -S, e.g.
   `-S inference.tta=true`) and predicts p(membrane) on every slice of both splits once, with the
   evaluate stage's inference settings, on the preprocessed grid (for ISBI, the source grid);
2. cuts every slice with each setting of the grid and scores the instances with the challenge's
   V_Rand (`pipeline.evaluation.em_metrics.split_merge_scores`, as the evaluate stage does);
3. prints the settings ranked by the training slices' V_Rand, with the validation slices' beside
   them, and the preset's own setting.

    .venv/bin/python benchmarks/isbi_watershed.py [--workdir /tmp/bench_isbi] [-S inference.tta=true]

Last line: the validation V_Rand of the setting that wins on the training slices against the
preset's setting.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import accuracy_common as acc
import common  # puts the repo on sys.path: keep before the pipeline imports

SIGMAS = (0.0, 1.0, 2.0)
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
MARKER_HS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)  # 0: one seed per connected region of p(cell) > t
TOP = 15  # rows of the ranked table


def probabilities(cfg: Any, membrane: int) -> dict[str, list[tuple[Any, Any]]]:
    """{split: [(class probabilities, truth cells as a label image), ...]} for the train and val
    slices, from best.pt with the evaluate stage's inference settings."""
    from pipeline.evaluation.em_metrics import truth_cells

    out: dict[str, list[tuple[Any, Any]]] = {"train": [], "val": []}
    for split, _, prob, label in acc.best_checkpoint_probabilities(cfg, tuple(out)):
        out[split].append((prob, truth_cells(label != membrane)))
    for split, cases in out.items():
        print(f"predicted {len(cases)} {split} slices (tta={cfg.inference.tta})", flush=True)
    return out


def v_rand(slices: list[tuple[Any, Any]], setting: Any) -> float:
    """Mean V_Rand of the watershed's instances over `slices` with one WatershedSettings."""
    import numpy as np

    from pipeline.evaluation.em_metrics import split_merge_scores
    from pipeline.inference.instances import watershed_instances

    return float(np.mean([split_merge_scores(cells, watershed_instances(p, setting)).v_rand for p, cells in slices]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/bench_isbi"), help="a trained accuracy_isbi.py work dir")
    p.add_argument("--config", type=Path, default=common.REPO / "configs" / "isbi2012-2d.yaml")
    p.add_argument("--set", "-S", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    p.add_argument("--sigmas", type=float, nargs="+", default=SIGMAS, help="the grid's sigmas (px)")
    p.add_argument("--thresholds", type=float, nargs="+", default=THRESHOLDS, help="the grid's seed thresholds")
    p.add_argument("--marker-hs", type=float, nargs="+", default=MARKER_HS, help="the grid's h (px; 0: region seeds)")
    args = p.parse_args()
    acc.setup_environment(args.threads)
    wd = acc.trained_workdir(args.workdir)
    cfg = acc.load_cfg(args.config, acc.redirected_paths(wd), acc.user_overrides(args.set))

    from pipeline.data.manifest import load_manifest
    from pipeline.inference.instances import WatershedSettings

    labels = load_manifest(cfg.preprocess.output_dir)["labels"]
    preset = WatershedSettings.from_config(cfg, labels)
    if preset is None:
        raise SystemExit("error: evaluate.instances is 'none' in this config: nothing to sweep")
    probs = probabilities(cfg, preset.boundary_index)
    rows = []
    grid = set(itertools.product(args.sigmas, args.thresholds, args.marker_hs))
    grid.add((preset.sigma, preset.threshold, preset.marker_h))  # always ranked, even off the grid
    for sigma, t, h in sorted(grid):
        s = replace(preset, sigma=sigma, threshold=t, marker_h=h)
        rows.append([sigma, t, h, v_rand(probs["train"], s), v_rand(probs["val"], s)])
    rows.sort(key=lambda r: -r[3])
    mine = next(r for r in rows if (r[0], r[1], r[2]) == (preset.sigma, preset.threshold, preset.marker_h))
    rank = rows.index(mine) + 1
    print(f"\n## Watershed settings ranked on the training slices ({args.workdir}, {len(rows)} settings)")
    headers = ["sigma", "threshold", "marker_h", "V_Rand train", "V_Rand val"]
    print(common.markdown_table(headers, rows[:TOP]))
    print(f"\npreset's setting (rank {rank} of {len(rows)} on train):")
    print(common.markdown_table(headers, [mine]))
    best_val = max(r[4] for r in rows)
    print(f"\nbest validation V_Rand anywhere on the grid (not a choice, a ceiling): {best_val:.4f}")
    best = rows[0]
    common.emit_result(
        "isbi2012_val_v_rand_watershed_train_chosen",
        best[4],
        mine[4],
        "V_Rand",
        chosen={"sigma": best[0], "threshold": best[1], "marker_h": best[2]},
        preset_train=round(mine[3], 6),
        chosen_train=round(best[3], 6),
    )


if __name__ == "__main__":
    main()
