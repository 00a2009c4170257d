"""The code an exported bundle carries (pipeline.export.bundle_scripts): the closure of the entry
points, MONAI-only, renamed so that it never resolves to an installed `pipeline`."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_closure_holds_the_inference_code_and_only_monai_only_packages() -> None:
    from pipeline.export.bundle_scripts import MONAI_ONLY_PACKAGES, closure

    modules = closure()
    for needed in ("pipeline.inference.tiles", "pipeline.inference.case", "pipeline.predict.seg_output"):
        assert needed in modules
    for absent in ("pipeline.config", "pipeline.training.trainer", "pipeline.tracking.registry", "pipeline.export"):
        assert absent not in modules, f"{absent} is not needed to run a bundle"
    assert set().union(*modules.values()) <= MONAI_ONLY_PACKAGES


def test_a_module_needing_another_package_stops_the_export(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.export import bundle_scripts

    monkeypatch.setattr(bundle_scripts, "MONAI_ONLY_PACKAGES", bundle_scripts.MONAI_ONLY_PACKAGES - {"skimage"})
    with pytest.raises(bundle_scripts.BundleScriptsError, match=r"instances\.py: imports skimage"):
        bundle_scripts.closure()


def test_written_scripts_import_only_their_own_copy(tmp_path: Path) -> None:
    import re

    from pipeline.export.bundle_scripts import write_bundle_scripts

    files = write_bundle_scripts(tmp_path)
    assert files[0] == tmp_path / "scripts" / "__init__.py"
    for path in files:
        for line in path.read_text().splitlines():
            assert not re.match(r"\s*(from|import) pipeline\b", line), f"{path}: {line}"
    assert (
        "from scripts.unet_pipeline.inference.tiles import"
        in (files[0].parent / "unet_pipeline/inference/windows.py").read_text()
    )
