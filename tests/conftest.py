"""Shared fixtures: the real embedded tiny model, its tokenizer, and one real vLLM engine per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "src" / "r3exp" / "conf"  # the packaged configs
CACHE = Path(os.environ.get("R3EXP_TEST_CACHE", ROOT / ".cache" / "r3exp-test"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ("pytester",)  # tests/test_markers.py checks the tier check on a suite of its own


@pytest.fixture(scope="session")
def tiny_path() -> Path:
    from r3exp.embedded import tiny_corpus
    from r3exp.models import TinySpec, ensure_tiny_model

    return ensure_tiny_model(TinySpec(), tiny_corpus(), CACHE / "models")


@pytest.fixture(scope="session")
def tokenizer(tiny_path):
    from r3exp.models import load_tokenizer

    return load_tokenizer(tiny_path)


def load_task(name: str, train: int = 300, held_out: int = 50, **overrides):
    """A built-in task from its packaged config, seed 0, with small splits (and other config overrides)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONF / "task" / f"{name}.yaml")
    cfg.seed = 0
    cfg.split_sizes = {"train": train, "validation": held_out, "test": held_out}
    for key, value in overrides.items():
        cfg[key] = value
    return instantiate(cfg)


@pytest.fixture(scope="session")
def countdown():
    return load_task("countdown")


class EnginePool:
    """The process's one open vLLM engine (vLLM allows one per process), reopened when a test asks for
    another model: starting one costs ~20 s, so tests of one model share it."""

    def __init__(self):
        self.engine = None

    def get(self, model_path):
        from r3exp.rollout.engines.vllm_engine import VLLMEngine

        if self.engine is not None and self.engine.model_path != str(model_path):
            self.close()
        if self.engine is None:
            self.engine = VLLMEngine(str(model_path), seed=0, max_model_len=1024)
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


@pytest.fixture(scope="session")
def engine_pool():
    pool = EnginePool()
    yield pool
    pool.close()


@pytest.fixture
def vllm_engine(engine_pool, tiny_path):
    """A real in-process vLLM engine on the tiny model (shared by the tests that run one after another)."""
    return engine_pool.get(tiny_path)


@pytest.fixture
def fresh_vllm(vllm_engine, tiny_path):
    """The shared tiny engine, restored to the initial tiny weights after the test."""
    yield vllm_engine
    from safetensors.torch import load_file

    vllm_engine.update_weights(load_file(str(tiny_path / "model.safetensors")))
    vllm_engine.policy_version = 0


def chat_ids(tokenizer, text: str) -> list[int]:
    return list(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
    )


# the fixtures that start a real vLLM engine or load the real pretrained model (converted once from its GGUF file,
# ~45 s): a test that asks for one is integration tier, and says so itself
ENGINE_FIXTURES = frozenset(
    {"engine_pool", "vllm_engine", "fresh_vllm", "smollm2_engine", "smollm2_path", "smollm2_tokenizer"}
)


def unmarked_engine_tests(items) -> list[str]:
    """The tests among ``items`` that use an engine fixture but are not marked ``integration``."""
    return [
        item.nodeid
        for item in items
        if isinstance(item, pytest.Item)
        and ENGINE_FIXTURES & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("integration") is None
    ]


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """Checks, never marks: each test declares its own tier (``pytestmark = pytest.mark.integration`` or
    ``@pytest.mark.integration``: it uses the real vLLM engine or the real pretrained model, or starts
    processes), and ``pytest -m "not integration"`` is the fast unit tier. A file with a test that uses an
    engine fixture without the marker fails to collect (whatever ``-m`` selects), naming the test."""
    report = yield
    offenders = unmarked_engine_tests(report.result) if report.passed else []
    if offenders:
        report.outcome, report.result = "failed", []
        fixtures = ", ".join(sorted(ENGINE_FIXTURES))
        report.longrepr = (
            f"these tests use the real engine or model (a fixture of {fixtures}) but are not marked "
            "@pytest.mark.integration:\n  " + "\n  ".join(offenders)
        )
    return report
