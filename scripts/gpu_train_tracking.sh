#!/usr/bin/env bash
# Tracking networks trained on a GPU node, then timed there: one prepared run for a short-lived GPU lease.
#
#   OUT=/tmp/gpu DATA_ROOT=.gpu bash scripts/gpu_train_tracking.sh
#
# 1. packages the machine lacks, from .gpu/wheels/*.whl (optional), into /tmp/site;
# 2. the CUDA tests (pytest -m gpu) in the background;
# 3. the training events (μ = 200, seeds event_seed(0, i)) simulated by a process pool into a cache;
# 4. two edge classifiers trained at the same time on the GPU, with the filter of the CPU benchmark's
#    checkpoint ($FILTER, default $DATA_ROOT/data/tracking_bench/model_h32_shape.pt): A ($A_ARGS, small enough
#    for the 2-core CPU goal) and B ($B_ARGS, larger, for the GPU path); the checkpoints land in $OUT;
#    with the cluster-shape edge features (events simulated with their cells); SHAPE=0 trains without them
#    (the default filter is then model_h32.pt, made without them);
# 5. per-event GPU latency (python -m gnnreco.bench.gpu) of the old and the new networks, calo and MLPF.
# A second stage continues both on the same warm machine (stop 19, 282 s; docs/benchmarks.md, "GPU"):
#   A_ARGS="--init-from <model_a.pt> --lr 7e-4" B_ARGS="--init-from <model_b.pt> --lr 4e-4" BUDGET=220 TEST_S=1 ...
# Evaluate the checkpoints afterwards on the CPU benchmark's test events:
#   python -m gnnreco.bench.tracking --n-test 100 --checkpoint <model_a.pt>
# At most 8 files land in $OUT (the device tool returns no more).
LOG_TAG=gpu_train
source "$(dirname "$0")/gpu_lease_env.sh"
N_TRAIN=${N_TRAIN:-100}
BUDGET=${BUDGET:-320}
A_ARGS=${A_ARGS:---hidden 64 --iters 6 --lr 2e-3}
B_ARGS=${B_ARGS:---hidden 128 --iters 8 --lr 1e-3}
SHAPE=${SHAPE:-1}
if [ "$SHAPE" = 1 ]; then
  FILTER=${FILTER:-$DATA_ROOT/data/tracking_bench/model_h32_shape.pt}; SHAPE_ARG=
else
  FILTER=${FILTER:-$DATA_ROOT/data/tracking_bench/model_h32.pt}; SHAPE_ARG=--no-cluster-shape
fi
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of this script on a machine without a GPU
RECUT=${RECUT:-}  # e.g. 0.999: time the networks with the filter cut re-chosen for that target-edge efficiency


timeout "${TEST_S:-240}" $PY -m pytest -m gpu -q -p no:cacheprovider -n 3 tests/ops tests/graph/test_blocks.py tests/graph/test_triton_knn.py \
  tests/tasks/tracking/test_device.py tests/export/test_export.py tests/production/test_reco.py \
  > "$OUT/pytest.log" 2>&1 &
TESTS=$!

CACHE=/tmp/tracking_train
t=$(date +%s)
timeout 150 $PY - "$N_TRAIN" "$CACHE" "$SHAPE" <<'EOF' >> "$OUT/summary.log" 2>&1
import os, sys
from gnnreco.bench.tracking import EDGE_NAMES, _simulate_cached
from gnnreco.data.datamodule import event_seed
from gnnreco.tasks.tracking.data import SHAPE_EDGE_FEATURES
n, cache, shape = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
names = EDGE_NAMES + (SHAPE_EDGE_FEATURES if shape else ())
_simulate_cached([event_seed(0, i) for i in range(n)], 200.0, "trackml", (7, 8, 9), cache, max(1, os.cpu_count() - 4),
                 names)
print(f"{sum(f.endswith('.hits.parquet') for f in os.listdir(cache))} training events in {cache}")
EOF
log "training events: rc=$? in $(( $(date +%s) - t ))s"

train() {  # train NAME ARGS...
  local name=$1; shift
  timeout $(( BUDGET + 150 )) $PY -m gnnreco.bench.tracking --train-only --train-device "$DEVICE" --workers 6 \
    --n-train "$N_TRAIN" --cache-dir "$CACHE" --filter-from "$FILTER" --train-budget-s "$BUDGET" \
    --checkpoint "$OUT/model_$name.pt" $SHAPE_ARG "$@" > "$OUT/train_$name.log" 2>&1
  log "train $name ($*): rc=$? $(tail -n 1 "$OUT/train_$name.log" | cut -c1-300)"
}
train a $A_ARGS &
PA=$!
train b $B_ARGS &
PB=$!
wait $PA $PB
wait $TESTS; log "pytest -m gpu: rc=$? $(tail -n 1 "$OUT/pytest.log")"

CKPTS=$FILTER
for m in a b; do [ -f "$OUT/model_$m.pt" ] && CKPTS="$CKPTS,$OUT/model_$m.pt"; done
t=$(date +%s)
timeout "${TASKS_S:-200}" $PY -m gnnreco.bench.gpu --parts tracking,calo,pflow --device "$DEVICE" --data-root "$DATA_ROOT" \
  --tracking-checkpoint "$CKPTS" ${RECUT:+--tracking-filter-recut "$RECUT"} --json "$OUT/tasks.json" > "$OUT/tasks.log" 2>&1
log "tasks: rc=$? in $(( $(date +%s) - t ))s"
grep -h '^\[gpu bench\] .* done' "$OUT/tasks.log" | cut -c1-900 | tee -a "$OUT/summary.log"
log "done"
