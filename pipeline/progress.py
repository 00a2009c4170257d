"""Progress bars on a terminal only.

tqdm redraws a bar many times a second; in a file, CI log or `dvc repro`'s captured output every
redraw is a line. `disable=None` is tqdm's own switch for "only when the stream is a terminal"; the
one-line summaries the stages print (per epoch, per stage) are what a log keeps.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def progress(iterable: Iterable[T], *, show: bool = True, **kwargs: Any) -> Iterable[T]:
    """`tqdm(iterable, **kwargs)`, drawn only when `show` and stderr is a terminal.

    Args:
        iterable: what to iterate over.
        show: False hides the bar everywhere (e.g. on every rank but the first).
        kwargs: tqdm's own options (desc, unit, total, leave).

    Returns:
        The wrapped iterable.
    """
    from tqdm import tqdm

    return tqdm(iterable, disable=None if show else True, **kwargs)


def quiet_library_bars() -> None:
    """Off a terminal, turn off the bars libraries draw themselves (MLflow's artifact download bar,
    drawn when the export stage registers a model), unless the user set their switch."""
    if not sys.stderr.isatty():
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
