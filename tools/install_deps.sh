#!/usr/bin/env bash
# Installs what the build needs from Debian's packages (the CUDA toolkit is expected at
# /usr/local/cuda: nvcc 13 with cuBLASLt, cuSOLVER and the NVTX3 headers).
set -euo pipefail
packages=(cmake ninja-build g++ ccache pkg-config nlohmann-json3-dev libcli11-dev libpcre2-dev libgtest-dev libeigen3-dev python3 unzip)
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
