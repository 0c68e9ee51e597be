"""Several ranks (Lightning DDP on GPUs, gloo on CPU): start them, know who we are, agree.

Ranks are started by Lightning's own launcher (the other processes re-run the same ``python -m r3exp``
command; under SLURM or torchrun they exist already) before anything is built, so every rank joins the
process group first and then builds its own colocated engine, evaluates its shard and trains.
Outside a process group every helper here is the single-process identity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
import torch.distributed as dist

from r3exp.errors import ConfigError


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the one that writes the run directory, the results and W&B."""
    return rank() == 0


@dataclass(frozen=True)
class Ranks:
    """How the run's ranks share engines, handed to the parts that split work by rank (the engine, the
    datamodule, the trainer, evaluation); ``Ranks()`` is a single process, or ranks with an engine each.

    Every ``engine_size`` consecutive ranks (``engine.tensor_parallel_size``) share one engine: they act as
    one data-parallel rank, draw the same examples and get the same outputs, then split the step's rows
    among them for training. Who this process is comes from the process group (:func:`rank`)."""

    engine_size: int = 1

    @classmethod
    def of_engines(cls, tensor_parallel_size: int) -> "Ranks":
        """The ranks of this process group split into engines of ``tensor_parallel_size`` ranks each."""
        if tensor_parallel_size < 1 or world_size() % tensor_parallel_size:
            raise ConfigError(
                f"engine.tensor_parallel_size={tensor_parallel_size}: the {world_size()} rank(s) "
                "(trainer.devices x trainer.num_nodes) must split into engines of that many ranks"
            )
        return cls(tensor_parallel_size)

    @property
    def engine_rank(self) -> int:
        """This rank's position among the ranks of its engine (0: the engine's leader)."""
        return rank() % self.engine_size

    @property
    def data_rank(self) -> int:
        """Which data-parallel share this rank draws and evaluates: its engine's index."""
        return rank() // self.engine_size

    @property
    def data_world(self) -> int:
        """How many data-parallel shares there are: one per engine."""
        return world_size() // self.engine_size

    def shard(self, items: list) -> list:
        """This rank's share of ``items``: every ``data_world``-th item from position ``data_rank`` (the ranks
        of one engine share theirs)."""
        return items[self.data_rank :: self.data_world]

    def gather_shards(self, mine: list) -> list:
        """The inverse of :meth:`shard` on every rank: all shares' items in the original order (each share
        once, from its engine's leader)."""
        shards = gather_objects(mine)[:: self.engine_size]
        total = sum(len(s) for s in shards)
        return [shards[i % len(shards)][i // len(shards)] for i in range(total)]

    def all_reduce_once_per_engine(self, values: Iterable[float]) -> list[float]:
        """:func:`all_reduce_sum` of values the ranks of one engine share (their common rollouts' counts),
        counted once, from the engine's leader."""
        values = list(values)
        return all_reduce_sum([0.0] * len(values) if self.engine_rank != 0 else values)


@dataclass
class LaunchedRanks:
    """The rank processes this process started (rank 0 of a local launch; none under SLURM or torchrun, or
    with one rank)."""

    children: list = field(default_factory=list)

    def finish(self, failed: bool) -> int:
        """On failure, stop the other ranks (they would wait in a collective until the process group's
        timeout); on success, wait for them. Returns the first non-zero exit code."""
        for child in self.children:
            if failed:
                child.kill()
        codes = [child.wait() for child in self.children]
        return next((code for code in codes if code), 0)


def launch_ranks(trainer_cfg) -> LaunchedRanks:
    """Start the ranks ``trainer.devices`` x ``trainer.num_nodes`` asks for and join their process group
    (Lightning Fabric's launcher; the Trainer later finds the group and reuses it)."""
    if dist.is_available() and dist.is_initialized():
        return LaunchedRanks()
    from lightning.fabric import Fabric  # noqa: PLC0415 - Lightning takes seconds; only launching ranks needs it

    fabric = Fabric(
        accelerator=trainer_cfg.get("accelerator", "auto"),
        devices=trainer_cfg.get("devices", 1),
        num_nodes=trainer_cfg.get("num_nodes", 1),
        strategy="ddp",
    )
    if fabric.world_size == 1:
        return LaunchedRanks()
    if _local_multirun():
        raise ConfigError(
            "several ranks per job inside a local Hydra multirun (-m) are not supported: "
            "Lightning's launcher re-runs the command. Run the jobs one by one, or through "
            "SLURM (sweeps/slurm.yaml), where every rank exists already"
        )
    fabric.launch()
    return LaunchedRanks(list(getattr(fabric.strategy.launcher, "procs", []) or []))


def _local_multirun() -> bool:
    """A Hydra multirun job whose ranks the launcher would have to start (not SLURM, not torchrun)."""
    from hydra.core.hydra_config import HydraConfig  # noqa: PLC0415 - the GPU check's image has no Hydra
    from hydra.types import RunMode  # noqa: PLC0415 - the GPU check's image has no Hydra
    from lightning.fabric.plugins.environments import SLURMEnvironment  # noqa: PLC0415 - Lightning takes seconds

    external = "LOCAL_RANK" in os.environ or SLURMEnvironment.detect()
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN and not external


def launched_rank() -> int:
    """This process's rank as its launcher (SLURM, torchrun, Lightning) says, before any process group."""
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def vllm_rank_environment() -> None:
    """vLLM's ``external_launcher`` reads RANK, LOCAL_RANK and WORLD_SIZE from the environment; Lightning's
    launcher and SLURM do not set all three. (It forms one tensor-parallel engine from every
    ``tensor_parallel_size`` consecutive ranks of the world.)"""
    os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank()), str(world_size())
    os.environ.setdefault("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))


def gather_objects(value: Any) -> list[Any]:
    """``value`` of every rank, in rank order (a list of one outside a process group)."""
    if world_size() == 1:
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def all_reduce_sum(values: Iterable[float]) -> list[float]:
    """Element-wise sums over ranks of a few numbers (float64, exact for counts)."""
    tensor = torch.tensor(list(values), dtype=torch.float64)
    if world_size() > 1:
        if dist.get_backend() == "nccl":  # NCCL reduces CUDA tensors only
            tensor = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on some rank: decisions all ranks must take together."""
    return all_reduce_sum([float(flag)])[0] > 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


@torch.no_grad()
def sum_gradients(params: Iterable[torch.nn.Parameter], bucket_elements: int = 2**25) -> None:
    """Sum the gradients of ``params`` over ranks, in buckets of at most ``bucket_elements`` (a rank that
    trained nothing contributes zeros). Each rank's loss was already divided by the whole step's size,
    so the sum is the gradient of the step's loss over every rank's rows."""
    if world_size() == 1:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    bucket: list[torch.nn.Parameter] = []
    for p in params + [None]:
        if (
            p is not None
            and (not bucket or sum(q.numel() for q in bucket) + p.numel() <= bucket_elements)
            and (not bucket or p.grad.dtype == bucket[0].grad.dtype and p.grad.device == bucket[0].grad.device)
        ):
            bucket.append(p)
            continue
        if bucket:
            flat = torch.cat([q.grad.reshape(-1) for q in bucket])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            offset = 0
            for q in bucket:
                q.grad.copy_(flat[offset : offset + q.numel()].view_as(q.grad))
                offset += q.numel()
        bucket = [p] if p is not None else []
