"""The console shows the run; the libraries' routine records go to the run directory's engine log
(r3exp.console.library_logs), with real loggers and handlers."""

from __future__ import annotations

import logging
import warnings

import pytest

from r3exp import keys
from r3exp.console.library_logs import ConsoleRecords, quiet_console
from r3exp.console.progress import progress_metrics


@pytest.fixture
def root_with_console(tmp_path):
    """The root logger as Hydra leaves it (a console handler and the job log), restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    for handler in saved_handlers:
        root.removeHandler(handler)
    console_lines, job_log = [], tmp_path / "cli.log"

    class Console(logging.StreamHandler):
        def emit(self, record):
            console_lines.append(record.getMessage())

    root.addHandler(Console())
    root.addHandler(logging.FileHandler(job_log))
    root.setLevel(logging.INFO)
    yield console_lines, job_log
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)
    logging.captureWarnings(False)


def test_library_records_go_to_the_engine_log_and_the_run_s_own_stay(root_with_console, tmp_path):
    console, job_log = root_with_console
    library = logging.getLogger("vllm.test_console_library")
    library.addHandler(logging.StreamHandler())  # a library's own console handler, as vLLM and transformers add
    library.propagate = False
    path = quiet_console(tmp_path / "run")
    assert path == tmp_path / "run" / "engine.log"
    assert not library.handlers and library.propagate
    for _ in range(3):
        library.info("Reloading and processing weights took 0.01 seconds")
        library.warning("RotaryEmbedding: Failed to load weights")  # routine: never on the console
        library.warning("KV cache is too small for %d tokens", 4096)  # not routine: once
    logging.getLogger("r3exp.runtime.policy_evaluation").info("base evaluation stored")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a library's FutureWarning", FutureWarning)
        warnings.warn("num_workers is low", UserWarning)
    library.error("the engine died")
    assert console == ["KV cache is too small for 4096 tokens", "base evaluation stored", console[2], "the engine died"]
    assert "num_workers is low" in console[2]
    engine_log = path.read_text()
    assert engine_log.count("Reloading and processing weights") == 3 and engine_log.count("KV cache is too small") == 3
    assert "FutureWarning" in engine_log and "base evaluation stored" not in engine_log
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert "Reloading" not in job_log.read_text() and "base evaluation stored" in job_log.read_text()


def test_quieting_twice_adds_one_engine_log(root_with_console, tmp_path):
    quiet_console(tmp_path / "run")
    handlers = len(logging.getLogger().handlers)
    quiet_console(tmp_path / "run")
    assert len(logging.getLogger().handlers) == handlers


def test_the_next_job_of_a_multirun_logs_to_its_own_directory(root_with_console, tmp_path):
    library = logging.getLogger("vllm.test_console_multirun")
    quiet_console(tmp_path / "job0")
    library.info("first job")
    quiet_console(tmp_path / "job1")
    library.info("second job")
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert (tmp_path / "job0" / "engine.log").read_text().count("job") == 1
    assert "second job" in (tmp_path / "job1" / "engine.log").read_text()


def test_another_rank_writes_its_own_engine_log(root_with_console, tmp_path):
    assert quiet_console(tmp_path / "run", rank=1) == tmp_path / "run" / "engine_rank1.log"


def test_a_warning_is_shown_once_per_kind_an_error_each_time():
    shown = ConsoleRecords()

    def record(name, level, msg, *args):
        return logging.LogRecord(name, level, __file__, 1, msg, args, None)

    assert shown.filter(record("transformers.x", logging.WARNING, "slow tokenizer %s", "a"))
    assert not shown.filter(record("transformers.x", logging.WARNING, "slow tokenizer %s", "b"))
    assert not shown.filter(record("vllm.x", logging.INFO, "routine"))
    assert shown.filter(record("r3exp.x", logging.DEBUG, "ours, whatever the level"))
    assert shown.filter(record("vllm.x", logging.ERROR, "failed")) and not shown.filter(
        record("vllm.x", logging.ERROR, "failed")
    )


def test_the_progress_bar_shows_the_step_s_rollout_and_loss():
    stats = {
        keys.REWARD_MEAN: 0.41666,
        keys.RETRY_SUCCESS: 0.25,
        keys.FOLLOW_RATE: 0.5,
        keys.GENERATED_TOKENS_PER_SECOND: 812.4,
        "rollout/other": 3.0,
    }
    assert progress_metrics(stats, {keys.LOSS: "0.0123", "v_num": "ab12"}) == {
        "reward": "0.417",
        "retry": "0.25",
        "follows": "0.5",
        "tok/s": "812",
        "loss": "0.0123",
    }
    assert progress_metrics({}, {"v_num": "ab12"}) == {}
