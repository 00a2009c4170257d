"""The exported model as an MLflow pyfunc: a scan in, its mask out (`mlflow models serve`).

Each row's `image` is a base64-encoded image file (NIfTI, NRRD, MetaImage, PNG, TIFF) or a path on
the server; `mask` comes back as a base64 `.nii.gz` in the input's geometry, written by the same
`Predictor.predict` as `unet-pipeline predict`, so the two agree voxel for voxel. Input the model
cannot use raises `ScanInputError`: MLflow's scoring server answers it with 400 and its message.
A path is read with the server's permissions (and a DICOM folder without the size check): serve
on 127.0.0.1, or behind a gateway that allows only base64.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from pipeline.errors import PipelineError

INPUT_COLUMN = "image"
OUTPUT_COLUMN = "mask"
# 512^3 voxels: a 512 x 512 CT of up to 512 slices. The predictor peaked at about 58 bytes per voxel
# over its idle size (ONNX path, 3 classes, a 4096^2 image), so about 8 GB at the limit: what one
# CPU scoring worker should take on. `ServedModel(max_voxels=N)` (logged as its model_config) or
# `load_model(..., model_config={"max_voxels": N})` moves it.
MAX_VOXELS = 512**3
# the longest string taken as a server-side path rather than base64 (a real image is larger)
MAX_PATH_CHARS = 4096
# file signatures -> the suffix the readers need; gzip is taken as NIfTI (.nii.gz)
_MAGIC = ((b"\x1f\x8b", ".nii.gz"), (b"NRRD", ".nrrd"), (b"ObjectType", ".mha"), (b"\x89PNG", ".png"))
_MAGIC += ((b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))


class ScanInputError(MlflowException):
    """A request the model cannot use: INVALID_PARAMETER_VALUE (HTTP 400) with one line.

    MLflow's scoring server rewrites an error's message to start with the whole input frame
    (`Failed to predict data '<base64>'`); this class keeps its own one line.
    """

    def __init__(self, message: str) -> None:
        self._line = message
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    @property  # type: ignore[override]
    def message(self) -> str:
        return self._line

    @message.setter
    def message(self, value: str) -> None:
        pass  # MLflow's rewrite (and __init__'s assignment) leave the one line as it is


def image_suffix(data: bytes) -> str | None:
    """The suffix of the image format whose signature `data` starts with (None: not one we read)."""
    for magic, suffix in _MAGIC:
        if data.startswith(magic):
            return suffix
    if data[344:348] in (b"n+1\x00", b"ni1\x00") or data[4:8] == b"n+2\x00":
        return ".nii"
    return None


def _server_path(text: str) -> Path | None:
    """`text` as an existing file or folder on the server, else None."""
    if len(text) > MAX_PATH_CHARS:
        return None
    try:
        return Path(text) if os.path.exists(text) else None
    except (OSError, ValueError):  # a name too long, a NUL byte
        return None


def decode_image(text: Any, where: str, folder: Path, max_voxels: int) -> Path:
    """The image a request names: a server path as is, or base64 bytes written to `folder`.

    Args:
        text: the `image` cell: base64 of an image file (whitespace ignored) or a server path.
        where: the cell's name in error messages (`image`, `image 2`).
        folder: a temporary folder for the decoded file.
        max_voxels: the largest image taken (voxels times channels).

    Returns:
        The file (or DICOM series folder) to predict on.

    Raises:
        ScanInputError: not a string, neither base64 of a known image format nor an existing path,
            or more voxels than `max_voxels`.
    """
    if not isinstance(text, str) or not text.strip():
        got = "an empty string" if isinstance(text, str) else type(text).__name__
        raise ScanInputError(f"{where}: expected a base64-encoded image file or a server path, got {got}")
    path = _server_path(text)
    if path is None:
        packed = "".join(text.split())
        # longer than base64 of max_voxels float64 voxels and a header: too large whatever it holds
        if len(packed) > (max_voxels * 8 + (1 << 20)) * 4 // 3:
            raise ScanInputError(f"{where}: too large: {len(packed)} base64 characters for at most {max_voxels} voxels")
        try:
            data = base64.b64decode(packed, validate=True)
        except (binascii.Error, ValueError):
            raise ScanInputError(f"{where}: not an image: neither base64 nor an existing path on the server") from None
        suffix = image_suffix(data)
        if suffix is None:
            raise ScanInputError(f"{where}: not an image: the bytes are not NIfTI, NRRD, MetaImage, PNG or TIFF")
        path = folder / f"input{suffix}"
        path.write_bytes(data)
    if path.is_file():
        check_size(path, where, max_voxels)
    return path


def check_size(path: Path, where: str, max_voxels: int) -> None:
    """Refuse an image with more than `max_voxels` voxels, from its header alone (before reading it).

    Raises:
        ScanInputError: the header cannot be read, or declares too many voxels.
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise ScanInputError(f"{where}: not an image: its header cannot be read") from None
    size = [int(n) for n in reader.GetSize()]
    voxels = reader.GetNumberOfComponents()
    for n in size:
        voxels *= n
    if voxels > max_voxels:
        shape = " x ".join(map(str, size))
        raise ScanInputError(f"{where}: too large: {shape} voxels ({voxels:,}), at most {max_voxels:,} are served")


def _row_message(exc: Exception, path: Path, where: str) -> str:
    """The predictor's message, which names a temporary file, as one line naming the row."""
    text = str(exc).replace(f"cannot read input image {path}: ", "not an image: ")
    text = text.replace(f"{path}: ", "").replace(str(path), where)
    return f"{where}: {text.splitlines()[0] if text else type(exc).__name__}"


class ServedModel(PythonModel):
    """`Predictor` behind MLflow's pyfunc interface: one exported model, base64 scans in and masks out.

    The class attributes tell the logger (`pipeline.tracking.registry.log_served_model`) what to
    ship: the exported files the predictor reads, under one artifact folder, and the columns.
    """

    artifact = "exported"
    files = ("model.onnx", "configs/metadata.json")
    input_column = INPUT_COLUMN
    output_column = OUTPUT_COLUMN

    def __init__(self, max_voxels: int = MAX_VOXELS) -> None:
        self.default_config = {"max_voxels": int(max_voxels)}  # logged as model_config; load_model may override it

    def load_context(self, context: Any) -> None:
        """Open the exported model once per server process."""
        from pipeline.predict.predictor import Predictor

        config = {**self.default_config, **(context.model_config or {})}
        self.max_voxels = int(config.get("max_voxels", MAX_VOXELS))
        self.predictor = Predictor(Path(context.artifacts[self.artifact]))
        self.lock = threading.Lock()  # one case at a time: the memory bound above is per case

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Segment each row's `image`.

        Args:
            context: MLflow's model context (unused: `load_context` kept what it needs).
            model_input: a frame with an `image` column (base64 image files or server paths).
            params: unused; MLflow passes the request's params.

        Returns:
            A frame with a `mask` column: base64 `.nii.gz` masks in each input's geometry.

        Raises:
            ScanInputError: a row the model cannot use (the message names the row and the problem).
        """
        if not isinstance(model_input, pd.DataFrame) or INPUT_COLUMN not in model_input.columns:
            raise ScanInputError(f"expected a frame with an {INPUT_COLUMN!r} column of base64 images")
        cells = list(model_input[INPUT_COLUMN])
        masks = []
        for i, cell in enumerate(cells):
            masks.append(self._one(cell, INPUT_COLUMN if len(cells) == 1 else f"{INPUT_COLUMN} {i}"))
        return pd.DataFrame({OUTPUT_COLUMN: masks})

    def _one(self, cell: Any, where: str) -> str:
        """One row's mask as base64 `.nii.gz`."""
        with tempfile.TemporaryDirectory(prefix="served-") as tmp:
            folder = Path(tmp)
            path = decode_image(cell, where, folder, self.max_voxels)
            out = folder / "mask.nii.gz"
            try:
                with self.lock:
                    self.predictor.predict(path, out)
            except PipelineError as exc:
                raise ScanInputError(_row_message(exc, path, where)) from None
            return base64.b64encode(out.read_bytes()).decode("ascii")
