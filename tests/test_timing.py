"""Where a run's time goes: phases add up, keep their order, and the install's record is read back."""

from __future__ import annotations

import time

from r3exp.timing import INSTALL_RECORD, PhaseTimes, install_seconds


def clock(monkeypatch, *readings: float) -> None:
    """The clock a phase reads at its start and end, reading these in turn: the figures are known, not measured."""
    monkeypatch.setattr(time, "perf_counter", iter(readings).__next__)


def test_phases_keep_their_order_and_a_phase_entered_twice_adds_up(monkeypatch):
    clock(monkeypatch, 0.0, 2.0, 10.0, 11.0, 20.0, 22.5)
    phases = PhaseTimes()
    with phases("evaluation"):
        pass
    with phases("training"):
        pass
    with phases("evaluation"):
        pass
    assert phases.seconds == {"evaluation": 4.5, "training": 1.0}
    assert list(phases.seconds) == ["evaluation", "training"]


def test_a_phase_of_a_few_milliseconds_is_not_written_as_zero(monkeypatch):
    clock(monkeypatch, 100.0, 100.003)
    phases = PhaseTimes()
    with phases("export"):
        pass
    assert phases.to_dict() == {"export": 0.003}


def test_a_phase_that_raises_is_still_timed(monkeypatch):
    clock(monkeypatch, 5.0, 8.0)
    phases = PhaseTimes()
    try:
        with phases("training"):
            raise RuntimeError("preempted")
    except RuntimeError:
        pass
    assert phases.seconds == {"training": 3.0}


def test_the_table_lists_every_phase_its_share_and_the_install_when_recorded():
    phases = PhaseTimes()
    phases.seconds.update({"warm start": 30.0, "training": 90.0})
    table = phases.table(install_seconds=120.0)
    assert "| install (scripts/install.sh, once) | 120 | - |" in table
    assert "| warm start | 30.0 | 25% |" in table and "| training | 90.0 | 75% |" in table
    assert "| **total of these phases** | **120.0** | 100% |" in table
    assert "install" not in phases.table()


def test_the_install_record_is_read_back_and_a_missing_or_broken_one_is_none(tmp_path):
    assert install_seconds(tmp_path) is None
    (tmp_path / INSTALL_RECORD).write_text('{"seconds": 131, "extras": "cpu,smollm2"}')
    assert install_seconds(tmp_path) == 131.0
    (tmp_path / INSTALL_RECORD).write_text("{not json")
    assert install_seconds(tmp_path) is None
