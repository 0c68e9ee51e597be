"""Seeded procedural rows in the xLAM format (``Salesforce/xlam-function-calling-60k``).

Each row: ``id``, ``query``, ``tools`` (JSON string: ``[{name, description, parameters: {param: {type,
description, default?}}}]``) and ``answers`` (JSON string: ``[{name, arguments}]``). Queries need zero,
one or several calls, including parallel calls to the same tool; arguments equal to a parameter's
default are sometimes omitted from the answer, as in the real data.
"""

from __future__ import annotations

import json
import random

CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Austin", "Delhi", "Perth", "Quito", "Seoul"]
CURRENCIES = ["USD", "EUR", "JPY", "GBP", "INR", "BRL"]
WORDS = ["python", "coffee", "jazz", "rockets", "tennis", "volcanoes", "origami", "chess"]

# name -> (description, {param: (type, description, default or None, value sampler)}, query phrase)
TOOLS = {
    "get_weather": (
        "Current weather for a city.",
        {
            "city": ("str", "City name.", None, lambda r: r.choice(CITIES)),
            "units": ("str", "celsius or fahrenheit.", "celsius", lambda r: r.choice(["celsius", "fahrenheit"])),
        },
        "what is the weather in {city} in {units}",
    ),
    "convert_currency": (
        "Convert an amount between currencies.",
        {
            "amount": ("float", "Amount to convert.", None, lambda r: round(r.uniform(1, 500), 2)),
            "from_currency": ("str", "ISO code to convert from.", None, lambda r: r.choice(CURRENCIES)),
            "to_currency": ("str", "ISO code to convert to.", None, lambda r: r.choice(CURRENCIES)),
        },
        "convert {amount} {from_currency} to {to_currency}",
    ),
    "factorial": (
        "Factorial of a non-negative integer.",
        {"n": ("int", "The integer.", None, lambda r: r.randint(0, 20))},
        "compute the factorial of {n}",
    ),
    "is_prime": (
        "Whether an integer is prime.",
        {"number": ("int", "The integer to test.", None, lambda r: r.randint(2, 10_000))},
        "check whether {number} is prime",
    ),
    "search_news": (
        "Search news articles.",
        {
            "query": ("str", "Search terms.", None, lambda r: r.choice(WORDS)),
            "limit": ("int", "Maximum number of results.", 10, lambda r: r.choice([5, 10, 20])),
            "sort_by_date": ("bool", "Newest first.", False, lambda r: r.choice([True, False])),
        },
        "find {limit} news articles about {query} (newest first: {sort_by_date})",
    ),
    "average": (
        "Arithmetic mean of a list of numbers.",
        {
            "numbers": (
                "List[float]",
                "The numbers.",
                None,
                lambda r: [r.randint(1, 99) for _ in range(r.randint(2, 5))],
            )
        },
        "average the numbers {numbers}",
    ),
    "get_timezone": (
        "Time zone of a city.",
        {"city": ("str", "City name.", None, lambda r: r.choice(CITIES))},
        "tell me the time zone of {city}",
    ),
    "reverse_string": (
        "Reverse a string.",
        {"text": ("str", "The string.", None, lambda r: r.choice(WORDS))},
        "reverse the word '{text}'",
    ),
}
UNRELATED = ["Tell me a joke about {word}.", "Write a haiku about {word}.", "Who invented {word}?"]


def tool_schema(name: str) -> dict:
    description, params, _ = TOOLS[name]
    parameters = {}
    for param, (kind, text, default, _) in params.items():
        parameters[param] = {"type": kind, "description": text}
        if default is not None:
            parameters[param]["default"] = default
    return {"name": name, "description": description, "parameters": parameters}


def sample_call(name: str, rng: random.Random) -> tuple[dict, str]:
    """A call with sampled arguments, and the query phrase that asks for it."""
    _, params, phrase = TOOLS[name]
    values = {param: sampler(rng) for param, (_, _, _, sampler) in params.items()}
    arguments = {
        param: value
        for param, value in values.items()
        if not (params[param][2] is not None and value == params[param][2] and rng.random() < 0.5)
    }
    return {"name": name, "arguments": arguments}, phrase.format(**values)


def generate_row(index: int, rng: random.Random) -> dict:
    names = rng.sample(sorted(TOOLS), rng.randint(1, 4))
    plan = rng.choices(["none", "one", "several", "parallel"], weights=[1, 4, 3, 2])[0]
    if plan == "none":
        calls, phrases = [], []
        query = rng.choice(UNRELATED).format(word=rng.choice(WORDS))
    else:
        if plan == "one":
            chosen = [rng.choice(names)]
        elif plan == "several":
            chosen = rng.sample(names, min(len(names), rng.randint(2, 3))) if len(names) > 1 else names * 2
        else:
            chosen = [rng.choice(names)] * rng.randint(2, 3)
        pairs = [sample_call(name, rng) for name in chosen]
        calls, phrases = [c for c, _ in pairs], [p for _, p in pairs]
        sentence = ", and ".join(phrases) + "."
        query = sentence[0].upper() + sentence[1:]
    return {
        "id": index,
        "query": query,
        "tools": json.dumps([tool_schema(n) for n in names]),
        "answers": json.dumps(calls),
    }
