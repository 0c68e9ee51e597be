"""``model.init=random``: a paper model's architecture with random weights and a tokenizer of its vocabulary size,
with no hub: what a GPU machine without network runs (``benchmarks/gpu_main_job.sh``)."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from r3exp.embedded import tiny_corpus
from r3exp.errors import ConfigError
from r3exp.models.random_init import ensure_random_model, filled_tokenizer
from tests.conftest import CONF
from tests.test_cli import SHORT, r3exp

# Qwen2-1.5B's vocabulary and tied output layer at a width a CPU test affords
SMALL_QWEN2 = [
    "model.architecture.num_hidden_layers=1",
    "model.architecture.hidden_size=64",
    "model.architecture.intermediate_size=128",
    "model.architecture.num_attention_heads=4",
    "model.architecture.num_key_value_heads=2",
]


def test_the_filled_tokenizer_decodes_every_id_and_encodes_task_text_as_the_embedded_bpe():
    corpus = tiny_corpus()
    tokenizer = filled_tokenizer(corpus, 151_936)
    assert len(tokenizer) == 151_936
    assert tokenizer.decode([151_935, 1500]) == "<w151935><w1500>"  # the fillers random weights sample
    text = "Using the numbers [3, 5, 7], make 22."
    from r3exp.models.tiny import train_tokenizer

    assert tokenizer.encode(text) == train_tokenizer(corpus, 1024).encode(text)  # fillers never come from encoding
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_a_random_model_has_the_architecture_it_was_given_and_is_cached(tmp_path):
    architecture = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "qwen2_7b.yaml").architecture)
    architecture.update(
        num_hidden_layers=1, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2
    )
    path = ensure_random_model(architecture, "bfloat16", 0, tiny_corpus(), tmp_path)
    config = json.loads((path / "config.json").read_text())
    rope = config.get("rope_parameters") or {}  # transformers 5 keeps rope_theta there
    for key, value in architecture.items():
        assert config.get(key, rope.get(key)) == value, key
    assert config["dtype"] == "bfloat16"
    assert ensure_random_model(architecture, "bfloat16", 0, tiny_corpus(), tmp_path) == path  # built once
    with pytest.raises(ConfigError, match="model.architecture.model_type is missing"):
        ensure_random_model({"vocab_size": 10}, "float32", 0, [], tmp_path)


@pytest.mark.integration
def test_a_paper_model_with_random_weights_runs_the_main_job_on_the_hf_engine_without_the_hub(tmp_path):
    """Qwen2-1.5B's config with its real vocabulary (151,936) and a narrow single layer, LoRA r16 as configured,
    on the Hugging Face engine (the GPU machine has no vLLM), HF_HUB_OFFLINE=1."""
    run_dir = tmp_path / "run"
    short = [o for o in SHORT if not o.startswith("model.warm_start")]
    out = r3exp(
        "model=qwen2_1.5b",
        "model.init=random",
        *SMALL_QWEN2,
        "model.dtype=float32",
        "engine=hf",
        "logger=csv",
        *short,
        f"hydra.run.dir={run_dir}",
        f"paths.results_cache={tmp_path / 'results'}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["base"]["total"] == 16 and results["trained"]["total"] == 16
    assert list(results["phases"])[:2] == ["model build", "engine start"]
    merged = run_dir / "policy" / "merged"
    assert json.loads((merged / "config.json").read_text())["vocab_size"] == 151_936
    import csv

    logged = [
        row for row in csv.DictReader((run_dir / "csv" / "version_0" / "metrics.csv").open()) if row["memory/peak_gib"]
    ]  # every logged metric, logger=csv
    assert len(logged) == 2 and all(0.1 < float(row["memory/peak_gib"]) < 24 for row in logged)  # peak RSS on CPU
    assert all(float(row["time/step_seconds"]) >= float(row["time/generation_seconds"]) > 0 for row in logged)


@pytest.mark.integration
def test_a_model_without_an_architecture_cannot_be_random(tmp_path):
    out = r3exp("model=smollm2_135m", "+model.init=random", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: model.init=random: model 'smollm2_135m' has no model.architecture (the fields of its "
        "config.json; the paper models' configs write them out)"
    ], out.stderr[-2000:]
