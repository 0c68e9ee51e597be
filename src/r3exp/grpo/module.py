"""The LightningModule: plumbing around the GRPO math. It draws on-policy batches, computes log-probs,
calls :mod:`r3exp.grpo.functions`, logs the returned metrics and pushes new weights to the engine."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import lightning as L
import torch
from lightning.pytorch.utilities import grad_norm

from r3exp.errors import ConfigError
from r3exp.grpo import functions as F
from r3exp.models.export import hf_state_dict, is_peft, merged_lora


@dataclass
class GRPOLoss:
    """Loss settings (names as in TRL's ``GRPOConfig``).

    epsilon / epsilon_high: lower / upper clip of the importance ratio (PPO; DAPO's clip-higher sets
        ``epsilon_high`` > ``epsilon`` to keep exploration alive). ``None`` means ``epsilon``.
    beta: weight of the k3 KL to the frozen initial policy; 0 loads no reference model.
    loss_type: ``grpo`` (per-sequence mean), ``dr_grpo`` (constant normaliser), ``dapo`` (token mean).
    scale_rewards: ``group``, ``batch`` or ``none`` (see ``group_advantages``).
    temperature: the rollout sampling temperature, applied to the trainer's logits too.
    """

    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.0
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    temperature: float = 1.0

    def __post_init__(self):
        if self.loss_type not in F.AGGREGATIONS:
            raise ConfigError(f"grpo.loss.loss_type={self.loss_type!r}; expected one of {sorted(F.AGGREGATIONS)}")
        if self.scale_rewards not in F.SCALE_REWARDS:
            raise ConfigError(f"grpo.loss.scale_rewards={self.scale_rewards!r}; expected one of {F.SCALE_REWARDS}")
        if self.epsilon_high is None:
            self.epsilon_high = self.epsilon


class R3GRPOModule(L.LightningModule):
    """Masked GRPO on reflection tokens.

    Args:
        policy: the causal LM (peft-wrapped for LoRA).
        engine: the rollout engine whose weights follow the policy (``update_weights``).
        optimizer / scheduler: partials completed with the parameters / optimizer.
        loss: :class:`GRPOLoss`.
        mu: optimizer steps per rollout batch (GRPO's μ; 1 is fully on-policy).
        max_reflection_tokens: the reflection ``max_tokens`` (``dr_grpo``'s normaliser).
    """

    def __init__(self, policy: torch.nn.Module, engine, optimizer: Callable, loss: GRPOLoss,
                 scheduler: Callable | None = None, mu: int = 1, max_reflection_tokens: int = 128):
        super().__init__()
        self.policy, self.engine, self.loss_cfg = policy, engine, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.mu, self.max_reflection_tokens = mu, max_reflection_tokens
        self.reference = None
        if loss.beta != 0.0 and not is_peft(policy):
            self.reference = copy.deepcopy(policy).eval().requires_grad_(False)
        self.rollouts: list[dict] = []  # the micro-batches of the current optimizer step(s)
        self.rollout_step = 0  # the policy version (global step) that generated ``rollouts``
        self._calls = 0  # training_step calls since the start of this fit
        self.synced_version = -1  # the policy version the engine holds
        self.last_batch_stats: dict[str, float] = {}
        self.last_sync_seconds = 0.0  # read by r3exp.tracking.StepTimer
        self.last_trained_tokens = 0
        self.drew_rollout = False  # this call drew the rollouts (the first call of a cycle)
        self.finished_rollout = False  # this call was the last of the cycle (all mu x accumulation calls)
        self.step_metrics: dict[str, float] = {}  # everything logged since the rollouts were drawn

    # -- weight sync -----------------------------------------------------------------------------
    @torch.no_grad()
    def sync_engine(self) -> float:
        """Push the (merged) policy weights to the engine as version ``global_step``; returns seconds."""
        start = time.perf_counter()
        with merged_lora(self.policy):
            self.engine.update_weights(hf_state_dict(self.policy))
        self.engine.policy_version = self.global_step
        self.synced_version = self.global_step
        return time.perf_counter() - start

    def on_train_start(self) -> None:
        self.policy.train()
        self._calls = 0
        self.sync_engine()  # a resumed run's engine must hold the checkpoint's weights

    def on_train_end(self) -> None:
        if self.synced_version != self.global_step:
            self.sync_engine()  # the engine ends with the trained weights, for evaluation

    # -- the step --------------------------------------------------------------------------------
    def _next_rollouts(self, dataloader_iter: Iterator) -> None:
        """Draw the micro-batches of the next optimizer step(s), generated with the current weights."""
        if self.synced_version != self.global_step:
            self.last_sync_seconds = self.sync_engine()
            self._log({"time/sync_seconds": self.last_sync_seconds})
        accumulation = self.trainer.accumulate_grad_batches
        self.rollouts = [next(dataloader_iter)[0] for _ in range(accumulation)]
        self.rollout_step = self.global_step
        for rollout in self.rollouts:
            version = int(rollout["policy_version"].max()) if rollout["policy_version"].numel() else self.global_step
            if version != self.global_step:
                raise RuntimeError(f"off-policy batch: sampled with version {version}, policy at {self.global_step}")
        tokens = sum(int(r["reflection_mask"].sum()) for r in self.rollouts)
        for rollout in self.rollouts:
            rollout["num_items"] = tokens / accumulation  # dapo: normalise by the whole step's tokens
            rollout["advantages"] = F.group_advantages(rollout["rewards"], rollout["group_ids"],
                                                       self.loss_cfg.scale_rewards)

    def training_step(self, dataloader_iter: Iterator) -> torch.Tensor | None:
        accumulation = self.trainer.accumulate_grad_batches
        position = self._calls % (accumulation * self.mu)
        self._calls += 1
        self.drew_rollout = position == 0
        self.finished_rollout = position == accumulation * self.mu - 1
        if self.drew_rollout:
            self.step_metrics = {}
            self._next_rollouts(dataloader_iter)
        batch = self.rollouts[position % accumulation]
        self.last_batch_stats = batch["stats"]
        self._log(batch["stats"])
        self.last_trained_tokens = 0
        if not batch["has_signal"]:
            self._log({"train/skipped": 1.0})
            return None
        start = time.perf_counter()
        loss, metrics = self.batch_loss({k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()})
        self.last_trained_tokens = int(batch["attention_mask"].sum())
        metrics["train/forward_tokens_per_second"] = self.last_trained_tokens / (time.perf_counter() - start)
        metrics["train/skipped"] = 0.0
        self._log(metrics)
        self._log({"train/loss": loss.detach(), "reward": batch["stats"]["rollout/reward_mean"]}, prog_bar=True)
        return loss

    def _log(self, metrics: dict, prog_bar: bool = False) -> None:
        # batches come from dataloader_iter, so Lightning cannot infer a batch size: one step is one item
        self.log_dict(metrics, on_step=True, on_epoch=False, prog_bar=prog_bar, batch_size=1)
        self.step_metrics.update({k: float(v) for k, v in metrics.items()})

    def batch_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """GRPO loss of one micro-batch; all (N, T) tensors below are aligned on the predicted token."""
        input_ids, attention = batch["input_ids"], batch["attention_mask"]
        mask = batch["reflection_mask"][:, 1:]  # (N, T-1): position t predicts token t+1
        targets = input_ids[:, 1:]
        logits = self.policy(input_ids=input_ids, attention_mask=attention).logits[:, :-1]  # (N, T-1, V)
        logprobs = F.token_logprobs(logits, targets, self.loss_cfg.temperature)
        advantages = batch["advantages"]
        ref_logprobs = self._reference_logprobs(input_ids, attention, targets) if self.loss_cfg.beta else None
        loss, metrics = F.grpo_loss(
            logprobs, batch["behaviour_logprobs"][:, 1:], advantages, mask,
            epsilon=self.loss_cfg.epsilon, epsilon_high=self.loss_cfg.epsilon_high, loss_type=self.loss_cfg.loss_type,
            beta=self.loss_cfg.beta, ref_logprobs=ref_logprobs, max_tokens=self.max_reflection_tokens,
            num_items=batch.get("num_items"),
        )
        return loss, {f"train/{k}": v for k, v in metrics.items()}

    @torch.no_grad()
    def _reference_logprobs(self, input_ids, attention, targets) -> torch.Tensor:
        if is_peft(self.policy):  # the reference is the base model: the adapter switched off
            with self.policy.disable_adapter():
                logits = self.policy(input_ids=input_ids, attention_mask=attention).logits[:, :-1]
        else:
            logits = self.reference(input_ids=input_ids, attention_mask=attention).logits[:, :-1]
        return F.token_logprobs(logits, targets, self.loss_cfg.temperature)

    def on_before_optimizer_step(self, optimizer) -> None:
        norms = grad_norm(self.policy, norm_type=2)
        self._log({"train/grad_norm": norms.get("grad_2.0_norm_total", 0.0)})

    # -- optimizer -------------------------------------------------------------------------------
    def configure_optimizers(self):
        params = [p for p in self.policy.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=self.trainer.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def state_dict(self, *args, **kwargs):  # checkpoints hold the policy only, not the frozen reference
        return {k: v for k, v in super().state_dict(*args, **kwargs).items() if not k.startswith("reference.")}

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        return super().load_state_dict(state_dict, strict=False if self.reference is not None else strict, **kwargs)
