"""Policies: the embedded tiny model, GGUF models shipped in packages and hub models behind one loading path."""

from r3exp.models.gguf import GGUFSpec
from r3exp.models.loading import LoraSpec, ModelSpec, load_policy, load_tokenizer
from r3exp.models.tiny import TinySpec, ensure_tiny_model

__all__ = ["GGUFSpec", "LoraSpec", "ModelSpec", "TinySpec", "ensure_tiny_model", "load_policy", "load_tokenizer"]
