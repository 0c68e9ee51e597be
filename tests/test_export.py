"""The exported policy is the trained one: a LoRA policy's merged/ holds base + adapter."""

from __future__ import annotations

import copy

import torch
from transformers import AutoModelForCausalLM

from r3exp.models.export import hf_state_dict, merged_weights, save_policy
from r3exp.rollout.engines.hf_engine import HFEngine
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


def bf16_lora_policy():
    from peft import LoraConfig, get_peft_model

    base = causal_lm(tied=False, lora=False).to(torch.bfloat16)
    return get_peft_model(
        base,
        LoraConfig(
            r=4,
            lora_alpha=8,
            init_lora_weights=False,
            task_type="CAUSAL_LM",
            target_modules=["q_proj", "v_proj", "down_proj"],
        ),
        autocast_adapter_dtype=True,
    )  # float32 adapters over the bf16 base, as load_policy


def test_merged_weights_leave_a_bf16_base_untouched_where_merging_in_place_moved_it():
    """A weight push merges the adapter into what the engine gets; the frozen bf16 base must stay bit for bit
    (peft's merge_adapter then unmerge_adapter rounds it twice: the base drifts with every push)."""
    policy = bf16_lora_policy()
    base = {n: t.clone() for n, t in policy.state_dict().items() if "lora_" not in n}
    for _ in range(5):
        pushed = hf_state_dict(policy)
    assert all(torch.equal(policy.state_dict()[n], t) for n, t in base.items())  # untouched, exactly
    expected = copy.deepcopy(policy).merge_and_unload().state_dict()  # peft's own merge, on a copy
    assert pushed.keys() == expected.keys()
    for name, tensor in expected.items():
        assert tensor.dtype == pushed[name].dtype == torch.bfloat16
        assert torch.equal(pushed[name], tensor), name  # the same rounding as peft's merge
    # the old way, for contrast: merging in place and unmerging moves the base
    with torch.no_grad():
        policy.merge_adapter()
        policy.unmerge_adapter()
    assert sum(not torch.equal(policy.state_dict()[n], t) for n, t in base.items()) > 0


def test_a_pushed_stream_reaches_the_hf_engine_tensor_by_tensor(tmp_path, tokenizer):
    policy = bf16_lora_policy()
    policy.get_base_model().save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    engine = HFEngine(str(tmp_path / "base"), dtype="bfloat16", device="cpu")
    engine.update_weights(merged_weights(policy))  # a generator: the engine copies each as it comes
    held = engine.model.state_dict()
    for name, tensor in hf_state_dict(policy).items():
        assert torch.equal(held[name], tensor), name
    assert engine.policy_version == 1
