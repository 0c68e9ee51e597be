"""The training progress bar: one line per run, with what the run is doing (step n of N, mean reward, the
rate at which retries follow their reflection, generated tokens/s) instead of Lightning's epoch and
logger version."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar

from r3exp import keys

SHOWN = (
    ("reward", keys.REWARD_MEAN),
    ("retry", keys.RETRY_SUCCESS),
    ("follows", keys.FOLLOW_RATE),
    ("tok/s", keys.GENERATED_TOKENS_PER_SECOND),
)


def progress_metrics(stats: dict[str, float], logged: dict) -> dict[str, str]:
    """The bar's postfix: the step's rollout statistics, then the loss when the step trained."""
    shown = {
        name: f"{stats[key]:.3g}" if name != "tok/s" else f"{stats[key]:.0f}" for name, key in SHOWN if key in stats
    }
    if keys.LOSS in logged:
        shown["loss"] = logged[keys.LOSS]
    return shown


class RunProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, named ``train`` and showing :func:`progress_metrics`."""

    def get_metrics(self, trainer, pl_module) -> dict:
        logged = super().get_metrics(trainer, pl_module)
        return progress_metrics(getattr(pl_module, "last_batch_stats", None) or {}, logged)

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description("train")
