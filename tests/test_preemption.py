"""The preemption callback through Lightning's public surface: a requeue signal mid-fit saves the step's
checkpoint, stops the fit after that step (``Trainer.should_stop``), restores the earlier handler and hands the
signal to it only when the entry point asks (:class:`Preempted`), with no module state."""

from __future__ import annotations

import os
import signal

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from r3exp.runtime.preemption import CheckpointOnSignal, Preempted, raise_if_preempted

SIGNALLED_AT = 2  # the batch during which the signal arrives


class Regression(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        if batch_idx == SIGNALLED_AT:
            os.kill(os.getpid(), signal.SIGUSR2)  # mid-step, as a scheduler's notice arrives
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(40, 4), torch.randn(40, 1))
        return torch.utils.data.DataLoader(data, batch_size=4)


def fit(tmp_path, earlier) -> tuple[L.Trainer, CheckpointOnSignal]:
    previous = signal.signal(signal.SIGUSR2, earlier)
    try:
        stop = CheckpointOnSignal(["SIGUSR2"])
        trainer = L.Trainer(
            max_steps=10,
            accelerator="cpu",
            default_root_dir=tmp_path,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=100), stop],
        )
        trainer.fit(Regression())
        handler_after = signal.getsignal(signal.SIGUSR2)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert handler_after is earlier  # the run's own handler is gone once it stopped
    return trainer, stop


def test_a_requeue_signal_saves_the_step_stops_the_fit_and_hands_over_only_when_asked(tmp_path):
    calls = []

    def scheduler(signum, frame):  # submitit's handler would requeue the job here
        calls.append(signum)

    trainer, stop = fit(tmp_path, scheduler)
    assert trainer.global_step == SIGNALLED_AT + 1  # the signalled step finished, no step after it
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False, map_location="cpu")
    assert saved["global_step"] == SIGNALLED_AT + 1
    assert calls == []  # not mid-step, not before the run is closed
    with pytest.raises(Preempted) as raised:
        raise_if_preempted(trainer.callbacks)
    assert raised.value is stop.preempted and raised.value.signum == signal.SIGUSR2
    raised.value.hand_over()
    assert calls == [signal.SIGUSR2]


def test_without_an_earlier_handler_the_run_still_stops_and_hands_over_nothing(tmp_path):
    trainer, stop = fit(tmp_path, signal.SIG_DFL)
    assert trainer.global_step == SIGNALLED_AT + 1
    assert stop.preempted is not None and stop.preempted.earlier is None
    stop.preempted.hand_over()  # nothing to call: the entry point exits 143


def test_an_unsignalled_fit_is_not_preempted(tmp_path):
    trainer = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[CheckpointOnSignal(["SIGUSR2"])],
    )
    module = Regression()
    module.training_step = lambda batch, batch_idx: torch.nn.functional.mse_loss(module.layer(batch[0]), batch[1])
    trainer.fit(module)
    assert trainer.global_step == 3
    raise_if_preempted(trainer.callbacks)  # nothing raised
