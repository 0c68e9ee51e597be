"""A cache entry (a built model, a converted GGUF, a warm start, a stored evaluation) written beside its
place and moved in with one rename, so an interrupted build leaves nothing half-written, and two jobs that
build the same entry at once (a Hydra multirun's jobs, parallel test workers) both end with it: the first
rename wins, the other job drops its own copy and uses that one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def staged_entry(target: str | os.PathLike, prefix: str = ".building-") -> Iterator[Path]:
    """Yield an empty staging directory beside ``target``; once the body has filled it without raising, move
    it to ``target`` in one rename, unless ``target`` appeared meanwhile (another job's copy, kept). The
    staging directory is removed in every case."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=prefix))
    try:
        yield staging
        try:
            os.replace(staging, target)
        except OSError:  # a non-empty directory is there: another job moved its copy in first
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
