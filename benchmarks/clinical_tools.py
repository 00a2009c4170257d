"""The clinical-tool paths on a *trained* model, against `unet-pipeline predict`: the MONAI-only
bundle run on one NIfTI case, the MONAI Deploy app on the real DICOM series, and an HTTP POST to
`mlflow models serve` of the registered scan-in model (README, "Clinical tools").

The tests run each path on models trained for seconds, whose argmax hides differences a trained
model shows (benchmarks/README.md, "Clinical tools on a trained model"). This re-exports a trained
workdir (e.g. one of `learning_curve.py`'s) with this code and compares; it reuses the tests'
comparison helpers (tests/deploy, tests/predict). The Deploy part needs the SDK's venv
(`deploy/monai_deploy/setup.sh`).

    .venv/bin/python benchmarks/clinical_tools.py /tmp/learning_curve/nnunet_15 --case hippocampus_394
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from common import REPO, emit_result

sys.path[:0] = [str(REPO / "tests"), str(REPO)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workdir", type=Path, help="a trained workdir (checkpoints/, preprocessed/, data/, mlflow.db)")
    p.add_argument("--case", default="hippocampus_394", help="the NIfTI case for the bundle and the server")
    p.add_argument("--dicom", type=Path, default=REPO.parent / "shared/data/hippocampus-mri/dicom")
    p.add_argument("--out", type=Path, default=Path("/tmp/clinical_tools"))
    args = p.parse_args()
    work, out = args.workdir.resolve(), args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"

    import nibabel as nib
    import numpy as np
    from helpers.export import bundle_run

    from pipeline.config import parse_config
    from pipeline.predict.predictor import Predictor
    from pipeline.stages import export
    from pipeline.training.checkpoint import load_checkpoint

    cfg = parse_config(load_checkpoint(work / "checkpoints/fold_0/best.pt")["config"])
    export.run(cfg)
    exported = work / cfg.export.output_dir
    image = work / "data" / "imagesTr" / f"{args.case}_0000.nii.gz"
    ref = Predictor(exported).predict(image, out / "predict" / "case.nii.gz")
    got = bundle_run(exported, image, out / "bundle", pattern="*_seg.nii.gz")
    a, b = (np.asarray(nib.load(str(x)).dataobj) for x in (ref, got))
    equal = float(np.mean(a == b))
    print(f"monai.bundle run vs predict: {equal:.4%} of voxels equal")

    dice = []
    from deploy.test_monai_deploy_app import SDK_PYTHON, compare

    if SDK_PYTHON.is_file() and args.dicom.is_dir():
        for series in sorted(args.dicom.iterdir()):
            tmp = out / "deploy" / series.name
            tmp.mkdir(parents=True, exist_ok=True)
            scores = compare(series, exported, exported / "model.ts", tmp)
            dice += scores.values()
            print(f"MONAI Deploy {series.name}: Dice per segment {scores}")
    else:
        print(f"MONAI Deploy: skipped ({SDK_PYTHON} or {args.dicom} absent)")

    from helpers.mlflow_serve import assert_same_mask, b64, post, serving

    logged = json.loads((exported / "mlflow.json").read_text())
    uri = f"models:/{logged['served_model_name']}/{logged['served_model_version']}"
    with serving(uri, out / "serve.log") as (port, _):
        status, answer = post(port, b64(image))
        assert status == 200, answer
        assert_same_mask(answer["predictions"][0]["mask"], ref, out / "served")
        print("mlflow models serve POST: mask equal to predict's")
    emit_result("clinical_tools_min_agreement_with_predict", min([equal, *dice]), 0.99, "fraction / Dice")


if __name__ == "__main__":
    main()
