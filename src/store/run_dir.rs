//! What a run directory holds and what `train` may do to it. hftrain writes a fixed set of
//! names there; anything else is the user's. A new run starts only in a directory that is
//! empty or holds nothing but a run of hftrain's, and `--force` removes only what hftrain
//! wrote, so a user's own files are never overwritten or deleted.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::store::checkpoint;
use crate::support::fsutil;

/// The files of a run directory that training writes.
#[derive(Debug, Clone)]
pub struct RunPaths {
    pub run_dir: PathBuf,
    pub checkpoints: PathBuf,
    pub metrics: PathBuf,
    /// Per-step log of the Hessian-free optimizer.
    pub steps: PathBuf,
    pub report: PathBuf,
}

impl RunPaths {
    pub fn new(run_dir: PathBuf) -> Self {
        Self {
            checkpoints: run_dir.join("checkpoints"),
            metrics: run_dir.join("metrics.csv"),
            steps: run_dir.join("steps.csv"),
            report: run_dir.join("report.md"),
            run_dir,
        }
    }

    /// Whether the directory holds a run to protect: a checkpoint, or a metrics row. A run
    /// killed before its first epoch ended left only the header: nothing to lose, so it may
    /// start again without --force.
    pub fn holds_a_run(&self) -> bool {
        let has_rows = fs::read_to_string(&self.metrics)
            .map(|text| text.lines().skip(1).any(|line| !line.trim().is_empty()))
            .unwrap_or_else(|_| self.metrics.exists());
        has_rows || !checkpoint::list(&self.checkpoints).is_empty()
    }
}

/// The files hftrain writes at the top of a run directory (`eval/` is written by `eval`).
pub const FILES: [&str; 6] = [
    "config.toml",
    "metrics.csv",
    "steps.csv",
    crate::store::tensorboard::FILE_NAME,
    "report.md",
    crate::support::lock::LOCK_FILE,
];
/// The pictures it writes in `plots/` (`plots::write_all`).
pub const PLOTS: [&str; 7] = [
    "loss.png",
    "accuracy.png",
    "lr.png",
    "sharpness.png",
    "damping.png",
    "cg_iterations.png",
    "rho.png",
];

/// What `run_dir` holds (but a `.lock`), sorted, for a message: at most five names and how
/// many more.
pub fn describe_entries(run_dir: &Path) -> String {
    let mut names: Vec<String> = fs::read_dir(run_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name != crate::support::lock::LOCK_FILE)
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let more = names.len().saturating_sub(5);
    names.truncate(5);
    match more {
        0 => names.join(", "),
        _ => format!("{} and {more} more", names.join(", ")),
    }
}

/// Whether `run_dir` was started by hftrain: a run writes its metrics file first thing, then
/// its event file and checkpoints (a folder of checkpoints alone, copied from elsewhere, is a
/// run too); a folder holding only, say, a `config.toml` of the user's is not a run.
pub fn was_started_by_hftrain(run_dir: &Path) -> bool {
    run_dir.join("metrics.csv").is_file()
        || run_dir.join(crate::store::tensorboard::FILE_NAME).is_file()
        || !checkpoint::list(&run_dir.join("checkpoints")).is_empty()
}

/// Whether `run_dir` holds nothing but the lock `train` has just taken and temporaries of
/// hftrain's own writes cut short (`.metrics.csv.tmp-PID`: a run killed at its first write).
pub fn is_empty(run_dir: &Path) -> bool {
    fs::read_dir(run_dir).map_or(true, |entries| {
        entries.filter_map(|e| e.ok()).all(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name == crate::support::lock::LOCK_FILE
                || FILES
                    .iter()
                    .any(|f| name.starts_with(&format!(".{f}.tmp-")))
        })
    })
}

/// `--force`: removes what hftrain wrote (checkpoints, metrics, logs, report, plots) and
/// nothing else; a folder is removed only when nothing of the user's is left in it.
pub fn remove_run(run_dir: &Path) -> Result<()> {
    let remove_file = |path: &Path| match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("--force: cannot remove {}", path.display()))
        }
        _ => Ok(()),
    };
    for name in FILES
        .iter()
        .filter(|&&n| n != crate::support::lock::LOCK_FILE)
    {
        remove_file(&run_dir.join(name))?;
    }
    let plots = run_dir.join("plots");
    for name in PLOTS {
        remove_file(&plots.join(name))?;
    }
    let _ = fs::remove_dir(&plots);
    let checkpoints = run_dir.join("checkpoints");
    for dir in checkpoint::list(&checkpoints) {
        fs::remove_dir_all(&dir)
            .with_context(|| format!("--force: cannot remove {}", dir.display()))?;
    }
    remove_file(&checkpoints.join(checkpoint::LATEST))?;
    fsutil::remove_temporaries(&checkpoints, "checkpoint", true)?;
    let _ = fs::remove_dir(&checkpoints);
    Ok(())
}

/// Removes the temporaries of the run's own files (`.metrics.csv.tmp-PID`,
/// `plots/.loss.png.tmp-PID`, unfinished checkpoints) that processes which no longer run
/// left when they were killed mid-write; called when a run starts, resumes or starts over.
pub fn remove_leftover_temporaries(run_dir: &Path) -> Result<()> {
    let remove = |dir: &Path, names: &[&str]| -> Result<()> {
        let Ok(entries) = fs::read_dir(dir) else {
            return Ok(());
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((stem, pid)) = fsutil::temporary_parts(&name) else {
                continue;
            };
            if names.contains(&stem) && !crate::support::lock::process_exists(pid) {
                let path = entry.path();
                fs::remove_file(&path).with_context(|| {
                    format!("cannot remove the unfinished file {}", path.display())
                })?;
            }
        }
        Ok(())
    };
    remove(run_dir, &FILES)?;
    remove(&run_dir.join("plots"), &PLOTS)?;
    fsutil::remove_temporaries(&run_dir.join("checkpoints"), "checkpoint", true)
}
