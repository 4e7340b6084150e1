#!/usr/bin/env bash
# Installs what the build, the tests and the main job's loss plot need from Debian's packages
# (matplotlib too: Debian's python3 refuses pip installs outside a virtual environment). The CUDA
# 13 toolkit is expected at /usr/local/cuda (nvcc with cuBLASLt, cuSOLVER and the NVTX3 headers),
# also for a CPU-only build: the one build compiles the CUDA sources and links their libraries.
set -euo pipefail
packages=(cmake ninja-build g++ ccache pkg-config nlohmann-json3-dev libcli11-dev libpcre2-dev libgtest-dev libsentencepiece-dev libeigen3-dev python3 python3-matplotlib unzip)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
if ! command -v nvcc >/dev/null 2>&1 && [ ! -x /usr/local/cuda/bin/nvcc ]; then
  echo "error: nvcc not found (install the CUDA 13 toolkit at /usr/local/cuda)" >&2
  exit 1
fi
