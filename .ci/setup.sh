#!/usr/bin/env bash
# Set-up in two steps.
#   bash .ci/setup.sh          a virtual environment in .venv with the CPU build of torch 2.13.0 and
#                              the project: all the main command needs (Python and pip, no root, no apt)
#   bash .ci/setup.sh --test   also what the tests need: the dev extras (pytest, ruff, ray, psycopg2,
#                              optuna-dashboard) and, as root on Debian, the system services
#                              (PostgreSQL for the many-worker tests, qemu-user-static + mmdebstrap
#                              and the emulated aarch64 root for the ARM agent test, Fashion-MNIST's
#                              IDX files from dataset-fashion-mnist)
# Safe to run again. Set SHUFFLENAS_FRESH_VENV=1 to rebuild .venv. Fails when pip fails.
set -euo pipefail
cd "$(dirname "$0")/.."

TEST=0
for arg in "$@"; do
    case "$arg" in
        --test) TEST=1 ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup.sh: unknown argument $arg (expected --test)" >&2; exit 2 ;;
    esac
done

VENV="${SHUFFLENAS_VENV:-.venv}"
PY="${PYTHON:-python3}"

# pip's own exit status, with the "... is ignored" noise of the torch index filtered out of stderr
pip_install() { "$VENV/bin/pip" install -q "$@" 2> >(grep -v "is ignored" >&2); }

if [ "$TEST" = 1 ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    missing=()
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
    command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
    command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
    [ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)  # tests/test_data.py, 30 MB
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

if [ "${SHUFFLENAS_FRESH_VENV:-0}" = 1 ]; then rm -rf "$VENV"; fi
if [ ! -x "$VENV/bin/python" ]; then "$PY" -m venv "$VENV"; fi
# Pin torch first: an unpinned torch would pull a multi-GB CUDA build.
pip_install torch==2.13.0
if [ "$TEST" = 1 ]; then
    pip_install -e ".[dev]"
    # Test-only: torchvision's model files, beside (not in) site-packages, without its deps. Its
    # PyPI wheel's compiled ops fail to load beside the CPU torch and would then break ptflops'
    # own `import torchvision.ops`; tests/test_torchvision_parity.py imports just the models.
    pip_install --no-deps --upgrade --target "$VENV/torchvision-models" "torchvision==0.28.*"
    "$VENV/bin/python" -c "import torch, optuna, ray, psycopg2, optuna_dashboard, pytest, nas, objectives, search_spaces" \
        || { echo "setup: the virtual environment is incomplete" >&2; exit 1; }
else
    pip_install -e .
    "$VENV/bin/python" -c "import torch, optuna, ptflops, pandas, onnxruntime, nas, objectives, search_spaces" \
        || { echo "setup: the virtual environment is incomplete" >&2; exit 1; }
fi

if [ "$TEST" = 1 ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    PIP="$VENV/bin/python -m pip" bash .ci/prepare_aarch64.sh
fi
if [ "$TEST" = 1 ]; then echo "setup: ready ($VENV, with the test dependencies)" >&2; else echo "setup: ready ($VENV)" >&2; fi
