#!/usr/bin/env bash
# Every check that needs a GPU, in one run (a lent GPU machine is short-lived: one prepared script).
#
#   OUT=/tmp/gpu bash scripts/gpu_checks.sh
#
# 1. environment (nvidia-smi, torch/triton versions);
# 2. packages the machine lacks, from .gpu/wheels/*.whl (optional), into /tmp/site;
# 3. torch_scatter / torch_cluster built in the background from .gpu/sdist/*.tar.gz for the machine's
#    torch (scripts/build_torch_ext.py), when no installed copy imports;
# 4. the CUDA tests (pytest -m gpu);
# 5. per-event GPU inference of tracking / calo / MLPF (python -m gnnreco.bench.gpu);
# 6. the kernel benchmark on CUDA beside torch_scatter (python -m gnnreco.bench.ops --device cuda);
# 7. the kNN graph on CUDA beside torch_cluster (python -m gnnreco.bench.gpu --parts knn).
# Inputs of step 5 are read from $DATA_ROOT (default: the checkout; the CPU benchmarks write them).
# Every step has its own time limit and log under $OUT; a failed step does not stop the others.
set -u
OUT=${OUT:-/tmp/gnnreco_gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
T0=$(date +%s)
log() { echo "[gpu_checks +$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/summary.log"; }
step() {  # step NAME LIMIT_S CMD...: run with a time limit, log to $OUT/NAME.log, record the status
  local name=$1 limit=$2; shift 2
  local t=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  log "$name: rc=$rc in $(( $(date +%s) - t ))s$([ $rc = 124 ] && echo ' (time limit)')"
  tail -n 3 "$OUT/$name.log" | sed 's/^/    /' | tee -a "$OUT/summary.log"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  nproc; $PY -c "import sys, torch, triton; print(sys.version.split()[0], torch.__version__, torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name(0))"
  which nvcc && nvcc --version | tail -n 2; } > "$OUT/env.log" 2>&1
log "env: $(tail -n 4 "$OUT/env.log" | head -n 1)"

if ls .gpu/wheels/*.whl > /dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/wheels/*.whl > "$OUT/pip.log" 2>&1 && log "wheels installed into /tmp/site" || log "wheel install FAILED (see pip.log)"
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD:/tmp/ext${PYTHONPATH:+:$PYTHONPATH}

BUILD=""
if ! $PY -c "import torch_scatter, torch_cluster" > /dev/null 2>&1 && ls .gpu/sdist/*.tar.gz > /dev/null 2>&1; then
  TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} timeout "${BUILD_S:-360}" \
    $PY scripts/build_torch_ext.py --target /tmp/ext .gpu/sdist/*.tar.gz > "$OUT/build.log" 2>&1 &
  BUILD=$!
  log "building torch_scatter/torch_cluster in the background (pid $BUILD)"
fi

step tasks "${TASKS_S:-150}" $PY -m gnnreco.bench.gpu --parts tracking,calo,pflow --json "$OUT/tasks.json" \
  ${DATA_ROOT:+--data-root "$DATA_ROOT"}
# the CUDA tests that need no torch_scatter/torch_cluster run while those build
step pytest_gpu "${TEST_S:-240}" $PY -m pytest -m gpu -q -p no:cacheprovider -n 4 \
  tests/ops tests/graph/test_blocks.py tests/export/test_export.py tests/production/test_reco.py

if [ -n "$BUILD" ]; then
  wait "$BUILD"; log "extension build finished: rc=$? ($(tail -n 1 "$OUT/build.log"))"
fi
$PY -c "import torch_scatter; print('torch_scatter', torch_scatter.__version__)" >> "$OUT/build.log" 2>&1
$PY -c "import torch_cluster; print('torch_cluster', torch_cluster.__version__)" >> "$OUT/build.log" 2>&1
log "imports: $(grep -E '^torch_(scatter|cluster) ' "$OUT/build.log" | tr '\n' ' ')"

step pytest_gpu_graph 120 $PY -m pytest -m gpu -q -p no:cacheprovider tests/graph/test_neighbors.py
step knn "${KNN_S:-150}" $PY -m gnnreco.bench.gpu --parts knn --json "$OUT/knn.json"
step ops "${OPS_S:-200}" $PY -m gnnreco.bench.ops --device cuda ${OPS_ARGS:-}
log "done"
