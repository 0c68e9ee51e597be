"""The exported policy is the trained one: a LoRA policy's merged/ holds base + adapter."""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from r3exp.models.export import save_policy
from tests.test_micro_batches import causal_lm


def test_a_lora_policy_exports_its_merged_weights_and_its_adapter(tmp_path, tokenizer):
    policy = causal_lm(tied=False, lora=True).eval()  # random B: the adapter changes the outputs
    ids = torch.tensor([[5, 17, 3, 42, 8, 11]])
    with torch.no_grad():
        trained = policy(input_ids=ids).logits
        with policy.disable_adapter():
            base = policy(input_ids=ids).logits
    assert (trained - base).abs().max() > 1e-3
    paths = save_policy(policy, tokenizer, tmp_path)
    with torch.no_grad():
        exported = AutoModelForCausalLM.from_pretrained(paths["merged"]).eval()(input_ids=ids).logits
    torch.testing.assert_close(exported, trained, rtol=1e-5, atol=1e-5)  # not the base weights
    assert (paths["adapter"] / "adapter_model.safetensors").exists()
    with torch.no_grad():  # and the policy itself is left as it was (unmerged, adapter active)
        torch.testing.assert_close(policy(input_ids=ids).logits, trained, rtol=0, atol=1e-6)  # merge, unmerge: rounding
