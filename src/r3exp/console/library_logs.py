"""A console that shows the run: the libraries' routine logs go to the run directory.

vLLM, Lightning, transformers and W&B log hundreds of routine lines per run (two per weight push, one
warning per layer whose weights are reloaded, start-up banners). :func:`quiet_console` sends every log
record of a logger outside r3exp to ``<run dir>/engine.log`` (other ranks: ``engine_rank<N>.log``) and
keeps from the console (and Hydra's job log, which mirrors it) only r3exp's own records and the first
record of each distinct library warning, so that one that matters is seen once. Python warnings are
routed the same way. ``verbose=true`` leaves everything as the libraries set it up.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

OURS = ("r3exp", "__main__")
ENGINE_LOG = "engine.log"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def quiet_library_environment() -> None:
    """Before the libraries are imported: vLLM logs through Python's root logger instead of its own
    console handler, W&B prints nothing of its own. Explicit environment variables win."""
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    os.environ.setdefault("WANDB_SILENT", "true")


# Warnings every r3exp run gets from its libraries, about choices r3exp makes on purpose (an in-process
# eager engine on CPU, no chunked prefill, manual optimization over a dataloader iterator) or about the
# libraries' own internals (deprecations): they stay in the engine log. (logger name prefix, message text)
ROUTINE_WARNINGS = (
    ("vllm", "The global random seed is set"),
    ("vllm", "does not officially support disabling chunked prefill"),
    ("vllm", "Enforce eager set"),
    ("vllm", "Inductor compilation was disabled"),
    ("vllm", "Triton is not installed"),
    ("vllm", "Model Runner V2 requires Triton"),
    ("vllm", "not found in LD_PRELOAD"),  # libtcmalloc, libiomp
    ("vllm", "CPU backend doesn't allow to use `torch.set_num_threads`"),
    ("vllm", "RotaryEmbedding: Failed to load weights"),  # a weight push: rotary tables are not weights
    ("vllm", "Attempted to load weight"),  # a weight push into a bf16 engine from an fp32 trainer
    ("torch", "Triton not available"),
    ("py.warnings", "FutureWarning"),
    ("py.warnings", "DeprecationWarning"),
    ("py.warnings", "is deprecated"),
    ("py.warnings", "`dataloader_iter`"),
    ("py.warnings", "Using ModelCheckpoint with manual optimization"),
)


def is_ours(record: logging.LogRecord) -> bool:
    return record.name.split(".")[0] in OURS


def is_routine(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return any(record.name.startswith(name) and text in message for name, text in ROUTINE_WARNINGS)


class ConsoleRecords(logging.Filter):
    """r3exp's records; of the libraries', the first warning (or error) of each kind that is not routine."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if is_ours(record):
            return True
        if record.levelno < logging.WARNING or (record.levelno < logging.ERROR and is_routine(record)):
            return False
        kind = (record.name, str(record.msg))
        if kind in self.seen:
            return False
        self.seen.add(kind)
        return True


def engine_log_path(run_dir: Path, rank: int) -> Path:
    return run_dir / (ENGINE_LOG if rank == 0 else f"engine_rank{rank}.log")


def quiet_console(run_dir: Path, rank: int = 0) -> Path:
    """Route the libraries' records (every level from INFO) to the run directory's engine log and keep the
    console for the run's own; returns the log's path. Idempotent; a later run in the same process (a Hydra
    multirun's next job) moves the engine log to its own directory."""
    root = logging.getLogger()
    path = engine_log_path(run_dir, rank)
    for handler in [h for h in root.handlers if getattr(h, "r3exp_engine_log", False)]:
        if Path(handler.baseFilename) == path.absolute():
            return path
        root.removeHandler(handler)
        handler.close()
    console_filter = ConsoleRecords()
    for handler in root.handlers:
        handler.addFilter(console_filter)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine_log = logging.FileHandler(path)
    engine_log.r3exp_engine_log = True
    engine_log.setFormatter(logging.Formatter(FORMAT))
    engine_log.addFilter(lambda record: not is_ours(record))
    root.addHandler(engine_log)
    logging.captureWarnings(True)  # warnings.warn(...) becomes a record of the logger py.warnings
    for name in list(logging.root.manager.loggerDict):  # libraries' own console handlers print around the filter
        library = logging.getLogger(name)
        if name.split(".")[0] in OURS:
            continue
        for handler in list(library.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                library.removeHandler(handler)
                library.propagate = True
    try:  # transformers adds its console handler on first use, does not propagate, and shows loading bars
        from transformers.utils import logging as transformers_logging  # noqa: PLC0415 - seconds; loads after env setup

        transformers_logging.disable_default_handler()
        transformers_logging.enable_propagation()
        transformers_logging.disable_progress_bar()
    except ImportError:
        pass
    return path
