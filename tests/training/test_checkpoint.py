"""Checkpoints and resuming (pipeline.training.checkpoint): an interrupted run resumes to the
uninterrupted one's weights and history; another config or dataset starts over. A damaged
checkpoint (truncated for real) or one holding a pickled object is refused at resume with one
error line naming it and what to do; a checkpoint write that hits a real file-size limit (a full
disk) fails with one line, keeps the previous checkpoints and leaves no temp behind.

Every test reads data made by the real embedded path: `synthesize` (small) -> preprocess stage.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers.faults import cli, digests, make_tracking_store, one_error_line, run_limited, temps, truncate
from helpers.training import make_config, prepare_data

# a run of 2 epochs stopped after the first: resumable. Its checkpoints (~1.7 MB) are larger than
# an MLflow sqlite store (~1 MB), so a file-size limit just below them lets the store grow.
HALF_RUN = {"model": {"features": [16, 32, 64]}, "train": {"epochs": 2, "iterations_per_epoch": 2}}
MEMBER = Path("checkpoints") / "fold_0"


@pytest.mark.slow
@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_resume_equals_uninterrupted(workdir: Path, data_cache: Path, ema_decay: float | None) -> None:
    """Train 3 epochs straight vs 1 epoch, 'killed', re-run to 3: same weights (and moving average,
    with one), same history."""
    from mlflow.tracking import MlflowClient

    from pipeline.stages.train import run
    from pipeline.tracking import read_run_ref

    prepare_data(workdir, data_cache, dims=2)
    aug = {"elastic": True, "rotate": True, "flip": True, "intensity": True, "prob": 0.5}
    train = {"epochs": 3, "iterations_per_epoch": 4, "scheduler": "poly", "augment": aug, "ema_decay": ema_decay}
    model = {"features": [8, 16, 32], "dropout": 0.2}
    straight = make_config(2, "valid", model=model, train={**train, "output_dir": "ck_straight"})
    run(straight)
    resumed = make_config(2, "valid", model=model, train={**train, "output_dir": "ck_resumed"})
    run(resumed, max_epochs=1)
    first = torch.load(workdir / "ck_resumed" / "fold_0" / "last.pt", weights_only=True)
    assert first["epoch"] == 1
    run_id = read_run_ref(workdir / "ck_resumed" / "fold_0").run_id
    run(resumed)

    a = torch.load(workdir / "ck_straight" / "fold_0" / "last.pt", weights_only=True)
    b = torch.load(workdir / "ck_resumed" / "fold_0" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    weights = ("model", "training_model") if ema_decay is not None else ("model",)
    assert ("training_model" in a) == (ema_decay is not None)
    for name in weights:
        assert a[name].keys() == b[name].keys()
        for key, tensor in a[name].items():
            torch.testing.assert_close(b[name][key], tensor, atol=1e-6, rtol=0, msg=f"{name}.{key}")
    for key in ("train_loss", "val_dice_mean", "val_iou_mean"):
        assert [h[key] for h in b["history"]] == pytest.approx([h[key] for h in a["history"]], abs=1e-6), key
    assert b["scheduler"]["last_epoch"] == a["scheduler"]["last_epoch"] == 12
    # the resumed training kept logging into the run it started
    assert b["mlflow_run_id"] == run_id == read_run_ref(workdir / "ck_resumed" / "fold_0").run_id
    steps = [
        m.step
        for m in MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"]).get_metric_history(run_id, "train_loss")
    ]
    assert sorted(steps) == [1, 2, 3]


def test_other_config_starts_over(workdir: Path, data_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.stages.train import run

    prepare_data(workdir, data_cache, dims=2)
    cfg = make_config(2, "same", train={"epochs": 2, "iterations_per_epoch": 2})
    run(cfg, max_epochs=1)
    changed = make_config(2, "same", train={"epochs": 2, "iterations_per_epoch": 2, "lr": 1e-4})
    run(changed)
    out = capsys.readouterr()
    assert "different config" in out.out + out.err
    state = torch.load(workdir / "checkpoints" / "fold_0" / "last.pt", weights_only=True)
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    assert state["config"]["train"]["lr"] == 1e-4


def test_finished_run_on_another_dataset_retrains(workdir: Path, data_cache: Path, capsys) -> None:
    """`dvc repro` reruns train when preprocessed/ changes; the persisted checkpoint of the old data
    must not pass for the new result. With the same data and code it is kept, and the stage's other
    outputs (history, overlays) are written again."""
    import json

    from pipeline.stages.train import run

    root = prepare_data(workdir, data_cache, dims=2)
    cfg = make_config(2, "same", train={"epochs": 1, "iterations_per_epoch": 2})
    run(cfg)
    (workdir / "checkpoints" / "fold_0" / "val_overlays.png").unlink()
    run(cfg)  # same config, code and data: nothing to train, outputs rewritten
    out = capsys.readouterr()
    assert (
        "nothing to train" in out.out + out.err and (workdir / "checkpoints" / "fold_0" / "val_overlays.png").is_file()
    )
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["splits"]["train"] = manifest["splits"]["train"][1:]  # one case fewer: another dataset
    (root / "manifest.json").write_text(json.dumps(manifest))
    run(cfg)
    out = capsys.readouterr()
    assert "starts over" in out.out + out.err and "nothing to train" not in out.out + out.err


@pytest.fixture(scope="module")
def half_trained(tmp_path_factory: pytest.TempPathFactory, data_cache: Path) -> Path:
    """A folder with preprocessed/, cfg.yaml and checkpoints/fold_0/{last,best}.pt of epoch 1 of 2."""
    from pipeline.config import complete_yaml
    from pipeline.stages.train import run

    root = tmp_path_factory.mktemp("half_trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        prepare_data(root, data_cache, dims=2)
        cfg = make_config(2, "valid", **HALF_RUN)
        (root / "cfg.yaml").write_text(complete_yaml(cfg))
        run(cfg, max_epochs=1)
    return root


def _copy_half_trained(src: Path, dst: Path) -> Path:
    """The half-trained run in `dst` (the test's cwd, with its own MLflow store); returns its member folder."""
    for name in ("data", "preprocessed", "checkpoints"):
        shutil.copytree(src / name, dst / name)
    shutil.copy(src / "cfg.yaml", dst / "cfg.yaml")
    return dst / MEMBER


def test_truncated_last_pt_is_named_at_resume(workdir: Path, half_trained: Path, capsys) -> None:
    member = _copy_half_trained(half_trained, workdir)
    truncate(member / "last.pt")
    before = digests(member)
    code, err = cli(["train", "-c", "cfg.yaml"], capsys)
    line = one_error_line(err)
    assert code == 2
    assert f"checkpoint {MEMBER / 'last.pt'} is truncated or corrupt (" in line
    assert f"copy {MEMBER / 'best.pt'} over it to resume from its epoch 1" in line
    assert f"delete {MEMBER / 'last.pt'} and {MEMBER / 'best.pt'}" in line
    assert digests(member) == before  # refused before anything was written
    shutil.copy(member / "best.pt", member / "last.pt")  # the way out the error names
    assert cli(["train", "-c", "cfg.yaml"], capsys)[0] == 0
    assert torch.load(member / "last.pt", weights_only=True)["epoch"] == 2


def test_truncated_best_pt_is_named_at_resume(workdir: Path, half_trained: Path, capsys) -> None:
    member = _copy_half_trained(half_trained, workdir)
    truncate(member / "best.pt", keep=0.9)
    code, err = cli(["train", "-c", "cfg.yaml"], capsys)
    line = one_error_line(err)
    assert code == 2
    assert f"checkpoint {MEMBER / 'best.pt'} is truncated or corrupt" in line
    assert f"copy {MEMBER / 'last.pt'} over it (the same best epoch, 1)" in line


class _Payload:
    """A pickled object of a class that is not a tensor or plain value."""


class _RunsCode:
    """Unpickled without weights_only, this runs `touch pwned`."""

    def __reduce__(self):
        return os.system, ("touch pwned",)


@pytest.mark.parametrize(
    "planted,global_name",
    [(_Payload(), "_Payload"), (os.path.join, "join"), (_RunsCode(), "system")],
    ids=["instance", "function", "reduce-to-os.system"],
)
def test_checkpoint_with_a_pickled_object_is_refused(
    workdir: Path, half_trained: Path, capsys, planted, global_name: str
) -> None:
    """A real checkpoint with one pickled object added: the weights-only load refuses it, names the
    file and runs none of its code, at evaluate (`--checkpoint`) and at resume."""
    from pipeline.training.checkpoint import CheckpointError, load_checkpoint

    member = _copy_half_trained(half_trained, workdir)
    state = torch.load(member / "best.pt", weights_only=True)
    torch.save({**state, "extra": {"note": planted}}, workdir / "planted.pt")
    with pytest.raises(CheckpointError, match=rf"planted\.pt holds a pickled Python object \(\S*{global_name}\)"):
        load_checkpoint(workdir / "planted.pt")
    code, err = cli(["evaluate", "-c", "cfg.yaml", "--checkpoint", "planted.pt"], capsys)
    assert code == 2 and "checkpoint planted.pt holds a pickled Python object" in one_error_line(err)
    shutil.copy(workdir / "planted.pt", member / "last.pt")
    code, err = cli(["train", "-c", "cfg.yaml"], capsys)
    assert code == 2 and f"checkpoint {MEMBER / 'last.pt'} holds a pickled Python object" in one_error_line(err)
    assert not (workdir / "pwned").exists()


def test_checkpoints_load_weights_only_everywhere(repo_root: Path) -> None:
    """Every torch.load call of the package passes weights_only=True (and there is just the one)."""
    import ast

    calls = []
    for path in sorted((repo_root / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            func = node.func if isinstance(node, ast.Call) else None
            if isinstance(func, ast.Attribute) and func.attr == "load" and ast.unparse(func.value) == "torch":
                flag = next((k.value for k in node.keywords if k.arg == "weights_only"), None)
                calls.append((path.relative_to(repo_root).as_posix(), ast.unparse(flag) if flag else None))
    assert calls == [("pipeline/training/checkpoint.py", "True")]


@pytest.mark.slow
def test_checkpoint_write_on_a_full_disk(workdir: Path, half_trained: Path, capsys, monkeypatch) -> None:
    """Epoch 2's checkpoint hits a real file-size limit just below its size: one error line naming
    it, epoch 1's checkpoints byte-identical, no temp; without the limit the re-run completes."""
    member = _copy_half_trained(half_trained, workdir)
    make_tracking_store(workdir, monkeypatch)
    before = {k: v for k, v in digests(member).items() if k.endswith(".pt")}
    limit = min((member / name).stat().st_size for name in ("last.pt", "best.pt")) - 1
    assert (workdir / "mlflow.db").stat().st_size < limit - 300_000, "the MLflow store must be able to grow"
    limited = run_limited(["train", "-c", "cfg.yaml"], limit, workdir)
    line = one_error_line(limited.stderr)
    assert limited.returncode == 2, limited.stderr[-3000:]
    assert re.search(rf"cannot write {re.escape(str(MEMBER))}/(best|last)\.pt: file too large or disk full", line)
    assert f"file-size limit of {limit} bytes" in line
    assert {k: v for k, v in digests(member).items() if k.endswith(".pt")} == before
    assert temps(workdir) == []
    assert cli(["train", "-c", "cfg.yaml"], capsys)[0] == 0
    assert torch.load(member / "last.pt", weights_only=True)["epoch"] == 2
