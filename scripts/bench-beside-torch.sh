#!/usr/bin/env bash
# hftrain beside PyTorch on this machine, in one run: `hftrain bench` on a config's network
# and device, then scripts/torch_reference.py --bench on the same network, batch and thread
# count, and the two side by side with ratios (BENCHMARKS.md quotes its tables).
#
#   [BATCH=64] [REPEATS=5] [OUT=dir] [PYTHON=python3] [HFTRAIN_BIN=path] \
#     scripts/bench-beside-torch.sh CONFIG DEVICE
#   e.g. scripts/bench-beside-torch.sh configs/cifar10-small-sgd.toml flex
#
# DEVICE is hftrain's (flex, wgpu-cpu, vulkan-cpu, wgpu, vulkan); PyTorch runs on the CPU for
# the CPU devices and on CUDA for the others. HFTRAIN_BIN runs a binary built elsewhere (a GPU
# machine without Rust) instead of building. OUT keeps both JSON files.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:?usage: scripts/bench-beside-torch.sh CONFIG DEVICE}
device=${2:?usage: scripts/bench-beside-torch.sh CONFIG DEVICE}
batch=${BATCH:-64}
repeats=${REPEATS:-5}
python=${PYTHON:-python3}
if [ -n "${HFTRAIN_BIN:-}" ]; then
  bin=$HFTRAIN_BIN
else
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hftrain/target}"
  cargo build --release --quiet
  bin="$CARGO_TARGET_DIR/release/hftrain"
fi
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
case "$device" in
  flex|cpu|wgpu-cpu|vulkan-cpu) torch_device=cpu ;;
  *) torch_device=cuda ;;
esac
name=$(basename "$config" .toml)-$device-b$batch
"$bin" bench --config "$config" --device "$device" --batch "$batch" --repeats "$repeats" \
  --json "$out/$name-hftrain.json"
if ! "$python" -c 'import torch' 2>/dev/null; then
  echo "no PyTorch for $python (PYTHON=... names one): hftrain's figures only"
  exit 0
fi
# The same thread count as hftrain's (rayon: one per core) for the CPU peer.
threads=$("$python" -c 'import os; print(len(os.sched_getaffinity(0)))')
"$python" scripts/torch_reference.py --config "$config" --bench "$batch" --repeats "$repeats" \
  --device "$torch_device" --threads "$threads" --json "$out/$name-torch.json" \
  --beside "$out/$name-hftrain.json"
echo "results: $out/$name-hftrain.json $out/$name-torch.json"
