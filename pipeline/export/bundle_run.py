"""The loop a bundle's `run` expression calls: preprocess, infer, post-process (incl. save), per image.

MONAI's `SupervisedEvaluator` would do the same but needs pytorch-ignite; this keeps the bundle's
components (`preprocessing`, `inferer`, `network_def`, `postprocessing`) standard for MONAI Label
and MONAI Deploy, which read those keys and run their own loops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def infer_all(
    dataset: Iterable[dict[str, Any]],
    network: Callable[..., Any],
    inferer: Callable[..., Any],
    postprocessing: Callable[[dict[str, Any]], Any],
    device: Any = "cpu",
) -> list[Any]:
    """Run `inferer(image[None], network)` on every preprocessed item and post-process it."""
    import torch

    results = []
    with torch.no_grad():
        for item in dataset:
            image = item["image"]
            pred = inferer(torch.as_tensor(image)[None].to(device), network)
            item["pred"] = torch.as_tensor(pred)[0].detach().cpu()
            results.append(postprocessing(item))
    return results
