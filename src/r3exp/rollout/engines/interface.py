"""One interface for generation engines: token-id prompts in, n sampled completions with log-probs out.

Prompts are token ids, rendered once by the caller with the model's chat template, so the ids that the
behaviour log-probs were computed on are exactly the ids the trainer later scores (no re-tokenization).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling parameters of one generation call.

    ``temperature`` also scales the trainer's log-probs (``logits / temperature``), so the importance
    ratio compares like with like; keep ``top_p=1`` for training rollouts for the same reason.
    """

    max_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    min_tokens: int = 0


@dataclass
class Completion:
    """One sampled continuation: token ids (including the final EOS when the model produced it) and the
    log-probability of each under the sampling distribution (after temperature)."""

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finished: bool  # True when the model ended the turn itself (EOS), False when cut at max_tokens


class GenerationEngine(ABC):
    """Generates with the current policy; ``update_weights`` makes later calls follow new weights.

    ``policy_version`` counts weight updates, so every sample can be traced to the weights it came from.
    Sampling is seeded per named stream (``generate(..., stream=)``): the training rollouts draw from one
    stream and evaluation from another, so how much was evaluated before training does not change the
    training samples, and a resumed run continues its stream (``stream_position`` / ``seek``).
    """

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.policy_version = 0
        self._calls: dict[str, int] = {}

    @abstractmethod
    def _generate(
        self, prompts: list[list[int]], n: int, sampling: SamplingConfig, seeds: list[int]
    ) -> list[list[Completion]]:
        """Engine-specific sampling; ``seeds[i]`` seeds prompt ``i``."""

    @abstractmethod
    def _load_weights(self, state: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> None:
        """Engine-specific weight replacement (names as in the Hugging Face model)."""

    def generate(
        self, prompts: list[list[int]], n: int, sampling: SamplingConfig, stream: str = "default"
    ) -> list[list[Completion]]:
        """``n`` completions for each prompt, in prompt order. Seeded: the same sequence of calls on one
        ``stream`` with the same weights gives the same samples, whatever other streams did meanwhile."""
        if not prompts:
            return []
        call = self._calls[stream] = self._calls.get(stream, 0) + 1
        seeds = [request_seed(self.seed, stream, call, i) for i in range(len(prompts))]
        return self._generate(prompts, n, sampling, seeds)

    def stream_position(self, stream: str) -> int:
        """Calls made so far on ``stream`` (saved in checkpoints)."""
        return self._calls.get(stream, 0)

    def seek(self, stream: str, position: int) -> None:
        """Continue ``stream`` after ``position`` calls (restoring a checkpoint)."""
        self._calls[stream] = int(position)

    def update_weights(self, state: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace the weights (waking a sleeping engine first: weights, then its cache): a state dict,
        or ``(name, tensor)`` pairs, which engines that can take them one at a time consume as a stream."""
        self._load_weights(state)
        self.policy_version += 1

    # Sleep: colocated with the trainer, the engine frees its memory while the trainer steps. The order
    # is fixed: generate, ``sleep``, (train), ``update_weights`` (wakes the engine), generate. Engines that
    # cannot sleep (CPU) keep these no-ops.
    def sleep(self) -> None:
        """Free what the engine holds on the accelerator until the next ``update_weights`` or ``wake_up``."""

    def wake_up(self) -> None:
        """Be ready to generate with the weights held before ``sleep`` (evaluation after training)."""

    @property
    def holds_weights(self) -> bool:
        """False when a deep sleep discarded the weights: ``update_weights`` must come before generating."""
        return True

    def close(self) -> None:  # engines with resources override this
        pass


def request_seed(base_seed: int, stream: str, call: int, index: int) -> int:
    digest = hashlib.blake2b(f"{base_seed}/{stream}/{call}/{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF
