"""Print pip's configured package sources as uv flags (uv reads neither pip.conf nor PIP_* variables), so that
scripts/install.sh installs with uv from exactly where pip would: index-url, extra-index-url, find-links,
constraint. A CA bundle (pip's `cert`) is printed last as `--cert <file>`; install.sh exports it as
SSL_CERT_FILE, which is how uv takes one.

    .venv/bin/python scripts/pip_sources_for_uv.py
"""

from __future__ import annotations

import shlex
import subprocess
import sys


def uv_flags(pip_config_list: str) -> list[str]:
    """``pip config list`` output (``global.find-links='/w'``, ``:env:.extra-index-url='a b'``) -> uv flags;
    for a single-valued setting the last scope listed wins (pip lists the environment after the files)."""
    values: dict[str, list[str]] = {}
    for line in pip_config_list.splitlines():
        key, _, value = line.partition("=")
        values.setdefault(key.rsplit(".", 1)[-1], []).extend(value.strip("'\"").split())
    flags = ["--index-url", values["index-url"][-1]] if values.get("index-url") else []
    for name in ("extra-index-url", "find-links", "constraint"):
        for value in dict.fromkeys(values.get(name, [])):
            flags += [f"--{name}", value]
    if values.get("cert"):
        flags += ["--cert", values["cert"][-1]]
    return flags


if __name__ == "__main__":
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    print(shlex.join(uv_flags(listed)))
