"""The runtimes of exported models (pipeline.predict.runtime): `load_net` errors name the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.predict import load_net


def test_load_net_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        load_net(tmp_path / "nope.onnx")
    other = tmp_path / "model.pkl"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"model\.pkl.*\.onnx or \.ts"):
        load_net(other)
