"""Settings the trainer warns about: legal, but rarely what the user meant."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.config import Config


def batch_norm_note(cfg: Config) -> str | None:
    """A warning for batch norm over one sample, else None.

    Over a batch of one, batch norm's training statistics are the sample's own (instance norm), but
    validation, evaluate, export and predict use running averages the net never trained with. On
    ISBI that mismatch cost 0.12-0.31 of V_Rand after thinning over seeds 0-2 (benchmarks/README.md,
    "ISBI 2012: instance norm, and one seed per closed cell").

    Args:
        cfg: the run's configuration.

    Returns:
        One line naming the settings and the fix, or None when they are fine.
    """
    if cfg.model.norm != "batch" or cfg.train.batch_size > 1:
        return None
    return (
        "note: model.norm: batch with train.batch_size: 1 trains with each patch's own statistics but "
        "validates and predicts with running averages; model.norm: instance keeps the two the same"
    )
