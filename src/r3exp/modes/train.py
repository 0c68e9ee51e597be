"""``mode=train``: R3 training alone, the policy exported."""

from __future__ import annotations

from r3exp.runtime.fitting import train_and_record
from r3exp.runtime.run import ModeResult, Run


def train_mode(run: Run) -> ModeResult:
    return ModeResult(run.run_dir, policy=train_and_record(run))
