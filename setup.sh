#!/usr/bin/env bash
# Installs everything rnnpool needs on a fresh Debian machine: system packages (real offline
# data, the Cortex-M4 cross compiler and emulator) and the Python package with its test extras.
set -euo pipefail
cd "$(dirname "$0")"

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # dataset-fashion-mnist, opencv-doc: real data that ships offline (training, demo, tests).
    # g++: the compiled RNNPool CPU kernel (built on first use; without it the torch path runs).
    # gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm: Cortex-M4 build and emulation.
    apt-get install -y -qq --no-install-recommends \
        dataset-fashion-mnist opencv-doc g++ \
        gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm >/dev/null
else
    echo "setup.sh: not root or no apt-get; skipping system packages" >&2
fi

python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"
