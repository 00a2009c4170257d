"""Instances from boundary probabilities (`evaluate.instances: watershed`): the seeded watershed on
hand-made probabilities with a gapped membrane, and the instance images that the predictor and the
MONAI bundle write beside the mask of an exported model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.evaluation.em_metrics import split_merge_scores, truth_cells
from pipeline.inference.instances import WatershedSettings, instances_path, watershed_instances

DEFAULTS = {"threshold": 0.8, "marker_h": 4.0, "sigma": 1.0}


def _two_cells_with_a_gap(gap: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (2, 64, 64): cell / membrane, truth cells). A vertical membrane at x = 31..32
    splits the image into two cells; its middle `gap` rows are missing from the prediction."""
    membrane = np.zeros((64, 64), np.float32)
    membrane[:, 31:33] = 1.0
    membrane[[0, -1], :], membrane[:, [0, -1]] = 1.0, 1.0  # the outer frame
    truth = 1.0 - membrane
    predicted = membrane.copy()
    lo = 32 - gap // 2
    predicted[lo : lo + gap, 31:33] = 0.0
    return np.stack([1.0 - predicted, predicted]), truth


def test_a_gap_merges_components_but_not_watershed_cells() -> None:
    from skimage.measure import label

    prob, truth = _two_cells_with_a_gap(gap=6)
    components = label(prob[0] > 0.5, connectivity=1)
    assert components.max() == 1  # connected components: the two cells are one
    cut = watershed_instances(prob, WatershedSettings(boundary_index=1, **DEFAULTS))
    assert cut.dtype == np.int32 and cut.shape == truth.shape and cut.min() >= 1  # a partition: no 0
    assert len(np.unique(cut[truth > 0])) == 2
    left, right = cut[5:59, 5:26], cut[5:59, 38:59]
    assert len(np.unique(left)) == 1 and len(np.unique(right)) == 1 and left[0, 0] != right[0, 0]
    gt = truth_cells(truth)
    assert split_merge_scores(gt, cut).v_rand > 0.99
    assert split_merge_scores(gt, components).v_rand < 0.7


def test_one_cell_stays_one_and_no_cell_gives_one_instance() -> None:
    prob, _ = _two_cells_with_a_gap(gap=0)
    prob[1, :, 31:33], prob[0, :, 31:33] = 0.0, 1.0  # no inner membrane at all
    ws = WatershedSettings(boundary_index=1, **DEFAULTS)
    cut = watershed_instances(prob, ws)
    assert len(np.unique(cut[2:-2, 2:-2])) == 1
    empty = np.stack([np.zeros((16, 16)), np.ones((16, 16))]).astype(np.float32)
    assert np.array_equal(watershed_instances(empty, ws), np.ones((16, 16), np.int32))


def test_marker_h_0_seeds_one_instance_per_connected_region() -> None:
    """Two 20 x 20 rooms joined by a 3-pixel doorway, inside a closed membrane: the distance
    transform has two maxima (prominence ~8 px), so h-maxima seeds cut the one cell in two, while
    marker_h 0 keeps it whole; across a gapped membrane marker_h 0 merges, as components do."""
    membrane = np.ones((32, 56), np.float32)
    membrane[6:26, 4:24], membrane[6:26, 32:52], membrane[15:18, 24:32] = 0.0, 0.0, 0.0
    prob = np.stack([1.0 - membrane, membrane])
    inside = membrane == 0
    split = watershed_instances(prob, WatershedSettings(1, threshold=0.5, marker_h=4.0, sigma=0.0))
    whole = watershed_instances(prob, WatershedSettings(1, threshold=0.5, marker_h=0.0, sigma=0.0))
    assert len(np.unique(split[inside])) == 2
    assert len(np.unique(whole[inside])) == 1 and whole.min() >= 1
    gapped, truth = _two_cells_with_a_gap(gap=6)
    merged = watershed_instances(gapped, WatershedSettings(1, threshold=0.5, marker_h=0.0, sigma=0.0))
    assert len(np.unique(merged[truth > 0])) == 1


def test_watershed_is_n_dimensional() -> None:
    prob2, truth2 = _two_cells_with_a_gap(gap=6)
    prob3 = np.repeat(prob2[:, :, :, None], 8, axis=3)
    cut = watershed_instances(prob3, WatershedSettings(boundary_index=1, **DEFAULTS))
    assert cut.shape == (64, 64, 8) and len(np.unique(cut[..., 4][truth2 > 0])) == 2


def test_instances_path_keeps_the_suffix() -> None:
    assert instances_path("out/mask.nii.gz") == Path("out/mask_instances.nii.gz")
    assert instances_path("a.b/seg.png") == Path("a.b/seg_instances.png")
    assert instances_path("out/series_1", suffix=".nii.gz") == Path("out/series_1_instances.nii.gz")


def test_watershed_needs_a_boundary_class() -> None:
    from helpers.evaluation import PIPELINE_CONFIG

    from pipeline.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="instances: watershed needs evaluate.boundary_class"):
        parse_config({**PIPELINE_CONFIG, "evaluate": {"instances": "watershed"}})
    with pytest.raises(ConfigError, match="threshold"):
        parse_config({**PIPELINE_CONFIG, "evaluate": {"watershed": {"threshold": 1.5}}})


def test_predictor_and_bundle_write_the_same_instances(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model exported with `evaluate.instances: watershed`: metadata and inference.json carry the
    watershed; `predict` writes `<mask>_instances.nii.gz` equal to the watershed of its own
    probabilities, and `monai.bundle run` writes the same instance image."""
    import nibabel as nib
    from helpers.export import bundle_run, run_stage

    from pipeline.inference.case import predict_case
    from pipeline.predict.predictor import Predictor

    monkeypatch.chdir(tmp_path)
    watershed = {"threshold": 0.5, "marker_h": 1.0}
    evaluate = {"instances": "watershed", "boundary_class": "background", "watershed": watershed}
    info = run_stage(
        tmp_path / "ws", "2d-valid", registered_model_name="unet-test-ws", evaluate=evaluate, train_steps=40
    )
    exported, image = info["exported"], info["val_image"]
    up = json.loads((exported / "configs/metadata.json").read_text())["unet_pipeline"]
    want = {"method": "watershed", "boundary_index": 0, "threshold": 0.5, "marker_h": 1.0, "sigma": 1.0}
    assert up["instances"] == want
    assert json.loads((exported / "configs/inference.json").read_text())["instances"] == want

    predictor = Predictor(exported)
    mask_path = predictor.predict(image, tmp_path / "pred" / "mask.nii.gz")
    assert predictor.last_instances == tmp_path / "pred" / "mask_instances.nii.gz"
    cut = np.asarray(nib.load(str(predictor.last_instances)).dataobj)
    _, prob = predict_case(image, predictor.net, up["preprocessing"], predictor.settings)
    assert np.array_equal(cut, watershed_instances(prob, WatershedSettings.from_dict(want)))
    assert cut.shape == np.asarray(nib.load(str(mask_path)).dataobj).shape and cut.max() >= 2
    np.testing.assert_allclose(nib.load(str(predictor.last_instances)).affine, nib.load(str(mask_path)).affine)

    out_dir = tmp_path / "bundle_out"
    out_dir.mkdir()
    bundle_run(exported, image, out_dir, pattern="*_seg.nii.gz")
    (bundle_cut,) = list(out_dir.glob("*_instances.nii.gz"))
    assert np.array_equal(np.squeeze(np.asarray(nib.load(str(bundle_cut)).dataobj)), cut)
