"""Tracking pieces on their own: sample rows, the bounded samples history, the metrics file, the offline
W&B reader, provenance. (A real training run with W&B offline is read back in test_cli.)"""

from __future__ import annotations

import json
import subprocess

import pytest

from r3exp.rollout.batching import batch_rows
from r3exp.rollout.engines.interface import Completion
from r3exp.rollout.episodes import Episode
from r3exp.tasks.hub import DataUnavailable, read_split_file, write_jsonl
from r3exp.tracking.offline_run import OfflineRunError, iter_records
from r3exp.tracking.provenance import collect_provenance, dvc_lock_outputs, file_md5
from r3exp.tracking.samples import SAMPLE_COLUMNS, ReflectionSamples, sample_rows
from tests.conftest import ROOT


def completion(text: str) -> Completion:
    return Completion(
        token_ids=list(range(len(text.split()))), logprobs=[-1.0] * len(text.split()), text=text, finished=True
    )


def failed_episode(example: dict, rewards: list[float]) -> Episode:
    return Episode(
        example=example,
        attempt=completion("<answer> 1 </answer>"),
        first_try_success=False,
        reflections=[completion(f"reflection {i} " * (i + 1)) for i in range(len(rewards))],
        retries=[completion(f"retry {i}") for i in range(len(rewards))],
        rewards=rewards,
        retry_successes=[bool(r) for r in rewards],
    )


def test_sample_rows_pair_each_reflection_with_its_advantage_and_keep_groups_whole(countdown):
    examples = countdown.examples("train")[:3]
    solved = Episode(example=examples[0], attempt=completion("ok"), first_try_success=True)
    episodes = [failed_episode(examples[1], [1.0, 0.0]), solved, failed_episode(examples[2], [0.0, 0.0])]
    advantages = [0.7, -0.7, 0.0, 0.0]
    assert len(batch_rows(episodes)) == len(advantages)
    rows = sample_rows(countdown, episodes, advantages, step=5, limit=10)
    assert [tuple(r) for r in rows] == [SAMPLE_COLUMNS] * 4
    assert [(r["group"], r["reward"], r["advantage"], r["retry_success"]) for r in rows] == [
        (0, 1.0, 0.7, True),
        (0, 0.0, -0.7, False),
        (1, 0.0, 0.0, False),
        (1, 0.0, 0.0, False),
    ]
    assert rows[1]["reflection"] == "reflection 1 reflection 1 " and rows[1]["reflection_tokens"] == 4
    assert rows[0]["task_prompt"] == countdown.user_prompt(examples[1]) and all(r["step"] == 5 for r in rows)
    assert len(sample_rows(countdown, episodes, advantages, step=5, limit=3)) == 2  # the second group won't fit


def test_samples_history_is_bounded_and_still_spans_the_run():
    callback = ReflectionSamples(every_n_steps=1, rows_per_step=2, max_rows=10)
    for step in range(40):
        callback.add([{"step": step}, {"step": step}])
    steps = [rows[0]["step"] for rows in callback.history]
    assert len(callback.rows) <= 10 and steps[0] == 0 and steps[-1] == 39 and steps == sorted(steps)
    restored = ReflectionSamples()
    restored.load_state_dict(callback.state_dict())
    assert restored.rows == callback.rows
    with pytest.raises(ValueError, match="max_rows"):
        ReflectionSamples(rows_per_step=8, max_rows=4)


def test_offline_reader_rejects_files_that_are_not_run_logs(tmp_path):
    bogus = tmp_path / "run-x.wandb"
    bogus.write_bytes(b"not a wandb file at all")
    with pytest.raises(OfflineRunError, match="not a W&B run log"):
        list(iter_records(bogus))


def test_split_files_round_trip_and_bad_rows_name_file_and_line(tmp_path):
    rows = [{"nums": [1, 2, 3], "target": 6}, {"nums": [4, 5], "target": 9}]
    path = write_jsonl(rows, tmp_path / "train.jsonl")
    assert read_split_file(path, None, ("nums", "target")) == rows
    assert read_split_file(path, 1, ("nums", "target")) == rows[:1]
    path.write_text(json.dumps(rows[0]) + "\n{broken\n")
    with pytest.raises(DataUnavailable, match=r"train.jsonl:2: not JSON"):
        read_split_file(path, None, ())
    path.write_text(json.dumps({"nums": [1]}) + "\n")
    with pytest.raises(DataUnavailable, match=r"train.jsonl:1: missing field\(s\) \['target'\]"):
        read_split_file(path, None, ("nums", "target"))


@pytest.mark.integration
def test_provenance_records_commit_data_hashes_and_dvc_outputs(tmp_path):
    data = tmp_path / "data"
    write_jsonl([{"a": 1}], data / "train.jsonl")
    lock = tmp_path / "dvc.lock"
    lock.write_text(
        "schema: '2.0'\nstages:\n  data:\n    cmd: x\n    outs:\n    - path: pipeline/data\n      md5: abc.dir\n"
    )
    record = collect_provenance(ROOT, seed=3, data_paths=[data, tmp_path / "missing"], lock_file=lock)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert record["git"]["commit"] == head and record["seed"] == 3
    assert record["data_md5"] == {str(data / "train.jsonl"): file_md5(data / "train.jsonl")}
    assert record["dvc_lock_outputs"] == {"pipeline/data": "abc.dir"} == dvc_lock_outputs(lock)
    assert {"torch", "lightning", "hydra-core", "wandb", "dvc"} <= set(record["packages"])
    assert collect_provenance(tmp_path, seed=0)["git"] == {}  # outside a git work tree
