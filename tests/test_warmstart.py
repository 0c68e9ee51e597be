"""The warm start: scripted episodes, the supervised sequences and their labels, the trained accuracy."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from r3exp.evaluation.reflection_repairs import repair_statistics
from r3exp.rollout.episodes import ChatRenderer
from r3exp.scripted_sft import IGNORE, WarmStartSpec, build_sequences, encode_conversation, ensure_warm_start
from r3exp.tasks.countdown import extract_answer
from r3exp.tasks.countdown_reflections import Repair, apply_repair, near_miss, read_repair, repairs


def test_scripted_episodes_pair_a_wrong_attempt_and_its_reflection_with_a_right_answer(countdown):
    episodes = countdown.scripted_episodes(200, seed=0)
    assert len(episodes) >= 190
    train_keys = {(tuple(sorted(e["nums"])), e["target"]) for e in countdown.examples("train")}
    test_keys = {(tuple(sorted(e["nums"])), e["target"]) for e in countdown.examples("test")}
    for ep in episodes:
        example = ep["example"]
        assert not countdown.validate(example, ep["attempt"]) and countdown.validate(example, ep["answer"])
        assert ep["reflection"].startswith("My equation gives") and str(example["target"]) in ep["reflection"]
        assert (tuple(sorted(example["nums"])), example["target"]) not in test_keys
    assert any((tuple(sorted(ep["example"]["nums"])), ep["example"]["target"]) in train_keys for ep in episodes)


def test_each_scripted_reflection_ends_with_the_one_change_that_repairs_the_attempt(countdown):
    for ep in countdown.scripted_episodes(300, seed=0):
        assert extract_answer(ep["answer"]) not in ep["reflection"]  # a change, not the answer
        repaired = apply_repair(extract_answer(ep["attempt"]), ep["reflection"])
        assert countdown.validate(ep["example"], f"<answer> {repaired} </answer>"), (ep, repaired)


def test_a_repair_that_does_not_fit_the_expression_is_none():
    assert apply_repair("3 + 4 - 2", "I should use 5 instead of the second 4.") is None
    assert apply_repair("3 + 4 - 2", "I should use * instead of 4.") is None
    assert apply_repair("3 + 4 - 2", "My equation gives 5.") is None
    assert apply_repair("3 + 4 + 2", "I should use - instead of the second +.") == "3 + 4 - 2"


def test_repairs_are_data_written_in_one_sentence_and_read_back_from_it():
    expression = "8 - 8 * 3 + 4"
    changes = repairs(expression, [8, 3, 4])
    assert len(changes) == 3 * 3 + 4 * 2  # every operator to the 3 others, every number to the 2 others
    for repair in changes:
        sentence = repair.sentence(expression)
        assert read_repair(expression, f"My equation gives 4. {sentence}") == repair
        assert apply_repair(expression, sentence) == repair.apply(expression)
    second_eight = Repair("number", 1, "8", "3")
    assert second_eight.sentence(expression) == "I should use 3 instead of the second 8."
    assert second_eight.apply(expression) == "8 - 3 * 3 + 4"
    assert Repair("operator", 2, "+", "-").sentence(expression) == "I should use - instead of +."
    with pytest.raises(ValueError, match="does not fit"):
        Repair("number", 1, "4", "3").apply(expression)


def test_a_near_miss_carries_the_repair_that_gives_back_the_solution():
    import random

    rng = random.Random(0)
    for solution, nums, target in [("3 + 4 - 2", [3, 4, 2], 5), ("(6 / 2) * 8", [6, 2, 8], 24)] * 20:
        miss = near_miss(solution, nums, target, rng)
        assert miss.expression != solution and miss.repair.apply(miss.expression) == solution


def test_repair_statistics_separate_the_reflection_from_the_retry():
    example = {"nums": [3, 4, 2], "target": 5}  # 3 + 4 - 2

    def episode(attempt, reflection, retry, first=False):
        return {
            "example": example,
            "first_try_success": first,
            "first_attempt": f"<answer> {attempt} </answer>",
            "reflection": reflection,
            "retry": f"<answer> {retry} </answer>",
            "retry_success": retry == "3 + 4 - 2",
        }

    stats = repair_statistics(
        [
            episode("3 + 4 - 2", None, None, first=True),
            episode("3 + 4 + 2", "I should use - instead of the second +.", "3 + 4 - 2"),  # right, applied
            episode("3 + 4 + 2", "I should use - instead of the first +.", "3 - 4 + 2"),  # wrong, applied
            episode("3 + 4 + 2", "I should use - instead of the second +.", "3 * 4 + 2"),  # right, ignored
            episode("3 * 4 * 2", "I should use 5 instead of 7.", "3 * 4 * 2"),  # names no token of it
        ]
    )
    assert stats == {
        "episodes": 5,
        "failures": 4,
        "one_change_fixes": 3,
        "repair_fits": 3,
        "repair_right": 2,
        "retry_applies_repair": 2,
        "retry_repeats_attempt": 1,
        "retry_success": 1,
    }


def test_generated_scripted_episodes_depend_on_neither_the_task_seed_nor_the_split_sizes():
    from tests.conftest import load_task

    other_seed = load_task("countdown", seed=7, split_sizes={"train": 2500, "validation": 300, "test": 900})
    assert other_seed.scripted_episodes_ignore_splits
    # a training split smaller than the script's pool caps the pool: then the split sizes do matter
    assert not load_task(
        "countdown", split_sizes={"train": 100, "validation": 30, "test": 30}
    ).scripted_episodes_ignore_splits
    assert other_seed.scripted_episodes(50, seed=0) == load_task("countdown").scripted_episodes(50, seed=0)
    held_out = {
        (tuple(sorted(e["nums"])), e["target"]) for split in ("validation", "test") for e in other_seed.examples(split)
    }
    assert not held_out & {
        (tuple(sorted(ep["example"]["nums"])), ep["example"]["target"])
        for ep in other_seed.scripted_episodes(500, seed=0)
    }


def test_only_the_trained_assistant_turns_carry_labels(countdown, tokenizer):
    ep = countdown.scripted_episodes(1, seed=0)[0]
    messages = countdown.retry_messages(ep["example"], ep["attempt"], ep["reflection"])
    messages.append({"role": "assistant", "content": ep["answer"]})
    render = ChatRenderer(tokenizer)
    ids, labels = encode_conversation(render, tokenizer.eos_token_id, messages, trained={3, 5})
    assert len(ids) == len(labels)
    labelled = [t for t in labels if t != IGNORE]
    expected = (
        tokenizer.encode(ep["reflection"], add_special_tokens=False)
        + [tokenizer.eos_token_id]
        + tokenizer.encode(ep["answer"], add_special_tokens=False)
        + [tokenizer.eos_token_id]
    )
    assert labelled == expected
    # the sequence up to the last answer is exactly what the rollout engine renders for the retry
    assert ids[: len(render(messages[:-1]))] == render(messages[:-1])
    assert tokenizer.decode([t for t, lab in zip(ids, labels) if lab == IGNORE]).count(ep["attempt"]) == 1


def test_a_reflection_can_end_with_the_answer_for_the_retry_to_copy(countdown, tokenizer):
    spec = WarmStartSpec(episodes=5, direct_fraction=0.0, reflection_ends_with_answer=True)
    episodes = countdown.scripted_episodes(spec.episodes, spec.seed)
    for ep, (ids, labels) in zip(episodes, build_sequences(countdown, tokenizer, spec)):
        trained = tokenizer.decode([t for t, lab in zip(ids, labels) if lab != IGNORE], skip_special_tokens=True)
        assert trained.count(ep["answer"]) == 2 and ep["reflection"] in trained  # in the reflection, then the retry


def test_a_reflection_can_name_the_repair_only(countdown, tokenizer):
    spec = WarmStartSpec(episodes=5, direct_fraction=0.0, reflection_ends_with_answer=True, reflection_analysis=False)
    episodes = countdown.scripted_episodes(spec.episodes, spec.seed)
    for ep, (ids, labels) in zip(episodes, build_sequences(countdown, tokenizer, spec)):
        trained = tokenizer.decode([t for t, lab in zip(ids, labels) if lab != IGNORE], skip_special_tokens=True)
        assert ep["repair"].startswith("I should use ") and ep["reflection"].endswith(ep["repair"])
        assert f"{ep['repair']} {ep['answer']}" in trained and "My equation gives" not in trained


def test_direct_fraction_mixes_the_two_kinds_of_sequence(countdown, tokenizer):
    sequences = build_sequences(countdown, tokenizer, WarmStartSpec(episodes=100, direct_fraction=0.5))
    lengths = sorted(len(ids) for ids, _ in sequences)
    assert 20 <= sum(length < lengths[-1] * 0.6 for length in lengths) <= 80


def test_a_task_without_a_script_cannot_be_warm_started(tokenizer):
    from r3exp.errors import ConfigError
    from tests.conftest import load_task

    with pytest.raises(ConfigError, match="model.warm_start=null"):
        build_sequences(load_task("apigen"), tokenizer, WarmStartSpec(episodes=10))


def test_warm_start_is_built_once_and_cached(countdown, tiny_path, tmp_path):
    spec = WarmStartSpec(episodes=16, steps=2, batch_size=4)
    first = ensure_warm_start(str(tiny_path), countdown, {"seed": 0}, spec, tmp_path)
    report = json.loads((first / "warm_start.json").read_text())
    assert report["sequences"] == 16 and report["spec"]["steps"] == 2
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert ensure_warm_start(str(tiny_path), countdown, {"seed": 0}, spec, tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert ensure_warm_start(str(tiny_path), countdown, {"seed": 1}, spec, tmp_path) != first


@pytest.mark.integration
@pytest.mark.slow
def test_warm_start_lands_in_the_accuracy_band(tmp_path):
    """The target: first-try accuracy on the validation split well above zero and far from solved, so that
    sampled reflections succeed often enough for R3 to learn (59% on the test split, measured). Builds the
    default model's warm start from scratch (about 5 minutes on 2 CPU cores): pytest -m slow."""
    from tests.test_cli import r3exp

    out = r3exp(
        "mode=warmstart",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "logger=none",
        timeout=1800,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "results.json").read_text())["warm_start"]
    assert result["split"] == "validation" and result["total"] == 200
    assert 0.30 <= result["first_try_accuracy"] <= 0.85
    assert result["after_reflection_accuracy"] >= result["first_try_accuracy"]


# the warm starts that ship inside the package: the default main job's and experiment=r3_demo's
SHIPPED_RECIPES = [pytest.param([], id="default"), pytest.param(["experiment=r3_demo", "hydra.mode=RUN"], id="r3_demo")]


@pytest.mark.integration
@pytest.mark.parametrize("overrides", SHIPPED_RECIPES)
def test_a_shipped_warm_start_is_used_and_lands_in_the_accuracy_band(overrides, tmp_path):
    """The default main job and experiment=r3_demo start from their shipped warm starts (nothing is built),
    which solve part of the validation split on the first try and more after reflection (the band of
    test_warm_start_lands_in_the_accuracy_band, the recipe's target; measured figures: docs/results/r3-effect.md)."""
    from r3exp.scripted_sft import SHIPPED
    from tests.test_cli import r3exp

    out = r3exp(
        *overrides,
        "mode=evaluate",
        "evaluation.split=validation",
        f"hydra.run.dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "logger=none",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert Path(json.loads((tmp_path / "provenance.json").read_text())["model_path"]).parent == SHIPPED
    assert not (tmp_path / "cache" / "warmstart").exists()  # nothing was built
    result = json.loads((tmp_path / "results.json").read_text())["tiny_warm"]
    assert result["split"] == "validation"
    assert 0.30 <= result["first_try_accuracy"] <= 0.85
    assert result["after_reflection_accuracy"] >= result["first_try_accuracy"]


def test_a_shipped_warm_start_comes_before_the_cache_and_none_means_rebuild(countdown, tiny_path, tmp_path):
    spec = WarmStartSpec(episodes=16, steps=2, batch_size=4)
    built = ensure_warm_start(str(tiny_path), countdown, {"seed": 0}, spec, tmp_path / "first")
    shipped_root = tmp_path / "shipped"
    shutil.copytree(built, shipped_root / built.name)
    cache = tmp_path / "cache"
    assert (
        ensure_warm_start(str(tiny_path), countdown, {"seed": 0}, spec, cache, shipped_root)
        == shipped_root / built.name
    )
    assert not cache.exists()  # nothing built
    other = ensure_warm_start(str(tiny_path), countdown, {"seed": 1}, spec, cache, shipped_root)
    assert other.parent == cache  # another key: built into the cache
    rebuilt = ensure_warm_start(str(tiny_path), countdown, {"seed": 0}, spec, cache, shipped=None)
    assert rebuilt == cache / built.name and (rebuilt / "model.safetensors").exists()


@pytest.mark.parametrize("overrides", SHIPPED_RECIPES)
def test_a_shipped_warm_start_is_what_its_recipe_builds(overrides):
    """Their recipe and settings give the key of a shipped warm start, built by that recipe (its report). A
    change to either changes the key: rebuild with mode=warmstart and ship the result (docs/results/r3-effect.md,
    "Warm start")."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from r3exp.embedded import tiny_corpus
    from r3exp.runtime.components import warm_start_task_settings
    from r3exp.scripted_sft import SHIPPED, warm_start_key
    from tests.conftest import CACHE, CONF

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    task, model = instantiate(cfg.task), instantiate(cfg.model)
    base = model.resolve(CACHE, corpus=tiny_corpus)  # the embedded base model (built once, seconds)
    key = warm_start_key(base, warm_start_task_settings(cfg, task), model.warm_start)
    shipped = SHIPPED / key
    assert (shipped / "model.safetensors").exists(), (
        f"no shipped warm start {key}: python -m r3exp mode=warmstart {' '.join(overrides)} and copy "
        f"<paths.cache_dir>/warmstart/{key} to {SHIPPED}"
    )
    report = json.loads((shipped / "warm_start.json").read_text())
    assert report["task"] == task.name and report["spec"] == asdict(model.warm_start)
