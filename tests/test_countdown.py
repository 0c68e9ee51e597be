import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r3exp.tasks.countdown import extract_answer, is_correct
from r3exp.tasks.countdown_solver import solve
from r3exp.tasks.safe_arithmetic import UnsafeExpression, evaluate

EXAMPLE = {"nums": [3, 5, 7], "target": 22}


def test_right_answers_pass(countdown):
    assert countdown.validate(EXAMPLE, "<answer> 3 * 5 + 7 </answer>")
    assert countdown.validate(EXAMPLE, "thinking... <answer>(7 + 5) * 3 - 14</answer>") is False  # 14 not given
    assert countdown.validate(EXAMPLE, "first <answer>1</answer> then <answer>7 + 3 * 5</answer>")  # last block
    assert countdown.validate({"nums": [6, 4, 3], "target": 18}, "<answer>6 / (4 / 3) * 4</answer>") is False
    assert countdown.validate({"nums": [6, 4, 3], "target": 8}, "<answer>6 / 3 * 4</answer>")
    # exact rationals: (1/3)*3 is exactly 1
    assert countdown.validate({"nums": [1, 3, 3, 10], "target": 11}, "<answer>1 / 3 * 3 + 10</answer>")


@pytest.mark.parametrize(
    "answer",
    [
        "<answer> 3 * 5 + 6 </answer>",  # wrong value
        "<answer> 3 * 5 </answer>",  # a number unused
        "<answer> 3 * 5 + 7 + 7 - 7 </answer>",  # a number used twice
        "3 * 5 + 7",  # no answer tags
        "<answer></answer>",
        "<answer> 3 ** 5 </answer>",
        "<answer> __import__('os').system('echo pwned') </answer>",
        "<answer> (3).real * 5 + 7 </answer>",
        "<answer> abs(3) * 5 + 7 </answer>",
        "<answer> x * 5 + 7 </answer>",
        "<answer> 3 * 5 + 7 / 0 </answer>",
        "<answer> 3.0 * 5 + 7 </answer>",  # floats are not the given integers
        "<answer> 99999999999999999999 * 5 </answer>",
        "<answer>" + "(" * 500 + "3" + ")" * 500 + "</answer>",
        "<answer> 3 * 5 + 7 == 22 </answer>",
        "<answer> [3, 5, 7] </answer>",
    ],
)
def test_wrong_and_hostile_answers_fail(countdown, answer):
    assert countdown.validate(EXAMPLE, answer) is False


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_validator_returns_bool_for_any_string(countdown, text):
    for candidate in (text, f"<answer>{text}</answer>"):
        assert countdown.validate(EXAMPLE, candidate) in (True, False)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.integers(0, 10**7).map(str),
        lambda inner: st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "**", "//", "%", "<<"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        max_leaves=40,
    )
)
def test_arithmetic_evaluator_never_raises_anything_but_unsafe(expression):
    try:
        evaluate(expression)
    except UnsafeExpression:
        pass


@pytest.mark.timeout(60)  # a hang, not a speed: these take milliseconds
def test_huge_inputs_are_rejected(countdown):
    assert not countdown.validate(EXAMPLE, "<answer>" + "9" * 1_000_000 + "</answer>")
    assert not countdown.validate(EXAMPLE, "<answer>" + "1+" * 200_000 + "1</answer>")
    assert not countdown.validate(EXAMPLE, "x" * 2_000_000)


def test_extract_answer():
    assert extract_answer("a <answer> 1 + 2 </answer> b") == "1 + 2"
    assert extract_answer("no tags") is None


def test_generated_instances_are_solvable_and_in_range(countdown):
    rows = countdown.examples("train")
    assert len(rows) == 300
    for row in rows:
        assert len(row["nums"]) in (3, 4) and all(1 <= n <= 99 for n in row["nums"])
        assert 10 <= row["target"] <= 100
        assert is_correct(row["solution"], row["nums"], row["target"])  # the witness proves it
        assert countdown.validate(row, f"<answer>{row['solution']}</answer>")
    for row in rows[:30]:  # an independent exhaustive search agrees
        assert solve(row["nums"], row["target"]) is not None


def test_splits_are_disjoint_and_seeded(countdown):
    keys = {
        split: {(tuple(sorted(r["nums"])), r["target"]) for r in countdown.examples(split)}
        for split in ("train", "validation", "test")
    }
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]
    assert len(keys["test"]) == 50
    from r3exp.tasks.countdown import CountdownTask

    again = CountdownTask(
        countdown.prompt,
        countdown.reflection_prompt,
        countdown.retry_prompt,
        split_sizes={"train": 300, "validation": 50, "test": 50},
        seed=0,
    )
    assert again.examples("test") == countdown.examples("test")
    other = CountdownTask(
        countdown.prompt,
        countdown.reflection_prompt,
        countdown.retry_prompt,
        split_sizes={"train": 300, "validation": 50, "test": 50},
        seed=1,
    )
    assert other.examples("test") != countdown.examples("test")


def test_prompts_come_from_config(countdown):
    messages = countdown.retry_messages(EXAMPLE, "attempt", "reflection")
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert "[3, 5, 7]" in messages[0]["content"] and "22" in messages[0]["content"]
    assert messages[2]["content"] == countdown.reflection_prompt


def test_unknown_split_is_a_clear_error(countdown):
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        countdown.examples("dev")


def test_local_file_source_in_public_format(tmp_path, countdown):
    import json

    from r3exp.tasks.countdown import CountdownTask

    path = tmp_path / "countdown.jsonl"
    path.write_text("\n".join(json.dumps({"target": 10 + i, "nums": [i + 1, 9, 1]}) for i in range(20)))
    task = CountdownTask(
        countdown.prompt,
        countdown.reflection_prompt,
        countdown.retry_prompt,
        source=str(path),
        split_sizes={"train": 10, "validation": 5, "test": 5},
    )
    splits = [task.examples(s) for s in ("train", "validation", "test")]
    assert [len(s) for s in splits] == [10, 5, 5]
    seen = [(tuple(r["nums"]), r["target"]) for s in splits for r in s]
    assert len(set(seen)) == 20


def test_a_smaller_split_is_a_prefix_of_a_larger_one(countdown):
    from r3exp.tasks.countdown_solver import generate_instances

    assert generate_instances(8, "test", seed=0) == generate_instances(50, "test", seed=0)[:8]


def test_reflection_followed_reads_the_proposed_change(countdown):
    example = {"nums": [3, 4, 2], "target": 11}
    attempt = "<answer>3 + 4 * 2</answer>"
    reflection = "My equation gives 11? No. I should use - instead of +."
    follows = countdown.reflection_followed
    assert follows(example, attempt, reflection, "<answer>3 - 4 * 2</answer>") is True
    assert follows(example, attempt, reflection, attempt) is False  # repeats the attempt
    assert follows(example, attempt, reflection, "<answer>3 * 4 * 2</answer>") is False  # another change
    assert follows(example, attempt, reflection, "no answer") is False
    assert follows(example, attempt, "I should try harder.", "<answer>3 - 4 * 2</answer>") is None  # no proposal
    assert follows(example, "no answer at all", reflection, "<answer>3 - 4 * 2</answer>") is None


def test_a_reflection_that_states_an_equation_proposes_that_equation(countdown):
    example = {"nums": [3, 4, 2], "target": 11}
    attempt = "<answer>3 + 4 * 2</answer>"
    # the stated equation wins over the named change (the warm start's reflection_ends_with_answer form)
    reflection = "My equation gives 11? No. I should use - instead of +. <answer> 3 * 4 - 2 </answer>"
    follows = countdown.reflection_followed
    assert follows(example, attempt, reflection, "<answer> 3 * 4 - 2 </answer>") is True
    assert follows(example, attempt, reflection, "<answer>3 - 4 * 2</answer>") is False  # the named change only
    assert follows(example, attempt, "<answer> 3 + 4 * 2 </answer>", attempt) is False  # proposes the attempt
