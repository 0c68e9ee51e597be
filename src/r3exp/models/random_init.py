"""A real architecture with random weights (``model.init=random``), for machines without the hub.

The model is built from the architecture written out in its model config (``model.architecture``: the fields
of the hub's ``config.json``), so its memory and time per token are the real model's. The tokenizer cannot
be the real one (it comes from the hub too): it is the embedded model's byte-level BPE (Qwen2's
pre-tokenization, ChatML, trained on the built-in tasks' text, 1,024 entries) with filler entries ``<w1024>``,
``<w1025>``, ... up to the architecture's vocabulary, so that every id the random model samples decodes to
text. What this measures honestly: the model's compute and memory at the real width, depth and vocabulary.
What it does not: the real tokenizer's token counts (the embedded BPE splits task text into more, shorter
tokens than Qwen2's 151k-entry BPE) and anything about quality (random weights write random fillers).

Built once per (architecture, dtype, seed, corpus) under ``paths.cache_dir/models/random``, then loaded like
any model directory.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Mapping

import torch
from tokenizers import Tokenizer

from r3exp.cache_entries import staged_entry
from r3exp.errors import ConfigError
from r3exp.models.dtypes import torch_dtype
from r3exp.models.tiny import CHATML_TEMPLATE, train_tokenizer

BUILD_VERSION = 1
BPE_ENTRIES = 1024  # the embedded tokenizer's size (r3exp.models.tiny.TinySpec.vocab_size)


def cache_key(architecture: Mapping, dtype: str, seed: int, corpus: list[str]) -> str:
    payload = json.dumps([BUILD_VERSION, dict(architecture), dtype, seed, corpus], sort_keys=True, default=str)
    kind = architecture.get("model_type", "model")
    return (
        f"{kind}-h{architecture.get('hidden_size')}-l{architecture.get('num_hidden_layers')}-"
        f"{hashlib.sha256(payload.encode()).hexdigest()[:10]}"
    )


def ensure_random_model(
    architecture: Mapping, dtype: str, seed: int, corpus: Iterable[str], cache_root: str | os.PathLike
) -> Path:
    """The directory of a random-weight model of ``architecture``, building it if not cached."""
    architecture = dict(architecture)
    for key in ("model_type", "vocab_size"):
        if key not in architecture:
            raise ConfigError(
                f"model.architecture.{key} is missing: model.init=random builds the model from "
                "model.architecture (the fields of the model's config.json)"
            )
    corpus = list(corpus)
    target = Path(cache_root) / "random" / cache_key(architecture, dtype, seed, corpus)
    if (target / "config.json").exists():
        return target
    with staged_entry(target) as staging:
        build_random_model(architecture, dtype, seed, corpus, staging)
    return target


def filled_tokenizer(corpus: list[str], vocab_size: int):
    """The embedded BPE (trained on ``corpus``) grown to ``vocab_size`` entries with filler tokens that
    encoding never produces and decoding turns into ``<wN>``."""
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415 - seconds to import; only building needs it

    bpe = train_tokenizer(corpus, BPE_ENTRIES)
    state = json.loads(bpe.backend_tokenizer.to_str())
    vocab = state["model"]["vocab"]
    taken = len(bpe)  # BPE entries and special tokens
    if vocab_size < taken:
        raise ConfigError(
            f"model.architecture.vocab_size={vocab_size}: smaller than the embedded tokenizer's {taken} entries"
        )
    for token_id in range(taken, vocab_size):
        vocab[f"<w{token_id}>"] = token_id  # ASCII only: the byte-level decoder maps it to itself

    fast = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(state)),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_random_model(
    architecture: dict, dtype: str, seed: int, corpus: list[str], out_dir: str | os.PathLike
) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig  # noqa: PLC0415 - seconds to import

    tokenizer = filled_tokenizer(corpus, int(architecture["vocab_size"]))
    special = dict(
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    fields = {k: v for k, v in architecture.items() if k != "model_type"}
    try:
        config = AutoConfig.for_model(architecture["model_type"], **fields, **special)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"model.architecture: {err}") from None
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype(dtype))  # initialised in the dtype it is saved in: no float32 copy
    try:
        model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.set_default_dtype(default)
    model.generation_config = GenerationConfig(**special)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
