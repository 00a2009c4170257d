"""A training killed between its two checkpoint files of one epoch (pipeline.training.trainer).

An epoch whose validation improved writes two files, best.pt and last.pt. A SIGKILL between the two
must not leave a run whose re-run trusts last.pt while best.pt is missing or older: best.pt is
written first, so last.pt never names a best epoch whose weights best.pt lacks. The random kills of
tests/test_pipeline_kill.py seldom land in that millisecond window; this kills there on purpose,
with a real SIGKILL of a real training process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.training import make_config, prepare_data

TESTS_DIR = Path(__file__).resolve().parents[1]

SETTINGS = {
    "model": {"features": [8, 16, 32]},
    "train": {"epochs": 1, "iterations_per_epoch": 3, "output_dir": "ck"},
}

# train per SETTINGS; SIGKILL itself right after the first checkpoint file of epoch 1 is complete
KILLED_TRAINING = f"""
import os, signal
from helpers.training import make_config
from pipeline.training import checkpoint as ckpt

save = ckpt.save_checkpoint

def save_then_die(state, path):
    save(state, path)
    os.kill(os.getpid(), signal.SIGKILL)

ckpt.save_checkpoint = save_then_die
from pipeline.stages.train import run

run(make_config(2, "valid", **{SETTINGS!r}))
"""


@pytest.mark.slow
def test_kill_between_best_and_last(workdir: Path, data_cache: Path) -> None:
    from pipeline.stages.train import run

    prepare_data(workdir, data_cache, dims=2)
    straight = make_config(2, "valid", model=SETTINGS["model"], train={**SETTINGS["train"], "output_dir": "straight"})
    run(straight)

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))
    killed = subprocess.run([sys.executable, "-c", KILLED_TRAINING], cwd=workdir, env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-3000:]
    member = workdir / "ck" / "fold_0"
    written = sorted(p.name for p in member.glob("*.pt"))
    assert len(written) == 1, written  # killed between the two files of epoch 1

    run(make_config(2, "valid", **SETTINGS))  # the re-run `dvc repro` would make
    for name in ("best.pt", "last.pt"):
        assert (member / name).is_file(), f"{name} missing after the re-run (killed with only {written})"
        a = torch.load(workdir / "straight" / "fold_0" / name, weights_only=True)
        b = torch.load(member / name, weights_only=True)
        assert (a["epoch"], a["best_epoch"]) == (b["epoch"], b["best_epoch"]), name
        for key, tensor in a["model"].items():
            torch.testing.assert_close(b["model"][key], tensor, atol=1e-6, rtol=0, msg=f"{name}: {key}")
    assert not [p.name for p in member.iterdir() if p.name.startswith(".")], "a temp left in the checkpoint folder"
