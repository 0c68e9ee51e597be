"""The embedded tiny model: a Qwen2-architecture causal LM and a byte-level BPE tokenizer, built here.

Built deterministically from a spec and a text corpus the first time it is needed, saved in Hugging
Face format under a content-addressed cache directory, and from then on loaded exactly like a hub
model (``AutoModelForCausalLM`` / ``AutoTokenizer``).

The tokenizer is trained with Qwen2's own pre-tokenization pipeline (NFC, Qwen's split regex,
byte-level without regex) because ``AutoTokenizer`` returns ``Qwen2Tokenizer`` for a qwen2 config,
which rebuilds the normalizer and pre-tokenizer: a tokenizer trained with any other pipeline would
silently re-tokenize differently after reloading.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from r3exp.cache_entries import staged_entry

QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
BUILD_VERSION = 1  # bump when the build procedure changes, to invalidate caches


@dataclass(frozen=True)
class TinySpec:
    """Architecture of the embedded model. The defaults give about 3M parameters."""

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 688
    vocab_size: int = 1024
    max_position_embeddings: int = 1024
    seed: int = 0


def cache_key(spec: TinySpec, corpus: list[str]) -> str:
    digest = hashlib.sha256(json.dumps([BUILD_VERSION, asdict(spec), corpus]).encode()).hexdigest()
    return f"tiny-h{spec.hidden_size}-l{spec.num_layers}-v{spec.vocab_size}-{digest[:10]}"


def ensure_tiny_model(spec: TinySpec, corpus: Iterable[str], cache_root: str | os.PathLike) -> Path:
    """The directory of the tiny model for ``spec`` and ``corpus``, building it if not cached."""
    corpus = list(corpus)
    target = Path(cache_root) / cache_key(spec, corpus)
    if (target / "config.json").exists():
        return target
    with staged_entry(target) as staging:
        build_tiny_model(spec, corpus, staging)
    return target


def train_tokenizer(corpus: list[str], vocab_size: int):
    """A byte-level BPE with Qwen2's pre-tokenization and the ChatML chat template."""
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415 - seconds to import; only building needs it

    tokenizer = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_model(spec: TinySpec, corpus: list[str], out_dir: str | os.PathLike) -> None:
    """Train the tokenizer, initialise the model with ``spec.seed``, save both to ``out_dir``."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM  # noqa: PLC0415 - seconds to import

    tokenizer = train_tokenizer(corpus, spec.vocab_size)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id, bos_token_id=None
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
