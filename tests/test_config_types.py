"""Config values of the wrong type are named before anything is built (r3exp.config_types): against the
signatures of the classes the configs map onto, and for the few keys that map onto none, a typed table."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from r3exp.config_types import PLAIN_KEYS, accepts, check_config_types
from r3exp.errors import ConfigError
from tests.conftest import CONF

OPTIONS = {
    group: sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    for group in ("experiment", "task", "model", "trainer", "engine", "logger")
}
PACKAGED = [[]] + [[f"{group}={option}"] for group, options in OPTIONS.items() for option in options]


def composed(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.mark.parametrize("overrides", PACKAGED, ids=lambda o: o[0] if o else "default")
def test_every_packaged_config_passes(overrides):
    check_config_types(composed(overrides))


def test_every_key_that_maps_onto_no_class_is_typed():
    """A new plain key must be added to PLAIN_KEYS, or its values would go unchecked."""
    untyped = set()

    def walk(node, path: str) -> None:
        if isinstance(node, DictConfig) and "_target_" not in node:
            for key in node.keys():
                child, key_path = node._get_node(key), f"{path}.{key}" if path else str(key)
                if isinstance(child, DictConfig):
                    walk(child, key_path)
                elif key_path not in PLAIN_KEYS:
                    untyped.add(key_path)
        elif isinstance(node, DictConfig):  # a target's node: its nested targets
            for key in node.keys():
                child = node._get_node(key)
                if isinstance(child, DictConfig) and "_target_" in child:
                    walk(child, f"{path}.{key}")

    for overrides in PACKAGED:
        walk(composed(overrides), "")
    assert not untyped, sorted(untyped)


@pytest.mark.parametrize(
    "override, says",
    [
        (
            "optimizer.optimizer.lr=fast",
            "optimizer.optimizer.lr='fast': expected a number (lr of r3exp.grpo.optimizers.adamw)",
        ),
        ("rollout.group_size=eight", "rollout.group_size='eight': expected an integer"),
        ("rollout.group_size=8.5", "rollout.group_size=8.5: expected an integer"),
        ("rollout.attempt.temperature=hot", "rollout.attempt.temperature='hot': expected a number"),
        ("grpo.loss.beta=[0.1]", "grpo.loss.beta=[0.1]: expected a number"),
        ("engine.enforce_eager=maybe", "engine.enforce_eager='maybe': expected true/false or null"),
        ("trainer.max_steps=1.5", "trainer.max_steps=1.5: expected an integer (max_steps of lightning.Trainer)"),
        ("seed=abc", "seed='abc': expected an integer"),
        ("+model.master_weights=fp8", "model.master_weights='fp8': expected one of 'float32', 'kahan'"),
        ("evaluation.limit=lots", "evaluation.limit='lots': expected an integer or null"),
        ("evaluation.reuse_base=sometimes", "evaluation.reuse_base='sometimes': expected true/false"),
        (
            "+optimizer.optimizer.lrr=1",
            "optimizer.optimizer.lrr: not a setting of r3exp.grpo.optimizers.adamw (its settings: ",
        ),
    ],
)
def test_a_value_of_the_wrong_type_is_named_with_what_the_key_takes(override, says):
    with pytest.raises(ConfigError) as raised:
        check_config_types(composed([override]))
    assert says in str(raised.value)


def test_an_interpolated_value_names_where_it_came_from():
    with pytest.raises(ConfigError) as raised:
        check_config_types(composed(["seed=abc"]))
    assert (
        "rollout.seed='abc': expected an integer (seed of r3exp.rollout.datamodule.ReflectionRolloutDataModule, "
        "from ${seed})" in str(raised.value)
    )


def test_right_values_of_other_spellings_pass():
    check_config_types(
        composed(
            [
                "optimizer.optimizer.lr=1",
                "rollout.attempt.temperature=1",
                "evaluation.limit=null",
                "engine.enforce_eager=null",
                "ckpt_path=last",
                "compare.runs=outputs/multiruns/x",
            ]
        )
    )


class Opaque:
    pass


@pytest.mark.parametrize(
    "annotation, value, expected",
    [
        (float, 1, True),
        (float, 1.5, True),
        (float, True, False),
        (float, "1e-5", False),
        (int, 3, True),
        (int, 3.0, False),
        (int, False, False),
        (bool, True, True),
        (bool, 1, False),
        (bool, "true", False),
        (str, "x", True),
        (str, 3, False),
        (float | None, None, True),
        (int | None, "x", False),
        (float | torch.Tensor, 0.1, True),
        (float | torch.Tensor, "fast", False),
        (Literal["a", "b"], "a", True),
        (Literal["a", "b"], "c", False),
        (Path, "runs/x", True),
        (Path | None, 3, False),
        (list, [1], True),
        (list, "x", False),
        (tuple[float, float], [0.9, 0.99], True),
        (dict, {"a": 1}, True),
        (Opaque, "anything", True),  # a class the config cannot express: left to the target
        (torch.dtype | str, "bfloat16", True),
    ],
)
def test_what_each_annotation_accepts(annotation, value, expected):
    assert accepts(annotation, value) is expected
