"""DICOM Parametric Map of a float map (the predictor's uncertainty) over a source series, with highdicom.

Like the SEG (`pipeline.io.dicom_seg`): one frame per source instance, in the source's order, each
sampled from the map at the patient position of every pixel of its slice, so a frame lands on its
slice whatever the orientation; the object references the source series. Values are 32-bit floats
with an identity real-world value mapping ("no units", range [0, 1]).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.io.dicom_seg import Algorithm, equipment_fields, frames_on_source_grid, read_series_headers

LUT_LABEL = "ENTROPY"
LUT_EXPLANATION = "normalised predictive entropy H/log K"


def build_parametric_map(frames: np.ndarray, sources: Sequence[Any], algorithm: Algorithm, description: str) -> Any:
    """A highdicom ParametricMap: float frames on the sources (same order), values in [0, 1]."""
    import highdicom as hd

    mapping = hd.pm.RealWorldValueMapping(
        lut_label=LUT_LABEL,
        lut_explanation=LUT_EXPLANATION,
        unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
        value_range=(0.0, 1.0),
        slope=1.0,
        intercept=0.0,
    )
    series_number = int(getattr(sources[0], "SeriesNumber", 0) or 0) + 2000
    return hd.pm.ParametricMap(
        source_images=list(sources),
        pixel_array=np.ascontiguousarray(frames, dtype=np.float32),
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        **equipment_fields(algorithm),
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
        content_label="UNCERTAINTY",
        content_description=description[:64],
        series_description=f"{algorithm.name} uncertainty"[:64],
    )


def write_parametric_map(
    path: str | Path,
    values: np.ndarray,
    ras_affine: np.ndarray,
    source_files: Sequence[str | Path],
    algorithm: Algorithm,
    description: str,
) -> Path:
    """Write the Parametric Map of `values` ((x, y, z) on `ras_affine`, the source geometry) for the
    series in `source_files`; atomic."""
    from pipeline.io.atomic import atomic_write

    path = Path(path)
    sources = read_series_headers(source_files)
    frames = frames_on_source_grid(values, ras_affine, sources, where=str(Path(source_files[0]).parent))
    pmap = build_parametric_map(frames, sources, algorithm, description)
    with atomic_write(path) as tmp:
        pmap.save_as(str(tmp))
    return path
