"""The eager network inside a TorchScript file (pipeline.model.eager): what Grad-CAM hooks need."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.export import export_torchscript
from pipeline.model import FoldEnsemble, ModelArgs, UNet, load_torchscript
from pipeline.model.eager import eager_copy

ARGS = ModelArgs(2, 1, 3, (4, 8), "valid", "batch", 0.0, "transpose")


def trained_like(seed: int) -> UNet:
    """A U-Net whose weights and batch-norm statistics are not the init's."""
    torch.manual_seed(seed)
    net = UNet(**ARGS.to_dict())
    for p in net.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("members", [1, 2])
def test_eager_copy_of_a_saved_torchscript_model_gives_its_output(tmp_path: Path, members: int) -> None:
    net = trained_like(0) if members == 1 else FoldEnsemble([trained_like(s) for s in range(members)]).eval()
    scripted = load_torchscript(export_torchscript(net, tmp_path / "model.ts"))
    eager = eager_copy(scripted, ARGS)
    assert type(eager) is type(net) and not isinstance(eager, torch.jit.ScriptModule)
    x = torch.randn(1, 1, 60, 44)
    with torch.no_grad():
        assert torch.equal(eager(x), scripted(x))


def test_hooks_need_the_eager_copy(tmp_path: Path) -> None:
    """Why the copy exists: MONAI's Grad-CAM hooks are refused by a loaded ScriptModule."""
    from monai.visualize import GradCAM

    scripted = load_torchscript(export_torchscript(trained_like(0), tmp_path / "model.ts"))
    with pytest.raises(RuntimeError, match="not supported on ScriptModules"):
        GradCAM(scripted, target_layers="decoders.0")
    GradCAM(eager_copy(scripted, ARGS), target_layers="decoders.0")


def test_weights_that_do_not_fit_the_arguments_are_refused(tmp_path: Path) -> None:
    scripted = load_torchscript(export_torchscript(trained_like(0), tmp_path / "model.ts"))
    wider = ModelArgs(2, 1, 3, (8, 16), "valid", "batch", 0.0, "transpose")
    with pytest.raises(RuntimeError, match="size mismatch"):
        eager_copy(scripted, wider)
