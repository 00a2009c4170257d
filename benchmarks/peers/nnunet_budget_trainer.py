"""nnU-Net v2's default trainer, stopped by a wall-clock budget instead of an epoch count.

Runs inside the nnU-Net venv (`setup_nnunet.sh`), never in the project's. nnU-Net's own trainer
variants fix the number of epochs (1000 x 250 iterations by default, days on a CPU); a fair
side-by-side gives both tools the same minutes. Everything else is `nnUNetTrainer` unchanged
(network, loss with deep supervision, augmentation, foreground oversampling, SGD + Nesterov),
except that the poly learning-rate decay runs over the budget's wall time rather than over 1000
epochs, so that the run ends annealed, as ours does (the benchmark's `--minutes` sets our epochs
from a probe for the same reason). The per-epoch validation pass is nnU-Net's own and is paid
from the budget, as our validation passes are; an epoch the budget cuts short skips it.
"""

from __future__ import annotations

import time

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerWallClock(nnUNetTrainer):  # noqa: N801 (nnU-Net's naming convention)
    budget_s: float = 3600.0
    max_epochs: int | None = None  # a second cap, for the --quick path
    started: float | None = None
    iterations_done: int = 0
    startup_s: float = 0.0  # budget spent before the first training step (data loaders, workers)

    def configure(
        self, budget_s: float, iterations_per_epoch: int, val_iterations: int, max_epochs: int | None
    ) -> None:
        """Set before `run_training` (the attributes nnU-Net's `__init__` fixed)."""
        self.budget_s = float(budget_s)
        self.num_iterations_per_epoch = int(iterations_per_epoch)
        self.num_val_iterations_per_epoch = int(val_iterations)
        self.max_epochs = max_epochs

    def elapsed(self) -> float:
        return 0.0 if self.started is None else time.perf_counter() - self.started

    def out_of_time(self) -> bool:
        return self.elapsed() >= self.budget_s

    def _anneal(self) -> None:
        """Poly 0.9 over wall time: lr = initial * (1 - elapsed / budget) ** 0.9."""
        frac = min(self.elapsed() / self.budget_s, 0.999)
        lr = self.initial_lr * (1.0 - frac) ** 0.9
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def run_training(self) -> None:
        """nnU-Net's loop, checked against the budget before every iteration (an epoch of 250
        iterations is ~19 min on a 2-core CPU, too coarse to stop on)."""
        self.started = time.perf_counter()  # start-up (unpacking, network build) is paid from the budget
        self.on_train_start()
        self.startup_s = self.elapsed()
        while not self.out_of_time() and (self.max_epochs is None or self.current_epoch < self.max_epochs):
            self.on_epoch_start()
            self.on_train_epoch_start()
            outputs = []
            for _ in range(self.num_iterations_per_epoch):
                if self.out_of_time():
                    break
                self._anneal()
                outputs.append(self.train_step(next(self.dataloader_train)))
                self.iterations_done += 1
            if not outputs:
                break
            self.on_train_epoch_end(outputs)
            if len(outputs) < self.num_iterations_per_epoch:
                break  # cut short by the budget: no validation pass past the deadline
            with torch.no_grad():
                self.on_validation_epoch_start()
                val = [
                    self.validation_step(next(self.dataloader_val)) for _ in range(self.num_val_iterations_per_epoch)
                ]
                self.on_validation_epoch_end(val)
            self.on_epoch_end()
        self.on_train_end()
