"""Config values of the wrong type, found before anything is built.

Every config node with a ``_target_`` maps onto a class or function; its keys are that callable's
parameters, and their annotations say what each value must be. :func:`check_config_types` checks every
such node of a composed config against its target's signature and raises one :class:`ConfigError` that
names each offending key (``optimizer.optimizer.lr='fast': expected a number (lr of
r3exp.grpo.optimizers.adamw)``), instead of the library's own error deep inside a run, after the engine has started.
A key the target does not take is named too, with the parameters it does take.

Annotations it understands: ``int``, ``float`` (an int is a float), ``bool``, ``str``, ``None``, unions
(``X | None``, ``Optional``; a scalar must match one of the plain types a union names, so ``float |
Tensor`` takes a number and not ``'fast'``), ``Literal``, ``Path`` (a string is a path), containers
(``list``, ``tuple``, ``Sequence``, ``dict``, ``Mapping``: the container only). Anything else (a class,
``Any``, a callable) and values that are themselves configs are not checked here; an annotation that
cannot be resolved is skipped.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from pathlib import Path, PurePath
from typing import Any, Iterator

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from r3exp.errors import ConfigError

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
SEQUENCES = (
    list,
    tuple,
    set,
    frozenset,
    collections.abc.Sequence,
    collections.abc.Iterable,
    collections.abc.Collection,
)
MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
UNCHECKED = object()  # an annotation this module does not judge


# The keys that map onto no target, with their types (tests/test_config_types.py checks that every such key of
# the packaged configs is here, so a new one cannot go unchecked).
PLAIN_KEYS: dict[str, Any] = {
    "mode": str,
    "seed": int,
    "verbose": bool,
    "reuse_freed_memory": bool,
    "run_name": str,
    "experiment_name": str,
    "sweep_name": str,
    "warm_start_path": str | None,
    "ckpt_path": str | None,
    "paths.log_dir": str,
    "paths.cache_dir": str,
    "paths.results_cache": str,
    "paths.output_dir": str | None,
    "evaluation.split": str,
    "evaluation.label": str | None,
    "evaluation.limit": int | None,
    "evaluation.batch_size": int,
    "evaluation.reuse_base": bool,
    "evaluation.controls": list,
    "failures.attempts": int,
    "failures.temperature": float,
    "failures.rule": str,
    "failures.output": str | None,
    "compare.runs": str | None,
    "compare.wandb_group": str | None,
    "compare.publish": bool,
    "compare.project": str,
    "compare.entity": str | None,
}


def check_config_types(cfg: DictConfig) -> None:
    """Raise one :class:`ConfigError` naming every key of ``cfg`` whose value its target (or, for a key that
    maps onto no target, :data:`PLAIN_KEYS`) cannot take."""
    problems = plain_key_problems(cfg)
    problems += [problem for path, node in target_nodes(cfg) for problem in node_problems(path, node)]
    if problems:
        raise ConfigError("; ".join(problems))


def plain_key_problems(cfg: DictConfig) -> list[str]:
    problems = []
    for key, annotation in PLAIN_KEYS.items():
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=False)
        except Exception:  # noqa: BLE001 - an interpolation only the run can resolve
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        if OmegaConf.select(cfg, key, default=UNCHECKED) is not UNCHECKED and not accepts(annotation, value):
            problems.append(f"{key}={value!r}: expected {describe(annotation)}")
    return problems


def target_nodes(node: Any, path: str = "") -> Iterator[tuple[str, DictConfig]]:
    """Every ``(dotted path, node)`` with a ``_target_``, depth first."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node.keys():
            child = node._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)):
                yield from target_nodes(child, f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for index in range(len(node)):
            child = node._get_node(index)
            if isinstance(child, (DictConfig, ListConfig)):
                yield from target_nodes(child, f"{path}[{index}]")


def node_problems(path: str, node: DictConfig) -> list[str]:
    target_name = str(node._get_node("_target_")._value())
    try:
        target = get_object(target_name)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's to see
        return [f"{path}._target_={target_name!r}: cannot be imported ({type(err).__name__}: {err})"]
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    hints = type_hints(target)
    parameters = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    problems = []
    for key in node.keys():
        if key in HYDRA_KEYS:
            continue
        key_path = f"{path}.{key}" if path else str(key)
        if key not in parameters:
            if not takes_any:
                accepted = ", ".join(
                    name for name, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                )
                problems.append(f"{key_path}: not a setting of {target_name} (its settings: {accepted})")
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and "_target_" in child:
            continue  # checked as a node of its own
        try:
            value = (
                OmegaConf.to_container(child, resolve=True)
                if isinstance(child, (DictConfig, ListConfig))
                else node[key]
            )
        except Exception:  # noqa: BLE001 - an interpolation only the run can resolve (${hydra:...})
            continue
        annotation = hints.get(key, UNCHECKED)
        if annotation is not UNCHECKED and not accepts(annotation, value):
            source = f", from {child._value()}" if child._is_interpolation() else ""
            problems.append(f"{key_path}={value!r}: expected {describe(annotation)} ({key} of {target_name}{source})")
    return problems


def type_hints(target: Any) -> dict[str, Any]:
    """The target's parameter annotations, resolved one by one (one a name only a type checker knows,
    e.g. torch's ``ParamsT``, leaves the others checked)."""
    function = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - resolve each annotation on its own below
        pass
    namespace = dict(getattr(inspect.unwrap(function), "__globals__", {}))
    hints = {}
    for name, parameter in inspect.signature(function).parameters.items():
        annotation = parameter.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)  # noqa: S307 - the target's own annotation text
            except Exception:  # noqa: BLE001
                continue
        if annotation is not inspect.Parameter.empty:
            hints[name] = annotation
    return hints


def accepts(annotation: Any, value: Any) -> bool:
    """Whether ``value`` (a plain Python value from the config) can be passed where ``annotation`` is."""
    verdict = judge(annotation, value)
    return True if verdict is UNCHECKED else verdict


def judge(annotation: Any, value: Any) -> bool | object:
    if annotation is Any or annotation is inspect.Parameter.empty:
        return UNCHECKED
    if annotation is None or annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        verdicts = [judge(option, value) for option in typing.get_args(annotation)]
        if any(v is True for v in verdicts):
            return True
        if any(v is False for v in verdicts) and (value is None or isinstance(value, (bool, int, float, str))):
            return False  # `float | Tensor`: the plain types it names are what a config's scalar can be
        return UNCHECKED if any(v is UNCHECKED for v in verdicts) else False
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin is not None:
        annotation = origin
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if inspect.isclass(annotation) and issubclass(annotation, PurePath):
        return isinstance(value, (str, PurePath))
    if annotation in MAPPINGS:
        return isinstance(value, dict)
    if annotation in SEQUENCES:
        return isinstance(value, (list, tuple)) or (
            annotation is not list
            and isinstance(value, str)
            and annotation in (collections.abc.Iterable, collections.abc.Sequence)
        )
    return UNCHECKED  # a class, a callable, a protocol: the target judges it


def describe(annotation: Any) -> str:
    if annotation is None or annotation is type(None):
        return "null"
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(option) for option in typing.get_args(annotation))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(annotation))
    annotation = origin or annotation
    names = {
        bool: "true/false",
        int: "an integer",
        float: "a number",
        str: "a string",
        Path: "a path",
        list: "a list",
        tuple: "a list",
        dict: "a mapping",
    }
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))
