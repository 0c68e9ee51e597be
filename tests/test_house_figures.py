"""scripts/house_figures.py (the layout figures a refactor reports before and after) on a package made here,
whose figures are known, and on r3exp itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration  # scripts/house_figures.py, in a subprocess

SCRIPT = ROOT / "scripts" / "house_figures.py"


def run(package) -> str:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--package", str(package)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_figures_of_a_known_package(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("from pkg.b import y\n\n\ndef f():\n    import json\n    from pkg import c\n")
    (pkg / "b.py").write_text("import pkg.a.x as x\ny = 1\n")  # b <-> a.x: a circle
    (pkg / "c.py").write_text("from . import b\n")
    figures = run(pkg)
    assert "modules: 5, lines: 9" in figures
    assert "in-function imports: 2 statements in 1 modules" in figures
    # a -> b, a -> c, a -> pkg and c -> pkg (`from pkg import c`, `from . import b`: pkg/__init__), b -> a, c -> b
    assert "rooms: 4, import arrows between rooms: 6" in figures
    assert "import circles between modules: 1\n  pkg.a.x, pkg.b, pkg.c (import each other" in figures


def test_figures_of_r3exp():
    figures = run(ROOT / "src" / "r3exp")
    assert figures.startswith("package: src/r3exp\nmodules: ") and "biggest modules: r3exp." in figures
