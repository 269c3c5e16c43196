#!/usr/bin/env bash
# Every GPU figure of the project in one prepared script (BENCHMARKS.md, "The GPU campaign"),
# for a machine lent for a few minutes: no Rust there, so it runs the stripped release binary
# and the data archive carried beside it in .campaign/ (see BENCHMARKS.md for how to make them,
# the Vulkan loader and VK_DRIVER_FILES).
#
#   scripts/gpu-campaign.sh OUT_DIR part1     # under 9 minutes
#   scripts/gpu-campaign.sh OUT_DIR part2     # under 9 minutes, after part1 (same OUT_DIR
#                                             # on the same machine, or its results carried)
#   scripts/gpu-campaign.sh OUT_DIR quick     # both parts with tiny settings on this CPU
#                                             # (flex and the software Vulkan adapter)
#
# part1: 1. the GPU, driver and the hftrain devices that come up; 2. SGD on ResNet-9
#        (configs/cifar10-resnet9-sgd.toml) for PART1_TRAIN_MINUTES, stopped by Ctrl-C (a
#        checkpoint); 3. the curvature products' time on that checkpoint beside PyTorch's
#        (scripts/torch_reference.py --curvature, f32 with TF32 off); 3b. `hftrain bench`
#        of ResNet-9 and of configs/cifar10.toml's network beside PyTorch
#        (scripts/bench-beside-torch.sh: forward, gradients, SGD step, Gv, Hv, a CG iteration,
#        a Hessian-free step), with the WGSL binary and, where .campaign/hftrain-vulkan.xz
#        was carried (`cargo build --release --features vulkan`), the SPIR-V one.
# part2: 4. the SGD run continued for SGD_MORE_MINUTES; 5. Hessian-free (configs/cifar10.toml's
#        optimizer on the same network) for HF_MINUTES; 6. `hftrain compare` of the two;
#        7. `hftrain bench` with the convolutions through patches forced on and off; 8. SGD's
#        gradient in f16 (WGSL) and bf16 (SPIR-V), `hftrain bench --precision`.
# Every step writes its log under OUT_DIR as it goes, so a step cut short still leaves its
# part.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu-campaign.sh OUT_DIR part1|part2|quick}
part=${2:?usage: scripts/gpu-campaign.sh OUT_DIR part1|part2|quick}
mkdir -p "$out"
work=${WORK:-/tmp/hftrain-campaign}
mkdir -p "$work"
# The stripped binary travels xz-compressed (82 MB stripped, over the 64 MiB carry limit).
bin=${HFTRAIN:-$work/hftrain}
if [ ! -x "$bin" ] && [ -f .campaign/hftrain.xz ]; then
    xz -dc .campaign/hftrain.xz > "$bin" && chmod +x "$bin"
fi
# The same built with `--features vulkan` (SPIR-V kernels), where it was carried.
vulkan_bin=${HFTRAIN_VULKAN:-$work/hftrain-vulkan}
if [ ! -x "$vulkan_bin" ] && [ -f .campaign/hftrain-vulkan.xz ]; then
    xz -dc .campaign/hftrain-vulkan.xz > "$vulkan_bin" && chmod +x "$vulkan_bin"
fi
started=$(date +%s)
log() { echo "[$(( $(date +%s) - started ))s] $*" | tee -a "$out/campaign.log"; }

quick=false
if [ "$part" = quick ]; then
    quick=true
    device=${DEVICE:-flex}
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
    if [ ! -x "$bin" ]; then
        cargo build --release --quiet && bin="$CARGO_TARGET_DIR/release/hftrain"
    fi
    data=$work/synthetic
    [ -d "$data" ] || "$bin" data synthetic --out "$data" --format folder \
        --train-per-class 30 --test-per-class 10 >/dev/null
    train_minutes=0.4; more_minutes=0.2; hf_minutes=1.0; products=(--batch 8 --repeats 1)
    bench_settings=(BATCH=8 REPEATS=1); bench_seconds=120
else
    device=${DEVICE:-wgpu}
    data=$work/cifar10
    if [ ! -d "$data" ]; then
        mkdir -p "$work" && tar -xJf .campaign/cifar10.tar.xz -C "$work" || exit 1
    fi
    # 4 minutes of SGD and at most 4.5 of bench keep part1 under 10 minutes.
    train_minutes=${PART1_TRAIN_MINUTES:-4}
    bench_seconds=${BENCH_SECONDS:-270}
    more_minutes=${SGD_MORE_MINUTES:-2.5}
    hf_minutes=${HF_MINUTES:-4}
    products=(--batch 64 --repeats 5)
    bench_settings=(BATCH=64 REPEATS=5)
fi

# A config made for this machine: the quick mode shrinks the data and the network's batch.
prepare() { # CONFIG NAME
    local config=$1 name=$2
    if $quick; then
        sed -e "s/^train_limit = .*/train_limit = 200/" -e "s/^test_limit = .*/test_limit = 100/" \
            -e "s/^batch_size = .*/batch_size = 50/" -e "s/^eval_batch_size = .*/eval_batch_size = 100/" \
            -e "s/^epochs = .*/epochs = 4/" -e "s/^curvature_batch_size = .*/curvature_batch_size = 25/" \
            -e "s/^cg_max_iterations = .*/cg_max_iterations = 5/" "$config" > "$work/$name.toml"
    else
        cp "$config" "$work/$name.toml"
    fi
}

# Runs `hftrain train` for at most MINUTES, stopping it with Ctrl-C (it checkpoints).
train_for() { # MINUTES RUN [ARGS...]
    local minutes=$1 run=$2; shift 2
    local seconds; seconds=$(python3 -c "print(int($minutes * 60))")
    log "train $run for ${minutes} min: $*"
    timeout --signal=INT --kill-after=90 "$seconds" \
        "$bin" train "$@" --data "$data" --device "$device" --out "$run" --quiet \
        2>&1 | grep -v XDG_RUNTIME_DIR >> "$out/campaign.log"
    local status=${PIPESTATUS[0]}
    log "train $run ended with status $status (0 done, 124/130 stopped and checkpointed)"
    cp "$run/metrics.csv" "$out/$(basename "$run")-metrics.csv" 2>/dev/null
    [ -f "$run/steps.csv" ] && cp "$run/steps.csv" "$out/$(basename "$run")-steps.csv"
    return 0
}

# What comes back from the device is at most 9 files: campaign.log (every step's lines, the
# training runs' output, the machine), curvature.log, bench.log, the runs' metrics.csv and
# steps.csv, compare.md and compare.png.

sgd=$work/resnet9-sgd
hf=$work/resnet9-hf

if [ "$part" = part1 ] || $quick; then
    log "1. machine and devices"
    { nvidia-smi 2>&1 | head -15; vulkaninfo --summary 2>&1 | grep -E 'deviceName|driverVersion' ;
      true; } >> "$out/campaign.log"
    prepare configs/cifar10-resnet9-sgd.toml resnet9-sgd
    log "2. SGD on ResNet-9"
    rm -rf "$sgd"
    train_for "$train_minutes" "$sgd" --config "$work/resnet9-sgd.toml"
    log "3. curvature products on its checkpoint, then PyTorch's"
    "$bin" curvature --checkpoint "$sgd/checkpoints/latest" --data "$data" --device "$device" \
        "${products[@]}" --out "$work/products.safetensors" 2>&1 | grep -v XDG_RUNTIME_DIR \
        >> "$out/curvature.log"
    if ! $quick; then
        timeout 120 python3 scripts/torch_reference.py --config "$work/resnet9-sgd.toml" \
            --data "$data" --curvature 64 >> "$out/curvature.log" 2>&1
    fi
    log "3b. hftrain bench beside PyTorch (at most ${bench_seconds} s in all)"
    deadline=$(( $(date +%s) + bench_seconds ))
    for config in "$work/resnet9-sgd.toml" configs/cifar10.toml; do
        for variant in "$device:$bin" "vulkan:$vulkan_bin"; do
            [ -x "${variant#*:}" ] || continue
            $quick && [ "${variant%%:*}" = vulkan ] && continue
            left=$(( deadline - $(date +%s) ))
            [ "$left" -gt 20 ] || { log "bench: no time left for $config on ${variant%%:*}"; continue; }
            log "bench $config on ${variant%%:*}"
            env "${bench_settings[@]}" HFTRAIN_BIN="${variant#*:}" OUT="$work/bench" \
                timeout "$left" scripts/bench-beside-torch.sh "$config" "${variant%%:*}" 2>&1 \
                | grep -v XDG_RUNTIME_DIR >> "$out/bench.log"
        done
    done
    $quick || exit 0
fi

if [ "$part" = part2 ] || $quick; then
    log "4. the SGD run continued"
    train_for "$more_minutes" "$sgd" --resume latest
    log "5. Hessian-free on the same network"
    # configs/cifar10.toml's optimizer on ResNet-9: the SGD config's network and data, the
    # Hessian-free config's [train] batch and [optimizer] sections (and no [schedule]:
    # Hessian-free has no learning rate to schedule).
    python3 - "$work/resnet9-sgd.toml" configs/cifar10.toml "$work/resnet9-hf.toml" <<'PY'
import re, sys
sgd, hf, out = open(sys.argv[1]).read(), open(sys.argv[2]).read(), sys.argv[3]
def section(text, name):
    found = re.search(r"^\[" + name + r"\]\n(?:[^\[\n].*\n?|\n)*", text, re.M)
    return found.group(0) if found else ""
text = sgd.replace(section(sgd, "optimizer"), "").replace(section(sgd, "schedule"), "")
text += "\n" + section(hf, "optimizer") + "\n" + section(hf, r"optimizer\.hessian_free")
hf_batch = re.search(r"^batch_size = .*$", hf, re.M).group(0)
text = re.sub(r"^batch_size = .*$", hf_batch, text, count=1, flags=re.M)
open(out, "w").write(text)
PY
    $quick && sed -i -e "s/^batch_size = .*/batch_size = 50/" -e "s/^curvature_batch_size = .*/curvature_batch_size = 25/" \
        -e "s/^cg_max_iterations = .*/cg_max_iterations = 5/" "$work/resnet9-hf.toml"
    rm -rf "$hf"
    train_for "$hf_minutes" "$hf" --config "$work/resnet9-hf.toml"
    log "6. compare"
    "$bin" compare "$sgd" "$hf" --out "$out/compare.png" >> "$out/compare.md" 2>&1
    tee -a "$out/campaign.log" < "$out/compare.md"
    # On the CPU some convolutions run as patches times a matrix (README); on wgpu Burn's
    # tuned kernels are kept until this measures both: the same bench with the patches
    # forced on, then off (at most 40 s each).
    log "7. convolutions through patches on $device: on, then off"
    for patches in on off; do
        HFTRAIN_CONV_PATCHES=$patches timeout 40 "$bin" bench --config "$work/resnet9-hf.toml" \
            --device "$device" "${products[@]}" --cg-iterations 5 \
            --only gradient_autodiff,gradient_backprop,sgd_step,cg_iteration 2>&1 \
            | grep -v XDG_RUNTIME_DIR | sed "s/^/patches $patches: /" >> "$out/bench.log"
    done
    # Mixed precision (`train.precision`, off by default until this measures it): SGD's
    # gradient in f16 with the WGSL binary (where the adapter has f16 shaders) and in bf16
    # with the SPIR-V one, beside step 3b's f32 figures; a device without the arithmetic
    # says so in the log (at most 30 s each).
    log "8. first-order gradients in half precision on $device"
    for variant in "f16:$bin" "bf16:$vulkan_bin"; do
        precision=${variant%%:*}; binary=${variant#*:}
        [ -x "$binary" ] || { log "precision $precision: no binary $binary"; continue; }
        timeout 30 "$binary" bench --config "$work/resnet9-sgd.toml" --device "$device" \
            "${products[@]}" --precision "$precision" \
            --only gradient_autodiff,gradient_backprop,sgd_step 2>&1 \
            | grep -v XDG_RUNTIME_DIR | sed "s/^/precision $precision: /" >> "$out/bench.log"
    done
fi
