"""The documentation site builds strictly, covers every config file and page, and the README (the front
door) links only to pages that exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import CONF, ROOT

DOCS = ROOT / "docs"


@pytest.mark.integration
def test_the_site_builds_with_no_warning(tmp_path):
    """`mkdocs build --strict`: a broken link, a missing page or snippet, or an API docstring mkdocstrings
    cannot render fails the build."""
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "importance_weights" in api and "check_config_types" in api  # rendered from the docstrings
    text = re.sub(r"<[^>]+>", "", api)
    assert not re.search(
        r":(func|class|meth|mod|data|attr):`", text
    )  # Sphinx roles shown as code (docs/griffe_roles.py)
    assert "Parameters:" in text and "Args:" not in text  # every Args: section became a parameter table
    reference = (tmp_path / "site" / "reference" / "configuration" / "index.html").read_text()
    assert "R3GRPOModule" in reference and "RunProgressBar" in reference  # the config files, included


def nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [page for value in node.values() for page in nav_pages(value)]
    return [page for item in node for page in nav_pages(item)]


def test_every_page_is_in_the_navigation():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages == set(nav_pages(config["nav"]))


def test_every_config_file_is_in_the_reference():
    reference = (DOCS / "reference" / "configuration.md").read_text()
    included = set(re.findall(r'--8<-- "(src/r3exp/conf/[^"]+)"', reference))
    files = {p.relative_to(ROOT).as_posix() for p in CONF.rglob("*.yaml")}
    assert included == files


def test_the_readme_is_a_front_door_whose_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    assert first_block == [
        "scripts/install.sh && .venv/bin/python -m r3exp",
        "scripts/install.sh dev && .venv/bin/python -m pytest",
    ]
    links = re.findall(r"\]\(([^)#]+)(?:#([^)]+))?\)", readme)
    local = [(path, anchor) for path, anchor in links if not path.startswith("http")]
    assert len(local) >= 15
    for path, anchor in local:
        target = ROOT / path
        assert target.is_file(), path
        if anchor:
            headings = [
                re.sub(r"[^\w\s-]", "", h.lower()).strip().replace(" ", "-")
                for h in re.findall(r"^#+ (.*)$", target.read_text(), re.M)
            ]
            assert anchor in headings, f"{path}#{anchor}"
