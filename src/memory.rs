//! Will a run fit in memory? A lower bound on what training holds at once, compared at
//! start-up with the memory the host has available, so that a network or batch far too large
//! is refused with the setting to change, instead of aborting later with "memory allocation
//! of ... bytes failed" and a backtrace. Only devices whose tensors live in host memory (flex,
//! a software wgpu adapter) are checked; a GPU's memory is not known here.
//!
//! The bound counts what cannot be avoided: the output of each layer (with parameters or
//! not: a network of thousands of ReLUs keeps thousands of activations), kept for the
//! backward pass (once, although batch norm keeps more), for a batch; and the
//! parameters four times (values, gradient, two optimizer or conjugate-gradient vectors). The
//! real need is several times larger, so a run refused here could never have fitted.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::config::Config;
use crate::model::Network;

/// Bytes a run needs at the least: (parameters, activations of one batch).
pub fn lower_bound(config: &Config, network: &Network) -> (u64, u64) {
    // Evaluation keeps no activations for a backward pass: the training batch is the bound.
    lower_bound_for_batch(network, config.train.largest_batch_size())
}

/// Bytes a batch of `batch` images needs at the least: (parameters, activations). Saturating:
/// a batch of 2^64 - 1 images is refused, not wrapped round to a small number.
pub fn lower_bound_for_batch(network: &Network, batch: usize) -> (u64, u64) {
    let parameters = network.params.total() as u64;
    (
        parameters.saturating_mul(16),
        (network.kept_per_image as u64)
            .saturating_mul(4)
            .saturating_mul(batch as u64),
    )
}

/// Memory the process can still have, or None where unknown: the host's (Linux:
/// MemAvailable), or less where the process's cgroup (a container, a systemd slice) limits it.
pub fn available() -> Option<u64> {
    MemorySources::default().available()
}

/// Where `available` reads: Linux's files by default, others in a test.
#[derive(Debug, Clone)]
pub struct MemorySources {
    pub meminfo: PathBuf,
    /// The cgroup file system's mount point (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// The process's cgroup (`/proc/self/cgroup`: `0::/user.slice/...` under cgroup v2).
    pub self_cgroup: PathBuf,
}

impl Default for MemorySources {
    fn default() -> Self {
        Self {
            meminfo: "/proc/meminfo".into(),
            cgroup_root: "/sys/fs/cgroup".into(),
            self_cgroup: "/proc/self/cgroup".into(),
        }
    }
}

impl MemorySources {
    /// The host's available memory, or the room the cgroup leaves where that is less.
    pub fn available(&self) -> Option<u64> {
        let host = proc_kib(&self.meminfo, "MemAvailable:");
        match (host, self.cgroup_room()) {
            (Some(host), Some(room)) => Some(host.min(room)),
            (host, room) => host.or(room),
        }
    }

    /// The cgroup's limit less what it uses (its reclaimable page cache not counted as
    /// used): cgroup v2's memory.max and memory.current in the process's own cgroup (or at
    /// the mount point, which is a container's own cgroup), else cgroup v1's
    /// memory/memory.limit_in_bytes and usage_in_bytes. None where there is no limit.
    fn cgroup_room(&self) -> Option<u64> {
        let number = |path: PathBuf| -> Option<u64> {
            std::fs::read_to_string(path).ok()?.trim().parse().ok()
        };
        let stat = |path: PathBuf, key: &str| -> u64 {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|text| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
                })
                .unwrap_or(0)
        };
        let own = std::fs::read_to_string(&self.self_cgroup)
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    l.strip_prefix("0::")
                        .map(|p| p.trim_start_matches('/').to_string())
                })
            })
            .filter(|p| !p.is_empty());
        let v2_dirs = own
            .map(|p| self.cgroup_root.join(p))
            .into_iter()
            .chain([self.cgroup_root.clone()]);
        for dir in v2_dirs {
            // "max" (no limit) does not parse: the next place is tried, then none.
            if let Some(limit) = number(dir.join("memory.max")) {
                let used = number(dir.join("memory.current")).unwrap_or(0);
                let cache = stat(dir.join("memory.stat"), "inactive_file ");
                return Some(limit.saturating_sub(used.saturating_sub(cache)));
            }
        }
        let v1 = self.cgroup_root.join("memory");
        let limit = number(v1.join("memory.limit_in_bytes"))?;
        let used = number(v1.join("memory.usage_in_bytes")).unwrap_or(0);
        let cache = stat(v1.join("memory.stat"), "total_inactive_file ");
        Some(limit.saturating_sub(used.saturating_sub(cache)))
    }
}

/// The process's peak resident memory (Linux: VmHWM), or None where unknown.
pub fn process_peak() -> Option<u64> {
    proc_kib("/proc/self/status", "VmHWM:")
}

/// A `key   N kB` line of a Linux /proc file, in bytes.
fn proc_kib(path: impl AsRef<Path>, key: &str) -> Option<u64> {
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
    check_batch_fits(
        network,
        config.train.largest_batch_size(),
        available,
        "lower train.batch_size (or batch_size_milestones) or the channels in model.stages",
    )
}

/// Refuses a batch of `batch` images whose lower bound exceeds `available` bytes; `advice`
/// says what to lower.
pub fn check_batch_fits(
    network: &Network,
    batch: usize,
    available: u64,
    advice: &str,
) -> Result<()> {
    let (params, activations) = lower_bound_for_batch(network, batch);
    let parameters = crate::support::words::group_thousands(network.params.total());
    if params.saturating_add(activations) > available {
        bail!(
            "this run needs at least {} of memory ({} for {parameters} parameters and their \
             gradient and optimizer state, {} for the activations of a batch of {}), more than \
             the {} available: {advice}",
            gib(params.saturating_add(activations)),
            gib(params),
            gib(activations),
            crate::support::words::group_thousands(batch),
            gib(available)
        );
    }
    Ok(())
}
