#!/usr/bin/env bash
# Cost of the curvature products on one batch of the default network (the network of
# configs/cifar10.toml and cifar10-sgd.toml), for BENCHMARKS.md: the median time of one
# gradient, one Hessian-vector product (double backprop) and one Gauss-Newton-vector product,
# their ratios to the gradient, and the peak resident memory of a process computing each
# alone (with the checkpoint and batch loaded only as the baseline). On a CPU backend the
# device memory is the process's memory; on a GPU it is not (see the note in BENCHMARKS.md).
#
# Where nvidia-smi exists, the peak GPU memory of each process is measured too (sampled every
# 20 ms; Burn's wgpu allocator reserves memory in pages, so this is what the process holds,
# not the exact size of its live tensors).
#
#   [BATCH=64] [REPEATS=5] [HFTRAIN_BIN=path] scripts/bench-curvature.sh DATA_DIR [DEVICE]
#   e.g. scripts/bench-curvature.sh ../shared/data/cifar10 flex
# HFTRAIN_BIN runs a binary built elsewhere (a GPU machine without Rust) instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: scripts/bench-curvature.sh DATA_DIR [DEVICE]}
device=${2:-auto}
batch=${BATCH:-64}
repeats=${REPEATS:-5}

if [ -n "${HFTRAIN_BIN:-}" ]; then
  bin=$HFTRAIN_BIN
else
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hftrain/target}"
  cargo build --release --quiet
  bin="$CARGO_TARGET_DIR/release/hftrain"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A checkpoint of the default network after one SGD step on one batch.
sed -e "s/^train_limit = .*/train_limit = $batch/" \
    -e "s/^test_limit = .*/test_limit = 100/" \
    -e "s/^epochs = .*/epochs = 1/" \
    -e "s/^batch_size = .*/batch_size = $batch/" \
    -e "s/^eval_batch_size = .*/eval_batch_size = 100/" \
    configs/cifar10-sgd.toml > "$work/bench.toml"
"$bin" train --config "$work/bench.toml" --data "$data" --device "$device" --out "$work/run" \
  > "$work/train.log" 2>&1 || { cat "$work/train.log"; exit 1; }
checkpoint="$work/run/checkpoints/latest"

echo "== timings (default network, batch $batch, median of $repeats) =="
"$bin" curvature --checkpoint "$checkpoint" --data "$data" --device "$device" \
  --batch "$batch" --repeats "$repeats" --out "$work/products.safetensors" | grep -v '^products:'

echo "== peak memory, one product per process =="
gpu=$(command -v nvidia-smi || true)
for only in none gradient hessian gauss-newton; do
  if [ -n "$gpu" ]; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 20 > "$work/gpu" &
    sampler=$!
    sleep 0.5
  fi
  echo 0 > "$work/rss"
  timer=()
  if [ -x /usr/bin/time ]; then timer=(/usr/bin/time -f "%M" -o "$work/rss"); fi
  "${timer[@]}" "$bin" curvature --checkpoint "$checkpoint" --data "$data" \
    --device "$device" --batch "$batch" --repeats 1 --only "$only" --out "$work/$only.safetensors" \
    > /dev/null 2>&1
  gpu_peak=0
  if [ -n "$gpu" ]; then
    kill "$sampler"; wait "$sampler" 2>/dev/null || true
    gpu_peak=$(sort -n "$work/gpu" | tail -1)
  fi
  echo "$only $(cat "$work/rss") $gpu_peak"
done | python3 -c '
import sys
rows = {name: (int(kb), int(mib)) for name, kb, mib in (line.split() for line in sys.stdin)}
def report(label, value, unit_to_mib):
    base = value("none")
    print(f"  {label} baseline (checkpoint + batch loaded): {base * unit_to_mib:8.1f} MiB")
    grad = value("gradient") - base
    for name in ["gradient", "hessian", "gauss-newton"]:
        extra = value(name) - base
        print(f"  {label} {name:<13} peak {value(name) * unit_to_mib:8.1f} MiB, above baseline {extra * unit_to_mib:8.1f} MiB ({extra / max(grad, 1):.2f} x gradient)")
if rows["none"][0] > 0:
    report("resident", lambda name: rows[name][0], 1 / 1024)
if rows["none"][1] > 0:
    report("GPU", lambda name: rows[name][1], 1)
'
