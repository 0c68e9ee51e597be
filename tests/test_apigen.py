import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r3exp.tasks.apigen import parse_rows
from tests.conftest import load_task

# Written by hand in the documented xLAM format.
TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather.",
        "parameters": {
            "city": {"type": "str", "description": "City."},
            "units": {"type": "str", "description": "Units.", "default": "celsius"},
        },
    },
    {
        "name": "average",
        "description": "Mean.",
        "parameters": {"numbers": {"type": "List[float]", "description": "Numbers."}},
    },
]
ANSWERS = [
    {"name": "get_weather", "arguments": {"city": "Oslo"}},
    {"name": "get_weather", "arguments": {"city": "Lima", "units": "fahrenheit"}},
    {"name": "average", "arguments": {"numbers": [1, 2.5, 3]}},
]
ROW = {
    "id": 7,
    "query": "Weather in Oslo, in Lima in fahrenheit, and average 1, 2.5, 3.",
    "tools": json.dumps(TOOLS),
    "answers": json.dumps(ANSWERS),
}


@pytest.fixture(scope="module")
def apigen():
    return load_task("apigen", held_out=40)


@pytest.fixture(scope="module")
def example():
    return parse_rows([ROW], "hand")[0][0]


def calls(*items):
    return json.dumps(list(items))


def test_right_answers_in_any_order_and_format(apigen, example):
    shuffled = [ANSWERS[2], ANSWERS[1], ANSWERS[0]]
    assert apigen.validate(example, json.dumps(shuffled))
    assert apigen.validate(example, "  ```json\n" + json.dumps(ANSWERS) + "\n```  ")
    assert apigen.validate(example, "```\n" + json.dumps(ANSWERS) + "\n```")
    # key order, 2.5 vs 2.50, 1 vs 1.0; an omitted default on either side
    assert apigen.validate(
        example,
        calls(
            {"arguments": {"units": "celsius", "city": "Oslo"}, "name": "get_weather"},
            {"name": "get_weather", "arguments": {"units": "fahrenheit", "city": "Lima"}},
            {"name": "average", "arguments": {"numbers": [1.0, 2.50, 3]}},
        ),
    )


@pytest.mark.parametrize(
    "answer",
    [
        calls(ANSWERS[0], ANSWERS[1]),  # a call missing
        calls(*ANSWERS, ANSWERS[0]),  # an extra (duplicate) call
        calls({"name": "get_weathr", "arguments": {"city": "Oslo"}}, *ANSWERS[1:]),  # wrong name
        calls({"name": "get_weather", "arguments": {"city": "Paris"}}, *ANSWERS[1:]),  # wrong value
        calls({"name": "get_weather", "arguments": {"city": "Oslo", "units": "kelvin"}}, *ANSWERS[1:]),
        calls(ANSWERS[0], ANSWERS[1], {"name": "average", "arguments": {"numbers": [3, 2.5, 1]}}),  # list order
        calls(ANSWERS[0], ANSWERS[1], {"name": "average", "arguments": {"numbers": [1, 2.5, 3], "extra": 1}}),
        calls(*ANSWERS[:2], {"name": "delete_files", "arguments": {}}),  # a tool not in the row
        "Here are the calls: " + json.dumps(ANSWERS),  # prose around it
        json.dumps(ANSWERS).replace('"', "'"),  # single quotes are not JSON
        json.dumps(ANSWERS)[:-1] + ",]",  # trailing comma
        json.dumps({"calls": ANSWERS}),
        "[]",
        "",
        "null",
        "[NaN]",
        calls({"name": "get_weather", "arguments": {"city": "Oslo"}, "id": 1}, *ANSWERS[1:]),
    ],
)
def test_wrong_answers_fail(apigen, example, answer):
    assert apigen.validate(example, answer) is False


def test_booleans_are_not_numbers(apigen):
    tools = [{"name": "f", "description": "", "parameters": {"x": {"type": "bool", "description": ""}}}]
    ex = parse_rows(
        [
            {
                "id": 1,
                "query": "q",
                "tools": json.dumps(tools),
                "answers": calls({"name": "f", "arguments": {"x": True}}),
            }
        ],
        "hand",
    )[0][0]
    assert apigen.validate(ex, calls({"name": "f", "arguments": {"x": True}}))
    assert not apigen.validate(ex, calls({"name": "f", "arguments": {"x": 1}}))


def test_no_call_expected(apigen):
    ex = parse_rows([{"id": 2, "query": "a joke", "tools": json.dumps(TOOLS), "answers": "[]"}], "hand")[0][0]
    assert apigen.validate(ex, "[]") and not apigen.validate(ex, calls(ANSWERS[0]))


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
            max_leaves=20,
        ).map(json.dumps),
    )
)
def test_validator_returns_bool_for_anything(apigen, example, text):
    assert apigen.validate(example, text) in (True, False)


@pytest.mark.timeout(60)  # a hang, not a speed: these take milliseconds
def test_huge_and_deep_inputs_are_rejected(apigen, example):
    for text in [
        "[" * 100_000 + "]" * 100_000,
        "[" + ",".join(['{"name":"average","arguments":{}}'] * 5000) + "]",
        "x" * 3_000_000,
    ]:
        assert apigen.validate(example, text) is False


def test_malformed_rows_are_skipped_counted_and_reported(caplog):
    rows = [
        ROW,
        {"id": 8, "query": "q", "tools": "[not json", "answers": "[]"},
        {"id": 9, "query": "q", "tools": json.dumps(TOOLS)},
        {"id": 10, "query": "q", "tools": json.dumps(TOOLS), "answers": calls({"name": "nope", "arguments": {}})},
        {"id": 11, "query": "q", "tools": json.dumps(TOOLS), "answers": '{"name": "average"}'},
    ]
    with caplog.at_level(logging.WARNING):
        examples, skipped = parse_rows(rows, "hand")
    assert [e["id"] for e in examples] == [7] and skipped == 4
    assert "id=8" in caplog.text and "bad JSON" in caplog.text and "id=9" in caplog.text
    assert "skipped 4 malformed" in caplog.text


def test_local_file_in_xlam_format(tmp_path):
    path = tmp_path / "xlam.json"
    rows = [dict(ROW, id=i) for i in range(30)] + [{"id": 99, "query": "q", "tools": "oops", "answers": "[]"}]
    path.write_text(json.dumps(rows))
    task = load_task("apigen", train=21, held_out=5, source=str(path))
    sizes = {s: len(task.examples(s)) for s in ("train", "validation", "test")}
    assert sum(sizes.values()) == 30 and sum(task.skipped.values()) == 1
    ids = [e["id"] for s in ("train", "validation", "test") for e in task.examples(s)]
    assert len(set(ids)) == len(ids)


def test_generated_rows_are_satisfied_by_their_own_answers_and_varied(apigen):
    rows = apigen.examples("train")
    assert len(rows) == 300 and not apigen.skipped["train"]
    assert all(apigen.validate(ex, json.dumps(ex["answers"])) for ex in rows)
    counts = [len(ex["answers"]) for ex in rows]
    assert 0 in counts and 1 in counts and max(counts) >= 2
    assert any(len(ex["answers"]) > 1 and len({a["name"] for a in ex["answers"]}) == 1 for ex in rows)  # parallel
    assert any("default" in p for ex in rows for t in ex["tools"] for p in t["parameters"].values())
    test_ids = {ex["id"] for ex in apigen.examples("test")}
    assert not test_ids & {ex["id"] for ex in rows}


def test_tools_reach_the_prompt(apigen, tokenizer):
    from r3exp.rollout.episodes import ChatRenderer

    ex = apigen.examples("test")[0]
    render = ChatRenderer(tokenizer)
    assert not render.native_tools  # the tiny ChatML template: tools go into the system prompt
    text = tokenizer.decode(render.for_task(apigen, ex, apigen.first_attempt_messages(ex)))
    assert text.startswith("<|im_start|>system\nYou can call these tools:")
    assert ex["tools"][0]["name"] in text and ex["query"] in text


def test_native_tool_templates_receive_tools_as_tools(apigen, tokenizer):
    import copy

    from r3exp.models.tiny import CHATML_TEMPLATE
    from r3exp.rollout.episodes import ChatRenderer

    native = copy.deepcopy(tokenizer)
    native.chat_template = "{% if tools %}<tools>{{ tools | tojson }}</tools>\n{% endif %}" + CHATML_TEMPLATE
    render = ChatRenderer(native)
    ex = apigen.examples("test")[0]
    text = native.decode(render.for_task(apigen, ex, apigen.first_attempt_messages(ex)))
    assert render.native_tools and text.startswith("<tools>[") and "You can call these tools" not in text
