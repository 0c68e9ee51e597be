"""Imports go one way: a package imports only packages of lower layers and its own modules, so there is
no cycle between packages."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import ROOT

# low to high; a package may import any package of a lower layer and its own modules
LAYERS = [
    {"errors", "r3exp", "keys", "timing", "host_memory", "cache_entries"},
    {"distributed", "records", "config_types", "extras"},
    {"tasks", "models"},
    {"rollout"},
    {"grpo", "evaluation", "scripted_sft", "tracking", "console"},
    {"results", "embedded"},
    {"runtime"},
    {"modes"},
    {"cli"},
    {"__main__"},
]
SRC = ROOT / "src" / "r3exp"


def package_of(path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return "r3exp" if parts == ("__init__",) else parts[0]


def r3exp_imports(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = (
            [node.module]
            if isinstance(node, ast.ImportFrom) and node.module
            else [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else []
        )
        for name in names:
            if name == "r3exp":
                found.add("r3exp")
            elif name.startswith("r3exp."):
                found.add(name.split(".")[1])
    return found


def test_no_package_imports_a_higher_or_same_layer_package():
    layer = {package: i for i, packages in enumerate(LAYERS) for package in packages}
    files = [p for p in SRC.rglob("*.py") if "conf" not in p.relative_to(SRC).parts]
    assert {package_of(p) for p in files} <= set(layer), "a new package needs a layer in LAYERS"
    upward = []
    for path in files:
        mine = package_of(path)
        for other in r3exp_imports(path) - {mine}:
            if layer[other] >= layer[mine]:
                upward.append(f"{path.relative_to(SRC)} imports {other} (layer {layer[other]} >= {layer[mine]})")
    assert not upward, "\n".join(upward)


def test_the_architecture_pages_diagram_is_these_layers():
    page = (ROOT / "docs" / "concepts" / "architecture.md").read_text()
    block = page.split("<!-- layers:", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    drawn = [set(line.split(" · ")) for line in block.strip().splitlines()]
    assert drawn == LAYERS[::-1]


@pytest.mark.integration  # scripts/house_figures.py, in a subprocess
def test_no_import_circle_and_no_two_modules_share_a_name():
    """No module imports itself back through others (in-function imports included), and a module's name says
    which one it is (no ``modes/compare.py`` beside ``results/compare.py``)."""
    import subprocess
    import sys
    from collections import Counter

    figures = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "house_figures.py")], capture_output=True, text=True, check=True
    ).stdout
    assert "import circles between modules: 0" in figures, figures
    files = [p for p in SRC.rglob("*.py") if "conf" not in p.relative_to(SRC).parts]
    names = Counter(p.stem for p in files if p.stem != "__init__")
    assert [name for name, count in names.items() if count > 1] == []
    trees = [ast.parse(p.read_text()) for p in files]
    classes = Counter(node.name for tree in trees for node in tree.body if isinstance(node, ast.ClassDef))
    assert [name for name, count in classes.items() if count > 1] == []  # one RunResult, not two
