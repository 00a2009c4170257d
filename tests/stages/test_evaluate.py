"""The evaluate stage end to end on a small trained workdir: synth -> preprocess -> train -> evaluate.

Real files, the real MLflow sqlite store (in the temp workdir, via MLFLOW_TRACKING_URI): predictions
in source geometry, metrics files that agree with an independent recount, figures, and the same
numbers and figures in the pipeline's MLflow run.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers.evaluation import pipeline_env, pipeline_workdir
from helpers.faults import cli, digests, one_error_line, pipeline_copy, truncate

FIGURES = (
    "best",
    "median",
    "worst",
    "per_case_dice",
    "uncertainty_best",
    "uncertainty_median",
    "uncertainty_worst",
    "qc_score_vs_dice",
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory):
    """(cfg, root, manifest) of the session's trained and evaluated workdir; cwd and MLFLOW_TRACKING_URI
    point into it while the module's tests run."""
    cfg, root = pipeline_workdir(tmp_path_factory)
    with pipeline_env(root):
        yield cfg, root, json.loads((root / cfg.preprocess.output_dir / "manifest.json").read_text())


def _val_cases(manifest: dict) -> list[dict]:
    by_id = {c["id"]: c for c in manifest["cases"]}
    return [by_id[cid] for cid in manifest["splits"]["val"]]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predictions_exist_in_source_geometry(workdir) -> None:
    import nibabel as nib
    import SimpleITK as sitk

    cfg, root, manifest = workdir
    pred_dir = root / cfg.evaluate.predictions_dir
    cases = _val_cases(manifest)
    assert cases, "the workdir must have held-out cases"
    assert sorted(p.name for p in pred_dir.iterdir()) == sorted(f"{c['id']}.nii.gz" for c in cases)
    for case in cases:
        src_path = Path(case["source_images"][0])
        pred_path = pred_dir / f"{case['id']}.nii.gz"
        src, pred = sitk.ReadImage(str(src_path)), sitk.ReadImage(str(pred_path))
        assert pred.GetSize() == src.GetSize()
        assert pred.GetSpacing() == src.GetSpacing()
        assert pred.GetOrigin() == src.GetOrigin()
        assert pred.GetDirection() == src.GetDirection()
        assert pred.GetPixelID() == sitk.sitkUInt8
        s_nib, p_nib = nib.load(str(src_path)), nib.load(str(pred_path))
        assert p_nib.shape == s_nib.shape
        np.testing.assert_allclose(p_nib.affine, s_nib.affine, atol=1e-6)
        values = set(np.unique(np.asarray(p_nib.dataobj)).tolist())
        assert values <= set(range(len(manifest["labels"])))


def test_metrics_files_are_complete_and_agree_with_a_recount(workdir) -> None:
    import nibabel as nib

    cfg, root, manifest = workdir
    reports = root / cfg.evaluate.reports_dir
    labels = manifest["labels"]
    cases = _val_cases(manifest)

    rows = _read_csv(reports / "metrics.csv")
    assert list(rows[0]) == ["case", "class", "class_index", "dice", "iou", "hd95", "pred_voxels", "label_voxels"]
    assert {(r["case"], r["class"]) for r in rows} == {(c["id"], n) for c in cases for n in labels}

    # Dice / IoU recounted with numpy from the files on disk
    for case in cases:
        pred = np.asarray(nib.load(str(root / cfg.evaluate.predictions_dir / f"{case['id']}.nii.gz")).dataobj)
        label = np.asarray(nib.load(case["source_label"]).dataobj)
        for r in (r for r in rows if r["case"] == case["id"]):
            k = int(r["class_index"])
            p, y = pred == k, label == k
            inter, total, union = (p & y).sum(), p.sum() + y.sum(), (p | y).sum()
            assert int(r["pred_voxels"]) == p.sum() and int(r["label_voxels"]) == y.sum()
            assert float(r["dice"]) == pytest.approx(2 * inter / total if total else 1.0, abs=1e-5)
            assert float(r["iou"]) == pytest.approx(inter / union if union else 1.0, abs=1e-5)

    summary = json.loads((reports / "metrics.json").read_text())
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in summary.values()), "flat numbers only"
    assert all(math.isfinite(v) for v in summary.values()), summary
    assert summary["num_cases"] == len(cases)
    for key in ("dice_mean_foreground", "dice_median_foreground", "iou_mean_foreground", "hd95_mean_foreground"):
        assert key in summary
    for name in labels[1:]:
        assert f"dice_mean_{name}" in summary and f"hd95_undefined_{name}" in summary
    fg_dice = [float(r["dice"]) for r in rows if int(r["class_index"]) > 0]
    assert summary["dice_mean_foreground"] == pytest.approx(np.mean(fg_dice), abs=1e-5)  # equal case weights

    per_case = _read_csv(reports / "per_case_dice.csv")
    assert sorted(r["case"] for r in per_case) == sorted(c["id"] for c in cases)
    dices = [float(r["dice"]) for r in per_case]
    assert dices == sorted(dices), "ranked worst to best"
    assert {f"dice_{n}" for n in labels[1:]} <= set(per_case[0])


def test_figures_are_real_pngs(workdir) -> None:
    import matplotlib.image as mpimg

    cfg, root, _ = workdir
    for name in FIGURES:
        path = root / cfg.evaluate.reports_dir / "figures" / f"{name}.png"
        img = mpimg.imread(str(path))
        assert img.ndim == 3 and min(img.shape[:2]) > 50
        assert float(img.std()) > 0.01, f"{path} is blank"


def test_qc_score_and_calibration_agree_with_a_recount(workdir) -> None:
    """metrics.json's QC and calibration numbers, recomputed here from the stage's own checkpoint run
    through `predict_case` on the raw files: each case's qc_score (per_case_dice.csv) is the score of
    its probabilities after the kept temperature; Spearman and AUROC are those of the CSV's columns;
    the ECE before is that of the voxels near the structures; the temperature is kept only if it
    lowers the ECE."""
    from scipy import stats

    from pipeline.evaluation.quality import band_sample, expected_calibration_error, worst_cases
    from pipeline.inference.case import load_source_image, predict_case
    from pipeline.inference.settings import InferenceSettings
    from pipeline.inference.uncertainty import apply_temperature, quality_score
    from pipeline.model.args import ModelArgs
    from pipeline.training.checkpoint import load_trained_net

    cfg, root, manifest = workdir
    reports = root / cfg.evaluate.reports_dir
    summary = json.loads((reports / "metrics.json").read_text())
    qc_keys = ("qc_spearman", "qc_auroc", "qc_threshold", "qc_flagged")
    cal_keys = ("calibration_ece_before", "calibration_ece_after", "temperature", "temperature_kept")
    assert list(summary)[-8:] == [*qc_keys, *cal_keys], "new keys after the existing ones"
    kept = summary["temperature"] if summary["temperature_kept"] else None
    assert bool(summary["temperature_kept"]) == (summary["calibration_ece_after"] < summary["calibration_ece_before"])

    net, ckpt = load_trained_net(root / cfg.train.member_dir(0) / "best.pt", "cpu")
    settings = InferenceSettings.from_config(cfg, ModelArgs.from_dict(ckpt["model_args"]))
    rows = {r["case"]: r for r in _read_csv(reports / "per_case_dice.csv")}
    samples, truths = [], []
    for case in _val_cases(manifest):
        mask, prob = predict_case(case["source_images"], net, manifest["preprocessing"], settings)
        label = np.asarray(load_source_image([case["source_label"]]))[0]
        want = quality_score(apply_temperature(prob, kept), mask)
        assert float(rows[case["id"]]["qc_score"]) == pytest.approx(want, abs=1e-5)
        sample, truth = band_sample(prob, label, np.asarray(mask)[0])
        samples.append(sample)
        truths.append(truth)
    ece = expected_calibration_error(np.concatenate(samples), np.concatenate(truths))
    assert summary["calibration_ece_before"] == pytest.approx(ece, abs=1e-6)

    score = [float(r["qc_score"]) for r in rows.values()]
    dice = [float(r["dice"]) for r in rows.values()]
    rho = stats.spearmanr(score, dice)[0]
    assert summary["qc_spearman"] == pytest.approx(0.0 if np.isnan(rho) else rho, abs=1e-9)
    worst = worst_cases(dice)
    pairs = [(a > b) + 0.5 * (a == b) for a, w in zip(score, worst) if w for b, v in zip(score, worst) if not v]
    assert summary["qc_auroc"] == pytest.approx(np.mean(pairs) if pairs else 0.5)
    flagged = [s >= summary["qc_threshold"] for s in score]
    assert sum(f for f, w in zip(flagged, worst) if w) >= 0.75 * worst.sum()  # most of the worst cases flagged
    assert summary["qc_flagged"] == pytest.approx(np.mean(flagged))


def test_mlflow_run_holds_eval_metrics_and_figures(workdir) -> None:

    from mlflow.tracking import MlflowClient

    cfg, root, _ = workdir
    reports = root / cfg.evaluate.reports_dir
    ref = json.loads((root / cfg.train.member_dir(0) / "mlflow_run.json").read_text())
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{root / 'mlflow.db'}"
    assert ref["tracking_uri"] == os.environ["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    run = client.get_run(ref["run_id"])
    assert run.info.status == "FINISHED"
    summary = json.loads((reports / "metrics.json").read_text())
    for key, value in summary.items():
        assert run.data.metrics[f"eval_{key}"] == pytest.approx(value, rel=1e-6, abs=1e-9)
    # the training run's own metrics are in the same run: one MLflow run per pipeline execution
    assert any(k.startswith("train") or k.startswith("val") for k in run.data.metrics)
    figures = {Path(a.path).name for a in client.list_artifacts(ref["run_id"], "evaluation/figures")}
    assert figures == {f"{n}.png" for n in FIGURES}
    files = {Path(a.path).name for a in client.list_artifacts(ref["run_id"], "evaluation")}
    assert {"metrics.csv", "metrics.json", "per_case_dice.csv", "inference_settings.json"} <= files
    local = client.download_artifacts(ref["run_id"], "evaluation/metrics.json", str(root / "downloaded"))
    assert json.loads(Path(local).read_text()) == summary


def test_evaluate_prediction_equals_predict_case_with_no_inverse_warning(workdir) -> None:
    """The stage's mask for a case is what `predict_case` gives on the raw file, and the identity
    (non-invertible) chain of this workdir does not make MONAI warn on inversion."""
    import nibabel as nib
    import torch

    from pipeline.inference.case import predict_case
    from pipeline.inference.settings import InferenceSettings
    from pipeline.model.args import ModelArgs
    from pipeline.training.checkpoint import load_trained_net

    cfg, root, manifest = workdir
    case = _val_cases(manifest)[0]
    net, ckpt = load_trained_net(root / cfg.train.member_dir(0) / "best.pt", "cpu")
    settings = InferenceSettings.from_config(cfg, ModelArgs.from_dict(ckpt["model_args"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mask, _ = predict_case(case["source_images"], net, manifest["preprocessing"], settings)
    assert not [w for w in caught if "no invertible transforms" in str(w.message)]
    stage = np.asarray(nib.load(str(root / cfg.evaluate.predictions_dir / f"{case['id']}.nii.gz")).dataobj)
    assert np.array_equal(torch.as_tensor(mask)[0].numpy(), stage)


def test_instance_metrics_score_the_stage_probabilities(workdir) -> None:
    """`evaluate.instance_metrics`: metrics.json (and the MLflow run) gain the challenge's V_Rand /
    V_Info after thinning, equal to `em_metrics` on the same probabilities recomputed here; with
    `evaluate.instances: watershed`, predictions/instances/<id>.nii.gz hold the watershed of those
    probabilities and metrics.json their split / merge scores."""

    import nibabel as nib
    from mlflow.tracking import MlflowClient

    from pipeline.evaluation.em_metrics import scores_after_thinning
    from pipeline.evaluation.held_out import instance_scores
    from pipeline.inference.case import load_source_image, predict_case
    from pipeline.inference.instances import WatershedSettings, watershed_instances
    from pipeline.inference.settings import InferenceSettings
    from pipeline.model.args import ModelArgs
    from pipeline.stages import evaluate
    from pipeline.training.checkpoint import load_trained_net

    cfg, root, manifest = workdir
    em = cfg.model_copy(deep=True)
    em.evaluate.instance_metrics, em.evaluate.boundary_class = True, "background"  # objects apart on background
    em.evaluate.instances = "watershed"
    em.evaluate.watershed.threshold, em.evaluate.watershed.marker_h = 0.5, 1.0
    em.evaluate.reports_dir, em.evaluate.predictions_dir = Path("reports_em"), Path("predictions_em")
    evaluate.run(em, device="cpu")
    summary = json.loads((root / "reports_em" / "metrics.json").read_text())

    net, ckpt = load_trained_net(root / cfg.train.member_dir(0) / "best.pt", "cpu")
    settings = InferenceSettings.from_config(cfg, ModelArgs.from_dict(ckpt["model_args"]))
    truths, cells, cuts = [], [], []
    watershed = WatershedSettings.from_config(em, manifest["labels"])
    for case in _val_cases(manifest):
        _, prob = predict_case(case["source_images"], net, manifest["preprocessing"], settings)
        label = np.asarray(load_source_image([case["source_label"]]))[0]
        truths.append((label != 0).astype(np.float32))
        cells.append(1.0 - np.asarray(prob, dtype=np.float32)[0])
        cuts.append(watershed_instances(prob, watershed))
        written = np.asarray(nib.load(str(root / "predictions_em" / "instances" / f"{case['id']}.nii.gz")).dataobj)
        assert np.array_equal(written, cuts[-1])
    want = scores_after_thinning(truths, cells)
    assert summary["v_rand_watershed"] == pytest.approx(instance_scores(truths, cuts)["v_rand_watershed"], abs=1e-9)
    assert 0.0 < summary["v_info_watershed"] <= 1.0
    assert summary["v_rand_thinned"] == pytest.approx(want["v_rand"], abs=1e-9)
    assert summary["v_info_thinned"] == pytest.approx(want["v_info"], abs=1e-9)
    assert 0.0 < summary["v_rand_thinned"] <= 1.0 and summary["v_rand_threshold"] == want["v_rand_threshold"]
    ref = json.loads((root / cfg.train.member_dir(0) / "mlflow_run.json").read_text())
    metrics = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"]).get_run(ref["run_id"]).data.metrics
    assert metrics["eval_v_rand_thinned"] == pytest.approx(summary["v_rand_thinned"])


def test_instance_metrics_need_a_2d_boundary_class() -> None:
    from helpers.evaluation import PIPELINE_CONFIG

    from pipeline.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="instance_metrics needs"):
        parse_config({**PIPELINE_CONFIG, "evaluate": {"instance_metrics": True}})


def test_onnxruntime_evaluate_writes_the_torch_masks(workdir, capsys: pytest.CaptureFixture) -> None:
    """`evaluate.runtime: onnxruntime`: the net is exported to a temporary ONNX file, checked against
    eager, and the held-out masks and metrics it gives are the torch ones; the file does not outlive
    the stage."""
    import glob
    import tempfile

    import nibabel as nib

    pattern = str(Path(tempfile.gettempdir()) / "evaluate-onnx-*")
    before = set(glob.glob(pattern))  # a run SIGKILLed elsewhere leaves its own behind

    from pipeline.stages import evaluate

    cfg, root, manifest = workdir
    ort_cfg = cfg.model_copy(deep=True)
    ort_cfg.evaluate.runtime = "onnxruntime"
    ort_cfg.evaluate.reports_dir, ort_cfg.evaluate.predictions_dir = Path("reports_ort"), Path("predictions_ort")
    evaluate.run(ort_cfg, device="cpu")
    printed = capsys.readouterr().out
    assert "evaluate: ONNX Runtime (exported, checked against eager on case" in printed
    for case in _val_cases(manifest):
        name = f"{case['id']}.nii.gz"
        torch_mask = np.asarray(nib.load(str(root / cfg.evaluate.predictions_dir / name)).dataobj)
        ort_mask = np.asarray(nib.load(str(root / "predictions_ort" / name)).dataobj)
        assert np.array_equal(ort_mask, torch_mask)
    want = json.loads((root / cfg.evaluate.reports_dir / "metrics.json").read_text())
    got = json.loads((root / "reports_ort" / "metrics.json").read_text())
    assert got["dice_mean_foreground"] == pytest.approx(want["dice_mean_foreground"], abs=1e-9)
    assert set(glob.glob(pattern)) <= before
    # the note on a weak QC score is printed exactly when its AUROC is below 0.7
    assert ("evaluate: the QC score barely finds the worst cases here (AUROC" in printed) is (got["qc_auroc"] < 0.7)


def test_truncated_best_pt_is_named_at_evaluate(tmp_path: Path, tmp_path_factory, monkeypatch, capsys) -> None:
    """A best.pt cut short for real: `unet-pipeline evaluate` exits 2 with one line naming it and
    what to do, and writes no predictions and no reports."""
    pipeline_copy(tmp_path_factory, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    truncate(tmp_path / "checkpoints" / "fold_0" / "best.pt")
    reports = digests(tmp_path / "reports")
    code, err = cli(["evaluate", "-c", "cfg.yaml"], capsys)
    line = one_error_line(err)
    assert code == 2
    assert "checkpoint checkpoints/fold_0/best.pt is truncated or corrupt (" in line
    assert "delete checkpoints/fold_0/last.pt and checkpoints/fold_0/best.pt and run the train stage again" in line
    assert not (tmp_path / "predictions").exists()
    assert digests(tmp_path / "reports") == reports
