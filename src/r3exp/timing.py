"""Where a run's time goes: wall-clock seconds per phase (model build, warm start, engine start, evaluation,
training, export, ...), printed as a table at the end of the main job and kept in ``results.json``.

The install is timed by ``scripts/install.sh`` itself (``<venv>/r3exp-install.json``) and shown beside the
run's own phases when present: the cost a fresh clone pays once.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

INSTALL_RECORD = "r3exp-install.json"  # written by scripts/install.sh into the virtual environment


class PhaseTimes:
    """Seconds per named phase, in the order the phases first ran; a phase entered twice adds up."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        """Record a phase timed elsewhere (its name known only at its end)."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def to_dict(self) -> dict[str, float]:
        """Seconds per phase, to the microsecond: a phase of a few milliseconds (exporting a tiny model) is not
        written as 0."""
        return {name: round(seconds, 6) for name, seconds in self.seconds.items()}

    def table(self, install_seconds: float | None = None) -> str:
        total = sum(self.seconds.values())
        rows = ["| phase | seconds | share of the run |", "|---|---|---|"]
        if install_seconds is not None:
            rows.append(f"| install (scripts/install.sh, once) | {install_seconds:.0f} | - |")
        rows += [
            f"| {name} | {seconds:.1f} | {100 * seconds / total:.0f}% |" if total else f"| {name} | {seconds:.1f} | - |"
            for name, seconds in self.seconds.items()
        ]
        rows.append(f"| **total of these phases** | **{total:.1f}** | 100% |")
        return "\n".join(rows)


def install_seconds(prefix: str | Path = sys.prefix) -> float | None:
    """How long ``scripts/install.sh`` took to install this environment, when it recorded it."""
    record = Path(prefix) / INSTALL_RECORD
    try:
        return float(json.loads(record.read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
