#!/usr/bin/env bash
# The calo GPU latency tuned on a short GPU lease (issue 7, goal ≤ 30 ms per 50k-hit event): the Triton
# kNN's tile sizes and warps, the condensation backends, and the whole event with the best settings
# (scripts/tune_calo_gpu.py), then the CUDA tests of the kernels involved.
#
#   OUT=/tmp/gpu DATA_ROOT=.gpu bash scripts/gpu_tune_calo.sh
#
# Files in $OUT: summary.log, tune.log, tune.json, pytest.log.
LOG_TAG=gpu_tune
source "$(dirname "$0")/gpu_lease_env.sh"
CALO_CKPT=${CALO_CKPT:-docs/checkpoints/calo_gravnet.pt}  # the benchmark's network, committed
t=$(date +%s)
timeout "${TUNE_S:-150}" $PY scripts/tune_calo_gpu.py --checkpoint "$CALO_CKPT" --json "$OUT/tune.json" > "$OUT/tune.log" 2>&1
log "tune: rc=$? in $(( $(date +%s) - t ))s"
grep -h '^\[tune\] \(best\|condensation\|whole\)' "$OUT/tune.log" | tee -a "$OUT/summary.log"
t=$(date +%s)
timeout "${TEST_S:-60}" $PY -m pytest -m gpu -q -p no:cacheprovider tests/graph/test_triton_radius.py \
  tests/graph/test_triton_knn.py tests/tasks/calo/test_reco.py > "$OUT/pytest.log" 2>&1
log "pytest -m gpu: rc=$? in $(( $(date +%s) - t ))s: $(tail -n 1 "$OUT/pytest.log")"
log "done"
