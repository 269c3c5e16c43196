//! Will a run fit in memory? A lower bound on what training holds at once, compared at
//! start-up with the memory the host has available, so that a network or batch far too large
//! is refused with the setting to change, instead of aborting later with "memory allocation
//! of ... bytes failed" and a backtrace. Only devices whose tensors live in host memory (flex,
//! a software wgpu adapter) are checked; a GPU's memory is not known here.
//!
//! The bound counts what cannot be avoided: the output of each layer with parameters
//! (convolution, linear), kept for the backward pass (once, although batch norm and ReLU keep
//! more), for a batch; and the
//! parameters four times (values, gradient, two optimizer or conjugate-gradient vectors). The
//! real need is several times larger, so a run refused here could never have fitted.

use anyhow::{Result, bail};

use crate::config::Config;
use crate::model::Network;

/// Bytes a run needs at the least: (parameters, activations of one batch).
pub fn lower_bound(config: &Config, network: &Network) -> (u64, u64) {
    // Evaluation keeps no activations for a backward pass: the training batch is the bound.
    let batch = config.train.largest_batch_size() as u64;
    let parameters = network.params.total() as u64;
    (
        4 * 4 * parameters,
        4 * network.kept_per_image as u64 * batch,
    )
}

/// Memory the host can still give (Linux: MemAvailable), or None where unknown.
pub fn available() -> Option<u64> {
    proc_kib("/proc/meminfo", "MemAvailable:")
}

/// The process's peak resident memory (Linux: VmHWM), or None where unknown.
pub fn process_peak() -> Option<u64> {
    proc_kib("/proc/self/status", "VmHWM:")
}

/// A `key   N kB` line of a Linux /proc file, in bytes.
fn proc_kib(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Refuses a run whose lower bound exceeds `available` bytes.
pub fn check_fits(config: &Config, network: &Network, available: u64) -> Result<()> {
    let (params, activations) = lower_bound(config, network);
    let parameters = crate::words::group_thousands(network.params.total());
    if params + activations > available {
        bail!(
            "this run needs at least {} of memory ({} for {parameters} parameters and their \
             gradient and optimizer state, {} for the activations of a batch of {}), more than \
             the {} available: lower train.batch_size (or batch_size_milestones) or the channels in \
             model.stages",
            gib(params + activations),
            gib(params),
            gib(activations),
            config.train.largest_batch_size(),
            gib(available)
        );
    }
    Ok(())
}
