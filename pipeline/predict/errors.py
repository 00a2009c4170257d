"""The predictor's one error type: input it cannot use, or an export it cannot trust."""

from __future__ import annotations

from pipeline.errors import PipelineError


class PredictError(PipelineError, ValueError):
    """Input the predictor cannot use; the message names the file and the problem."""
