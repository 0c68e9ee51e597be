"""Another machine's environment, here: a view of this environment's site-packages less some packages (links
to the rest), and a fresh interpreter that sees only that view (``python -S``: no site-packages, no .pth files)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Sequence

from tests.conftest import ROOT


def packages_without(directory: Path, absent: Sequence[str]) -> Path:
    """``directory`` made a site-packages of links to this environment's, less every entry whose name starts
    with one of ``absent`` (a package, its .dist-info, its modules)."""
    directory.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(tuple(absent)):
            (directory / entry.name).symlink_to(entry)
    return directory


def python_without_site(
    path: Path | Sequence[Path], *args: str, timeout: int, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -S *args`` from the repository root with only ``path`` (a directory or several) on the path."""
    path = [path] if isinstance(path, Path) else list(path)
    return subprocess.run(
        [sys.executable, "-S", *args],
        cwd=ROOT,
        env={"PYTHONPATH": ":".join(map(str, path)), "HOME": "/tmp", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
