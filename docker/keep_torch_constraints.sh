#!/usr/bin/env bash
# Print pip constraints that pin the installed torch stack (torch, triton, torchvision/torchaudio and
# the nvidia-* CUDA wheels), so `pip install -c <file> gnnreco[...]` keeps a base image's CUDA build.
set -euo pipefail
PY=${PYTHON:-python}
"$PY" -c "import torch" 2>/dev/null || { echo "keep_torch_constraints: no torch installed" >&2; exit 1; }
"$PY" -m pip list --format=freeze 2>/dev/null \
  | grep -iE '^(torch|torchvision|torchaudio|triton|pytorch-triton|nvidia-[a-z0-9-]+)==' || true
