"""DVC stage `preprocess`: data/ (canonical raw layout) -> preprocessed/ (arrays + manifest).

Validates every case, then reorients, resamples, normalises and splits them
(`pipeline.data.preprocessing`); a failure leaves the previous `preprocessed/` intact.
Run as `unet-pipeline preprocess [-c params.yaml] [-S key=value]`.
"""

from __future__ import annotations

from pipeline.config import Config


def run(cfg: Config) -> None:
    """Validate data/, then write preprocessed/{manifest.json, fingerprint.json, cases/}."""
    from pipeline.data.preprocessing import preprocess_dataset

    manifest = preprocess_dataset(cfg)
    spec, splits = manifest["preprocessing"], manifest["splits"]
    print(
        f"preprocess: {len(manifest['cases'])} cases ({len(splits['train'])} train / {len(splits['val'])} val), "
        f"spacing {spec['spacing'] or 'unchanged'}, orientation {spec['orientation'] or 'unchanged'} "
        f"-> {cfg.preprocess.output_dir}/"
    )
