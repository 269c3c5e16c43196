#!/usr/bin/env bash
# Every GPU figure of the project from ONE device call of at most 9.5 minutes
# (BENCHMARKS.md, "The GPU campaign"): a machine is lent for 15 minutes, takes a minute or
# more to start and goes back 30 s after a call, so everything runs in one call, the most
# important step first, each under its own time limit and all under one deadline.
#
#   scripts/gpu-campaign.sh OUT_DIR full     # on the GPU (no Rust there: the carried binary)
#   scripts/gpu-campaign.sh OUT_DIR quick    # the same steps with tiny settings on this CPU
#                                            # (flex and the software Vulkan adapter)
#
# Steps (limit in seconds on the GPU; each is cut short further by the deadline):
#   1. the GPU, driver and the hftrain device that comes up (45)
#   2. where the time goes: `hftrain bench --layers` (each layer's forward, vjp and jvp) with
#      forward, gradient_backprop, gauss_newton_vector and hessian_vector, counting the kernel
#      launches of each (cubecl's profiling log at "minimal": names only, no syncs), for ResNet-9
#      (configs/cifar10-resnet9-sgd.toml, batch 256; 150) and the small CNN
#      (configs/cifar10-small-hf.toml, batch 1000; 60); each beside PyTorch per module
#      (scripts/torch_reference.py --bench --layers; 60 and 40)
#   3. the ratios table: scripts/bench-beside-torch.sh, ResNet-9 batch 256 (120)
#   4. the small CNN trained 10 epochs with Hessian-free, with SGD (SGD_CONFIG, default
#      configs/cifar10-small-sgd.toml) and, where time is left, with Adam at batch 512
#      (LARGE_BATCH_CONFIG, default configs/cifar10-small-adam-b512.toml: the first-order
#      reference where a large batch pays), then `hftrain compare` (110 each, stopped by
#      Ctrl-C: a checkpoint)
#   5. SGD's gradient in f16 on the SPIR-V binary, where one was carried (45)
# Every step writes its log under OUT_DIR/logs as it goes; at the end they are packed into
# OUT_DIR/logs.tar.xz, beside campaign.log (the steps' times and exit codes, the machine),
# summary.md (the side-by-side tables and launch counts), compare.md, compare.png and
# kernel-cache.tar.xz: at most 6 files come back (the device returns 8 at most).
#
# The kernel cache travels: the campaign starts from .campaign/kernel-cache.tar.xz where
# present (HFTRAIN_KERNEL_CACHE points at it unpacked) and brings back the cache it built as
# OUT_DIR/kernel-cache.tar.xz; keep that in the ignored .campaign/ for the next session
# (`cp <files_at>/kernel-cache.tar.xz .campaign/`), so autotuning is paid once.
#
# What to carry (the device has no Rust and no network; the working tree with the carried
# paths is 64 MiB at most): .campaign/hftrain.xz (the stripped release binary, xz), optionally
# .campaign/hftrain-vulkan.xz (`--features vulkan`), .campaign/cifar10.tar.xz (the image
# folder) and .campaign/kernel-cache.tar.xz; .gl/ holds the Vulkan loader's packages (the
# device README's recipe). BENCHMARKS.md says how to make them. The call, ready to paste:
#
#   run(command="for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; scripts/gpu-campaign.sh $OUT full",
#       carry=[".campaign", ".gl"], timeout_s=590)
#
# The script ends by DEADLINE_S (550 s after it starts) plus packing, inside the 590 s.
set -uo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/gpu-campaign.sh OUT_DIR full|quick"
out=${1:?$usage}
mode=${2:?$usage}
case "$mode" in full|quick) ;; *) echo "$usage (not '$mode')" >&2; exit 2 ;; esac
root=$PWD
mkdir -p "$out/logs"
out=$(cd "$out" && pwd)
logs=$out/logs
work=${WORK:-/tmp/hftrain-campaign}
mkdir -p "$work"
started=$(date +%s)
deadline=$(( started + ${DEADLINE_S:-550} ))
log() { echo "[$(( $(date +%s) - started ))s] $*" | tee -a "$out/campaign.log"; }
left() { echo $(( deadline - $(date +%s) )); }
# The smaller of a step's own limit and the time left before the deadline (0: no time).
limit() { local l; l=$(left); [ "$1" -lt "$l" ] && l=$1; [ "$l" -gt 10 ] && echo "$l" || echo 0; }
clean() { grep --line-buffered -v XDG_RUNTIME_DIR; }

quick=false
if [ "$mode" = quick ]; then
    quick=true
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hftrain/target}"
    bin=${HFTRAIN:-$CARGO_TARGET_DIR/release/hftrain}
    [ -x "$bin" ] || cargo build --release --quiet || exit 1
    vulkan_bin=${HFTRAIN_VULKAN:-}
    device=flex                      # steps 3 and 4: 2 cores, tiny settings
    gpu=${DEVICE:-wgpu-cpu}          # step 2: the software Vulkan adapter, cubecl's kernels
    half_device=flex
    cache_in=${KERNEL_CACHE_ARCHIVE:-}
    data=$work/synthetic
    [ -d "$data" ] || "$bin" data synthetic --out "$data" --format folder \
        --train-per-class 30 --test-per-class 10 >/dev/null
    # The software adapter compiles and autotunes slowly: ResNet-9's layers on flex, the
    # small CNN's forward alone on it (its kernel launches counted, its cache built).
    r9_batch=2; small_batch=8; repeats=1; ratio_batch=4; r9_device=flex
    layer_quantities=forward
    t_devices=45; t_r9=120; t_r9_torch=60; t_small=150; t_small_torch=40; t_ratios=150
    t_train=60; t_half=60
else
    # The stripped binaries travel xz-compressed (82 MB stripped, over the carry limit).
    bin=${HFTRAIN:-$work/hftrain}
    [ -x "$bin" ] || { xz -dc .campaign/hftrain.xz > "$bin" && chmod +x "$bin"; } || exit 1
    vulkan_bin=${HFTRAIN_VULKAN:-$work/hftrain-vulkan}
    if [ ! -x "$vulkan_bin" ] && [ -f .campaign/hftrain-vulkan.xz ]; then
        xz -dc .campaign/hftrain-vulkan.xz > "$vulkan_bin" && chmod +x "$vulkan_bin"
    fi
    device=${DEVICE:-wgpu}; gpu=$device; half_device=vulkan
    cache_in=${KERNEL_CACHE_ARCHIVE:-.campaign/kernel-cache.tar.xz}
    data=$work/cifar10
    # The images are only needed by step 4: unpacked meanwhile.
    if [ ! -d "$data" ]; then
        ( tar -xJf .campaign/cifar10.tar.xz -C "$work" && touch "$work/data.ok" ) &
    else
        touch "$work/data.ok"
    fi
    r9_batch=256; small_batch=1000; repeats=3; ratio_batch=256; r9_device=$gpu
    layer_quantities=forward,gradient_backprop,gauss_newton_vector,hessian_vector
    t_devices=45; t_r9=150; t_r9_torch=60; t_small=60; t_small_torch=40; t_ratios=120
    t_train=110; t_half=45
fi
python=${PYTHON:-python3}

# The kernel cache: the one carried in, unpacked, is where every step keeps its autotuning.
export HFTRAIN_KERNEL_CACHE=$work/kernel-cache
rm -rf "$HFTRAIN_KERNEL_CACHE"
if [ -n "$cache_in" ] && [ -f "$cache_in" ]; then
    tar -xJf "$cache_in" -C "$work"
    log "kernel cache from $cache_in: $(find "$HFTRAIN_KERNEL_CACHE" -type f 2>/dev/null | wc -l) files"
else
    log "kernel cache: none carried in, starting empty"
fi
mkdir -p "$HFTRAIN_KERNEL_CACHE"

# Runs one step's command under its limit, its output into logs/NAME.log as it goes.
step() { # NAME LIMIT COMMAND...
    local name=$1 own=$2; shift 2
    local l; l=$(limit "$own")
    if [ "$l" -eq 0 ]; then log "$name: skipped, no time left"; return 0; fi
    log "$name (at most ${l}s): $*"
    # STEP_LIMIT lets a step stop its own program first, so that what counts its output
    # still prints its totals.
    STEP_LIMIT=$(( l - 5 )) timeout --kill-after=10 "$l" "$@" 2>&1 | clean >> "$logs/$name.log"
    local status=${PIPESTATUS[0]}
    log "$name ended with status $status$( [ "$status" = 124 ] && echo ' (cut at its limit)')"
}

# A config for this machine: the quick mode shrinks the data, batches and epochs.
prepare() { # CONFIG NAME
    local config=$1 name=$2
    if $quick; then
        sed -e "s/^train_limit = .*/train_limit = 200/" -e "s/^test_limit = .*/test_limit = 100/" \
            -e "s/^batch_size = .*/batch_size = 50/" -e "s/^eval_batch_size = .*/eval_batch_size = 100/" \
            -e "s/^batch_size_milestones = .*/batch_size_milestones = [[2, 100]]/" \
            -e "s/^epochs = .*/epochs = 3/" -e "s/^curvature_batch_size = .*/curvature_batch_size = 25/" \
            -e "s/^backtracking_batch_size = .*/backtracking_batch_size = 25/" \
            -e "s/^cg_max_iterations = .*/cg_max_iterations = 5/" "$config" > "$work/$name.toml"
    else
        cp "$config" "$work/$name.toml"
    fi
}

log "campaign $mode: binary $bin, device $device (step 2: $gpu), deadline $(left)s"

# 1. The machine, its driver and the device hftrain opens.
machine() {
    nvidia-smi 2>&1 | head -15
    vulkaninfo --summary 2>&1 | grep -E 'deviceName|driverVersion|apiVersion'
    echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-unset}"
    ls /usr/local/nvidia/share/vulkan/icd.d/ 2>&1
    "$bin" bench --config configs/cifar10-small-sgd.toml --device "$gpu" --batch 8 --repeats 1 \
        --only forward 2>&1 | head -3
    if [ -x "$vulkan_bin" ]; then
        "$vulkan_bin" bench --config configs/cifar10-small-sgd.toml --device vulkan --batch 8 \
            --repeats 1 --only forward 2>&1 | head -2
    fi
}
export -f machine
export bin vulkan_bin gpu
step 1-devices "$t_devices" bash -c machine
sed -n 's/^device: /device: /p' "$logs/1-devices.log" | tee -a "$out/campaign.log"

# 2. Where the time goes, per layer and per pass, with the kernel launches of each quantity.
# cubecl logs each launch ("Executing NAME") when a cubecl.toml in the working directory sets
# its profiling logger to "minimal"; hftrain prints "timing QUANTITY" as each quantity
# starts, so the launches between two such lines are that quantity's (its warm-up call and
# the timed ones; the logger runs on its own thread, so a boundary may be off by a few).
# Host reads (into_data, CG's scalars) are not counted: neither cubecl nor hftrain reports
# them without a hook in the code.
launch_dir=$work/launch-count
mkdir -p "$launch_dir"
printf '[profiling.logger]\nlevel = "minimal"\nstdout = true\n' > "$launch_dir/cubecl.toml"
count_launches='
BEGIN { section = "setup" }
/^Executing / {
    if (!(section in n)) order[++sections] = section
    n[section]++; k[section SUBSEP $2]++; next
}
/^timing / { section = ($2 == "each" ? "layers" : $2) }
{ print; fflush() }
END {
    print "\nkernel launches by quantity (warm-up and timed calls together; host reads are not counted):"
    if (sections == 0) print "  none logged: this device runs no cubecl kernels (flex), or the logger was off"
    for (i = 1; i <= sections; i++) {
        s = order[i]; printf "  %-20s %8d launches, most often:", s, n[s]; shown = "|"
        for (j = 0; j < 3; j++) {
            best = ""; most = 0
            for (key in k) {
                split(key, part, SUBSEP)
                if (part[1] == s && k[key] > most && index(shown, "|" part[2] "|") == 0) { most = k[key]; best = part[2] }
            }
            if (best != "") { shown = shown best "|"; printf " %s x%d", substr(best, 1, 48), most }
        }
        printf "\n"
    }
}'
layers() { # NAME CONFIG BATCH DEVICE
    ( cd "$launch_dir" && timeout "$STEP_LIMIT" "$bin" bench --config "$root/$2" --device "$4" \
        --batch "$3" --repeats "$repeats" --cg-iterations 3 --layers --only "$layer_quantities" \
        --json "$logs/$1.json" 2>&1 ) | awk "$count_launches"
}
torch_layers() { # CONFIG BATCH
    if ! "$python" -c 'import torch' 2>/dev/null; then
        echo "no PyTorch for $python: hftrain's figures only"; return 0
    fi
    local tdev=cuda; $quick && tdev=cpu
    PYTHONUNBUFFERED=1 "$python" scripts/torch_reference.py --config "$1" --bench "$2" --layers \
        --repeats "$repeats" --cg-iterations 3 --device "$tdev"
}
export -f layers torch_layers
export repeats root launch_dir logs count_launches python quick layer_quantities
step 2-layers-resnet9 "$t_r9" bash -c "layers 2-layers-resnet9 configs/cifar10-resnet9-sgd.toml $r9_batch $r9_device"
step 2-torch-layers-resnet9 "$t_r9_torch" bash -c "torch_layers configs/cifar10-resnet9-sgd.toml $r9_batch"
step 2-layers-small "$t_small" bash -c "layers 2-layers-small configs/cifar10-small-hf.toml $small_batch $gpu"
step 2-torch-layers-small "$t_small_torch" bash -c "torch_layers configs/cifar10-small-hf.toml $small_batch"

# 3. The ratios table beside PyTorch, ResNet-9 (REPEATS=5 on the GPU).
step 3-ratios-resnet9 "$t_ratios" env BATCH="$ratio_batch" REPEATS=$(( repeats == 1 ? 1 : 5 )) \
    HFTRAIN_BIN="$bin" OUT="$logs" PYTHON="$python" \
    scripts/bench-beside-torch.sh configs/cifar10-resnet9-sgd.toml "$device"

# 4. The small CNN: Hessian-free and SGD, 10 epochs each (stopped by Ctrl-C at the limit:
# the run checkpoints), then compare.
if ! $quick; then
    wait 2>/dev/null
    [ -f "$work/data.ok" ] && log "data ready: $(find "$data" -type f | wc -l) files" \
        || log "data extraction FAILED: step 4 will fail"
fi
train_for() { # NAME CONFIG
    local name=$1 l; l=$(limit "$t_train")
    if [ "$l" -eq 0 ]; then log "4-train-$name: skipped, no time left"; return 0; fi
    prepare "$2" "$name"
    rm -rf "${work:?}/$name"
    log "4-train-$name (at most ${l}s): $2"
    timeout --signal=INT --kill-after=30 "$l" "$bin" train --config "$work/$name.toml" \
        --data "$data" --device "$device" --out "$work/$name" 2>&1 | clean > "$logs/4-train-$name.log"
    local status=${PIPESTATUS[0]}
    log "4-train-$name ended with status $status (0 done, 124/130 stopped and checkpointed)"
    grep -E "^epoch|cold start|compil|test accuracy" "$logs/4-train-$name.log" | tail -12 >> "$out/campaign.log"
    for f in metrics.csv steps.csv report.md; do
        [ -f "$work/$name/$f" ] && cp "$work/$name/$f" "$logs/$name-$f"
    done
}
train_for small-hf configs/cifar10-small-hf.toml
train_for small-sgd "${SGD_CONFIG:-configs/cifar10-small-sgd.toml}"
train_for small-large-batch "${LARGE_BATCH_CONFIG:-configs/cifar10-small-adam-b512.toml}"
trained=()
for name in small-hf small-sgd small-large-batch; do
    [ -f "$work/$name/metrics.csv" ] && trained+=("$work/$name")
done
if [ "${#trained[@]}" -gt 0 ]; then
    log "4-compare"
    "$bin" compare "${trained[@]}" --levels 50,60,65,70 \
        --out "$out/compare.png" > "$out/compare.md" 2>&1
    log "4-compare ended with status $?"
fi

# 5. SGD's gradient in f16 on the SPIR-V binary (cooperative matrices where the driver has
# them), beside step 2's f32 figures. The quick mode has no SPIR-V binary: the default one on
# flex, so that the command itself is checked.
if [ -x "$vulkan_bin" ] || $quick; then
    half_bin=$bin; $quick || half_bin=$vulkan_bin
    step 5-f16-resnet9 "$t_half" "$half_bin" bench --config configs/cifar10-resnet9-sgd.toml \
        --device "$half_device" --batch "$r9_batch" --repeats "$repeats" --precision f16 \
        --only gradient_autodiff,gradient_backprop,sgd_step
else
    log "5-f16-resnet9: skipped, no SPIR-V binary carried (.campaign/hftrain-vulkan.xz)"
fi

# The summary: the tables of steps 2, 3 and 5, small enough to read in the reply.
{
    echo "# GPU campaign ($mode), $(date -u +%Y-%m-%dT%H:%MZ)"
    for f in "$logs"/2-*.log "$logs"/3-*.log "$logs"/5-*.log; do
        [ -f "$f" ] || continue
        echo; echo "## $(basename "$f" .log)"; echo '```'
        sed '/--- shader source/,/--- end shader ---/d' "$f" | grep -vE "^(timing |torch (forward|evaluation|gradient|sgd_step|gauss|hessian|cg))" \
            | grep -vE "^  (conv|x \+|linear|global|scale|flatten|relu|max-pool)" | head -80
        echo '```'
    done
} > "$out/summary.md"

# Back: the kernel cache built here (for .campaign/), and every log in one archive.
tar -cJf "$out/kernel-cache.tar.xz" -C "$work" kernel-cache
log "kernel cache back: $(find "$HFTRAIN_KERNEL_CACHE" -type f | wc -l) files, $(du -k "$out/kernel-cache.tar.xz" | cut -f1) KiB packed"
tar -cJf "$out/logs.tar.xz" -C "$out" logs && rm -rf "$logs"
log "done: $(ls "$out" | tr '\n' ' ')"
