//! One training process per run directory: `train` holds an OS lock (`File::try_lock`, flock
//! on Unix) on `<run>/.lock` while it runs, and writes its process id there for the message a
//! second process gets. The operating system releases the lock when its holder ends, however
//! it ends, so a lock file left by a killed run is simply taken: no guess from a process id
//! (pids are reused after a reboot) and no window in which two processes could both take over
//! a stale lock.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub const LOCK_FILE: &str = ".lock";

/// The held lock; the file is removed and the lock released when dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    /// The open file the OS lock belongs to (closing it releases the lock).
    _file: File,
}

/// Whether process `pid` exists (Linux: /proc; elsewhere it is assumed to).
pub(crate) fn process_exists(pid: u32) -> bool {
    let proc_dir = Path::new("/proc");
    !proc_dir.is_dir() || proc_dir.join(pid.to_string()).exists()
}

impl RunLock {
    pub fn acquire(run_dir: &Path) -> Result<RunLock> {
        fs::create_dir_all(run_dir)
            .with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
        let path = run_dir.join(LOCK_FILE);
        // A holder removes the file as it ends: a lock taken on a file that is no longer at
        // `path` guards nothing, so open and lock again until the file locked is the one there.
        for _ in 0..100 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .with_context(|| format!("cannot create lock file {}", path.display()))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(in_use(run_dir, &path, &mut file));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()));
                }
            }
            if !is_same_file(&file, &path) {
                continue;
            }
            file.set_len(0)
                .and_then(|_| file.rewind())
                .and_then(|_| file.write_all(std::process::id().to_string().as_bytes()))
                .and_then(|_| file.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            return Ok(RunLock { path, _file: file });
        }
        bail!(
            "cannot take the lock {}: its file keeps being replaced",
            path.display()
        )
    }
}

/// Fails as `acquire` would while another process holds the run's lock, without taking it:
/// a resume looks before it reads the run (whose first checkpoint such a process may not
/// have written yet).
pub fn check_not_held(run_dir: &Path) -> Result<()> {
    let path = run_dir.join(LOCK_FILE);
    let Ok(mut file) = OpenOptions::new().read(true).write(true).open(&path) else {
        return Ok(());
    };
    match file.try_lock() {
        Err(std::fs::TryLockError::WouldBlock) => Err(in_use(run_dir, &path, &mut file)),
        _ => Ok(()),
    }
}

/// The error for a run directory whose lock another process holds (its pid read from `file`).
fn in_use(run_dir: &Path, path: &Path, file: &mut File) -> anyhow::Error {
    let mut holder = String::new();
    let _ = file.read_to_string(&mut holder);
    let pid = match holder.trim() {
        "" => "unknown".to_string(),
        pid => pid.to_string(),
    };
    anyhow::anyhow!(
        "run directory {} is in use by another hftrain process (pid {pid}, lock file {}); \
         wait for it to end, or train into another directory with --out",
        run_dir.display(),
        path.display()
    )
}

/// Whether the open `file` is the one now at `path`.
#[cfg(unix)]
fn is_same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(locked), Ok(current)) => locked.ino() == current.ino() && locked.dev() == current.dev(),
        _ => false,
    }
}

/// Elsewhere an open file cannot be removed, so it is still the one at `path`.
#[cfg(not(unix))]
fn is_same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked, so no other process locks this file after we let go.
        let _ = fs::remove_file(&self.path);
    }
}
