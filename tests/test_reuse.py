"""Reusing the base model's evaluation across runs (``evaluation.reuse_base``, ``forgetting.reuse_base``):
the key changes with every input that matters, a stored entry is complete or absent, and a reused result
is the one evaluating again gives (real runs of the main job)."""

from __future__ import annotations

import json
import os

import pytest
from hydra import compose, initialize_config_dir

from r3exp.evaluation.reuse import ResultStore, inputs_key, path_fingerprint
from r3exp.runtime.policy_evaluation import evaluation_inputs
from tests.conftest import CONF
from tests.test_cli import SHORT, r3exp


def config(*overrides: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def key_of(model_dir, *overrides: str) -> str:
    return inputs_key(evaluation_inputs(config(*overrides), str(model_dir)))


def test_the_key_ignores_what_greedy_evaluation_ignores_and_follows_what_it_does_not(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    base = key_of(tmp_path)
    assert key_of(tmp_path, "rollout.protocol=grpo", "optimizer.optimizer.lr=1e-3", "trainer.max_steps=7") == base
    assert key_of(tmp_path, "task.seed=0", "seed=5") == key_of(tmp_path, "task.seed=0", "seed=6")  # greedy
    hot = ("task.seed=0", "evaluation.reflection.temperature=0.7")
    assert key_of(tmp_path, *hot, "seed=5") != key_of(tmp_path, *hot, "seed=6")  # sampled: the seed matters
    for changed in (
        "seed=1",
        "task.split_sizes.test=17",
        "evaluation.limit=3",
        "evaluation.split=validation",
        "rollout.reflection.max_tokens=9",
        "engine.dtype=bfloat16",
        "evaluation.controls=[empty]",
    ):
        assert key_of(tmp_path, changed) != base, changed
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    assert key_of(tmp_path) != base


def test_a_model_directory_and_a_data_file_are_fingerprinted_by_their_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    before, file_before = path_fingerprint(tmp_path), path_fingerprint(tmp_path / "config.json")
    os.utime(tmp_path / "config.json", ns=(1, 1))
    assert path_fingerprint(tmp_path) != before and path_fingerprint(tmp_path / "config.json") != file_before
    assert path_fingerprint("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_the_store_reads_only_complete_entries_and_keeps_the_first_of_two(tmp_path):
    store = ResultStore(tmp_path, "evaluations")
    assert store.load({"a": 1}) is None
    entry = store.save({"a": 1}, lambda d: (d / "result.json").write_text("first"))
    assert store.load({"a": 1}) == entry and (entry / "result.json").read_text() == "first"
    assert store.load({"a": 2}) is None
    store.save({"a": 1}, lambda d: (d / "result.json").write_text("second"))  # a concurrent job, later
    assert (store.load({"a": 1}) / "result.json").read_text() == "first"
    assert [p.name for p in store.root.iterdir()] == [entry.name]  # its staging directory is gone

    def crash(directory):
        (directory / "result.json").write_text("partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        store.save({"b": 1}, crash)
    assert store.load({"b": 1}) is None  # a half-written entry is never read
    assert [p.name for p in store.root.iterdir()] == [entry.name]  # nor left behind


@pytest.mark.integration
def test_a_reused_base_evaluation_is_what_evaluating_again_gives(tmp_path):
    """Three real main jobs sharing a results cache: R3 evaluates and stores the base model's evaluation and
    lm-eval scores; GRPO with reuse off evaluates them again (the same: the protocol does not enter them);
    GRPO with reuse on reads them, and its run directory holds the same files."""
    common = [
        *SHORT,
        "trainer.max_steps=1",
        "forgetting.enabled=true",
        "forgetting.limit=20",
        f"paths.results_cache={tmp_path / 'results'}",
    ]
    runs = {
        "stored": ["rollout.protocol=r3"],
        "evaluated": ["rollout.protocol=grpo", "evaluation.reuse_base=false", "forgetting.reuse_base=false"],
        "reused": ["rollout.protocol=grpo"],
    }
    results, episodes = {}, {}
    for name, extra in runs.items():
        out = r3exp(*common, *extra, f"hydra.run.dir={tmp_path / name}", timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        assert ("base evaluation reused from" in out.stdout) == (name == "reused")
        assert ("base lm-eval scores reused from" in out.stdout) == (name == "reused")
        results[name] = json.loads((tmp_path / name / "results.json").read_text())
        episodes[name] = (tmp_path / name / "eval_base_episodes.jsonl").read_text()
        assert sorted((tmp_path / name / "lm_eval" / "base").rglob("results_*.json"))  # lm-eval's own files
    for name in ("evaluated", "reused"):
        assert results[name]["base"] == results["stored"]["base"] and episodes[name] == episodes["stored"]
        assert results[name]["forgetting"]["base"] == results["stored"]["forgetting"]["base"]
    assert "base evaluation (reused)" in results["reused"]["phases"]
    assert "base evaluation" in results["evaluated"]["phases"]
    assert len(list((tmp_path / "results" / "evaluations").iterdir())) == 1  # one entry, read by the third run
