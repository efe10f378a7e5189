#!/usr/bin/env bash
# Prepare an emulated aarch64 Debian root for tests/test_agent_aarch64.py.
#
# Follows ../shared/reference/arm64-emulation.md: qemu-user-static + an extract-only
# mmdebstrap root with python3 and libstdc++6, aarch64 wheels of onnxruntime and numpy
# installed from the host with pip --target, and an ARM-style /proc/cpuinfo inside the
# root (ONNX Runtime's cpuinfo segfaults on the host's x86 one under qemu user mode).
#
# Idempotent; needs root and network access to the Debian and PyPI mirrors.
# Usage: SHUFFLENAS_AARCH64_ROOT=/opt/shufflenas-aarch64 .ci/prepare_aarch64.sh
set -euo pipefail

ROOT="${SHUFFLENAS_AARCH64_ROOT:-/opt/shufflenas-aarch64}"
SUITE="${SHUFFLENAS_AARCH64_SUITE:-bookworm}"

if [ "$(id -u)" -ne 0 ]; then
    echo "prepare_aarch64.sh: must run as root (apt-get, mmdebstrap)" >&2
    exit 2
fi

# A pip that runs on the host: the project's venv if there is one, else python3 -m pip.
if [ -n "${PIP:-}" ]; then
    read -r -a PIP_CMD <<< "$PIP"
elif [ -x /work/venv/bin/python ]; then
    PIP_CMD=(/work/venv/bin/python -m pip)
else
    PIP_CMD=(python3 -m pip)
fi

need_pkgs=()
command -v qemu-aarch64-static >/dev/null 2>&1 || need_pkgs+=(qemu-user-static)
command -v mmdebstrap >/dev/null 2>&1 || need_pkgs+=(mmdebstrap)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${need_pkgs[@]}"
fi

# 1. The aarch64 root (extract only: no emulation needed to build it).
if [ ! -x "$ROOT/usr/bin/python3.11" ] || [ ! -e "$ROOT/usr/lib/aarch64-linux-gnu/libstdc++.so.6" ]; then
    rm -rf "$ROOT"
    mkdir -p "$(dirname "$ROOT")"
    mmdebstrap --variant=extract --arch=arm64 --include=python3,libstdc++6 "$SUITE" "$ROOT"
fi

# 2. aarch64 wheels of onnxruntime and numpy (cp311 for bookworm's python3.11).
if [ ! -d "$ROOT/opt/site/onnxruntime" ] || [ ! -d "$ROOT/opt/site/numpy" ]; then
    rm -rf "$ROOT/opt/site"
    mkdir -p "$ROOT/opt/site"
    "${PIP_CMD[@]}" install --quiet --disable-pip-version-check --no-cache-dir \
        --only-binary=:all: --implementation cp --python-version 3.11 \
        --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
        --target "$ROOT/opt/site" onnxruntime numpy
fi

# 3. An ARM-style /proc/cpuinfo that qemu -L serves instead of the host's x86 one.
mkdir -p "$ROOT/proc"
ncpu="$(nproc)"
tmp="$ROOT/proc/cpuinfo.tmp"
: > "$tmp"
for ((i = 0; i < ncpu; i++)); do
    cat >> "$tmp" <<CPU
processor	: $i
BogoMIPS	: 50.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

CPU
done
mv -f "$tmp" "$ROOT/proc/cpuinfo"

# 4. Smoke check: the emulated python imports numpy and onnxruntime.
env -i PATH=/usr/bin:/bin HOME=/tmp PYTHONPATH="$ROOT/opt/site" \
    qemu-aarch64-static -L "$ROOT" "$ROOT/usr/bin/python3.11" -c \
    'import platform, numpy, onnxruntime; print("aarch64 root ok:", platform.machine(), "numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__)'
