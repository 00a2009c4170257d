"""Out-of-distribution check of a predictor input against the training fingerprint.

A clinical user should never get a confident-looking mask from a scan unlike anything the model
was trained on without being told. The bundle's metadata.json carries the training fingerprint
(spacing range, intensity percentiles, modality); each input is compared with it and whatever lies
far outside is named: spacing more than 2x off the training range, an intensity range that does
not overlap the training one, a different modality tag.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SPACING_FACTOR = 2.0


def training_fingerprint(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The part of preprocessed/fingerprint.json that metadata.json keeps."""
    return {
        "modality": fingerprint.get("modality"),
        "axes": fingerprint.get("axes", "source"),
        "spacing": {k: fingerprint["spacing"][k] for k in ("min", "median", "max")},
        "intensity": [
            {"channel": c["channel"], **{k: c["image"][k] for k in ("p00_5", "median", "p99_5")}}
            for c in fingerprint.get("intensity", [])
        ],
    }


def _spacing_in_axes(image: Any, axes: str) -> list[float]:
    from pipeline.data.fingerprint import axes_in_orientation
    from pipeline.io import spacing_from_affine

    affine = np.asarray(image.affine, dtype=np.float64)
    spacing = spacing_from_affine(affine)
    order = axes_in_orientation(affine, None if axes == "source" else axes)
    return [float(spacing[a]) for a in order]


def findings(image: Any, fp: dict[str, Any] | None, modality_tag: str | None = None) -> list[str]:
    """What lies far outside the training data, one sentence each (empty: nothing)."""
    if not fp:
        return []
    out = []
    lo, hi = fp["spacing"]["min"], fp["spacing"]["max"]
    got = _spacing_in_axes(image, fp.get("axes", "source"))
    for axis, (g, a, b) in enumerate(zip(got, lo, hi)):
        if g > SPACING_FACTOR * b or g < a / SPACING_FACTOR:
            out.append(
                f"spacing {g:.3g} mm on axis {axis} is more than 2x outside the training range {a:.3g}-{b:.3g} mm"
            )
    arr = np.asarray(image, dtype=np.float32)
    for ch in fp.get("intensity", []):
        c = int(ch["channel"])
        if c >= arr.shape[0] or ch.get("p00_5") is None:
            continue
        p_lo, p_hi = (float(v) for v in np.percentile(arr[c], [0.5, 99.5]))
        if p_hi < ch["p00_5"] or p_lo > ch["p99_5"]:
            out.append(
                f"channel {c} intensities {p_lo:.4g}..{p_hi:.4g} (0.5-99.5 %) do not overlap the training "
                f"range {ch['p00_5']:.4g}..{ch['p99_5']:.4g}"
            )
    want = (fp.get("modality") or "").upper()
    if modality_tag and want in ("CT", "MR") and modality_tag.upper() != want:
        out.append(f"modality tag {modality_tag}, the model was trained on {want}")
    return out
