#!/usr/bin/env bash
# The real command line's main job on a bare GPU machine: torch, transformers, peft and lightning installed,
# no vLLM, no Hydra, no network (the lent GPU machine's image; docs/how-to/paper-scale.md).
#
#   benchmarks/gpu_main_job.sh fetch               here, where the package registries answer: builds the wheels the
#                                                  GPU image lacks (hydra-core, omegaconf, antlr4 runtime,
#                                                  torch-optimi; versions from scripts/cpu.lock) into $WHEELS
#   benchmarks/gpu_main_job.sh run [override ...]  there: installs those wheels into a temporary directory (no index,
#                                                  no network) when Hydra is missing, then runs
#       python -m r3exp task=countdown model=qwen2_1.5b model.init=random engine=hf trainer=gpu logger=csv
#                                                  for a few steps with the evaluation cut short, and prints each
#                                                  phase's seconds, tokens/s and each step's peak memory.
#
# With the device tool: run(command="benchmarks/gpu_main_job.sh run", carry=[".cache/gpu-wheels"]).
# Overrides after `run` replace the defaults below (the suite runs it at CPU shapes: trainer=cpu, a narrow layer).
# Random weights never solve Countdown: no group carries a reward, so the steps train nothing; what this
# measures is the CLI end to end (model build, engine, generation, evaluation, export). The training step's
# time and memory at these shapes come from benchmarks/gpu_check.py.
# PYTHON: the interpreter (default python3; the suite passes "python -S" with a site-packages view).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WHEELS="${WHEELS:-$ROOT/.cache/gpu-wheels}"
read -ra PY <<< "${PYTHON:-python3}"
PACKAGES=(hydra-core omegaconf antlr4-python3-runtime torch-optimi)

pinned() {  # the version scripts/cpu.lock pins for $1
  grep -i "^$1==" "$ROOT/scripts/cpu.lock" | head -1 | grep . || { echo "error: scripts/cpu.lock pins no $1" >&2; exit 2; }
}

case "${1:-}" in
  fetch)
    rm -rf "$WHEELS" && mkdir -p "$WHEELS"  # only the pinned versions: no stale wheel beside them
    specs=()
    for package in "${PACKAGES[@]}"; do specs+=("$(pinned "$package")"); done
    # pip wheel: a wheel where the index has one, built here from the sdist where not (antlr4's runtime)
    "${PY[@]}" -m pip wheel --quiet --no-deps --wheel-dir "$WHEELS" "${specs[@]}"
    echo "[gpu_main_job] $(ls "$WHEELS" | wc -l) wheels in $WHEELS ($(du -sh "$WHEELS" | cut -f1)): $(ls "$WHEELS" | tr '\n' ' ')"
    ;;
  run)
    shift
    if ! "${PY[@]}" -c "import hydra, omegaconf" 2>/dev/null; then  # (torch-optimi: only for master_weights=kahan)
      ls "$WHEELS"/*.whl > /dev/null 2>&1 || { echo "error: no wheels in $WHEELS: run '$0 fetch' where the registries answer, then carry that folder" >&2; exit 2; }
      site="$(mktemp -d)"
      trap 'rm -rf "$site"' EXIT
      "${PY[@]}" -m pip install --quiet --no-index --no-deps --target "$site" "$WHEELS"/*.whl
      export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
      echo "[gpu_main_job] installed $(ls "$WHEELS" | tr '\n' ' ')into $site"
    fi
    export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
    run_dir="${RUN_DIR:-$(mktemp -d)/run}"
    defaults=(task=countdown model=qwen2_1.5b model.init=random engine=hf trainer=gpu logger=csv
              trainer.max_steps=3 rollout.examples_per_step=16 evaluation.limit=64 task.split_sizes.test=64
              callbacks.checkpoint.every_n_train_steps=3)
    echo "[gpu_main_job] run directory $run_dir"
    started=$(date +%s)
    "${PY[@]}" -m r3exp "${defaults[@]}" "$@" "hydra.run.dir=$run_dir"
    echo "[gpu_main_job] main job: $(( $(date +%s) - started )) s"
    "${PY[@]}" "$ROOT/benchmarks/gpu_main_job_figures.py" "$run_dir"
    ;;
  *)
    echo "usage: $0 fetch | run [override ...]" >&2
    exit 2
    ;;
esac
