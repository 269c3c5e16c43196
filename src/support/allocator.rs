//! Large freed blocks kept by the allocator for the next tensor instead of handed back to the
//! operating system.
//!
//! glibc's malloc serves every block over its mmap threshold (at most 32 MiB) with fresh
//! pages and unmaps them when freed. A training step allocates and frees the same large
//! activations again and again (115 MB for the small CNN's first layer at batch 1000), so each
//! step has the kernel fault in and zero-fill every page of them anew: on the development
//! machine that was a third of a gradient's time (BENCHMARKS.md, "Freed memory kept for
//! reuse"). With mmap off and the heap never trimmed, freed blocks stay in malloc's free
//! lists and the next step's tensors reuse them, as PyTorch's caching allocator does for GPU
//! memory. (Trimming only past 2 GiB free at the heap's top, the largest threshold an `int`
//! can say, still gave the memory back every step once a step's peak passed 2 GiB: the
//! gradient of 4000 images took 5.2 s instead of 3.2-3.6 s.) The cost: the process keeps the
//! memory of its peak (+13% peak RSS measured on that gradient). `HFTRAIN_MALLOC=system`
//! leaves malloc as glibc sets it up.
//!
//! (glibc still maps afresh a block over 64 MiB asked for by a thread other than the main
//! one, whose arena cannot grow that far; Burn's flex allocates a layer's output on the
//! calling thread, which is the main one in training.)

/// The variable that leaves malloc's defaults alone (`system`).
pub const VARIABLE: &str = "HFTRAIN_MALLOC";

/// Sets malloc up as above unless `HFTRAIN_MALLOC=system`. Called first thing in `main`, so
/// that every large block is served this way.
pub fn set_up_from_environment() {
    if std::env::var(VARIABLE).is_ok_and(|v| v == "system") {
        return;
    }
    keep_freed_memory_for_reuse();
}

/// Sets malloc up as above (later calls change only later blocks). Other C libraries'
/// allocators are left as they are.
pub fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's tuning parameters; no block is touched.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        // -1: never trim (glibc's documented value for it).
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
}
