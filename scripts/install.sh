#!/usr/bin/env bash
# Install gnnreco with its development extras.
#
# * If a torch is already importable (e.g. a CUDA build on a GPU cluster) it is kept.
# * Otherwise the CPU build of torch 2.13.0 is installed first, so pip does not pull several GB of
#   CUDA wheels for an unpinned torch. Set GNNRECO_TORCH_SPEC to choose another torch, and
#   GNNRECO_TORCH_INDEX to an index URL (e.g. https://download.pytorch.org/whl/cpu) where PyPI's
#   default torch wheel for your platform is a CUDA build.
# * GNNRECO_EXTRAS selects the extras (default: dev).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if "$PY" -c "import torch" 2>/dev/null; then
  echo "gnnreco install: keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  spec=${GNNRECO_TORCH_SPEC:-torch==2.13.0}
  if [ -n "${GNNRECO_TORCH_INDEX:-}" ]; then
    "$PY" -m pip install --quiet "$spec" --index-url "$GNNRECO_TORCH_INDEX"
  else
    "$PY" -m pip install --quiet "$spec"
  fi
fi
"$PY" -m pip install --quiet -e ".[${GNNRECO_EXTRAS:-dev}]"
echo "gnnreco install: $("$PY" -m gnnreco.cli.main --version)"
