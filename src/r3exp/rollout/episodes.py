"""The R3 protocol: attempt, keep failures, reflect G times, retry once per reflection, reward.

Used by both training (``group_size`` G reflections per failure) and evaluation (one reflection).
Knows nothing of Lightning: it returns plain :class:`Episode` records; ``batching`` turns them into
training tensors. The training protocols (``rollout.protocol``): ``r3`` (:meth:`R3Protocol.run`), ``grpo``
(:meth:`R3Protocol.attempt_groups`), ``r3_grpo`` and ``r3_grpo_distill``
(:meth:`R3Protocol.attempt_and_reflection_groups`, the latter with :func:`add_distilled_rows`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from r3exp.rollout.engines.interface import Completion, GenerationEngine, SamplingConfig
from r3exp.tasks.base import Example, Message, Task

RewardFn = Callable[[Task, Example, Completion, Completion], float]
# what an episode's rows train: reflections (R3, rewarded by their retry) or first attempts (GRPO, rewarded
# by the validator); the order is the ``row_kinds`` index of a batch
REFLECTION, ATTEMPT = "reflection", "attempt"
ROW_KINDS = (REFLECTION, ATTEMPT)
# rollout.distill (r3_grpo_distill): which rewarded retries join their example's attempt group
DISTILL_MODES = ("distinct", "all", "none")


def retry_succeeds(task: Task, example: Example, reflection: Completion, retry: Completion) -> float:
    """The paper's reward: 1 when the retry (made with the reflection in context) passes the validator."""
    return float(task.validate(example, retry.text))


def add_distilled_rows(attempts: Episode, reflections: Episode, distinct: bool = True) -> int:
    """Add each retry of ``reflections`` (an example's R3 group) that passed the validator to ``attempts``
    (the same example's GRPO group) as an off-policy row: the retry's sampled tokens after the group's
    own context, the first-attempt prompt, so that the row answers the original question without the
    failed attempt or the reflection in view (R3L's and Critique-GRPO's way of learning from a guided
    success). Its reward is the validator's, 1; its behaviour log-probs stay the engine's (of each greedy
    token at temperature 1, with the reflection in context; the greedy choice itself had probability 1),
    for the ``distill/context_gap`` metric only. ``distinct``: a token
    sequence joins once (several reflections often lead to the same greedy retry). Returns the rows added."""
    if not attempts.off_policy:
        attempts.off_policy = [False] * len(attempts.reflections)
    seen = {tuple(c.token_ids) for c, off in zip(attempts.reflections, attempts.off_policy) if off}
    added = 0
    for retry, passed in zip(reflections.retries, reflections.retry_successes):
        key = tuple(retry.token_ids)
        if not passed or (distinct and key in seen):
            continue
        seen.add(key)
        attempts.reflections.append(retry)
        attempts.rewards.append(1.0)
        attempts.retry_successes.append(True)
        attempts.off_policy.append(True)
        added += 1
    return added


class ReflectionContains:
    """Diagnostic reward: 1 when the reflection contains ``text``; the retry is ignored.

    Depends only on what the reflection tokens say, so it checks that the learning signal flows
    through the mask, the optimizer and the weight sync (used by the test suite; try it on a new setup).
    """

    def __init__(self, text: str):
        self.text = str(text)

    def __call__(self, task, example, reflection, retry) -> float:
        return float(self.text in reflection.text)


@dataclass
class Episode:
    """One example's journey through R3. ``reflections``/``retries``/``rewards`` are empty when the first
    attempt succeeded. ``kind`` ``attempt``: a GRPO group, whose trained completions (in ``reflections``,
    after ``reflection_prompt_ids`` = the task prompt) are sampled first attempts."""

    example: Example
    attempt: Completion
    first_try_success: bool
    reflection_prompt_ids: list[int] = field(default_factory=list)
    reflections: list[Completion] = field(default_factory=list)
    retries: list[Completion] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    retry_successes: list[bool] = field(default_factory=list)
    policy_version: int = 0
    kind: str = REFLECTION
    # per row of ``reflections``: True for an off-policy row (a distilled retry, :func:`add_distilled_rows`);
    # empty when every row is on-policy
    off_policy: list[bool] = field(default_factory=list)

    def is_off_policy(self, row: int) -> bool:
        return bool(self.off_policy) and self.off_policy[row]

    @property
    def on_policy_rows(self) -> list[int]:
        return [j for j in range(len(self.reflections)) if not self.is_off_policy(j)]


# the generation calls of a rollout, by what they sample (RolloutTiming.turns)
ATTEMPT_TURN, REFLECTION_TURN, RETRY_TURN = "attempt", "reflection", "retry"


@dataclass
class TurnTiming:
    """What the engine did for one turn of the protocol (first attempts, reflections or retries): calls,
    prompts, sampled rows (prompts x n), prompt tokens (before any prefix cache), sampled tokens, seconds."""

    calls: int = 0
    prompts: int = 0
    rows: int = 0
    prompt_tokens: int = 0
    sampled_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.sampled_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class RolloutTiming:
    """The engine's work for a rollout, per turn (:class:`TurnTiming`), in the order the turns first ran."""

    turns: dict[str, TurnTiming] = field(default_factory=dict)
    reward_seconds: float = 0.0  # validating retries (attempts, for GRPO's groups) and computing rewards

    def add(self, turn: str, prompts: list[list[int]], n: int, out: list[list[Completion]], seconds: float) -> None:
        mine = self.turns.setdefault(turn, TurnTiming())
        mine.calls += 1
        mine.prompts += len(prompts)
        mine.rows += len(prompts) * n
        mine.prompt_tokens += sum(len(p) for p in prompts)
        mine.sampled_tokens += sum(len(c.token_ids) for group in out for c in group)
        mine.seconds += seconds

    @property
    def seconds(self) -> float:
        return sum(t.seconds for t in self.turns.values())

    @property
    def generated_tokens(self) -> int:
        return sum(t.sampled_tokens for t in self.turns.values())


class ChatRenderer:
    """Turns chat messages into prompt token ids with the model's own chat template.

    Tools go through the template's native support (``apply_chat_template(tools=...)``) when it has one;
    otherwise ``tools_message`` (the task's system prompt listing them) is put in the system turn.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.native_tools = "tools" in (tokenizer.chat_template or "")

    def __call__(
        self, messages: Sequence[Message], tools: list[dict] | None = None, tools_message: str | None = None
    ) -> list[int]:
        messages, kwargs = list(messages), {}
        if tools and self.native_tools:
            kwargs["tools"] = tools
        elif tools_message:
            if messages and messages[0]["role"] == "system":
                messages[0] = {"role": "system", "content": messages[0]["content"] + "\n\n" + tools_message}
            else:
                messages.insert(0, {"role": "system", "content": tools_message})
        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False, **kwargs
        )
        return list(ids)

    def for_task(self, task: Task, example: Example, messages: Sequence[Message]) -> list[int]:
        return self(messages, task.tools(example), task.tools_system_message(example))


class R3Protocol:
    """Runs R3 episodes with the current policy of ``engine``.

    Args:
        attempt_sampling: sampling of the first attempt.
        reflection_sampling: sampling of the reflections.
        retry_sampling: sampling of the retries.
        reward: ``retry_succeeds`` (the paper) or another ``RewardFn``.
        stream: the engine's sampling stream (``training`` rollouts, ``evaluation``).
    """

    def __init__(
        self,
        task: Task,
        engine: GenerationEngine,
        tokenizer,
        attempt_sampling: SamplingConfig,
        reflection_sampling: SamplingConfig,
        retry_sampling: SamplingConfig,
        reward: RewardFn = retry_succeeds,
        stream: str = "default",
    ):
        self.task, self.engine, self.render = task, engine, ChatRenderer(tokenizer)
        self.attempt_sampling = attempt_sampling
        self.reflection_sampling = reflection_sampling
        self.retry_sampling = retry_sampling
        self.reward = reward
        self.stream = stream
        self.timing = RolloutTiming()

    def _generate(
        self, prompts: list[list[int]], n: int, sampling: SamplingConfig, turn: str
    ) -> list[list[Completion]]:
        start = time.perf_counter()
        out = self.engine.generate(prompts, n, sampling, stream=self.stream)
        if prompts:
            self.timing.add(turn, prompts, n, out, time.perf_counter() - start)
        return out

    def first_attempts(self, examples: Sequence[Example]) -> list[Episode]:
        prompts = [self.render.for_task(self.task, ex, self.task.first_attempt_messages(ex)) for ex in examples]
        attempts = [group[0] for group in self._generate(prompts, 1, self.attempt_sampling, ATTEMPT_TURN)]
        return [
            Episode(ex, a, self.task.validate(ex, a.text), policy_version=self.engine.policy_version)
            for ex, a in zip(examples, attempts)
        ]

    def reflect_and_retry(self, episodes: Sequence[Episode], group_size: int) -> list[Episode]:
        """Fill reflections, retries and rewards for every failed episode (in place; returns them all)."""
        failures = [ep for ep in episodes if not ep.first_try_success]
        for ep in failures:
            ep.reflection_prompt_ids = self.render.for_task(
                self.task, ep.example, self.task.reflection_messages(ep.example, ep.attempt.text)
            )
            ep.policy_version = self.engine.policy_version
        groups = self._generate(
            [ep.reflection_prompt_ids for ep in failures], group_size, self.reflection_sampling, REFLECTION_TURN
        )
        retry_prompts = [
            self.render.for_task(
                self.task, ep.example, self.task.retry_messages(ep.example, ep.attempt.text, reflection.text)
            )
            for ep, group in zip(failures, groups)
            for reflection in group
        ]
        retries = iter(group[0] for group in self._generate(retry_prompts, 1, self.retry_sampling, RETRY_TURN))
        start = time.perf_counter()
        for ep, group in zip(failures, groups):
            ep.reflections = list(group)
            ep.retries = [next(retries) for _ in group]
            ep.retry_successes = [self.task.validate(ep.example, r.text) for r in ep.retries]
            ep.rewards = [float(self.reward(self.task, ep.example, f, r)) for f, r in zip(group, ep.retries)]
        self.timing.reward_seconds += time.perf_counter() - start
        return list(episodes)

    def attempt_groups(self, examples: Sequence[Example], group_size: int) -> list[Episode]:
        """Plain GRPO, the baseline R3 is compared with: ``group_size`` sampled first attempts per example,
        each rewarded by the validator. The trained tokens are the attempts, so they stand where R3's
        reflections stand (``reflections``, after ``reflection_prompt_ids`` = the first-attempt prompt);
        ``first_try_success`` is the first sample's success. Sampled at the reflection's temperature (the
        trainer's) with the attempt's length."""
        prompts = [self.render.for_task(self.task, ex, self.task.first_attempt_messages(ex)) for ex in examples]
        sampling = dataclasses.replace(self.reflection_sampling, max_tokens=self.attempt_sampling.max_tokens)
        episodes, groups = [], self._generate(prompts, group_size, sampling, ATTEMPT_TURN)
        start = time.perf_counter()
        for ex, prompt, group in zip(examples, prompts, groups):
            successes = [self.task.validate(ex, c.text) for c in group]
            episodes.append(
                Episode(
                    ex,
                    group[0],
                    successes[0],
                    reflection_prompt_ids=prompt,
                    reflections=list(group),
                    rewards=[float(x) for x in successes],
                    retry_successes=successes,
                    policy_version=self.engine.policy_version,
                    kind=ATTEMPT,
                )
            )
        self.timing.reward_seconds += time.perf_counter() - start
        return episodes

    def attempt_and_reflection_groups(
        self, examples: Sequence[Example], group_size: int, distill: str = "none"
    ) -> list[Episode]:
        """R3 with GRPO: GRPO's group of ``group_size`` sampled attempts per example (:meth:`attempt_groups`),
        then R3's group for every example with a failed attempt: ``group_size`` reflections on its first
        failed attempt, one retry each, rewarded by ``reward``. One failure per example, not every failed
        attempt: G failures x G reflections would cost G times more than R3's rows. ``distill``
        (``r3_grpo_distill``): the rewarded retries join their example's attempt group
        (:func:`add_distilled_rows`); ``none`` adds nothing. Returns the attempt groups, then the reflection
        groups."""
        attempt_groups = self.attempt_groups(examples, group_size)
        failures, failed_groups = [], []
        for ep in attempt_groups:
            failed = next((c for c, ok in zip(ep.reflections, ep.retry_successes) if not ok), None)
            if failed is not None:
                failures.append(Episode(ep.example, failed, False, policy_version=ep.policy_version))
                failed_groups.append(ep)
        reflection_groups = self.reflect_and_retry(failures, group_size)
        if distill != "none":
            for attempts, reflections in zip(failed_groups, reflection_groups):
                add_distilled_rows(attempts, reflections, distinct=distill == "distinct")
        return attempt_groups + reflection_groups

    def retries_with(self, pairs: Sequence[tuple[Episode, str]]) -> list[Completion]:
        """One retry per ``(episode, reflection text)``, with that text in place of the episode's own
        reflection (the evaluation's controls)."""
        prompts = [
            self.render.for_task(self.task, ep.example, self.task.retry_messages(ep.example, ep.attempt.text, text))
            for ep, text in pairs
        ]
        return [group[0] for group in self._generate(prompts, 1, self.retry_sampling, RETRY_TURN)]

    def run(self, examples: Sequence[Example], group_size: int) -> list[Episode]:
        return self.reflect_and_retry(self.first_attempts(examples), group_size)

    def from_failed_attempts(self, rows: Sequence[dict], group_size: int) -> list[Episode]:
        """Episodes from a first-failure dataset (rows with ``example`` and the failed ``attempt`` text):
        the attempt is given, reflections and retries are sampled with the current policy."""
        episodes = [Episode(row["example"], Completion([], [], row["attempt"], True), False) for row in rows]
        return self.reflect_and_retry(episodes, group_size)
