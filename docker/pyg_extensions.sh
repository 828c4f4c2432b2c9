#!/usr/bin/env bash
# Install the optional torch-scatter / torch-cluster accelerators as binary wheels built for the
# installed torch and CUDA (https://data.pyg.org/whl/torch-<version>+<cuda>.html). Never compiles from
# source (--only-binary): without matching wheels gnnreco keeps its pure-PyTorch paths.
set -euo pipefail
PY=${PYTHON:-python}
tag=$("$PY" - <<'PYEOF'
import torch
v = torch.__version__.split("+")[0]
major, minor = v.split(".")[:2]
cuda = torch.version.cuda
print(f"{major}.{minor}.0+" + (f"cu{cuda.replace('.', '')}" if cuda else "cpu"))
PYEOF
)
url="https://data.pyg.org/whl/torch-${tag}.html"
echo "pyg_extensions: looking for wheels at ${url}"
if ! "$PY" -m pip install --only-binary=:all: torch-scatter torch-cluster -f "$url" \
     -c <(bash "$(dirname "$0")/keep_torch_constraints.sh"); then
  echo "pyg_extensions: no binary wheels for torch ${tag}; gnnreco uses its own kernels instead" >&2
fi
