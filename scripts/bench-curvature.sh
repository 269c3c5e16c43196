#!/usr/bin/env bash
# Cost of the curvature products on one batch of the default network (the network of
# configs/cifar10.toml and cifar10-sgd.toml), for BENCHMARKS.md: the median time of one
# gradient, one Hessian-vector product (double backprop) and one Gauss-Newton-vector product,
# their ratios to the gradient, and the peak resident memory of a process computing each
# alone (with the checkpoint and batch loaded only as the baseline). On a CPU backend the
# device memory is the process's memory; on a GPU it is not (see the note in BENCHMARKS.md).
#
#   [BATCH=64] [REPEATS=5] scripts/bench-curvature.sh DATA_DIR [DEVICE]
#   e.g. scripts/bench-curvature.sh ../shared/data/cifar10 flex
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: scripts/bench-curvature.sh DATA_DIR [DEVICE]}
device=${2:-auto}
batch=${BATCH:-64}
repeats=${REPEATS:-5}

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hftrain/target}"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/hftrain"
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

echo "== peak resident memory, one product per process =="
for only in none gradient hessian gauss-newton; do
  /usr/bin/time -f "%M" -o "$work/rss" "$bin" curvature --checkpoint "$checkpoint" --data "$data" \
    --device "$device" --batch "$batch" --repeats 1 --only "$only" --out "$work/$only.safetensors" \
    > /dev/null 2>&1
  echo "$only $(cat "$work/rss")"
done | python3 -c '
import sys
kb = dict(line.split() for line in sys.stdin)
base = int(kb["none"])
print(f"  baseline (checkpoint + batch loaded): {base / 1024:8.1f} MiB")
grad = int(kb["gradient"]) - base
for name in ["gradient", "hessian", "gauss-newton"]:
    extra = int(kb[name]) - base
    print(f"  {name:<13} peak {int(kb[name]) / 1024:8.1f} MiB, above baseline {extra / 1024:8.1f} MiB ({extra / max(grad, 1):.2f} x gradient)")
'
