#!/usr/bin/env bash
# The test suite on more than one kind of CPU arithmetic, as a check that no test depends on
# one CPU's rounding (flex's SIMD kernels sum in a different order on AVX-512, AVX2 and
# scalar paths). Figures: BENCHMARKS.md.
#
#   scripts/test-cpu-kinds.sh scalar   the whole suite with flex's SIMD kernels off
#                                      (a second build of the Burn stack: about 16 minutes)
#   scripts/test-cpu-kinds.sh avx2     the tests that compute in the test process, under
#                                      qemu-x86_64 as an AMD EPYC Rome (AVX2, no AVX-512);
#                                      needs Debian's qemu-user
#
# Under qemu only the test process is emulated: a child `hftrain` runs natively, so the tests
# that compare a child's numbers bit for bit with the test process's (resume after SIGKILL,
# eval against training) and the wgpu tests (lavapipe in emulation takes hours) are left out
# there; the scalar run covers them.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hftrain/target}"

case "${1:-}" in
  scalar)
    cargo test --release --locked --no-default-features
    ;;
  avx2)
    binary=$(cargo test --release --locked --no-run --message-format=json 2>/dev/null \
      | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "integration" and m.get("executable"):
        print(m["executable"])')
    export CARGO_MANIFEST_DIR="$PWD"
    emulate() { qemu-x86_64 -cpu EPYC-Rome "$binary" "$@" 2>/dev/null; }
    # qemu's warnings about CPU features TCG lacks go to stderr, hence 2>/dev/null; a failing
    # test still prints FAILED and its name on stdout, and the exit status tells.
    emulate --skip wgpu --skip reliability:: --skip training::
    emulate training::flex training::run_directory
    HFTRAIN_TEST_F64_CHILD=1 emulate f64_ --skip wgpu --ignored --test-threads=1
    ;;
  *)
    echo "usage: $0 scalar|avx2" >&2
    exit 2
    ;;
esac
