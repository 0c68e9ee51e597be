"""The LightningModule: plumbing around the GRPO math. It draws on-policy rollouts, has
:mod:`r3exp.grpo.step` accumulate their gradients, steps the optimizer, logs the returned metrics and
pushes new weights to the engine."""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import lightning as L
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.device_mesh import init_device_mesh

from r3exp import distributed, keys
from r3exp.errors import ConfigError
from r3exp.grpo import functions as F
from r3exp.grpo.logprobs import can_share_prompts
from r3exp.grpo.optimizers import check_updates_kept
from r3exp.grpo.sharding import gathered_hf_weights, shard_policy
from r3exp.grpo.step import (
    LossSettings,
    StepRows,
    accumulate_gradients,
    correct_for_engine,
    micro_batch_count,
    reference_logprobs,
    share_of_engine,
    step_rows,
)
from r3exp.grpo.step_metrics import merge_rank_metrics, merge_rank_rollout_stats, merge_rollout_stats
from r3exp.models.export import is_peft, merged_weights, save_policy, save_weights
from r3exp.records import StepRecord
from r3exp.rollout.batching import Rollout
from r3exp.rollout.engines.interface import GenerationEngine

BEHAVIOURS = ("engine", "trainer")


@dataclass
class GRPOLoss:
    """Loss settings (names as in TRL's ``GRPOConfig``).

    Attributes:
        epsilon: lower clip of the importance ratio (PPO).
        epsilon_high: upper clip (DAPO's clip-higher sets it above ``epsilon`` to keep exploration alive);
            ``None`` means ``epsilon``.
        beta: weight of the k3 KL to the frozen initial policy; 0 loads no reference model.
        loss_type: ``grpo`` (per-sequence mean), ``dr_grpo`` (constant normaliser), ``dapo`` (token mean).
        scale_rewards: ``group``, ``batch`` or ``none`` (see ``group_advantages``).
        temperature: the rollout sampling temperature, applied to the trainer's logits too.
        behaviour: whose log-probs of the sampled tokens the clipped ratio is taken against: ``engine`` (the
            engine's, returned with the samples) or ``trainer`` (one no-grad pass of the trainer over the
            step's rows before its first update; the ratio then measures only the policy's own change).
        correction: weight each token by the engine/trainer mismatch ``w = π_trainer / π_engine`` of the
            sampled token: ``none``, ``truncate`` (``min(w, correction_cap)``) or ``mask`` (tokens with ``w``
            outside ``[correction_low, correction_cap]`` leave the loss). Needs the trainer's pass too.
        correction_cap: the truncation cap ``C`` (and the mask's upper bound).
        correction_low: the mask's lower bound.
        off_policy_shaping: γ of the shaped loss ``-A · p / (p + γ)`` that trains off-policy rows (the
            distilled retries of ``rollout.protocol=r3_grpo_distill``; LUFFY's and Critique-GRPO's 0.1).
    """

    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.0
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    temperature: float = 1.0
    behaviour: str = "engine"
    correction: str = "none"
    correction_cap: float = 2.0
    correction_low: float = 0.5
    off_policy_shaping: float = 0.1

    def __post_init__(self):
        if self.loss_type not in F.AGGREGATIONS:
            raise ConfigError(f"grpo.loss.loss_type={self.loss_type!r}; expected one of {sorted(F.AGGREGATIONS)}")
        if self.scale_rewards not in F.SCALE_REWARDS:
            raise ConfigError(f"grpo.loss.scale_rewards={self.scale_rewards!r}; expected one of {F.SCALE_REWARDS}")
        if self.epsilon_high is None:
            self.epsilon_high = self.epsilon
        if self.behaviour not in BEHAVIOURS:
            raise ConfigError(f"grpo.loss.behaviour={self.behaviour!r}; expected one of {BEHAVIOURS}")
        if self.correction not in F.CORRECTIONS:
            raise ConfigError(f"grpo.loss.correction={self.correction!r}; expected one of {F.CORRECTIONS}")
        if not 0 < self.correction_low <= 1 <= self.correction_cap:
            raise ConfigError(
                f"grpo.loss.correction_low={self.correction_low}, correction_cap={self.correction_cap}: "
                "expected 0 < correction_low <= 1 <= correction_cap"
            )
        if not self.off_policy_shaping > 0:
            raise ConfigError(
                f"grpo.loss.off_policy_shaping={self.off_policy_shaping}: expected > 0 (the γ of p / (p + γ))"
            )

    @property
    def needs_trainer_pass(self) -> bool:
        """The step's rows go through the trainer once, without gradients, before the first update."""
        return self.behaviour == "trainer" or self.correction != "none"


class R3GRPOModule(L.LightningModule):
    """Masked GRPO on reflection tokens, one optimizer step per ``training_step`` (manual optimization:
    the step's rows go through token-budget micro-batches, see :mod:`r3exp.grpo.step`).

    Args:
        policy: the causal LM (peft-wrapped for LoRA).
        engine: the rollout engine whose weights follow the policy (``update_weights``); it sleeps while
            the trainer steps (``sleep``; a no-op where the engine cannot) and is woken by the next push.
        optimizer: a partial completed with the parameters.
        scheduler: a partial completed with the optimizer (None: a constant learning rate).
        loss: :class:`GRPOLoss`.
        mu: optimizer steps per rollout batch (GRPO's μ; 1 is fully on-policy).
        max_reflection_tokens: the reflection ``max_tokens`` (``dr_grpo``'s normaliser).
        rollouts_per_step: rollout batches (of ``rollout.examples_per_step`` examples each) drawn for one
            optimizer step; their rows are trained together.
        max_tokens_per_micro_batch: padded tokens (rows x longest row) one forward may hold; bounds the
            step's activation memory whatever the number of rows. None: all rows in one forward.
        logprob_chunk_size: reflection positions per output-layer chunk (bounds the (C, V) logits).
        max_grad_norm: clip the gradient's total 2-norm (None or 0: no clipping).
        sharded_compute_dtype: under ``trainer=fsdp``, the dtype in which the gathered weights compute
            (e.g. ``bfloat16`` over float32 weights); None: the weights' own dtype.
        reference_dtype: the frozen reference's weights dtype (``model.dtype``: the model as loaded); None: the
            policy's, which under ``model.master_weights=float32`` is float32.
        share_prompts: the rows of a group run their shared prompt once (the same values and gradients,
            fewer tokens: :func:`r3exp.grpo.logprobs.shared_prompt_logprobs`); off under gradient
            checkpointing and sharding, where every row runs whole.
        ranks: how the run's ranks share engines (the ranks of one engine split its rows); given at run time
            by the entry point, default one engine per rank.
    """

    def __init__(
        self,
        policy: torch.nn.Module,
        engine: GenerationEngine,
        optimizer: Callable,
        loss: GRPOLoss,
        scheduler: Callable | None = None,
        mu: int = 1,
        max_reflection_tokens: int = 128,
        rollouts_per_step: int = 1,
        max_tokens_per_micro_batch: int | None = 2048,
        logprob_chunk_size: int = 512,
        max_grad_norm: float | None = 1.0,
        sharded_compute_dtype: str | None = None,
        share_prompts: bool = True,
        ranks: distributed.Ranks | None = None,
        reference_dtype: str | None = None,
    ):
        super().__init__()
        for key, value in {
            "mu": mu,
            "rollouts_per_step": rollouts_per_step,
            "logprob_chunk_size": logprob_chunk_size,
            "max_tokens_per_micro_batch": max_tokens_per_micro_batch or 1,
        }.items():
            if value < 1:
                raise ConfigError(f"grpo.{key}={value}; expected >= 1")
        self.automatic_optimization = False  # micro-batches under a token budget: see training_step
        self.policy, self.engine, self.loss_cfg = policy, engine, loss
        self.ranks = ranks or distributed.Ranks()
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.mu, self.rollouts_per_step, self.max_grad_norm = mu, rollouts_per_step, max_grad_norm
        self.settings = LossSettings(
            loss.epsilon,
            loss.epsilon_high,
            loss.beta,
            loss.loss_type,
            loss.temperature,
            max_reflection_tokens,
            max_tokens_per_micro_batch,
            logprob_chunk_size,
            share_prompts=share_prompts and can_share_prompts(policy),
            off_policy_shaping=loss.off_policy_shaping,
        )
        self.reference = None
        if loss.beta != 0.0 and not is_peft(policy):
            self.reference = copy.deepcopy(policy).eval().requires_grad_(False)
            if reference_dtype:  # frozen: no master copy (float32 master weights keep a bf16 model's reference bf16)
                self.reference.to(getattr(torch, reference_dtype))
        self.sharded_compute_dtype = getattr(torch, sharded_compute_dtype, None) if sharded_compute_dtype else None
        if sharded_compute_dtype and not isinstance(self.sharded_compute_dtype, torch.dtype):
            raise ConfigError(
                f"grpo.sharded_compute_dtype={sharded_compute_dtype!r}: not a torch dtype "
                "(e.g. bfloat16, float16, float32)"
            )
        self.sharded = ShardedModels()  # FSDP (trainer=fsdp): the roots configure_model builds
        self.rollouts: list[Rollout] = []  # the rollouts of the current optimizer step(s), as the datamodule made them
        self.rollout_advantages: list[torch.Tensor] = []  # the advantage of each of their rows, rollout by rollout
        self.rows: StepRows | None = None  # their rows, merged, with advantages
        self.step_has_signal = False  # some rank's rows carry an advantage (all ranks train, or none)
        self.rollout_step = 0  # the policy version (global step) that generated ``rollouts``
        self._calls = 0  # training_step calls since the start of this fit
        self._sync_seconds = 0.0  # the weight push of the current step
        self.synced_version = -1  # the policy version the engine holds
        self.last_batch_stats: dict[str, float] = {}
        self.step_metrics: dict[str, float] = {}  # everything logged since the rollouts were drawn
        self.last_step: StepRecord | None = None  # published after every optimizer step, for callbacks
        self.phase_seconds: dict[str, float] = {}  # the trainer's parts of the current step (StepRecord)

    # -- weight sync -----------------------------------------------------------------------------
    @torch.no_grad()
    def sync_engine(self) -> float:
        """Push the (merged) policy weights to the engine as version ``global_step``; returns seconds.
        A sleeping engine wakes for the push (weights first, then its cache): never generate, then push."""
        start = time.perf_counter()
        if self.sharded.policy is not None:  # gathered one unit at a time, streamed into the engine
            self.engine.update_weights(gathered_hf_weights(self.sharded.policy))
        else:
            self.engine.update_weights(merged_weights(self.policy))  # streamed, one merged tensor at a time
        self.engine.policy_version = self.global_step
        self.synced_version = self.global_step
        return time.perf_counter() - start

    def _engine_is_current(self) -> bool:
        return self.synced_version == self.global_step and self.engine.holds_weights

    # -- sharding (trainer=fsdp) -------------------------------------------------------------------
    def configure_model(self) -> None:
        """Under Lightning's ``ModelParallelStrategy``: shard the policy (and a full fine-tuning reference)
        with FSDP2 over every rank (see :mod:`r3exp.grpo.sharding`). Other strategies: nothing to do."""
        if not isinstance(self.trainer.strategy, ModelParallelStrategy) or self.sharded.policy is not None:
            return
        mesh = init_device_mesh(self.trainer.strategy.root_device.type, (self.trainer.world_size,))
        self.settings.share_prompts = False  # the sharded root runs every row whole
        self.sharded.policy = shard_policy(self.policy, mesh, self.sharded_compute_dtype)
        if self.reference is not None:
            self.sharded.reference = shard_policy(self.reference, mesh, self.sharded_compute_dtype)

    @property
    def trained_model(self) -> torch.nn.Module:
        """What the step's log-probs run through: the policy, or the root of the sharded policy."""
        return self.sharded.policy if self.sharded.policy is not None else self.policy

    def _pad_to(self) -> int | None:
        """Sharded: the most micro-batches any rank runs this step (all ranks run that many)."""
        if self.sharded.policy is None:
            return None
        return max(distributed.gather_objects(micro_batch_count(self.rows.batch, self.settings)))

    def export_policy(self, tokenizer, out_dir) -> dict:
        """Save the trained policy (``merged/``, and ``adapter/`` for LoRA); rank 0 writes. Sharded: every
        rank takes part in gathering the weights, one unit at a time."""
        if self.sharded.policy is None:
            paths = save_policy(self.policy, tokenizer, out_dir) if distributed.is_main() else {}
        else:
            merged = {name: t.cpu() for name, t in gathered_hf_weights(self.sharded.policy)}
            adapter = {name: t.cpu() for name, t in gathered_hf_weights(self.sharded.policy, adapter=True)}
            paths = save_weights(self.policy, tokenizer, out_dir, merged, adapter) if distributed.is_main() else {}
        distributed.barrier()
        return paths

    def on_train_start(self) -> None:
        self.policy.train()
        self._calls = 0
        self.sync_engine()  # a resumed run's engine must hold the checkpoint's weights

    def on_train_end(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if not self._engine_is_current():
            self.sync_engine()  # the engine ends with the trained weights, for evaluation
        self.engine.wake_up()

    # -- the step --------------------------------------------------------------------------------
    def _next_rollouts(self, dataloader_iter: Iterator) -> None:
        """Draw the rollouts of the next optimizer step(s), generated with the current weights, then let the
        engine sleep while the trainer works."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # hand the trainer's cached activation memory back before the engine wakes
        if not self._engine_is_current():
            self._sync_seconds = self.sync_engine()
            self._log({keys.SYNC_SECONDS: self._sync_seconds})
        self.rollouts = [next(dataloader_iter)[0] for _ in range(self.rollouts_per_step)]
        self.engine.sleep()
        self.rollout_step = self.global_step
        for rollout in self.rollouts:
            versions = rollout.tensors["policy_version"]
            version = int(versions.max()) if versions.numel() else self.global_step
            if version != self.global_step:
                raise RuntimeError(f"off-policy batch: sampled with version {version}, policy at {self.global_step}")
        # several ranks: the loss is normalised by the step's size over all of them, and all train or none;
        # the ranks of one tensor-parallel engine hold the same rollouts: counted once, their rows split
        once = self.ranks.all_reduce_once_per_engine
        self.rows = step_rows(
            [r.tensors for r in self.rollouts], self.loss_cfg.scale_rewards, self.loss_cfg.beta, reward_moments=once
        )
        total_rows, total_tokens = once([self.rows.size.rows, self.rows.size.tokens])
        self.rows.size = F.StepSize(int(total_rows), int(total_tokens))
        self.rows = share_of_engine(self.rows, self.ranks.engine_rank, self.ranks.engine_size)
        self.step_has_signal = distributed.any_rank(self.rows.has_signal)
        sizes = [len(r.tensors["rewards"]) for r in self.rollouts]  # per-rollout advantages, for the sample tables
        self.rollout_advantages = list(self.rows.advantages.split(sizes)) if sizes else []
        if self.loss_cfg.beta and self.step_has_signal:  # every rank trains then, even one without signal
            # once per rollout: they do not change over the mu steps
            reference = self.sharded.reference if self.sharded.policy is not None else self.reference
            with self._timed("reference_logprobs"):
                self.rows.batch["ref_logprobs"] = reference_logprobs(
                    self.trained_model, reference, self.rows.batch, self.settings, self.device, self._pad_to()
                )
        if self.loss_cfg.needs_trainer_pass and self.step_has_signal:
            # the trainer's log-probs under the sampling weights, before the first of the mu updates
            with self._timed("trainer_logprobs"):
                metrics = correct_for_engine(
                    self.trained_model, self.rows.batch, self.settings, self.loss_cfg, self.device, self._pad_to()
                )
            sampled = self.rows.batch["reflection_mask"][:, 1:] & ~self.rows.batch["off_policy"].unsqueeze(1)
            metrics = F.merge_metrics(distributed.gather_objects((metrics, float(sampled.sum()))))  # their tokens
            self._log({f"train/{key}": value for key, value in metrics.items()})
        mine = merge_rollout_stats([r.stats for r in self.rollouts])
        self.last_batch_stats = merge_rank_rollout_stats(distributed.gather_objects(mine)[:: self.ranks.engine_size])

    def training_step(self, dataloader_iter: Iterator) -> None:
        position = self._calls % self.mu
        self._calls += 1
        drew_rollout = position == 0
        step, self._sync_seconds, self.phase_seconds = self.global_step, 0.0, {}
        if drew_rollout:
            self.step_metrics = {}
            self._next_rollouts(dataloader_iter)
        self._log(self.last_batch_stats)
        optimizer = self.optimizers()
        trained_tokens = 0
        if self.step_has_signal:
            # several ranks: each accumulates its own micro-batches (their number differs by rank), then the
            # gradients are summed over ranks once (DDP's per-backward all-reduce is blocked). Sharded: every
            # rank runs as many micro-batches, and each backward reduce-scatters (sums) its gradients.
            block_sync = getattr(self.trainer.strategy, "block_backward_sync", contextlib.nullcontext)
            with block_sync(), self._timed("forward_backward"):
                metrics = accumulate_gradients(
                    self.trained_model,
                    self.rows,
                    self.settings,
                    self.device,
                    self.manual_backward,
                    pad_to=self._pad_to(),
                )
            if self.sharded.policy is None:
                distributed.sum_gradients(self.policy.parameters())
            metrics = merge_rank_metrics(
                distributed.gather_objects((metrics, float(self.rows.batch["reflection_mask"][:, 1:].sum())))
            )
            trained_tokens = int(metrics.pop("trained_tokens"))
            self._log({f"train/{k}": v for k, v in metrics.items() if k != "loss"} | {keys.SKIPPED: 0.0})
            self._log({keys.LOSS: metrics["loss"], "reward": self.last_batch_stats[keys.REWARD_MEAN]}, prog_bar=True)
        else:
            self._log({keys.SKIPPED: 1.0})
        # clipping happens in on_before_optimizer_step, which step() calls after unscaling (16-bit AMP)
        with self._timed("optimizer"):
            optimizer.step()  # without gradients (a skipped step) it changes nothing, but the step still counts
            optimizer.zero_grad(set_to_none=True)  # free the gradients before the engine wakes for the next rollout
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        self.last_step = StepRecord(
            step,
            self.rollout_step,
            drew_rollout,
            position == self.mu - 1,
            self.rollouts,
            self.rollout_advantages,
            dict(self.last_batch_stats),
            dict(self.step_metrics),
            self._sync_seconds,
            trained_tokens,
            dict(self.phase_seconds),
        )

    @contextlib.contextmanager
    def _timed(self, part: str):
        """Add the wall time of the block to ``phase_seconds[part]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phase_seconds[part] = self.phase_seconds.get(part, 0.0) + time.perf_counter() - start

    def on_before_optimizer_step(self, optimizer) -> None:
        grads = [p.grad for p in self.policy.parameters() if p.grad is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
        self._log({"train/grad_norm": norm.full_tensor() if hasattr(norm, "full_tensor") else norm})  # sharded
        if self.max_grad_norm:
            self.clip_gradients(optimizer, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm")

    def _log(self, metrics: dict, prog_bar: bool = False) -> None:
        # batches come from dataloader_iter, so Lightning cannot infer a batch size: one step is one item
        self.log_dict(metrics, on_step=True, on_epoch=False, prog_bar=prog_bar, batch_size=1)
        self.step_metrics.update({k: float(v) for k, v in metrics.items()})

    # -- optimizer -------------------------------------------------------------------------------
    def configure_optimizers(self):
        params = [p for p in self.policy.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        check_updates_kept(optimizer)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=self.trainer.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints written before r3exp stepped the optimizer itself counted their steps in Lightning's
        automatic-optimization loop; carry that count over, so such a run resumes at its step."""
        loop = checkpoint.get("loops", {}).get("fit_loop", {})
        manual = loop.get("epoch_loop.manual_optimization.optim_step_progress")
        automatic = loop.get("epoch_loop.automatic_optimization.optim_progress", {}).get("optimizer", {}).get("step")
        if manual and automatic and manual["total"]["completed"] == 0 and automatic["total"]["completed"] > 0:
            loop["epoch_loop.manual_optimization.optim_step_progress"] = copy.deepcopy(automatic)

    def state_dict(self, *args, **kwargs):  # checkpoints hold the policy only, not the frozen reference
        return {k: v for k, v in super().state_dict(*args, **kwargs).items() if not k.startswith("reference.")}

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        return super().load_state_dict(state_dict, strict=False if self.reference is not None else strict, **kwargs)


@dataclass
class ShardedModels:
    """The FSDP roots of the policy and of a full fine-tuning reference (plain attributes, not submodules:
    their parameters are the policy's own, and checkpoints name them once, under ``policy.``)."""

    policy: torch.nn.Module | None = None
    reference: torch.nn.Module | None = None
