"""The tiers are declared on the tests themselves: tests/conftest.py only checks them, and fails the collection
of a file in which a test uses the real engine or model without the ``integration`` marker, naming the test."""

from __future__ import annotations

import pytest

from tests.conftest import ENGINE_FIXTURES

# a suite in miniature: the real check, engine fixtures that start nothing
CONFTEST = "from tests.conftest import pytest_make_collect_report\n" + "".join(
    f"@pytest.fixture\ndef {name}():\n    return None\n" for name in sorted(ENGINE_FIXTURES)
)
TESTS = """
import pytest

def test_unmarked(vllm_engine):
    pass

@pytest.mark.integration
def test_marked(fresh_vllm):
    pass

@pytest.mark.integration
class TestMarkedClass:
    def test_in_it(self, smollm2_path):
        pass

def test_without_an_engine():
    pass
"""


@pytest.fixture(autouse=True)
def without_installed_plugins(monkeypatch):
    """The miniature suite runs with pytest's own plugins only (each installed one would load again per run)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def collect(pytester, conftest: str, tests: str, *args: str):
    pytester.makeconftest("import pytest\n\n" + conftest)
    pytester.makeini("[pytest]\nmarkers =\n    integration: marked\n")
    pytester.makepyfile(test_tiers=tests)
    return pytester.runpytest_inprocess("--collect-only", "-q", "-p", "no:cacheprovider", *args)


@pytest.mark.parametrize("select", [[], ["-m", "not integration"], ["-m", "integration"]])
def test_a_test_using_an_engine_without_the_marker_fails_its_files_collection_named(pytester, select):
    """Whatever ``-m`` selects: the check runs before it deselects."""
    result = collect(pytester, CONFTEST, TESTS, *select)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    errors = result.stdout.str()
    assert "ERROR collecting test_tiers.py" in errors
    assert "test_tiers.py::test_unmarked" in errors and "not marked @pytest.mark.integration" in errors
    assert "::test_marked" not in errors and "TestMarkedClass" not in errors and "test_without_an_engine" not in errors


def test_marked_on_the_test_or_its_class_or_its_module_passes(pytester):
    pytester.makepyfile(
        test_module_marked="import pytest\n\npytestmark = pytest.mark.integration\n\n\n"
        "def test_it(engine_pool):\n    pass\n"
    )
    marked = TESTS.replace("def test_unmarked", "@pytest.mark.integration\ndef test_unmarked")
    result = collect(pytester, CONFTEST, marked, "-m", "integration")
    assert result.ret == pytest.ExitCode.OK
    assert "test_module_marked.py::test_it" in result.outlines and "4/5 tests collected" in result.stdout.str()


def test_the_check_never_marks(pytester):
    """The integration set is exactly what the tests declare: a test that starts a process but does not say
    so is not marked for it (what a test does is not read from its source)."""
    tests = (
        TESTS.replace("def test_unmarked", "@pytest.mark.integration\ndef test_unmarked")
        + """
def test_starts_a_process_unmarked():
    import subprocess, sys
    subprocess.run([sys.executable, "-c", "pass"])
"""
    )
    result = collect(pytester, CONFTEST, tests, "-m", "integration")
    assert result.ret == pytest.ExitCode.OK
    assert sorted(line for line in result.outlines if "::" in line) == [
        "test_tiers.py::TestMarkedClass::test_in_it",
        "test_tiers.py::test_marked",
        "test_tiers.py::test_unmarked",
    ]
