"""`unet-pipeline data import SRC`: a real dataset -> the canonical `data/` layout.

Three source layouts (docs/ARCHITECTURE.md for the target):
- `msd`: Medical Segmentation Decathlon / nnU-Net (`dataset.json`, `imagesTr/`, `labelsTr/`).
  Both dataset.json styles: MSD (`labels` {"0": "background"}, `modality`, a `training` list,
  multi-modal cases as one 4D file, split here into `_0000`, `_0001`, ... channel files) and
  nnU-Net v2 (`labels` {"background": 0}, `channel_names`, files `<id>_XXXX<file_ending>`).
  Labels come from `dataset.json`; label values are class indices (checked by preprocess).
- `pairs`: `images/` + `labels/` with matching file names (PNG, TIFF, NIfTI, NRRD, MHA, ...).
- `stack`: a multi-page TIFF of images and one of labels (the ISBI 2012 form); each page a 2D case.

Label values of `pairs` / `stack` masks are never guessed, not even when they already look like
class indices 0..K-1: `--labels NAME=RAW,...` (class-index order) maps them, and masks already
holding class indices say so with an identity mapping (`--labels background=0,nucleus=1`) or
with a `dataset.json` beside `images/` whose `labels` declare the indices. Without either, the
import fails listing the raw values found. An `msd` import may pass `--labels` too (names and
a raw->class mapping instead of the dataset.json's).

Every case is staged beside `out` and checked by the validator preprocess uses (readable, shapes
and geometry of label vs image, dimensionality, channel count, declared label values, NaN/Inf);
only a dataset that passes replaces `out`, atomically.

Modules, imported one way (staging -> layouts -> labels): `labels` (`--labels`, dataset.json
labels, raw value -> class index), `layouts` (detecting a layout, finding its cases), `staging`
(writing, validating and moving the import: `import_dataset`).
"""

from __future__ import annotations

from pipeline.data.importer.labels import LabelSpec, parse_labels
from pipeline.data.importer.layouts import LAYOUTS, SourceCase, detect_layout
from pipeline.data.importer.staging import import_dataset

__all__ = ["LAYOUTS", "LabelSpec", "SourceCase", "detect_layout", "import_dataset", "parse_labels"]
