"""Log-probs only where the loss looks: the decoder runs to hidden states, and the output layer (the
vocabulary projection, most of a step's time and memory at a real vocabulary) is applied only at the
positions that predict reflection tokens, in chunks of bounded size.

Shapes: ``N`` rows, ``T`` tokens, ``H`` hidden size, ``V`` vocabulary, ``K`` selected positions.

Memory: the full-sequence path holds (N, T, V) logits and their log-softmax; this one holds (K, H) hidden
states and one (C, V) chunk of logits at a time. Under autograd each chunk is checkpointed (its logits are
recomputed in the backward pass), so the backward holds one chunk too. The idea is TRL's
``logits_to_keep`` and Liger's chunked output layer, extended to per-row positions.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from r3exp.models.export import is_peft

# config attributes of models whose forward changes the logits after the output layer (Gemma 2/3, Cohere,
# Granite): the decoder + output layer path would silently differ from the model's own logits
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def decoder_and_output_layer(policy) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(decoder, output layer) of a Hugging Face causal LM, through a peft wrapper (whose LoRA layers are
    injected into the base model, so the decoder runs with the adapter, or without under
    ``disable_adapter``). Tied embeddings need nothing special: the output layer's weight is the
    embedding's parameter, and its gradient flows there."""
    model = policy.get_base_model() if is_peft(policy) else policy
    for name in LOGIT_TRANSFORMS:
        if getattr(model.config, name, None) not in (None, 1, 1.0):
            raise NotImplementedError(
                f"{type(model).__name__} transforms its logits ({name}="
                f"{getattr(model.config, name)}), which r3exp's reflection-only log-probs "
                "do not apply yet"
            )
    decoder, output_layer = model.get_decoder(), model.get_output_embeddings()
    if decoder is None or output_layer is None:
        raise TypeError(f"{type(model).__name__}: no decoder / output embeddings; r3exp trains causal LMs")
    return decoder, output_layer


def _chunk_logprobs(
    hidden: torch.Tensor, targets: torch.Tensor, output_layer: torch.nn.Module, temperature: float
) -> torch.Tensor:
    """(C,) ``log softmax(output_layer(hidden) / temperature)[targets]``, in float32."""
    logits = output_layer(hidden).float() / temperature  # (C, V)
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def selected_logprobs(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    output_layer: torch.nn.Module,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """(K,) log-prob of ``targets[k]`` given ``hidden[k]`` (K, H), ``chunk_size`` positions at a time."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size}; expected >= 1")
    needs_grad = torch.is_grad_enabled() and (
        hidden.requires_grad or any(p.requires_grad for p in output_layer.parameters())
    )
    pieces = []
    for start in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[start : start + chunk_size], targets[start : start + chunk_size]
        if needs_grad and hidden.shape[0] > chunk_size:  # one chunk: nothing to bound, no recompute
            pieces.append(checkpoint(_chunk_logprobs, h, y, output_layer, temperature, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(h, y, output_layer, temperature))
    return torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)


def masked_token_logprobs(
    policy,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    share_prompts: bool = False,
) -> torch.Tensor:
    """(N, T-1) log-prob of ``input_ids[:, t+1]`` at every position where ``mask[:, t]`` (aligned on the
    predicted token, as ``grpo_loss`` takes it), exactly 0 elsewhere: those logits are never computed.

    Equals ``token_logprobs(policy(input_ids).logits[:, :-1], input_ids[:, 1:], temperature)`` on the mask.
    ``policy`` may also be a :class:`ReflectionLogprobs` (the root of a sharded policy), which is called.
    ``share_prompts``: rows with the same prompt run it once (:func:`shared_prompt_logprobs`); the same values.
    """
    if isinstance(policy, ReflectionLogprobs):
        return policy(input_ids, attention_mask, mask, temperature, chunk_size)
    if share_prompts and can_share_prompts(policy):
        return shared_prompt_logprobs(policy, input_ids, attention_mask, mask, temperature, chunk_size)
    decoder, output_layer = decoder_and_output_layer(policy)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    selected = hidden[:, :-1][mask]  # (K, H)
    values = selected_logprobs(selected, input_ids[:, 1:][mask], output_layer, temperature, chunk_size)
    return torch.zeros(mask.shape, dtype=values.dtype, device=values.device).masked_scatter(mask, values)


def prompt_groups(input_ids: torch.Tensor, mask: torch.Tensor) -> list[tuple[int, list[int]]]:
    """Rows that share their prompt, as (prompt length, row indices), in order of first appearance. A row's
    prompt is every token before its first scored token (``mask`` aligned on the predicted token, so the
    first scored token is ``first True of mask[r]`` + 1); rows with nothing scored belong to no group."""
    groups: dict[tuple[int, ...], list[int]] = {}
    scored = mask.any(-1).tolist()
    firsts = mask.int().argmax(-1).tolist()
    for row, (has_scored, first) in enumerate(zip(scored, firsts)):
        if has_scored:
            groups.setdefault(tuple(input_ids[row, : first + 1].tolist()), []).append(row)
    return [(len(prompt), rows) for prompt, rows in groups.items()]


def can_share_prompts(policy) -> bool:
    """The decoder can run a prompt once and continue every row from its key/value cache: not under
    gradient checkpointing, where Hugging Face models drop the cache."""
    model = policy.get_base_model() if is_peft(policy) else policy
    return not getattr(model, "is_gradient_checkpointing", False)


def shared_prompt_logprobs(
    policy,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """:func:`masked_token_logprobs` with each shared prompt run once: a GRPO group's G rows share their
    prompt (the task prompt; under R3 also the failed attempt and the reflection prompt), which is most of
    each row. Two decoder calls for all groups (:func:`prompt_groups`) of the batch: the prompts, right-padded
    to the longest, then every row's own tokens (its continuation), from its group's key/value cache at the
    positions after its prompt (the cache slots of a shorter prompt's padding are masked out). Autograd flows through
    the cache into the one prompt pass, so the gradient is the same as running every row whole (a test checks
    values and gradients). Rows are right-padded, as everywhere in r3exp."""
    decoder, output_layer = decoder_and_output_layer(policy)
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    groups = prompt_groups(input_ids, mask)
    if not groups:
        return out
    device = input_ids.device
    prompts = torch.tensor([length for length, _ in groups], device=device)  # (n,)
    rows = torch.tensor([row for _, members in groups for row in members], device=device)  # (R,) grouped order
    row_group = torch.repeat_interleave(
        torch.arange(len(groups), device=device), torch.tensor([len(members) for _, members in groups], device=device)
    )
    row_prompt = prompts[row_group]  # (R,)
    width, continuation = int(prompts.max()), int((attention_mask[rows].sum(-1) - row_prompt).max())
    # the prompts, (n, P): each group's first row up to its prompt length, right-padded
    first_rows = torch.tensor([members[0] for _, members in groups], device=device)
    prompt_positions = torch.arange(width, device=device)
    prompt_mask = (prompt_positions < prompts.unsqueeze(1)).long()
    prompt_ids = input_ids[first_rows, :width] * prompt_mask
    prompt = decoder(input_ids=prompt_ids, attention_mask=prompt_mask, use_cache=True)
    # every row's continuation (its own tokens), (R, C), from position prompt_length on
    positions = row_prompt.unsqueeze(1) + torch.arange(continuation, device=device)  # (R, C)
    source = positions.clamp(max=input_ids.shape[1] - 1)
    continuation_mask = attention_mask[rows].gather(1, source) * (positions < input_ids.shape[1])
    continuation_ids = input_ids[rows].gather(1, source) * continuation_mask
    cache = prompt.past_key_values
    cache.batch_select_indices(row_group)
    rest = decoder(
        input_ids=continuation_ids,
        attention_mask=torch.cat([prompt_mask[row_group], continuation_mask], 1),
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
    ).last_hidden_state  # (R, C, H)
    # the hidden state at each scored position t (it predicts token t + 1): from the prompt pass where t is in
    # the prompt (its last token), else from the row's own pass
    slot = torch.full((mask.shape[0],), -1, dtype=torch.long, device=device)
    slot[rows] = torch.arange(len(rows), device=device)
    scored_rows, scored_positions = mask.nonzero(as_tuple=True)  # row-major, as masked_scatter fills
    slots, starts = slot[scored_rows], row_prompt[slot[scored_rows]]
    in_prompt = scored_positions < starts
    flat_index = torch.where(
        in_prompt,
        row_group[slots] * width + scored_positions,
        prompts.numel() * width + slots * continuation + (scored_positions - starts).clamp(min=0),
    )
    hidden = torch.cat([prompt.last_hidden_state.reshape(-1, rest.shape[-1]), rest.reshape(-1, rest.shape[-1])])
    values = selected_logprobs(
        hidden.index_select(0, flat_index), input_ids[:, 1:][mask], output_layer, temperature, chunk_size
    )
    return out.masked_scatter(mask, values)


class ReflectionLogprobs(torch.nn.Module):
    """:func:`masked_token_logprobs` as a module's ``forward``, so that FSDP2 can make it the root of a
    sharded policy: the root's hooks gather the embedding, final norm and output layer around the whole
    computation (the decoder layers are units of their own). It owns no parameters of its own.

    Under FSDP every rank must run the same collectives, so a call always reaches every parameter: where
    ``mask`` selects nothing, one position is computed and weighted 0 (its gradient is exactly 0).
    """

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        self.policy = policy

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        mask: torch.Tensor,
        temperature: float = 1.0,
        chunk_size: int = 1024,
    ) -> torch.Tensor:
        if mask.any():
            return masked_token_logprobs(self.policy, input_ids, attention_mask, mask, temperature, chunk_size)
        placeholder = torch.zeros_like(mask)
        placeholder[0, 0] = True
        return 0.0 * masked_token_logprobs(self.policy, input_ids, attention_mask, placeholder, temperature, chunk_size)
