"""Training precision: full fine-tuning in pure bf16 loses its updates; r3exp's two settings
(``model.master_weights``: float32 master weights, or bf16 weights with Kahan-compensated AdamW) keep them.

A tiny random Qwen2 is saved in float32 and loaded through r3exp's loader (``r3exp.models.loading``) in
bfloat16, as ``model=qwen2_7b`` loads its weights; the optimizer is the one ``optimizer=adamw`` builds
(``r3exp.grpo.optimizers.adamw``); the forward and backward run under CPU bf16 autocast, as under
``trainer.precision=bf16-mixed``. The reference is the same training in float32 throughout.
"""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from r3exp.errors import ConfigError
from r3exp.grpo.optimizers import adamw, check_updates_kept, compensates
from r3exp.models.loading import LoraSpec, load_policy

LR, STEPS = 1e-5, 30


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    config = Qwen2Config(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_qwen2")
    Qwen2ForCausalLM(config).save_pretrained(path)
    return path


def train(model, optimizer, bf16_compute: bool, steps: int = STEPS) -> tuple[list[float], dict[str, torch.Tensor]]:
    """``steps`` AdamW steps on one fixed batch; the losses, and each weight's total change (float32). Under
    Kahan summation the change counts the compensation buffer too (weight + buffer is the sum it keeps)."""
    ids = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(1))
    start = {name: p.detach().float().clone() for name, p in model.named_parameters()}
    losses = []
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_compute):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    compensation = {p: optimizer.state[p].get("kahan_comp") for p in model.parameters()}
    return losses, {
        name: p.detach().float() - start[name] + (compensation[p].float() if compensation[p] is not None else 0.0)
        for name, p in model.named_parameters()
    }


def trainable(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


@pytest.fixture(scope="module")
def reference(saved_model):
    model = load_policy(saved_model, "float32")
    return train(model, adamw(trainable(model), lr=LR, betas=(0.9, 0.99)), bf16_compute=False)


def share_moved(delta: dict[str, torch.Tensor]) -> float:
    return sum(int((d != 0).sum()) for d in delta.values()) / sum(d.numel() for d in delta.values())


def relative_error(delta: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    """|change - reference change| / |reference change| over all weights together."""
    error = sum(float(((delta[n] - ref[n]) ** 2).sum()) for n in ref) ** 0.5
    return error / sum(float((ref[n] ** 2).sum()) for n in ref) ** 0.5


def test_pure_bf16_adamw_rounds_most_updates_away(saved_model, reference):
    """The defect: bf16 weights stepped by plain torch.optim.AdamW at lr 1e-5 (what model.dtype=bfloat16 full
    fine-tuning did before). Most weights never move, and the loss falls a fraction of the reference's."""
    model = load_policy(saved_model, "bfloat16", master_weights="kahan")
    assert {p.dtype for p in trainable(model)} == {torch.bfloat16}
    losses, delta = train(model, torch.optim.AdamW(trainable(model), lr=LR, betas=(0.9, 0.99)), bf16_compute=True)
    ref_losses, ref_delta = reference
    assert share_moved(ref_delta) > 0.99
    assert share_moved(delta) < 0.3  # measured: 16% of the weights moved
    assert relative_error(delta, ref_delta) > 0.8  # measured 0.93
    assert losses[0] - losses[-1] < 0.5 * (ref_losses[0] - ref_losses[-1])  # measured 0.0070 vs 0.0370


@pytest.mark.parametrize(
    "master_weights, dtype, optimizer_module, tolerance",
    [
        ("float32", torch.float32, "torch.optim", 0.05),  # measured 0.025 (bf16 compute, float32 weights)
        ("kahan", torch.bfloat16, "optimi", 0.08),  # measured 0.040 (weight + compensation; the bf16 weights alone
        # lag it by under half an ulp each: 0.143 of the change after 30 steps, 0.077 after 50). Pure bf16: 0.93
    ],
)
def test_both_precision_settings_track_the_float32_reference(
    saved_model, reference, master_weights, dtype, optimizer_module, tolerance
):
    model = load_policy(saved_model, "bfloat16", master_weights=master_weights)
    assert {p.dtype for p in trainable(model)} == {dtype}
    optimizer = adamw(trainable(model), lr=LR, betas=(0.9, 0.99))
    assert type(optimizer).__module__.startswith(optimizer_module)
    check_updates_kept(optimizer)  # what R3GRPOModule.configure_optimizers runs: no error
    losses, delta = train(model, optimizer, bf16_compute=True)
    ref_losses, ref_delta = reference
    assert share_moved(delta) > 0.95
    assert relative_error(delta, ref_delta) < tolerance
    if master_weights == "kahan":  # the bf16 weights the model computes with: within half an ulp of that sum
        weights_alone = {n: delta[n] - optimizer.state[p]["kahan_comp"].float() for n, p in model.named_parameters()}
        assert relative_error(weights_alone, ref_delta) < 0.25  # measured 0.143
    # the loss falls as the reference's (measured: 0.0371 and 0.0353 against 0.0370)
    assert abs((losses[0] - losses[-1]) - (ref_losses[0] - ref_losses[-1])) < 0.1 * (ref_losses[0] - ref_losses[-1])


def test_an_optimizer_that_would_round_bf16_updates_away_is_refused(saved_model):
    model = load_policy(saved_model, "bfloat16", master_weights="kahan")
    with pytest.raises(
        ConfigError,
        match=r"AdamW would update [\d,]+ trainable bfloat16 parameters uncompensated.*"
        r"model.master_weights=float32",
    ):
        check_updates_kept(torch.optim.AdamW(trainable(model), lr=LR))
    import optimi

    assert not compensates(optimi.AdamW(trainable(model), lr=LR, kahan_sum=False))
    with pytest.raises(ConfigError):
        check_updates_kept(optimi.AdamW(trainable(model), lr=LR, kahan_sum=False))


def test_adamw_hands_its_settings_to_the_kahan_optimizer(saved_model):
    model = load_policy(saved_model, "bfloat16", master_weights="kahan")
    optimizer = adamw(trainable(model), lr=3e-6, betas=(0.8, 0.95), eps=1e-7, weight_decay=0.05)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["beta1"], group["beta2"], group["eps"], group["weight_decay"]) == (
        3e-6,
        0.8,
        0.95,
        1e-7,
        0.05,
    )
    assert group["kahan_sum"] is True and group["decouple_lr"] is False  # decay scaled by lr, as PyTorch's
    assert compensates(optimizer)


def test_a_full_fine_tuning_reference_is_kept_in_the_models_dtype(saved_model):
    """With beta > 0, float32 master weights of a bf16 model keep a bf16 frozen reference (no master copy)."""
    from r3exp.grpo.module import GRPOLoss, R3GRPOModule

    policy = load_policy(saved_model, "bfloat16", master_weights="float32")
    module = R3GRPOModule(policy, engine=None, optimizer=adamw, loss=GRPOLoss(beta=0.04), reference_dtype="bfloat16")
    assert {p.dtype for p in module.policy.parameters()} == {torch.float32}
    assert {p.dtype for p in module.reference.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in module.reference.parameters())


def test_the_kahan_optimizer_is_pytorchs_adamw_rule(saved_model):
    """optimi.AdamW (Kahan off, float32 weights) and torch.optim.AdamW take the same steps: the kahan setting
    changes how updates are added, not the update rule (bias correction, eps, decoupled weight decay)."""
    import optimi

    torch.manual_seed(0)
    weights = [torch.randn(64, 32), torch.randn(32)]
    ours = [torch.nn.Parameter(w.clone()) for w in weights]
    theirs = [torch.nn.Parameter(w.clone()) for w in weights]
    settings = dict(lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    steppers = [
        optimi.AdamW(ours, decouple_lr=False, kahan_sum=False, **settings),
        torch.optim.AdamW(theirs, **settings),
    ]
    for step in range(20):
        grads = [torch.randn_like(w) for w in weights]
        for params, optimizer in zip((ours, theirs), steppers):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("master_weights", ["float32", "kahan"])
def test_lora_adapters_are_float32_over_a_bf16_base(saved_model, master_weights):
    model = load_policy(saved_model, "bfloat16", lora=LoraSpec(r=4, alpha=8), master_weights=master_weights)
    adapters = {n: p for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    assert adapters and all("lora_" in n for n in adapters)
    assert {p.dtype for p in adapters.values()} == {torch.float32}
    assert {p.dtype for p in frozen.values()} == {torch.bfloat16}
    optimizer = adamw(list(adapters.values()), lr=LR)
    assert isinstance(optimizer, torch.optim.AdamW)  # float32 adapters: plain AdamW, no extra needed
    check_updates_kept(optimizer)


def test_full_fine_tuning_under_float32_master_weights_loads_float32(saved_model):
    model = load_policy(saved_model, "bfloat16", master_weights="float32")
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_an_unknown_master_weights_setting_names_the_key(saved_model):
    with pytest.raises(ConfigError, match=r"model.master_weights='fp8' is not one of \['float32', 'kahan'\]"):
        load_policy(saved_model, "bfloat16", master_weights="fp8")
