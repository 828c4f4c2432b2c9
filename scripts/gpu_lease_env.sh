# Shared set-up of the prepared GPU-lease scripts (sourced, not run): $OUT, $DATA_ROOT, $PY, a
# time-stamped `log` into $OUT/summary.log, the machine line, and the wheels of .gpu/wheels/ (the
# packages a bare GPU node lacks) installed into /tmp/site and put on PYTHONPATH with the checkout.
#   LOG_TAG=gpu_calo; source "$(dirname "$0")/gpu_lease_env.sh"
set -u
OUT=${OUT:-/tmp/gnnreco_gpu}
DATA_ROOT=${DATA_ROOT:-.}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
T0=$(date +%s)
log() { echo "[${LOG_TAG:-gpu} +$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/summary.log"; }

log "env: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null) / $(nproc) cores / $($PY -c 'import torch, triton; print(torch.__version__, triton.__version__)')"
if ls .gpu/wheels/*.whl > /dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/wheels/*.whl > /tmp/wheels.log 2>&1 && log "wheels installed" || log "wheel install FAILED: $(tail -n 2 /tmp/wheels.log)"
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
