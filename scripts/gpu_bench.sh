#!/usr/bin/env bash
# Every throughput figure the project reports for an accelerator, in one call, one JSON line
# per measurement (stdout and $OUT_DIR/gpu_bench.jsonl), then a table of ratios:
#
#   on the lent GPU:   source .gpu/remote_setup.sh && bash scripts/gpu_bench.sh
#   rehearsal here:    bash scripts/gpu_bench.sh --device cpu      (tiny batches and steps)
#
# 1. The three bench specs (ssl_jax.tools.bench simclr_resnet18, mae_vit, bert_mlm) in
#    float32 and bfloat16, each beside its PyTorch peer in float32 eager and in bf16 autocast
#    + torch.compile (+ channels-last for the ResNet), with analytic MFU (tools/flops.py's
#    count of the spec over the datasheet peak; the peers are given the same count).
# 2. The demo model (--experiment simclr:fashion_mnist): one synthetic batch against real
#    data through the loader processes, at 0 and N workers.
# 3. Parameters + optimizer state per device (state_bytes_per_device) of mae_vit at --fsdp 1
#    and over every device the host has.
# A measurement that fails or runs past its time limit leaves a JSON line with its error,
# and the script goes on. Planned to stay under 8 minutes on an H100 (not yet run on one).
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=${2:-}; shift 2 ;;
    --device=*) DEVICE=${1#--device=}; shift ;;
    -h|--help) sed -n 2,19p "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (expected --device cuda|cpu)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cpu|cuda) ;; *) echo "--device $DEVICE: expected cuda or cpu" >&2; exit 2 ;; esac

PEERS=${PEERS:-}
for candidate in .gpu/peers ../shared/peers; do
  [ -z "$PEERS" ] && [ -f "$candidate/simclr_resnet18.py" ] && PEERS=$candidate
done
OUT_DIR=${OUT_DIR:-/tmp/ssl_jax_gpu_bench}
mkdir -p "$OUT_DIR"
RESULTS=$OUT_DIR/gpu_bench.jsonl
: > "$RESULTS"

if [ "$DEVICE" = cpu ]; then
  export JAX_PLATFORMS=cpu
  STEPS=(--steps 2 --warmup 1); PEER_STEPS=(--steps 2 --warmup 1); LIMIT=300
  declare -A BATCH=([simclr_resnet18]=8 [mae_vit]=8 [bert_mlm]=4 [demo]=64)
  WORKERS=1; DATA_DIR=${DATA_DIR:-}
else
  STEPS=(--steps 20 --warmup 3); PEER_STEPS=(--steps 20 --warmup 5); LIMIT=240
  declare -A BATCH=([simclr_resnet18]=512 [mae_vit]=512 [bert_mlm]=128 [demo]=512)
  WORKERS=${WORKERS:-8}; DATA_DIR=${DATA_DIR:-}
fi

# One measurement: LABEL COMMAND...; its last stdout line must be a JSON object.
measure() {
  local label=$1; shift
  local log="$OUT_DIR/$label.log" start line
  start=$(date +%s)
  line=$(timeout "$LIMIT" "$@" 2> "$log" | tail -n 1)
  local rc=$?
  if [ -n "$line" ] && python3 -c "import json,sys; json.loads(sys.argv[1])" "$line" 2>/dev/null; then
    line=$(python3 -c "import json,sys; d=json.loads(sys.argv[1]); d['label']=sys.argv[2]; print(json.dumps(d))" "$line" "$label")
  else
    line=$(python3 -c "import json,sys; print(json.dumps({'label': sys.argv[1], 'error': sys.argv[2]}))" \
           "$label" "exit $rc after $(( $(date +%s) - start )) s; last lines: $(tail -n 3 "$log" | tr '\n' ' ' | cut -c1-400)")
  fi
  echo "$line" | tee -a "$RESULTS"
}

have_torch=$(python3 -c "import torch; print(1)" 2>/dev/null || echo 0)
DATA_FLAG=(); [ -n "$DATA_DIR" ] && DATA_FLAG=(--data_dir "$DATA_DIR")

for spec in simclr_resnet18 mae_vit bert_mlm; do
  batch=${BATCH[$spec]}
  for precision in float32 bfloat16; do
    measure "ssl_jax:$spec:$precision" python3 -m ssl_jax.tools.bench "$spec" --batch "$batch" \
      --precision "$precision" "${STEPS[@]}"
  done
  if [ "$have_torch" = 1 ] && [ -n "$PEERS" ]; then
    extra=(); [ "$spec" = simclr_resnet18 ] && extra=(--channels-last)
    amp=(); [ "$DEVICE" = cuda ] && amp=(--amp bf16)   # the peers autocast on CUDA only
    measure "torch:$spec:float32-eager" python3 "$PEERS/$spec.py" --device "$DEVICE" \
      --batch "$batch" "${PEER_STEPS[@]}"
    measure "torch:$spec:bf16-compile" python3 "$PEERS/$spec.py" --device "$DEVICE" \
      --batch "$batch" "${PEER_STEPS[@]}" "${amp[@]}" "${extra[@]}" --compile
  else
    measure "torch:$spec:skipped" python3 -c "import json; print(json.dumps({'skipped': 'torch or the peers (PEERS=$PEERS) not found'}))"
  fi
done

measure "demo:synthetic" python3 -m ssl_jax.tools.bench --experiment simclr:fashion_mnist \
  --batch "${BATCH[demo]}" "${STEPS[@]}" "${DATA_FLAG[@]}"
for workers in 0 "$WORKERS"; do
  measure "demo:real:workers$workers" python3 -m ssl_jax.tools.bench --experiment \
    simclr:fashion_mnist --real_data --workers "$workers" --batch "${BATCH[demo]}" \
    "${STEPS[@]}" "${DATA_FLAG[@]}"
done

devices=$(python3 -c "import ssl_jax, jax; print(jax.device_count())" 2>/dev/null || echo 1)
for fsdp in 1 "$devices"; do
  measure "fsdp:mae_vit:fsdp$fsdp" python3 -m ssl_jax.tools.bench mae_vit --fsdp "$fsdp" \
    --batch "${BATCH[mae_vit]}" "${STEPS[@]}"
  [ "$devices" = 1 ] && break
done

python3 scripts/gpu_bench_table.py "$RESULTS"
