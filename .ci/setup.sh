#!/usr/bin/env bash
# One-step set-up on a fresh Debian machine: system packages (PostgreSQL for the
# many-worker tests, qemu-user + mmdebstrap for the aarch64 agent test), a virtual
# environment in .venv with the CPU build of torch 2.13.0, and the project with its
# dev extras. Safe to run again. Set SHUFFLENAS_FRESH_VENV=1 to rebuild .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${SHUFFLENAS_VENV:-.venv}"
PY="${PYTHON:-python3}"

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    missing=()
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
    command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
    command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

if [ "${SHUFFLENAS_FRESH_VENV:-0}" = 1 ]; then rm -rf "$VENV"; fi
if [ ! -x "$VENV/bin/python" ]; then "$PY" -m venv "$VENV"; fi
# Pin torch first: an unpinned torch would pull a multi-GB CUDA build.
"$VENV/bin/pip" install -q torch==2.13.0 2>&1 | grep -v "is ignored" || true
"$VENV/bin/pip" install -q -e ".[dev]" 2>&1 | grep -v "is ignored" || true
# Test-only: torchvision's model files, beside (not in) site-packages, without its deps. Its
# PyPI wheel's compiled ops fail to load beside the CPU torch and would then break ptflops'
# own `import torchvision.ops`; tests/test_torchvision_parity.py imports just the models.
"$VENV/bin/pip" install -q --no-deps --upgrade --target "$VENV/torchvision-models" "torchvision==0.28.*" 2>&1 \
    | grep -v "is ignored" || true
"$VENV/bin/python" -c "import torch, optuna, ray, ptflops, pandas, onnxruntime, nas, objectives, search_spaces" \
    || { echo "setup: the virtual environment is incomplete" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    PIP="$VENV/bin/python -m pip" bash .ci/prepare_aarch64.sh
fi
echo "setup: ready ($VENV)" >&2
