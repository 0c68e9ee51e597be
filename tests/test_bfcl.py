"""task=bfcl: BFCL's decoder and AST check against bfcl-eval's own on its possible answers, hostile answers,
the split, and the task end to end on the embedded default and the real model."""

from __future__ import annotations

import copy
import json
import pathlib
import threading

import pytest

from r3exp.errors import ConfigError
from r3exp.tasks.bfcl import BFCL_SYSTEM_PROMPT, BfclTask, interleave
from r3exp.tasks.bfcl_checker import check_calls
from r3exp.tasks.bfcl_data import CATEGORIES, load_category
from r3exp.tasks.bfcl_decoder import decode_calls, is_calls_format, is_empty
from tests.bfcl_reference import load_reference
from tests.test_cli import r3exp

AST_CATEGORIES = [name for name, c in CATEGORIES.items() if c.scoring == "ast"]
TRAIN = ["simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance"]
# Questions with a written answer (one combination of listed values) that bfcl-eval's own checker fails: BFCL's
# data contradict themselves there (e.g. parallel_multiple_12 lists a value for a parameter its function lacks)
BFCL_UNPASSABLE = {
    "simple_python": 0,
    "multiple": 0,
    "parallel": 0,
    "parallel_multiple": 2,
    "live_simple": 2,
    "live_multiple": 3,
    "live_parallel": 0,
    "live_parallel_multiple": 0,
}
TEST = ["live_simple", "live_multiple", "live_parallel", "live_parallel_multiple", "live_irrelevance"]


@pytest.fixture(scope="module")
def reference():
    return load_reference()


@pytest.fixture(scope="module")
def questions():
    return {name: load_category(name) for name in CATEGORIES}


def task(**changes) -> BfclTask:
    settings = dict(reflection_prompt="Reflect.", retry_prompt="Retry.", categories={"train": TRAIN, "test": TEST})
    return BfclTask(**{**settings, **changes})


# ---- answers written from the possible answers, and perturbed ----------------------------------------------


def answer_variants(answers: list[dict], functions: list[dict]) -> list[list[dict]]:
    """Decoded calls that take, in variant k, the k-th listed value of every parameter (the last where a
    parameter lists fewer; ``""`` leaves the optional parameter out): every listed value appears in one.
    (A few of BFCL's answers list ``""`` for a parameter its function requires; BFCL fails a call that
    leaves it out, so there the variant gives the parameter's first value.)"""
    width = max([len(values) for call in answers for values in next(iter(call.values())).values()] + [1])
    required = {f["name"]: set(f["parameters"].get("required", [])) for f in functions}
    variants = []
    for k in range(width):
        calls = []
        for call in answers:
            ((name, parameters),) = call.items()
            arguments = {}
            for parameter, values in parameters.items():
                if not values:
                    continue
                value = values[min(k, len(values) - 1)]
                if isinstance(value, str) and value == "" and parameter in required.get(name, ()):
                    value = next((v for v in values if not (isinstance(v, str) and v == "")), "")
                if not (isinstance(value, str) and value == ""):
                    arguments[parameter] = concrete(value, k)
            calls.append({name: arguments})
        variants.append(calls)
    return variants


def concrete(value, k: int):
    """A dict value of a possible answer lists the allowed values of each key (a list of dicts, of each
    dict's keys): the k-th of each (the last where fewer; ``""`` leaves the key out)."""
    if isinstance(value, dict):
        picked = {}
        for key, values in value.items():
            if isinstance(values, list) and values:
                choice = values[min(k, len(values) - 1)]
                if not (isinstance(choice, str) and choice == ""):
                    picked[key] = concrete(choice, k)
            else:
                picked[key] = copy.deepcopy(values)
        return picked
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return [concrete(item, k) for item in value]
    return copy.deepcopy(value)


def changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + " zz"
    if isinstance(value, list):
        return value + (value[:1] or [1])
    if isinstance(value, dict):
        return {**value, "zz_extra": 1}
    return "zz"


def perturbations(calls: list[dict]) -> list[list[dict]]:
    """Each value changed (and once as the string of itself), each parameter dropped, an extra parameter,
    a renamed function, a call dropped or doubled."""
    out = []
    for index, call in enumerate(calls):
        ((name, arguments),) = call.items()
        for parameter, value in arguments.items():
            for new in (changed(value), *([] if isinstance(value, str) else [str(value)])):
                out.append(calls[:index] + [{name: {**arguments, parameter: new}}] + calls[index + 1 :])
            out.append(
                calls[:index] + [{name: {p: v for p, v in arguments.items() if p != parameter}}] + calls[index + 1 :]
            )
        out.append(calls[:index] + [{name: {**arguments, "zz_unexpected": 1}}] + calls[index + 1 :])
        out.append(calls[:index] + [{name + "_zz": arguments}] + calls[index + 1 :])
    out.append(calls[1:])
    out.append(calls + calls[:1])
    return out


def as_text(calls: list[dict]) -> str:
    """The calls in BFCL's answer format, ``[f(a=1, b='x'), g()]``."""
    return (
        "["
        + ", ".join(
            f"{name}({', '.join(f'{p}={v!r}' for p, v in arguments.items())})"
            for call in calls
            for name, arguments in call.items()
        )
        + "]"
    )


def reference_verdict(reference, functions, calls, answers, category) -> bool:
    check = reference[3]
    try:
        return bool(check(functions, calls, answers, category))
    except Exception:  # noqa: BLE001 - BFCL's checker raises on a few malformed calls; a failed check either way
        return False


def our_verdict(functions, calls, answers, category) -> bool:
    try:
        return check_calls(functions, calls, answers, category)[0]
    except Exception:  # noqa: BLE001
        return False


# ---- the checker equals BFCL's ------------------------------------------------------------------------------


@pytest.mark.parametrize("category", AST_CATEGORIES)
def test_every_possible_answer_passes_and_perturbed_ones_fail_as_in_bfcl(reference, questions, category):
    """Our verdict equals bfcl-eval's on every answer written from the possible answers and on their
    perturbations. The written answers pass, except where BFCL's data contradict themselves (an answer
    leaving out a parameter its function requires, or giving one its function does not document):
    bfcl-eval's checker fails those too (BFCL_UNPASSABLE, counted on the tasks page)."""
    checked = failed_perturbations = 0
    unpassable = set()
    for example in questions[category]:
        functions, answers = example["functions"], example["answers"]
        for calls in answer_variants(answers, functions):
            ours = our_verdict(functions, calls, answers, category)
            assert ours == reference_verdict(reference, functions, calls, answers, category), (example["id"], calls)
            if not ours:
                unpassable.add(example["id"])
                continue
            for wrong in perturbations(calls):
                ours = our_verdict(functions, wrong, answers, category)
                assert ours == reference_verdict(reference, functions, wrong, answers, category), (example["id"], wrong)
                failed_perturbations += not ours
                checked += 1
    assert failed_perturbations > 0.75 * checked  # most perturbations break the answer (dropping an optional
    assert len(unpassable) == BFCL_UNPASSABLE[category], sorted(unpassable)  # parameter does not)


@pytest.mark.parametrize("category", AST_CATEGORIES)
def test_answers_written_out_decode_as_in_bfcl_and_pass_the_task(reference, questions, category):
    decode = reference[0]
    bfcl = task(categories={"train": [], "test": [category]})
    unwritable = 0
    for example in questions[category]:
        for calls in answer_variants(example["answers"], example["functions"])[:2]:
            for text in (as_text(calls), *(as_text(wrong) for wrong in perturbations(calls)[:4])):
                try:
                    expected = decode(text)
                except Exception:  # noqa: BLE001
                    expected = None
                assert decode_calls(text) == expected, text
            text = as_text(calls)
            if decode_calls(text) is None:  # a parameter named like a Python keyword cannot be written so
                unwritable += 1
                assert any(
                    not p.isidentifier() or p in ("from", "class", "lambda", "in", "is", "if")
                    for call in calls
                    for arguments in call.values()
                    for p in arguments
                ), text
                continue
            if reference_verdict(reference, example["functions"], calls, example["answers"], category):
                assert bfcl.validate(example, text) and bfcl.validate(example, f"```\n{text}\n```"), text
    assert unwritable <= 0.01 * len(questions[category])


@pytest.mark.parametrize(
    "answer",
    [
        "[f(a=1)]",
        "f(a=1)",
        "```python\n[f(a=1), g.h(b='x')]\n```",
        "[f(a=-3), f(a=2*3), f(a=2**10 - 1)]",
        "[f(a='x' + 'y'), f(a=True + 1), f(a=7 // 2 % 3), f(a=1 / 4)]",
        "[f(a=x), f(a=g(1)), f(a=g(k=1)), f(a=h[0])]",
        "[f(a=(1, 2)), f(a={'k': [1, {'j': None}]}), f(a=...)]",
        "[f(1, a=2)]",
        "[]",
        "[f()]",
        "'[f(a=1)]'",
        "I cannot help with that.",
        "[f(a=1)",
        "[f(a=lambda: 1)]",
        "[f(a=-x)]",
        "[f(a=not True)]",
        "[f(a=+5)]",
        "[f(a=[1] * 2)]",
        "[f(a={**d})]",
        "[1, f()]",
        "[f(a=1)] + [g()]",
        "[f(a=1e308 * 10)]",
        "[f(a=1 / 0)]",
    ],
)
def test_decoder_reads_answers_as_bfcl_does_without_executing_them(reference, answer):
    decode, is_empty_reference, is_format_reference, _ = reference
    try:
        expected = decode(answer)
    except Exception:  # noqa: BLE001
        expected = None
    ours = decode_calls(answer)
    assert ours == expected
    assert is_empty(ours) == is_empty_reference(expected if expected is not None else "not decoded")
    if ours is not None:
        assert is_calls_format(ours) == is_format_reference(expected)


HOSTILE = [
    "[f(a=__import__('os').system('touch {marker}'))]",
    "[f(a=open('{marker}', 'w').write('x'))]",
    '[f(a=exec(\'open("{marker}", "w")\'))]',
    "[f(a=eval('1'))]",
    "[f(a=(lambda: open('{marker}','w'))())]",
    "[f(a=9**9**9**9)]",
    "[f(a=10**100000)]",
    "[f(a='x' * 10**9)]",
    "[f(a=" + "(" * 100_000 + ")]",
    "[" * 100_000,
    "]" * 50_000,
    "[f(a=" + "-" * 15_000 + "1)]",
    "[f(a=" + "+".join(["1"] * 5000) + ")]",
    "[f(a=" + "[" * 300 + "]" * 300 + ")]",
    "[f(a=1)]" * 5000,
    "\udcff\udcfe[f(a=1)]",
    "[f(a='\udcff')]",
    "[f(a=1)]\x00",
    "[f(a='%*d' % (10**9, 1))]",
    '<tool_call>{"name": "f", "arguments": ' + "[" * 100_000 + "</tool_call>",
    '<tool_call>{"name": "f"',
    "[f(a=NaN)]",
    "[f(a=" + "1" * 5000 + ")]",
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_answers_fail_without_running_anything_or_hanging(tmp_path, template, questions):
    marker = tmp_path / "executed"
    answer = template.replace("{marker}", str(marker))
    example = questions["simple_python"][0]
    verdicts = []

    def judge():
        verdicts.append((decode_calls(answer), task().validate(example, answer)))

    worker = threading.Thread(target=judge, daemon=True)
    worker.start()
    worker.join(timeout=60)  # a hang, not a speed: each of these takes milliseconds
    assert not worker.is_alive(), "the decoder hung"
    decoded, valid = verdicts[0]
    assert valid is False and not marker.exists()
    assert decode_calls(answer.encode("utf-8", "surrogatepass")) is None  # bytes are not an answer


def test_native_tool_call_blocks_are_read_as_json(questions):
    example = next(ex for ex in questions["simple_python"] if ex["id"] == "simple_python_1")  # math.factorial(5)
    block = '<tool_call>\n{"name": "math.factorial", "arguments": {"number": 5}}\n</tool_call>'
    assert decode_calls(block) == [{"math.factorial": {"number": 5}}]
    assert task().validate(example, block) and task().validate(example, "[math.factorial(number=5)]")
    assert not task().validate(example, block.replace("5", "6"))
    assert decode_calls('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>') == [{"f": {"a": 1}}]
    assert decode_calls("<tool_call>[1, 2]</tool_call>") is None


def test_relevance_categories_score_whether_a_call_was_made(questions):
    irrelevant, relevant = questions["irrelevance"][0], questions["live_relevance"][0]
    bfcl = task()
    for answer, has_call in [
        ("None of the functions fits.", False),
        ("[]", False),
        ("[f(a=1)]", True),
        ("[get_weather(city='Paris')]", True),
        ("[f(a=", False),
    ]:
        assert bfcl.validate(irrelevant, answer) is (not has_call)
        assert bfcl.validate(relevant, answer) is has_call


# ---- the prompt -----------------------------------------------------------------------------------------------


def test_the_system_prompt_is_bfcls_default(questions):
    from bfcl_eval.constants import default_prompts as p

    style = p.PROMPT_STYLE_TEMPLATES["classic"]
    expected = p.PROMPT_TEMPLATE_MAPPING["plaintext"].format(
        persona=style["persona"],
        task=style["task"],
        tool_call_format=style["tool_call_no_tag"].format(
            output_format=p.OUTPUT_FORMAT_MAPPING["python"], param_types=p.PARAM_TYPE_MAPPING["python"]
        ),
        multiturn_behavior=style["multiturn_behavior"],
        available_tools=style["available_tools"].format(format="json", functions="{functions}"),
    )
    assert "func_doc_fmt=json" in p.DEFAULT_SYSTEM_PROMPT_FORMAT and "ret_fmt=python" in p.DEFAULT_SYSTEM_PROMPT_FORMAT
    assert BFCL_SYSTEM_PROMPT == expected
    example = questions["simple_python"][0]
    message = task().tools_system_message(example)
    assert json.dumps(example["functions"], indent=4) in message
    assert example["functions"][0]["description"].endswith("Note that the provided function is in Python 3 syntax.")


def test_the_rendered_prompt_holds_the_question_and_functions(questions, tokenizer):
    from r3exp.rollout.episodes import ChatRenderer

    example = questions["live_simple"][0]
    text = tokenizer.decode(ChatRenderer(tokenizer).for_task(task(), example, task().first_attempt_messages(example)))
    assert example["messages"][-1]["content"] in text and example["functions"][0]["name"] in text


def test_native_tools_are_json_schema(questions):
    tool = task().tools(questions["simple_python"][0])[0]
    assert tool["type"] == "function" and tool["function"]["parameters"]["type"] == "object"
    assert {p["type"] for p in tool["function"]["parameters"]["properties"].values()} <= {"integer", "string"}


# ---- the split --------------------------------------------------------------------------------------------------


def test_splits_are_disjoint_by_category_and_id():
    bfcl = task()
    splits = {split: bfcl.examples(split) for split in ("train", "validation", "test")}
    categories = {split: {ex["category"] for ex in examples} for split, examples in splits.items()}
    assert categories["test"] == set(TEST) and categories["train"] == set(TRAIN)
    assert categories["validation"] <= set(TRAIN)
    ids = {split: {ex["id"] for ex in examples} for split, examples in splits.items()}
    assert not (ids["train"] & ids["validation"] or ids["train"] & ids["test"] or ids["validation"] & ids["test"])
    total = sum(len(load_category(name)) for name in TRAIN)
    assert len(ids["train"]) + len(ids["validation"]) == total and 0.05 < len(ids["validation"]) / total < 0.15


def test_a_split_prefix_covers_every_category():
    bfcl = task(split_sizes={"test": 10})
    assert [ex["category"] for ex in bfcl.examples("test")] == TEST * 2
    assert interleave([[1, 2, 3], [4], [5, 6]]) == [1, 4, 5, 2, 6, 3]


def test_long_prompts_are_left_out_and_counted():
    bfcl = task(max_prompt_chars=3000, categories={"train": [], "test": ["live_parallel"]})
    kept = bfcl.examples("test")
    assert all(bfcl.prompt_chars(ex) <= 3000 for ex in kept)
    assert bfcl.left_out == {"test": {"live_parallel": 16 - len(kept)}} and len(kept) < 16


def test_overlapping_or_unknown_categories_fail_in_one_line():
    with pytest.raises(ConfigError, match=r"task.categories: live_simple in both train and test"):
        task(categories={"train": ["live_simple"], "test": ["live_simple"]})
    with pytest.raises(ConfigError) as raised:
        task(categories={"train": [], "test": ["live_simpel"]})
    message = str(raised.value)
    assert message.startswith("task.categories.test: unknown BFCL category 'live_simpel'; known: simple_python, ")
    assert all(name in message for name in CATEGORIES) and "\n" not in message
    with pytest.raises(ConfigError, match=r"task.categories.test=live_simple: expected a list"):
        task(categories={"train": [], "test": "live_simple"})


@pytest.mark.integration
def test_unknown_category_on_the_command_line_is_one_error_line(tmp_path):
    out = r3exp(
        "mode=evaluate",
        "task=bfcl",
        "model=tiny",
        "task.categories.test=[live_simpel]",
        "logger=csv",
        f"hydra.run.dir={tmp_path}",
        timeout=300,
    )
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode != 0 and len(errors) == 1 and "Traceback" not in out.stderr
    assert "unknown BFCL category 'live_simpel'; known: simple_python, multiple" in errors[0]


# ---- end to end -------------------------------------------------------------------------------------------------

# The embedded default's context is 1,024 tokens and its tokenizer was never trained on BFCL text: a short
# system prompt, and only the questions that fit.
TINY = [
    "task=bfcl",
    "model=tiny",
    "task.context_tokens=1024",
    "task.max_prompt_chars=1100",
    "task.tools_prompt='Functions: {functions}. Answer as [name(param=value)].'",
    "evaluation.limit=6",
    "trainer.max_steps=1",
    "rollout.examples_per_step=2",
    "rollout.group_size=2",
    "rollout.attempt.max_tokens=16",
    "rollout.reflection.max_tokens=16",
    "rollout.retry.max_tokens=16",
    "rollout.max_draws=1",
    "task.split_sizes.train=40",
    "task.split_sizes.validation=4",
]


@pytest.mark.integration
def test_main_job_on_the_embedded_default(tmp_path):
    from r3exp.tracking.offline_run import read_offline_run

    out = r3exp(*TINY, f"hydra.run.dir={tmp_path}", f"paths.results_cache={tmp_path / 'results'}")
    assert out.returncode == 0, out.stderr[-3000:]
    # the same six test questions, from the task built here: the categories with questions that short
    expected = task(
        max_prompt_chars=1100,
        tools_prompt="Functions: {functions}. Answer as [name(param=value)].",
        split_sizes={"test": 6},
    ).examples("test")
    counts = {}
    for example in expected:
        counts[example["category"]] = counts.get(example["category"], 0) + 1
    assert len(counts) >= 3
    results = json.loads((tmp_path / "results.json").read_text())
    for label in ("base", "trained"):
        groups = results[label]["groups"]
        assert {name: g["total"] for name, g in groups.items()} == counts and results[label]["total"] == 6
        assert list(groups) == list(counts)  # in the config's order
        assert all(f"| {label} | {name} | {count} |" in out.stdout for name, count in counts.items())
        irrelevance = groups.get("live_irrelevance")
        if irrelevance:  # the tiny model never writes a call, which is right on irrelevance questions
            assert irrelevance["first_try_correct"] == irrelevance["total"]
    (wandb_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    run = read_offline_run(wandb_dir)
    assert run.summary["eval/trained/live_simple/total"] == counts["live_simple"]
    table = run.table("evaluation_by_category")["data"]
    assert [(row[0], row[1], row[2]) for row in table] == [
        (label, name, count) for label in ("base", "trained") for name, count in counts.items()
    ]


@pytest.mark.integration
def test_evaluation_on_the_real_model_reports_bfcl_categories(tmp_path):
    out = r3exp(
        "mode=evaluate",
        "task=bfcl",
        "model=smollm2_135m",
        "evaluation.limit=5",
        "logger=csv",
        "rollout.attempt.max_tokens=48",
        "rollout.reflection.max_tokens=32",
        f"hydra.run.dir={tmp_path}",
        f"paths.results_cache={tmp_path / 'results'}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "results.json").read_text())["smollm2_135m"]
    assert list(result["groups"]) == TEST and all(g["total"] == 1 for g in result["groups"].values())
    for category in TEST:
        assert f"| smollm2_135m | {category} | 1 |" in out.stdout
    episodes = [json.loads(line) for line in (tmp_path / "eval_smollm2_135m_episodes.jsonl").read_text().splitlines()]
    assert len(episodes) == 5 and pathlib.Path(tmp_path / "results.json").exists()


@pytest.mark.integration
def test_base_rates_benchmark_reports_each_bfcl_category(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    overrides = [arg for arg in TINY if arg.startswith(("model=", "task.context", "task.max_prompt", "task.tools"))]
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "base_rates.py"),
            "--tasks",
            "bfcl",
            "--split",
            "test",
            "--examples",
            "6",
            "--samples",
            "2",
            "rollout.attempt.max_tokens=16",
            *overrides,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "; test split" in result.stdout
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in result.stdout.splitlines()
        if line.startswith("| bfcl")
    }
    assert rows.pop("bfcl") == "6" and sum(map(int, rows.values())) == 6
    assert all(name.removeprefix("bfcl/") in TEST for name in rows) and "bfcl/live_simple" in rows
