"""task=arithmetic: the answer a reply gives, strict validation, disjoint splits, the follow measure."""

import pytest

from r3exp.errors import ConfigError
from r3exp.tasks.arithmetic import final_answer, integers
from tests.conftest import load_task

SEVEN_TIMES_EIGHT = {"a": 7, "op": "times", "b": 8, "answer": 56}


@pytest.fixture(scope="module")
def arithmetic():
    return load_task("arithmetic", train=200, held_out=20)


@pytest.mark.parametrize(
    "reply",
    [
        "56",
        "56.",
        "The answer is 56.",
        "7 times 8 is 56",
        "7 * 8 = 56",
        "<answer>56</answer>",
        "I think 54. No: <answer> 56 </answer>",
        "56.0",
        " 56\n",
    ],
)
def test_right_answers_pass(arithmetic, reply):
    assert arithmetic.validate(SEVEN_TIMES_EIGHT, reply) is True


@pytest.mark.parametrize(
    "reply",
    [
        "54",
        "56 is close, but it is 54",
        "<answer>54</answer> (or 56)",
        "5 6",
        "56.5",
        "-56",
        "fifty-six",
        "",
        "<answer>56 or 57</answer>",
        "<answer></answer> 56",
        "560",
        "1,056",
    ],
)
def test_wrong_or_unreadable_answers_fail(arithmetic, reply):
    # the number is the last integer written, or the one inside the last <answer> tags: nothing looser
    assert arithmetic.validate(SEVEN_TIMES_EIGHT, reply) is False


def test_integers_are_read_as_written():
    assert integers("1,024 apples, -3 pears, 2.5 kg, 7.0 m, 7,8 or 9.") == [1024, -3, 7, 9]
    assert final_answer("no number here") is None
    assert final_answer("<answer>12</answer>") == 12


def test_validator_never_raises(arithmetic):
    for reply in [None, 56, "\x00" * 10, "9" * 10_000]:
        assert arithmetic.validate(SEVEN_TIMES_EIGHT, reply) is False


def test_splits_are_disjoint_seeded_and_prefixes(arithmetic):
    key = lambda ex: (ex["a"], ex["op"], ex["b"])  # noqa: E731
    splits = {s: {key(ex) for ex in arithmetic.examples(s)} for s in ("train", "validation", "test")}
    assert not (
        splits["train"] & splits["validation"]
        or splits["train"] & splits["test"]
        or splits["validation"] & splits["test"]
    )
    assert all(
        ex["answer"] == (ex["a"] * ex["b"] if ex["op"] == "times" else ex["a"] + ex["b"])
        for ex in arithmetic.examples("train")
    )
    other_seed = load_task("arithmetic", train=200, held_out=20, seed=1)
    assert {key(ex) for ex in other_seed.examples("test")} != splits["test"]  # another order, same pool
    smaller = load_task("arithmetic", train=50, held_out=20)
    assert [key(ex) for ex in smaller.examples("train")] == [key(ex) for ex in arithmetic.examples("train")][:50]


def test_bad_settings_name_the_key():
    from hydra.errors import InstantiationException

    with pytest.raises(InstantiationException, match="task.operations"):  # the CLI prints the ConfigError alone
        load_task("arithmetic", operations={"power": [[1, 2], [1, 2]]})
    with pytest.raises(ConfigError, match="task.split_sizes.train=5000"):
        load_task("arithmetic", train=5000, operations={"times": [[2, 9], [2, 9]]}).examples("train")


@pytest.mark.parametrize(
    "reflection, retry, followed",
    [
        ("I said 54, but 7 times 8 is 56.", "56", True),
        ("I said 54, but 7 times 8 is 56.", "54", False),
        ("I multiplied 7 by 8 wrongly.", "56", None),  # proposes no number of its own
        ("The right product is 57.", "57", True),  # followed, though wrong: following is not succeeding
    ],
)
def test_follow_measure(arithmetic, reflection, retry, followed):
    assert arithmetic.reflection_followed(SEVEN_TIMES_EIGHT, "54", reflection, retry) is followed
