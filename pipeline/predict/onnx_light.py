"""The ONNX predictor's torch-free path: ONNX Runtime, SimpleITK and numpy, nothing else.

A clinical tool calls `unet-pipeline predict` once per study, so start-up is most of its wait:
importing torch and MONAI took about 4.5 s of a 7 s prediction of one 96² image. Where the
exported preprocessing needs no MONAI transform that numpy cannot repeat exactly -- no
reorientation, resampling or foreground crop; z-score, CT or no normalisation -- and inference is
overlap-tile (valid padding) without TTA or component clean-up, this module runs the steps of
`pipeline.inference.case.predict_case` in numpy: the same tile plan and stitching loop
(`pipeline.inference.tile_plan`), the same ONNX model. Everything else goes through the full path;
`refusal` says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.inference.settings import InferenceSettings
from pipeline.inference.tile_plan import plan_tiles, stitch_tiles

NORMALIZATIONS = ("zscore", "ct", "none")


def refusal(
    spec: dict[str, Any], settings: InferenceSettings, model_path: Path, image_path: Path, as_seg: bool, device: str
) -> str | None:
    """Why this prediction needs the full (torch + MONAI) path; None when the light path gives the same mask."""
    norm = (spec.get("normalization") or {"scheme": "none"})["scheme"]
    reasons = {
        "a TorchScript model": model_path.suffix != ".onnx",
        f"device {device}": not str(device).startswith("cpu"),
        "a DICOM series input": image_path.is_dir(),
        "DICOM SEG output": as_seg,
        "reorientation": bool(spec.get("orientation")),
        "resampling": bool(spec.get("spacing")),
        "a foreground crop": bool(spec.get("crop_foreground")),
        f"normalization {norm!r}": norm not in NORMALIZATIONS,
        "sliding-window inference": settings.padding != "valid",
        "test-time augmentation": settings.tta,
        "largest-component clean-up": settings.keep_largest,
    }
    why = [reason for reason, applies in reasons.items() if applies]
    return ", ".join(why) or None


def normalize(image: np.ndarray, norm: dict[str, Any] | None) -> np.ndarray:
    """float32 (C, *spatial), normalised as `preprocessing_transforms` does with MONAI's
    `NormalizeIntensityd` (channel-wise, population std, std 0 taken as 1) and
    `ScaleIntensityRanged` (CT clip)."""
    x = np.array(image, dtype=np.float32)  # a copy: the caller's array stays as read
    norm = norm or {"scheme": "none"}
    if norm["scheme"] == "ct":
        lo, hi = (float(v) for v in norm["clip"])
        x = np.clip((x - np.float32(lo)) / np.float32(hi - lo) * np.float32(hi - lo) + np.float32(lo), lo, hi)
        return ((x - np.float32(norm["mean"])) / np.float32(norm["std"])).astype(np.float32)
    if norm["scheme"] != "zscore":
        return x
    for c in range(x.shape[0]):
        where = x[c] != 0 if norm.get("nonzero") else np.ones(x[c].shape, dtype=bool)
        if not where.any():
            continue
        values = x[c][where]
        mean = np.float32(values.mean(dtype=np.float64))
        std = np.float32(values.std(dtype=np.float64)) or np.float32(1.0)
        x[c][where] = (values - mean) / std
    return x


def predict_probabilities(image: np.ndarray, session: Any, settings: InferenceSettings, progress: bool = False):
    """Softmax (K, *spatial) of one normalised image (C, *spatial) by overlap-tile through an
    ONNX Runtime session: `pipeline.inference.tiles.overlap_tile` with numpy in torch's place."""
    plan = plan_tiles(image.shape[1:], settings.depth, settings.output_tile(image.shape[1:]))
    pad = [(0, 0)] + [(plan.margin, high) for high in plan.pad_high]
    padded = np.pad(image, pad, mode="reflect")  # == tiles.mirror_pad, periodic when the pad is wider
    name_in, name_out = session.get_inputs()[0].name, session.get_outputs()[0].name

    def forward(batch: list[np.ndarray]) -> np.ndarray:
        return session.run([name_out], {name_in: np.ascontiguousarray(np.stack(batch), dtype=np.float32)})[0]

    empty = lambda pred, shape: np.empty(shape, pred.dtype)  # noqa: E731
    logits = stitch_tiles(padded, plan, forward, empty, settings.batch_size, progress)
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    return (e / e.sum(axis=0, keepdims=True)).astype(np.float32)


def predict_case(
    image: Any, session: Any, spec: dict[str, Any], settings: InferenceSettings, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(mask uint8 (1, *spatial), probabilities float32 (K, *spatial)) on the input's own grid
    (the light path does not resample, so the grid is the source's)."""
    x = normalize(np.asarray(image), spec.get("normalization"))
    prob = predict_probabilities(x, session, settings, progress)
    return prob.argmax(axis=0)[None].astype(np.uint8), prob
