"""The one error type of the data layer: a dataset that cannot be used, with every reason."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.errors import PipelineError


class DatasetError(PipelineError, ValueError):
    """One or more problems with a dataset; each line names the file (or case) and the problem."""

    def __init__(self, problems: Sequence[str] | str, header: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        n = len(self.problems)
        head = header or f"dataset invalid ({n} problem{'s' if n != 1 else ''})"
        super().__init__(head + ":\n  " + "\n  ".join(self.problems))
