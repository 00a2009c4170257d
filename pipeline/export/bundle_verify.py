"""MONAI's own checks of a written bundle: metadata against the schema, the network's input/output."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

METADATA = "configs/metadata.json"
INFERENCE = "configs/inference.json"


@contextlib.contextmanager
def bundle_on_path(bundle_dir: Path) -> Iterator[None]:
    """The bundle root on `sys.path`, as `monai.bundle run` puts it there, so its configs import their
    `scripts` package; afterwards the path and that package are gone again (another bundle in this
    process must import its own copy)."""
    sys.path.insert(0, str(bundle_dir))
    try:
        yield
    finally:
        sys.path.remove(str(bundle_dir))
        for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
            del sys.modules[name]


def verify_bundle(bundle_dir: str | Path) -> None:
    """`monai.bundle` verify_metadata (against our offline schema) and verify_net_in_out; raise if either fails."""
    import tempfile
    import warnings

    from monai.bundle import verify_metadata, verify_net_in_out

    from pipeline.export.schema import write_schema
    from pipeline.model.jit import quiet_jit

    bundle_dir = Path(bundle_dir)
    meta, config = bundle_dir / METADATA, bundle_dir / INFERENCE
    with tempfile.TemporaryDirectory() as tmp:
        schema = write_schema(Path(tmp) / "meta_schema.json")
        with warnings.catch_warnings():  # the schema is our own file, written just now: nothing to hash-check
            warnings.filterwarnings("ignore", message="No hash value provided for", category=UserWarning)
            verify_metadata(meta_file=str(meta), filepath=str(schema))
    with quiet_jit(), bundle_on_path(bundle_dir):  # inference.json loads the network with torch.jit.load
        # n=2: at n=1 (the smallest legal size) the bottleneck is 1 voxel, which instance norm rejects
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(meta),
            config_file=str(config),
            device="cpu",
            bundle_root=str(bundle_dir),
            n=2,
        )
