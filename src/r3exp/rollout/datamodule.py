"""LightningDataModule feeding on-policy R3 batches to the trainer.

Batches are generated lazily, when the training step asks for one (``training_step(dataloader_iter)``),
so a batch is always sampled with the weights after the previous optimizer step: nothing is prefetched.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from r3exp import distributed, keys
from r3exp.errors import ConfigError
from r3exp.rollout.batching import Rollout, rollout_batch
from r3exp.rollout.engines.interface import GenerationEngine, SamplingConfig
from r3exp.rollout.episodes import (
    ATTEMPT,
    DISTILL_MODES,
    REFLECTION,
    Episode,
    R3Protocol,
    RewardFn,
    RolloutTiming,
    retry_succeeds,
)
from r3exp.rollout.rollout_stats import follow_verdicts, has_signal, reward_name, rollout_stats
from r3exp.tasks.base import Task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)
ON_NO_SIGNAL = ("skip", "resample")
# rollout.protocol: the kinds of rows each trains
PROTOCOLS = {
    "r3": (REFLECTION,),
    "grpo": (ATTEMPT,),
    "r3_grpo": (ATTEMPT, REFLECTION),
    "r3_grpo_distill": (ATTEMPT, REFLECTION),
}
DISTILLING = "r3_grpo_distill"  # the protocol whose rewarded retries join the attempt groups (rollout.distill)
ROLLOUT_STREAM = "training"  # the engine's sampling stream of the training rollouts


class RolloutStream(IterableDataset):
    """An endless stream of R3 batches from the training split (or a first-failure dataset)."""

    def __init__(self, datamodule: "ReflectionRolloutDataModule"):
        self.dm = datamodule

    def __iter__(self) -> Iterator[Rollout]:
        while True:
            yield self.dm.next_batch()


class ReflectionRolloutDataModule(L.LightningDataModule):
    """Each step: B examples → first attempt → failures → G reflections each → one retry each → rewards.

    Args:
        task: given at run time by the entry point.
        engine: given at run time by the entry point.
        tokenizer: given at run time by the entry point.
        examples_per_step: B, task examples drawn per batch.
        group_size: G, reflections sampled per failure (the GRPO group).
        attempt: sampling of the first attempt.
        reflection: sampling of the reflections.
        retry: sampling of the retries.
        source: ``online`` (filter the policy's own failures) or ``failures`` (a first-failure dataset at
            ``failures_path``, built by ``mode=failures``, as in the paper).
        on_no_signal: when no group of a batch has differing rewards, ``skip`` the update (the step
            still counts) or ``resample`` (draw new examples, at most ``max_draws`` times).
        reward: the reward function (default: the retry passes the validator).
        seed: order in which training examples are drawn.
        protocol: ``r3`` (reflect on failures, reward the reflection by its retry); ``grpo``, the baseline:
            G sampled first attempts per example, each rewarded by the validator, the attempt trained
            (``reflection`` sampling's temperature, ``attempt``'s length); ``r3_grpo``: both in one step,
            GRPO's attempt groups, and R3's reflection group on each example's first failed attempt (one
            optimizer step over both kinds of rows, advantages within each kind).
            ``r3_grpo_distill``: ``r3_grpo``, and each rewarded retry joins its example's attempt group as a
            row of the original prompt (off-policy, :func:`~r3exp.rollout.episodes.add_distilled_rows`).
            ``reward`` rewards reflections: ``grpo`` rewards attempts by the validator and refuses another.
        distill: for ``r3_grpo_distill``, which rewarded retries join: ``distinct`` (each token sequence once,
            the default), ``all``, or ``none`` (then the protocol is ``r3_grpo``). Other protocols refuse it.
        ranks: how the run's ranks share engines (the ranks of one engine draw the same examples); given at
            run time by the entry point, default one engine per rank.
    """

    def __init__(
        self,
        task: Task,
        engine: GenerationEngine,
        tokenizer: PreTrainedTokenizerBase,
        attempt: SamplingConfig,
        reflection: SamplingConfig,
        retry: SamplingConfig,
        examples_per_step: int = 8,
        group_size: int = 4,
        source: str = "online",
        failures_path: str | None = None,
        on_no_signal: str = "resample",
        max_draws: int = 4,
        reward: RewardFn = retry_succeeds,
        seed: int = 0,
        protocol: str = "r3",
        ranks: distributed.Ranks | None = None,
        distill: str | None = None,
    ):
        super().__init__()
        if protocol not in PROTOCOLS:
            raise ConfigError(f"rollout.protocol={protocol!r}; expected one of {tuple(PROTOCOLS)}")
        if ATTEMPT in PROTOCOLS[protocol] and source != "online":
            raise ConfigError(f"rollout.protocol={protocol} samples first attempts: it needs rollout.source=online")
        if REFLECTION not in PROTOCOLS[protocol] and getattr(reward, "func", reward) is not retry_succeeds:
            raise ConfigError(
                f"rollout.reward={reward_name(reward)} rewards reflections; rollout.protocol={protocol} "
                "trains no reflection (its attempts are rewarded by the task's validator): remove it"
            )
        if distill is not None and protocol != DISTILLING:
            raise ConfigError(
                f"rollout.distill={distill} is read by rollout.protocol={DISTILLING} only, not {protocol}: remove it"
            )
        distill = distill or ("distinct" if protocol == DISTILLING else "none")
        if distill not in DISTILL_MODES:
            raise ConfigError(f"rollout.distill={distill!r}; expected one of {DISTILL_MODES}")
        if distill != "none" and retry.max_tokens > attempt.max_tokens:
            raise ConfigError(
                f"rollout.retry.max_tokens={retry.max_tokens} > rollout.attempt.max_tokens="
                f"{attempt.max_tokens}: rollout.protocol={DISTILLING} trains retries as first attempts, "
                "which could then be longer than the model may write one"
            )
        if on_no_signal not in ON_NO_SIGNAL:
            raise ConfigError(f"rollout.on_no_signal={on_no_signal!r}; expected one of {ON_NO_SIGNAL}")
        if source not in ("online", "failures"):
            raise ConfigError(f"rollout.source={source!r}; expected 'online' or 'failures'")
        if source == "failures" and not failures_path:
            raise ConfigError("rollout.source=failures needs rollout.failures_path (build it with mode=failures)")
        if group_size < 2:
            raise ConfigError(f"rollout.group_size={group_size}: GRPO needs at least 2 reflections per group")
        self.protocol = R3Protocol(task, engine, tokenizer, attempt, reflection, retry, reward, stream=ROLLOUT_STREAM)
        self.task, self.engine, self.pad_id = task, engine, tokenizer.pad_token_id
        self.examples_per_step, self.group_size = examples_per_step, group_size
        self.source, self.failures_path = source, failures_path
        self.on_no_signal, self.max_draws = on_no_signal, max_draws
        self.seed, self.protocol_name, self.distill = seed, protocol, distill
        self.ranks = ranks or distributed.Ranks()
        self.cursor = 0  # examples drawn so far: saved in checkpoints so a resumed run continues the stream
        self.last_episodes: list[Episode] = []
        self.last_timing = RolloutTiming()  # the engine's work for the last batch, per turn (benchmarks)
        self._pool: list | None = None

    def _examples(self) -> list:
        if self._pool is None:
            if self.source == "online":
                self._pool = list(self.task.examples("train"))
            else:
                self._pool = load_failures(self.failures_path)
        return self._pool

    def _draw(self) -> list:
        """The next ``examples_per_step`` examples of this rank (see :func:`draw_indices`; the ranks of one
        tensor-parallel engine draw the same ones)."""
        pool = self._examples()
        indices = draw_indices(
            self.cursor, self.examples_per_step, len(pool), self.seed, self.ranks.data_rank, self.ranks.data_world
        )
        self.cursor += self.examples_per_step
        drawn = [pool[i] for i in indices]
        log.debug("rank %d drew %s", distributed.rank(), json.dumps(drawn, sort_keys=True))
        return drawn

    def next_batch(self) -> Rollout:
        """Generate one batch with the engine's current weights (called by the training step)."""
        start, self.protocol.timing = time.perf_counter(), RolloutTiming()
        episodes: list[Episode] = []
        for draws in range(1, (self.max_draws if self.on_no_signal == "resample" else 1) + 1):
            drawn = self._draw()
            if self.protocol_name == "grpo":
                episodes += self.protocol.attempt_groups(drawn, self.group_size)
            elif self.protocol_name in ("r3_grpo", DISTILLING):
                episodes += self.protocol.attempt_and_reflection_groups(drawn, self.group_size, self.distill)
            elif self.source == "online":
                episodes += self.protocol.run(drawn, self.group_size)
            else:
                episodes += self.protocol.from_failed_attempts(drawn, self.group_size)
            if has_signal(episodes):
                break
        self.last_episodes, self.last_timing = episodes, self.protocol.timing
        kinds = PROTOCOLS[self.protocol_name]
        followed = follow_verdicts(self.task, episodes) if REFLECTION in kinds else None
        stats = rollout_stats(
            episodes,
            self.protocol.timing.seconds,
            self.protocol.timing.generated_tokens,
            followed,
            kinds,
            distilling=self.distill != "none",
        )
        stats["rollout/draws"] = float(draws)
        stats[keys.WALL_SECONDS] = time.perf_counter() - start
        return rollout_batch(episodes, self.pad_id, stats, has_signal(episodes))

    def train_dataloader(self) -> DataLoader:
        # batch_size=None: the stream yields whole batches; num_workers=0: generation must run in the
        # trainer's process, on demand, with the freshly synced engine.
        return DataLoader(RolloutStream(self), batch_size=None, num_workers=0)

    def state_dict(self) -> dict:
        """Every rank's position (rank 0's file holds them all): called on every rank when Lightning saves."""
        mine = {"cursor": self.cursor, "sampling_calls": self.engine.stream_position(ROLLOUT_STREAM)}
        return {**mine, "ranks": distributed.gather_objects(mine)}

    def load_state_dict(self, state: dict) -> None:
        mine = rank_position(state, distributed.rank(), distributed.world_size())
        self.cursor = int(mine["cursor"])
        if "sampling_calls" in mine:  # checkpoints from before sampling streams lack it
            self.engine.seek(ROLLOUT_STREAM, mine["sampling_calls"])


def rank_position(state: dict, rank: int, world: int) -> dict:
    """This rank's ``{"cursor", "sampling_calls"}`` in a saved datamodule state (every rank's, in rank order;
    a checkpoint from before several ranks holds one position)."""
    ranks = state.get("ranks") or [state]
    if len(ranks) != world:
        raise ConfigError(
            f"the checkpoint was written by {len(ranks)} rank(s); resume it with as many "
            f"(trainer.devices x trainer.num_nodes), not {world}"
        )
    return ranks[rank]


def draw_indices(cursor: int, count: int, pool_size: int, seed: int, rank: int = 0, world: int = 1) -> list[int]:
    """Pool indices of a rank's draws ``cursor .. cursor + count - 1``: rank r of W takes the positions r,
    r + W, r + 2W, ... of one seeded shuffle of the pool per epoch, so within an epoch no two ranks draw the
    same example; with one rank it is the plain shuffled stream."""
    indices, orders = [], {}
    for draw in range(cursor, cursor + count):
        epoch, position = divmod(draw * world + rank, pool_size)
        if epoch not in orders:
            orders[epoch] = list(range(pool_size))
            random.Random(f"{seed}/{epoch}").shuffle(orders[epoch])
        indices.append(orders[epoch][position])
    return indices


def load_failures(path: str | Path) -> list[dict]:
    """Rows ``{"example": ..., "attempt": ...}`` of a first-failure dataset (JSONL)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"rollout.failures_path={str(path)!r} does not exist (build it with mode=failures)")
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            row["example"], row["attempt"]  # noqa: B018 - both keys are required
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ConfigError(f"{path}:{line_no}: not a first-failure row ({type(err).__name__}: {err})") from None
        rows.append(row)
    if not rows:
        raise ConfigError(f"{path}: the first-failure dataset is empty")
    return rows
