"""How often a model solves each task's first attempt as r3exp prompts it: the base rate R3 starts from.

    .venv/bin/python benchmarks/base_rates.py model=smollm2_135m [--tasks arithmetic countdown_pairs apigen bfcl]
        [--examples 64] [--samples 8] [--split validation] [hydra overrides ...]

For every task: ``--samples`` first attempts per example at the rollout temperature
(``rollout.reflection.temperature``, the one R3 samples at) and the attempt's length, plus one greedy
attempt (the evaluation's). Prints per-sample success, the share of examples some sample solves, and
greedy success, on the validation split (``--split``), and per group where a task groups its examples
(``task=bfcl``: per BFCL category). A group of G samples carries a GRPO signal only where its
rewards differ, so a useful task sits well between 0% and 100% per sample.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from r3exp import CONF_DIR


def base_rates(task, engine, tokenizer, examples, samples: int, sampling) -> dict[str, dict]:
    """The rates of ``examples`` under the name ``all``, and of each group where the task groups its examples
    (``Task.group``: BFCL's categories), in the order the groups first appear."""
    from r3exp.rollout.episodes import ChatRenderer

    render = ChatRenderer(tokenizer)
    prompts = [render.for_task(task, ex, task.first_attempt_messages(ex)) for ex in examples]
    sampled = engine.generate(prompts, samples, sampling, stream="base_rates")
    greedy = engine.generate(prompts, 1, dataclasses.replace(sampling, temperature=0.0), stream="base_rates")
    solved = [[task.validate(ex, c.text) for c in group] for ex, group in zip(examples, sampled)]
    greedy_solved = [task.validate(ex, g[0].text) for ex, g in zip(examples, greedy)]
    groups = [task.group(ex) for ex in examples]
    rates = {"all": _rates(solved, greedy_solved, samples, greedy[0][0].text)}
    for name in dict.fromkeys(g for g in groups if g is not None):
        members = [i for i, g in enumerate(groups) if g == name]
        rates[name] = _rates(
            [solved[i] for i in members], [greedy_solved[i] for i in members], samples, greedy[members[0]][0].text
        )
    return rates


def _rates(solved: list[list[bool]], greedy: list[bool], samples: int, reply: str) -> dict:
    return {
        "examples": len(solved),
        "per_sample": sum(map(sum, solved)) / (len(solved) * samples),
        "some_sample": sum(map(any, solved)) / len(solved),
        "greedy": sum(greedy) / len(solved),
        "example_reply": reply,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tasks", nargs="+", default=["arithmetic", "countdown_pairs", "countdown_easy", "countdown", "apigen", "bfcl"]
    )
    parser.add_argument("--examples", type=int, default=64, help="validation examples per task")
    parser.add_argument("--samples", type=int, default=8, help="sampled first attempts per example")
    parser.add_argument(
        "--split",
        default="validation",
        help="the split the examples come from (task=bfcl's test split holds its test categories)",
    )
    args, overrides = parser.parse_known_args()
    from r3exp.runtime.components import resolve_model
    from r3exp.runtime.environment import setup_environment

    setup_environment()
    rows = []
    with tempfile.TemporaryDirectory() as out, initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        engine = tokenizer = loaded = None
        for name in args.tasks:
            cfg = compose("config", overrides=[f"paths.output_dir={out}", f"task={name}", *overrides])
            task, model, path = resolve_model(cfg)
            if path != loaded:  # one engine per model directory (the embedded model's warm start is per task)
                from r3exp.models import load_tokenizer

                if engine is not None:
                    engine.close()
                tokenizer, loaded = load_tokenizer(path), path
                engine = instantiate(cfg.engine)(model_path=path, seed=cfg.seed)
            sampling = instantiate(cfg.rollout.attempt, temperature=cfg.rollout.reflection.temperature)
            examples = list(task.examples(args.split))[: args.examples]
            for group, rates in base_rates(task, engine, tokenizer, examples, args.samples, sampling).items():
                rows.append((name if group == "all" else f"{name}/{group}", rates))
                print(f"{rows[-1][0]}: {rates}", file=sys.stderr)
    print(
        f"\nmodel {model.name}, {args.samples} samples per example at temperature {sampling.temperature}, "
        f"{sampling.max_tokens} tokens; {args.split} split\n"
    )
    print("| task | examples | per sample | solved by some sample | greedy |\n|---|---|---|---|---|")
    for name, r in rows:
        print(
            f"| {name} | {r['examples']} | {100 * r['per_sample']:.1f}% | {100 * r['some_sample']:.1f}% "
            f"| {100 * r['greedy']:.1f}% |"
        )
    for name, r in rows:
        print(f"\n{name}, a greedy reply: {r['example_reply'][:200]!r}")


if __name__ == "__main__":
    main()
