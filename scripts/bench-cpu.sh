#!/usr/bin/env bash
# Training speed on this machine's CPU, for BENCHMARKS.md: a config's network (default
# configs/cifar10-sgd.toml) on a class-balanced subset of CIFAR-10, on each device given
# (default: wgpu's software adapter and Burn's CPU backend). Prints images/s per epoch and the
# median over the epochs after the first (the first one includes kernel compilation).
#
#   [CONFIG=configs/smoke.toml] [TRAIN_LIMIT=256] [EPOCHS=3] [BATCH=64] \
#     scripts/bench-cpu.sh DATA_DIR [DEVICE...]
#   e.g. scripts/bench-cpu.sh ../shared/data/cifar10 wgpu-cpu flex
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: scripts/bench-cpu.sh DATA_DIR [DEVICE...]}
shift
devices=("$@")
[ ${#devices[@]} -gt 0 ] || devices=(wgpu-cpu flex)
config=${CONFIG:-configs/cifar10-sgd.toml}
train_limit=${TRAIN_LIMIT:-256}
epochs=${EPOCHS:-3}
batch=${BATCH:-64}

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hftrain/target}"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/hftrain"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

sed -e "s/^train_limit = .*/train_limit = $train_limit/" \
    -e "s/^test_limit = .*/test_limit = 100/" \
    -e "s/^epochs = .*/epochs = $epochs/" \
    -e "s/^batch_size = .*/batch_size = $batch/" \
    "$config" > "$work/bench.toml"

echo "network: $config, batch $batch, $train_limit training images, $epochs epochs"
for device in "${devices[@]}"; do
  "$bin" train --config "$work/bench.toml" --data "$data" --device "$device" --out "$work/$device" \
    > "$work/$device.log" 2>&1 || { cat "$work/$device.log"; exit 1; }
  grep '^device:' "$work/$device.log"
  python3 - "$work/$device/metrics.csv" "$device" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
speeds = [float(r["images_per_second"]) for r in rows]
later = speeds[1:] or speeds
print(f"{sys.argv[2]}: images/s per epoch {', '.join(f'{s:.2f}' for s in speeds)}; "
      f"median after the first epoch {statistics.median(later):.2f}")
PY
done
