//! One training process per run directory: `train` holds `<run>/.lock` (holding its process
//! id) while it runs. A second run pointed at the same directory is refused; a lock left by a
//! process that no longer exists (killed, crashed) is taken over, so `--resume latest` after a
//! crash just works.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub const LOCK_FILE: &str = ".lock";

/// The held lock; removed when dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

/// Whether process `pid` exists (Linux: /proc; elsewhere the lock is assumed live).
pub(crate) fn process_exists(pid: u32) -> bool {
    let proc_dir = Path::new("/proc");
    !proc_dir.is_dir() || proc_dir.join(pid.to_string()).exists()
}

impl RunLock {
    pub fn acquire(run_dir: &Path) -> Result<RunLock> {
        fs::create_dir_all(run_dir)
            .with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
        let path = run_dir.join(LOCK_FILE);
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(std::process::id().to_string().as_bytes())
                        .and_then(|_| file.sync_all())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path).unwrap_or_default();
                    match holder.trim().parse::<u32>() {
                        Ok(pid) if process_exists(pid) => bail!(
                            "run directory {} is in use by another hftrain process (pid {pid}, \
                             lock file {}); wait for it to end, or train into another \
                             directory with --out",
                            run_dir.display(),
                            path.display()
                        ),
                        // Left by a process that has ended (or unreadable): take it over.
                        _ => {
                            log::warn!(
                                "removing the stale lock {} of a run that has ended",
                                path.display()
                            );
                            let _ = fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot create lock file {}", path.display()));
                }
            }
        }
        bail!(
            "cannot take the lock {}: another process keeps creating it",
            path.display()
        )
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
