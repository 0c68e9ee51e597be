import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

from r3exp.models import TinySpec, ensure_tiny_model, load_tokenizer

TEXTS = [
    "Using the numbers [12, 7, 93], write an equation that equals 55.",
    "<answer> (93 - 12) / 7 </answer>  ümlaut 東京 \n\n tabs\tand  spaces",
    "I used 7 twice; my equation evaluated to 81, which is 26 away from 55.",
]


def test_tokenizer_ids_round_trip_through_autotokenizer(tiny_path, tokenizer):
    """AutoTokenizer gives Qwen2Tokenizer (which rebuilds the pre-tokenizer); ids must not change."""
    raw = Tokenizer.from_file(str(tiny_path / "tokenizer.json"))
    for text in TEXTS:
        assert tokenizer.encode(text, add_special_tokens=False) == raw.encode(text, add_special_tokens=False).ids
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": TEXTS[0]}], add_generation_prompt=True, tokenize=False
    )
    assert chat.endswith("<|im_start|>assistant\n")
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": TEXTS[0]}], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert list(ids) == raw.encode(chat, add_special_tokens=False).ids
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id != tokenizer.eos_token_id


def test_build_is_deterministic_and_cached(tmp_path, tiny_path):
    spec = TinySpec(hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=128, vocab_size=400)
    corpus = TEXTS * 20
    a = ensure_tiny_model(spec, corpus, tmp_path / "a")
    b = ensure_tiny_model(spec, corpus, tmp_path / "b")
    assert a.name == b.name
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    wa = AutoModelForCausalLM.from_pretrained(a).state_dict()
    wb = AutoModelForCausalLM.from_pretrained(b).state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    mtime = (a / "config.json").stat().st_mtime
    assert ensure_tiny_model(spec, corpus, tmp_path / "a") == a and (a / "config.json").stat().st_mtime == mtime


def test_default_tiny_model_size_and_architecture(tiny_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    params = sum(p.numel() for p in model.parameters())
    assert model.config.model_type == "qwen2"
    assert 1_000_000 <= params <= 5_000_000


def test_hub_model_unreachable_is_one_clear_error(monkeypatch):
    import pytest

    from r3exp.errors import ModelUnavailable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # stands in for "no network": the hub cannot be reached here
    with pytest.raises(ModelUnavailable, match="Qwen/Qwen2-1.5B-Instruct.*model=tiny"):
        load_tokenizer("Qwen/Qwen2-1.5B-Instruct")
