"""The eager network inside a saved TorchScript file: our `UNet` (or `FoldEnsemble` of them) rebuilt
from the recorded `ModelArgs`, with the scripted module's weights.

A loaded `ScriptModule` runs forward and backward, but takes no Python hooks
(`register_full_backward_hook` is refused), so code that reads a layer's activations and gradients
(Grad-CAM, `pipeline.inference.saliency`) needs the eager module. The state dict of a scripted
module is the eager module's, key for key, so the copy is exact.
"""

from __future__ import annotations

from typing import Any

from pipeline.model.args import ModelArgs


def eager_copy(module: Any, model_args: ModelArgs) -> Any:
    """An eager `UNet`, or a `FoldEnsemble` of them when the state has `members.<i>.` keys, holding
    `module`'s weights (loaded strictly, so a mismatch with `model_args` raises), in eval mode.

    Args:
        module: a TorchScript (or eager) network exported from this pipeline.
        model_args: the U-Net's arguments, as metadata.json records them.

    Returns:
        The `torch.nn.Module`, on the device of `module`'s weights.
    """
    from pipeline.model.ensemble import FoldEnsemble
    from pipeline.model.unet import UNet

    state = module.state_dict()
    kwargs = model_args.to_dict()
    members = {key.split(".")[1] for key in state if key.startswith("members.")}
    net = FoldEnsemble([UNet(**kwargs) for _ in members]) if members else UNet(**kwargs)
    net.load_state_dict(state)
    device = next(iter(state.values())).device if state else "cpu"
    return net.to(device).eval()
