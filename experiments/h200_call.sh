#!/usr/bin/env bash
# One device call of the H200 campaign (experiments/h200_campaign.py), run from the repo
# root on the GPU machine after the vLLM parts were staged (DEVELOPERS.md, "GPU runs"):
#   bash experiments/h200_call.sh singles|sharded|cache|mixed|queries|types BUDGET_S
# Installs vLLM 0.26 into /tmp/site if needed, unpacks the model folder, runs the step on
# both GPUs (one process per GPU where the step uses one), and leaves the new run folders
# and logs as tarballs in $OUT. Everything it runs is bounded by BUDGET_S.
set -u
step=$1; budget=$2
out=${OUT:?run it through the device tool, which sets OUT}; mkdir -p "$out" /tmp/stage
cp -n .gpu/part_* /tmp/stage/ 2>/dev/null
bash .gpu/install.sh > "$out/install.log" 2>&1 || { tail -5 "$out/install.log"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 PYTHONUNBUFFERED=1
[ -f /tmp/site/quicktok/__init__.py ] || python3 -m pip install -q --no-index --no-deps \
  --no-compile --target /tmp/site .gpu/wheels/*.whl
[ -d models/llama-3.1-8b ] || tar xzf .gpu/model.tgz
nvidia-smi --query-gpu=index,name,memory.used --format=csv,noheader
t0=$(date +%s)
run() {  # run GPU_LIST NAME ARGS...: one campaign process, bounded by what is left
  local gpus=$1 name=$2; shift 2
  local left=$((budget - ($(date +%s) - t0)))
  CUDA_VISIBLE_DEVICES=$gpus timeout $((left - 15)) \
    python3 experiments/h200_campaign.py "$@" --budget-s $((left - 25)) \
    > "$out/$name.log" 2>&1
  echo "$name exit $?"; grep -E '^\[|^\{' "$out/$name.log" | tail -40
}
# the campaign folders of results/h200 (results/README.md)
S=results/h200/paper-scale R=results/h200/paper-scale-repeats K=results/h200/small-kv-cache
case $step in
  singles) keep="$S/p12-* $S/predictions-*"
           run 0 singlesA singles --plan A --prefix p12- --out $S &
           run 1 singlesB singles --plan B --prefix p12- --out $S &
           wait;;
  sharded) keep="results/h200x2"
           run 0,1 sharded sharded --plan full --prefix p13- --out results/h200x2 \
             --enforce-eager --repeats 3;;
  cache)   keep="$K/p1[23]-kv*"
           run 0 offload cache --plan offload --prefix p13- --out $K --enforce-eager &
           run 1 kvsweep cache --plan kvsweep --prefix p12- --out $K --enforce-eager \
             --blocks 6000 2500 1200 --repeats 1 &
           wait;;
  mixed)   keep="$K/p1[23]-kv* $R/p12r-* $R/predictions-*"
           { run 0 offload cache --plan offload --prefix p13- --out $K --enforce-eager
             run 0 kvsweep cache --plan kvsweep --prefix p12- --out $K \
               --enforce-eager --blocks 1200 6000 --repeats 1; } &
           run 1 repeats singles --plan R --prefix p12r- --out $R &
           wait;;
  types)   keep="$S/p12-*-projection-* $S/p12-*-aggregation-* $S/predictions-* \
             results/h200x2/p13-1gpu-* results/h200x2/predictions-*"
           run 0 types singles --plan types --prefix p12- --out $S &
           run 1 onegpu singles --plan onegpu --prefix p13-1gpu- --out results/h200x2 \
             --enforce-eager &
           wait;;
  queries) keep="$S/p12-rag-* $S/p12-posts-* $S/predictions-*"
           run 0 rag singles --plan rag --prefix p12- --out $S &
           run 1 posts singles --plan posts --prefix p12- --out $S &
           wait;;
esac
echo "step $step took $(( $(date +%s) - t0 )) s"
# parquet holds the same tables as steps.csv / requests.csv: bring back the smaller copy
tar czf /tmp/runs-$step.tgz --exclude=steps.csv --exclude=requests.csv $keep 2>/dev/null
split -b 15m /tmp/runs-$step.tgz "$out/runs-$step.tgz.part-"
ls -la "$out"
