"""Does R3 cost general ability? The paper's forgetting check, through lm-evaluation-harness (lm-eval).

The base model and the trained policy are scored with identical settings on a list of lm-eval tasks
(:class:`GeneralAbility`, ``conf/forgetting``): the paper's four benchmarks on a machine with the hub
(``gsm8k``, ``mmlu_pro``, ``hellaswag``, ``minerva_math``), or ``r3exp_arithmetic``, a task shipped with
r3exp in lm-eval's own format with a local data file, which runs offline. lm-eval writes its own output
files (``<out_dir>/<label>/.../results_*.json`` and the per-sample logs); the scores are read from its
results, keyed ``<task>/<metric>`` (``r3exp_arithmetic/acc``).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from r3exp.errors import ConfigError

log = logging.getLogger(__name__)
SHIPPED_TASKS = Path(__file__).parent / "lm_eval_tasks"
PAPER_TASKS = ("gsm8k", "mmlu_pro", "hellaswag", "minerva_math")


@dataclass
class GeneralAbility:
    """Settings of the forgetting check (``forgetting.*``; names as lm-eval's ``simple_evaluate``).

    Args:
        enabled: the main job runs it after the trained evaluation (``mode=forgetting`` runs it anyway).
        tasks: lm-eval task (or group) names.
        include_path: directories of your own lm-eval task YAMLs (r3exp's own are always included).
        backend: ``hf`` (transformers), ``vllm``, or ``auto`` (vLLM where CUDA is available, else hf).
        batch_size / limit / num_fewshot / apply_chat_template: as lm-eval's options.
        dtype: the weights' dtype for lm-eval's model.
        gpu_memory_utilization: lm-eval's vLLM engine's share of the GPU.
        policy: mode=forgetting: the trained policy to score beside the base model (a model directory,
            e.g. ``<run>/policy/merged``); None: the base model only.
        reuse_base: the base model's scores are kept under ``paths.results_cache`` and reused by a later
            run with the same weights, settings and seed (``r3exp.evaluation.reuse``).
    """

    enabled: bool = False
    tasks: list[str] = field(default_factory=lambda: ["r3exp_arithmetic"])
    include_path: list[str] | str | None = None
    backend: str = "auto"
    batch_size: int | str = 16
    limit: int | float | None = None
    num_fewshot: int | None = None
    apply_chat_template: bool = False
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.5
    policy: str | None = None
    reuse_base: bool = True

    def __post_init__(self):
        if self.backend not in ("auto", "hf", "vllm"):
            raise ConfigError(f"forgetting.backend={self.backend!r}; expected auto, hf or vllm")
        if not self.tasks:
            raise ConfigError("forgetting.tasks is empty: name at least one lm-eval task (e.g. r3exp_arithmetic)")
        self.tasks = list(self.tasks)

    @property
    def resolved_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        return "vllm" if torch.cuda.is_available() else "hf"


def task_manager(spec: GeneralAbility, workdir: Path):
    """lm-eval's TaskManager over r3exp's shipped tasks (their data files made absolute, in ``workdir``)
    and the user's ``include_path``."""
    from lm_eval.tasks import TaskManager  # noqa: PLC0415 - lm-eval is optional (r3exp[forgetting])

    shipped = workdir / "r3exp_tasks"
    shipped.mkdir(parents=True, exist_ok=True)
    for config_file in SHIPPED_TASKS.glob("*.yaml"):
        config = yaml.safe_load(config_file.read_text())
        files = config.get("dataset_kwargs", {}).get("data_files", {})
        for split, name in files.items():
            files[split] = str(SHIPPED_TASKS / name)
        (shipped / config_file.name).write_text(yaml.safe_dump(config, sort_keys=False))
    extra = [spec.include_path] if isinstance(spec.include_path, str) else list(spec.include_path or [])
    for path in extra:
        if not Path(path).is_dir():
            raise ConfigError(f"forgetting.include_path: {path!r} is not a directory of lm-eval task YAMLs")
    return TaskManager(include_path=[str(shipped), *extra])


def check_tasks(spec: GeneralAbility, manager) -> None:
    """Load each task's data before any model is built, so that a task lm-eval does not know, or whose
    dataset needs the unreachable hub, fails in one line naming it."""
    from lm_eval.tasks import get_task_dict  # noqa: PLC0415 - lm-eval is optional (r3exp[forgetting])

    unknown = [t for t in spec.tasks if t not in manager.all_tasks]
    if unknown:
        raise ConfigError(
            f"forgetting.tasks: lm-eval knows no task {unknown[0]!r} (list them with "
            "`lm-eval ls tasks`; your own go in forgetting.include_path)"
        )
    for name in spec.tasks:
        try:
            get_task_dict([name], manager)
        except Exception as err:  # noqa: BLE001 - datasets raises many kinds for an unreachable hub
            text = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            offline = any(
                word in text.lower() for word in ("offline", "connection", "hub", "resolve", "couldn't reach")
            )
            hint = (
                "its dataset comes from the Hugging Face hub, which this machine cannot reach: run it where the "
                "hub is reachable, or pick offline tasks (r3exp_arithmetic)"
                if offline
                else text
            )
            raise ConfigError(f"forgetting.tasks: {name!r}: {hint}") from None


def check(spec: GeneralAbility) -> None:
    """Fail now, in one line, on a task lm-eval does not know or cannot load here (the main job checks
    before it trains, not after)."""
    with tempfile.TemporaryDirectory() as workdir:
        check_tasks(spec, task_manager(spec, Path(workdir)))


def score_model(
    model_path: str | Path, label: str, spec: GeneralAbility, out_dir: str | Path, seed: int = 0
) -> dict[str, float]:
    """Run lm-eval on ``model_path``; its output files go to ``<out_dir>/<label>/``. Returns
    ``{"<task>/<metric>": value}`` for every numeric metric (standard errors left out)."""
    from lm_eval import simple_evaluate  # noqa: PLC0415 - lm-eval is optional (r3exp[forgetting])
    from lm_eval.loggers import EvaluationTracker  # noqa: PLC0415 - lm-eval is optional (r3exp[forgetting])

    out = Path(out_dir) / label
    with tempfile.TemporaryDirectory() as workdir:
        manager = task_manager(spec, Path(workdir))
        check_tasks(spec, manager)
        backend = spec.resolved_backend
        model_args = {"pretrained": str(model_path), "dtype": spec.dtype}
        if backend == "vllm":
            model_args["gpu_memory_utilization"] = spec.gpu_memory_utilization
        tracker = EvaluationTracker(output_path=str(out))
        results = simple_evaluate(
            model=backend,
            model_args=model_args,
            tasks=spec.tasks,
            num_fewshot=spec.num_fewshot,
            batch_size=spec.batch_size,
            limit=spec.limit,
            task_manager=manager,
            evaluation_tracker=tracker,
            log_samples=True,
            apply_chat_template=spec.apply_chat_template,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            device="cuda" if torch.cuda.is_available() else "cpu",
        )
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task in results["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    return scores_of(results)


def scores_of(results: dict) -> dict[str, float]:
    """``{"<task>/<metric>": value}`` from lm-eval's results (``"acc,none"`` -> ``acc``; other filters
    keep their name: ``exact_match,strict-match``); standard errors and counts are left out."""
    scores = {}
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            if "," not in key or "_stderr" in key or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            metric, filter_name = key.split(",", 1)
            scores[f"{task}/{metric if filter_name == 'none' else key}"] = float(value)
    return scores


def forgetting_table(scores: dict[str, dict[str, float]]) -> str:
    """Markdown: one line per benchmark metric, the base and trained scores and trained minus base."""
    base, trained = scores.get("base", {}), scores.get("trained", {})
    lines = ["| benchmark | base | trained | trained − base |", "|---|---|---|---|"]
    for key in sorted(set(base) | set(trained)):
        b, t = base.get(key), trained.get(key)
        cells = [f"{100 * v:.1f}%" if v is not None else "–" for v in (b, t)]
        cells.append(f"{100 * (t - b):+.1f}" if b is not None and t is not None else "–")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def differences(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    base, trained = scores.get("base", {}), scores.get("trained", {})
    return {key: trained[key] - base[key] for key in base if key in trained}
