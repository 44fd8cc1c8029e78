#!/usr/bin/env bash
# One call on a lent GPU machine: set up, then run the named jobs in order, each under its own
# wall-clock limit, so one call of at most 10 minutes brings back whatever finished.
#
#   bash benchmarks/gpu_session.sh env tests train mec_pnn        (on the GPU machine)
#
# Results go to $OUT (the device tool's folder) or benchmarks/results/device. The machine has
# torch but not polars: wheels in .whl/ (see the device notes) are installed to /tmp/site.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/device}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
T0=$SECONDS
DATA=/tmp/ctrzip_data

log() { echo "[$((SECONDS - T0))s] $*"; }

data() {  # data KIND ROWS MIN_COUNT: generate with all cores, encode once
  local kind=$1 rows=$2 mc=$3 dir=$DATA/$1_$2
  [ -f "$dir/enc/feature_map.json" ] && return
  mkdir -p "$dir"
  python3 - "$kind" "$rows" "$mc" "$dir" <<'EOF'
import os, sys, time
from ctrzip.data.encode import encode_dataset
from ctrzip.data.synth import generate
kind, rows, mc, d = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
t = time.perf_counter()
generate(f"{kind}-like", f"{d}/raw", rows, seed=0, workers=os.cpu_count(), progress=False)
t1 = time.perf_counter()
encode_dataset(kind, f"{d}/raw", f"{d}/enc", progress=False, overrides=[f"min_count={mc}"])
t2 = time.perf_counter()
print(f"{kind}-like {rows} rows: generate {t1 - t:.0f}s ({rows / (t1 - t):,.0f} rows/s), "
      f"encode {t2 - t1:.0f}s ({rows / (t2 - t1):,.0f} rows/s)")
EOF
  rm -f "$dir/raw"
}

job_env() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, numpy, polars; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'polars', polars.__version__)"
  nproc
}

job_tests() {  # the whole suite on torch 2.x + CUDA (device="auto" tests take the GPU)
  timeout 120 python3 -m pytest -q -x -n 8 -p no:cacheprovider tests 2>&1 | tail -25
}

job_train() {  # issue 3's GPU target: e2e DeepFM 1.09M x 40, MLP 300x3, batch 10,000
  timeout 120 python3 benchmarks/bench_train.py --device cuda --warmup 20 --steps 200 --repeats 3 --threads 8 \
    --name bench_train_h100 2>&1 | tail -30
  cp benchmarks/results/bench_train_h100.json "$OUT/"
}

mec() {  # mec KIND ROWS MODEL BUDGET_S EXTRA...: one bench_mec run on encoded synthetic data
  local kind=$1 rows=$2 model=$3 budget=$4
  shift 4
  data "$kind" "$rows" 2
  timeout $((budget + 120)) python3 benchmarks/bench_mec.py --data "$DATA/${kind}_${rows}/enc" --full-scale "$kind" \
    --model "$model" --dim 40 --epochs 1 --batch-size 4096 --threads 8 --device "${DEVICE:-cuda}" --time-budget "$budget" \
    --out "$OUT/mec_${kind}_${model}.jsonl" "$@" 2>&1 | grep -v Warning | tail -40
}

for job in "$@"; do
  log "== $job"
  case $job in
    env | tests | train) "job_$job" ;;
    # mec:KIND:ROWS:MODEL:BUDGET_S[:OPTIONS], OPTIONS = bench_mec.py options with '+' for spaces
    mec:*) IFS=: read -r _ kind rows model budget opts <<<"$job"; mec "$kind" "$rows" "$model" "$budget" ${opts//+/ } ;;
    *) echo "unknown job $job" ;;
  esac
done
log "done"
