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
    return list(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                              tokenize=True, return_dict=False))


# a real vLLM engine, or the real pretrained model (converted once from its GGUF file, ~45 s)
ENGINE_FIXTURES = {"engine_pool", "vllm_engine", "fresh_vllm", "smollm2_engine", "smollm2_path", "smollm2_tokenizer"}
PROCESS_CALLS = ("r3exp(", "subprocess.", "mp.start_processes", "dvc(", "multirun", "python_without_site(")


def pytest_collection_modifyitems(config, items):
    """Tier the suite: a test is ``integration`` when it uses the real vLLM engine or starts processes
    (the command line, several ranks, DVC, a sweep) or the real pretrained model; ``pytest -m "not integration"``
    is the fast unit tier."""
    import inspect

    for item in items:
        function = getattr(item, "function", None)
        source = inspect.getsource(function) if function is not None else ""
        if ENGINE_FIXTURES & set(getattr(item, "fixturenames", ())) or any(call in source for call in PROCESS_CALLS):
            item.add_marker(pytest.mark.integration)
