#!/usr/bin/env bash
# One device call of experiments/jobtime_gpu.py (issue 22), run from the repo root of the
# checkout the device tool sends, with this branch's package copied to .gpuwork/:
#   bash .gpuwork/experiments/jobtime_call.sh STEPS PREFIX BUDGET_S [DRIVER ARGS...]
# (e.g. `... warmup,calibrate,campaign k1- 570 --only movies@3000,products@1500 --repeats 3`)
# Staging calls carry one .gpu/part_* each (plus model.tgz / wheels) and run
#   bash .gpuwork/experiments/jobtime_call.sh stage
# Leaves a tarball of the new run folders (run.json, steps.parquet, predictions,
# calibration, profile, trial) and the log in $OUT.
set -u
tstart=$(date +%s)  # BUDGET_S counts from here: the install is inside it
out=${OUT:?run it through the device tool, which sets OUT}
mkdir -p /tmp/stage
cp -n .gpu/part_* .gpu/model.tgz .gpu/wheels/*.whl /tmp/stage/ 2>/dev/null
ls /tmp/stage
[ "$1" = stage ] && exit 0
steps=$1; prefix=$2; budget=$3; shift 3
bash .gpu/install.sh > "$out/install.log" 2>&1 || { tail -5 "$out/install.log"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD/.gpuwork HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 \
  PYTHONUNBUFFERED=1 VLLM_ALLOW_INSECURE_SERIALIZATION=1
[ -f /tmp/site/quicktok/__init__.py ] || python3 -m pip install -q --no-index --no-deps \
  --no-compile --target /tmp/site /tmp/stage/*.whl
[ -d models/llama-3.1-8b ] || tar xzf /tmp/stage/model.tgz
nvidia-smi --query-gpu=index,name,memory.used,clocks.sm --format=csv,noheader
t0=$(date +%s)
left=$((budget - 5 - (t0 - tstart)))
timeout $left python3 .gpuwork/experiments/jobtime_gpu.py --out /tmp/jt --prefix "$prefix" \
  --steps "$steps" --budget-s $((left - 15)) "$@" > "$out/$prefix.log" 2>&1
echo "exit $? after $(( $(date +%s) - t0 )) s"
grep -E '^\[' "$out/$prefix.log" | tail -60
cd /tmp/jt && tar czf "$out/jt-$prefix.tgz" --exclude='*.csv' --exclude=requests.parquet \
  --exclude=plan.json $(ls -d ${prefix}* *-${prefix%-}*.json 2>/dev/null)
ls -la "$out"
