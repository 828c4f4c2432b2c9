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
# $OUT holds at most 8 files (setup, summary, pytest, tasks, knn, ops logs; tasks.json, knn.json):
# the device tool returns no more than 8.
set -u
OUT=${OUT:-/tmp/gnnreco_gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
T0=$(date +%s)
log() { echo "[gpu_checks +$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/summary.log"; }
step() {  # step NAME LOG LIMIT_S CMD...: run with a time limit, append to $OUT/LOG.log, record the status
  local name=$1 file="$OUT/$2.log" limit=$3; shift 3
  local t=$(date +%s)
  echo "=== $name: $*" >> "$file"
  timeout "$limit" "$@" >> "$file" 2>&1
  local rc=$?
  log "$name: rc=$rc in $(( $(date +%s) - t ))s$([ $rc = 124 ] && echo ' (time limit)')"
  # the numbers also go to the summary (stdout): they survive even if the files do not come back
  { grep -h '^\[gpu bench\] .* done in' "$file" | cut -c1-700; tail -n 3 "$file"; } | sed 's/^/    /' |
    tee -a "$OUT/summary.log"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  nproc; $PY -c "import sys, torch, triton; print(sys.version.split()[0], torch.__version__, torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name(0))"
  which nvcc && nvcc --version | tail -n 2; } > "$OUT/setup.log" 2>&1
log "env: $(grep -m1 -E '^3\.' "$OUT/setup.log")"

if ls .gpu/wheels/*.whl > /dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/wheels/*.whl >> "$OUT/setup.log" 2>&1 && log "wheels installed into /tmp/site" || log "wheel install FAILED (see setup.log)"
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD:/tmp/ext${PYTHONPATH:+:$PYTHONPATH}

BUILD=""
if ! $PY -c "import torch_scatter, torch_cluster" > /dev/null 2>&1 && ls .gpu/sdist/*.tar.gz > /dev/null 2>&1; then
  TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} timeout "${BUILD_S:-360}" \
    $PY scripts/build_torch_ext.py --target /tmp/ext .gpu/sdist/*.tar.gz > /tmp/build_ext.log 2>&1 &
  BUILD=$!
  log "building torch_scatter/torch_cluster in the background (pid $BUILD)"
fi

step tasks tasks "${TASKS_S:-150}" $PY -m gnnreco.bench.gpu --parts tracking,calo,pflow --json "$OUT/tasks.json" \
  ${DATA_ROOT:+--data-root "$DATA_ROOT"}
# the CUDA tests that need no torch_scatter/torch_cluster run while those build
step pytest_gpu pytest "${TEST_S:-240}" $PY -m pytest -m gpu -q -p no:cacheprovider -n 4 \
  tests/ops tests/graph/test_blocks.py tests/graph/test_triton_knn.py tests/export/test_export.py tests/production/test_reco.py \
  tests/tasks/tracking/test_device.py

if [ -n "$BUILD" ]; then
  wait "$BUILD"; rc=$?; cat /tmp/build_ext.log >> "$OUT/setup.log"
  log "extension build finished: rc=$rc ($(tail -n 1 /tmp/build_ext.log))"
fi
$PY -c "import torch_scatter; print('torch_scatter', torch_scatter.__version__)" >> "$OUT/setup.log" 2>&1
$PY -c "import torch_cluster; print('torch_cluster', torch_cluster.__version__)" >> "$OUT/setup.log" 2>&1
log "imports: $(grep -E '^torch_(scatter|cluster) ' "$OUT/setup.log" | tr '\n' ' ')"

step pytest_gpu_graph pytest 120 $PY -m pytest -m gpu -q -p no:cacheprovider tests/graph/test_neighbors.py
step knn knn "${KNN_S:-150}" $PY -m gnnreco.bench.gpu --parts knn --json "$OUT/knn.json"
step ops ops "${OPS_S:-200}" $PY -m gnnreco.bench.ops --device cuda ${OPS_ARGS:-}
log "done"
