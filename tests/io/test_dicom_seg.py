"""DICOM SEG writing (pipeline.io.dicom_seg): highdicom reads it back, every frame sits on its source
slice, on generated series (axial, flipped, oblique, shuffled file names); a mask off the source
grid is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.dicom import (
    GEOMETRIES,
    check_against_sources,
    inside_ellipsoid,
    phantom_series,
    pixel_positions_lps,
    read_seg,
)


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_seg_frames_land_on_their_source_slices(tmp_path: Path, geometry: str) -> None:
    import pydicom

    from pipeline.io import dicom_series_files, read_image
    from pipeline.io.dicom_seg import Algorithm, SegmentSpec, write_seg

    files = phantom_series(tmp_path / "series", GEOMETRIES[geometry])
    image = read_image(tmp_path / "series")
    affine = image.affine.numpy()
    # the mask, in the reader's voxel grid: the ellipsoid tested at each voxel centre (RAS -> LPS)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape[1:]], indexing="ij"), -1).astype(float)
    lps = (grid @ affine[:3, :3].T + affine[:3, 3]) * np.array([-1.0, -1.0, 1.0])
    mask = inside_ellipsoid(lps).astype(np.uint8)
    assert 20 < mask.sum() < mask.size // 4
    _, ordered = dicom_series_files(tmp_path / "series")
    out = write_seg(
        tmp_path / "seg.dcm", mask, affine, ordered, [SegmentSpec(1, "blob")], Algorithm("phantom-net", "7", "x 1")
    )
    seg = read_seg(out)
    sources = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in files]
    check_against_sources(seg, sources, lambda ds, n: inside_ellipsoid(pixel_positions_lps(ds)))
    # references, study and frame of reference are the source's; series and instance are new
    src = sources[0]
    assert seg.StudyInstanceUID == src.StudyInstanceUID and seg.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert seg.SeriesInstanceUID != src.SeriesInstanceUID
    assert seg.SOPInstanceUID not in {s.SOPInstanceUID for s in sources}
    refs = seg.ReferencedSeriesSequence[0]
    assert refs.SeriesInstanceUID == src.SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in refs.ReferencedInstanceSequence} == {s.SOPInstanceUID for s in sources}
    assert seg.SegmentationType == "BINARY"


def test_mask_off_the_source_grid_is_refused(tmp_path: Path) -> None:
    from pipeline.errors import InputError
    from pipeline.io import dicom_series_files, read_image
    from pipeline.io.dicom_seg import Algorithm, SegmentSpec, write_seg

    phantom_series(tmp_path / "series", np.eye(3))
    image = read_image(tmp_path / "series")
    shifted = image.affine.numpy().copy()
    shifted[:3, 3] += 0.37  # a mask resampled elsewhere, not the predictor's source-geometry output
    _, files = dicom_series_files(tmp_path / "series")
    with pytest.raises(InputError, match="not on the mask's grid"):
        write_seg(tmp_path / "seg.dcm", np.zeros(image.shape[1:], np.uint8), shifted, files,
                  [SegmentSpec(1, "x")], Algorithm("n", "1", "s"))  # fmt: skip
    assert not (tmp_path / "seg.dcm").exists()
