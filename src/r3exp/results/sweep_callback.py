"""A Hydra callback that compares a multirun's runs when the last one ends (``hydra.callbacks`` in
``experiment=r3_demo``): the comparison's files go to the sweep directory, and its table is printed."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from r3exp.errors import R3Error
from r3exp.results.across_runs import collect_runs
from r3exp.results.outputs import write_comparison

log = logging.getLogger(__name__)


class CompareSweep(Callback):
    """After a multirun: ``mode=compare`` over its directory, written into it (``comparison.md``,
    ``paired.json``, ``accuracy.png``, ``training.png``...). A job that fails is reported when it ends, with
    its traceback (Hydra's launcher keeps the exception until the whole sweep is over)."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if job_return.status != JobStatus.FAILED:
            return
        error = job_return._return_value  # the exception; .return_value would raise it here
        overrides = " ".join(job_return.overrides or [])
        log.error(
            "job failed (%s): %s\n%s",
            overrides,
            error,
            "".join(traceback.format_exception(type(error), error, error.__traceback__)),
        )

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            runs = collect_runs(sweep_dir)
        except FileNotFoundError as err:  # every job failed: Hydra has already said why
            log.warning("no comparison: %s", err)
            return
        try:
            produced = write_comparison(runs, sweep_dir)
        except R3Error as err:  # the runs cannot be compared as they are (the jobs' own results stand)
            log.warning("no comparison: %s", err)
            return
        print(
            f"\n{len(runs)} runs -> {produced['table']}\n{produced['text']}\n"
            f"learning curves: {produced['training_png']}"
        )
