#!/usr/bin/env bash
# How fast each optimizer reaches a test accuracy: the classic small CNN on full CIFAR-10 with
# SGD and Adam at batch 64 and at batch 512 (learning rates scaled and warmed up), K-FAC and
# Hessian-free (configs/cifar10-small-{sgd,adam,sgd-b512,adam-b512,kfac,hf}.toml), each under the
# same wall-time budget on this machine, one after the other, then `hftrain compare` on them
# (a table of time to 50/60/70% and a picture). This is how every change to Hessian-free is
# judged, against the best of the first-order runs (BENCHMARKS.md).
#
#   [MINUTES=30] [OUT=runs/bench-optimizers] [OPTIMIZERS="sgd hf"] scripts/bench-optimizers.sh [DATA_DIR]
#   e.g. MINUTES=10 scripts/bench-optimizers.sh ../shared/data/cifar10   (a quick look)
#
# Each run is stopped by Ctrl-C (SIGINT) when its budget is spent, which checkpoints it where
# it stands. Running the script again with the same OUT continues every run that has not
# finished its epochs (--resume latest) for another MINUTES: a long comparison can be made in
# pieces. The wall time compare reports is the runs' own (training and evaluation), so pieces
# add up as one run.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-data/cifar10}
minutes=${MINUTES:-30}
out=${OUT:-runs/bench-optimizers}

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/hftrain"

runs=()
for optimizer in ${OPTIMIZERS:-sgd adam sgd-b512 adam-b512 kfac hf}; do
    config=configs/cifar10-small-$optimizer.toml
    run=$out/cifar10-small-$optimizer
    runs+=("$run")
    if [ -e "$run/checkpoints/latest" ]; then
        start=(--resume latest)
    else
        start=(--config "$config")
    fi
    echo "== $run: ${minutes} minutes (${start[*]})"
    status=0
    timeout --signal=INT --kill-after=300 "${minutes}m" \
        "$bin" train "${start[@]}" --data "$data" --out "$run" --quiet || status=$?
    # 0: all epochs done; 124 or 130: stopped by the budget and checkpointed.
    case $status in
        0 | 124 | 130) ;;
        *) echo "$run failed (exit $status)" >&2; exit "$status" ;;
    esac
done
"$bin" compare "${runs[@]}" --out "$out/compare.png"
