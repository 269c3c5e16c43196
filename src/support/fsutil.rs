//! Durable file writes: what a user keeps (configs, metrics, checkpoints) is written to a
//! temporary name, synced, then renamed over the old file, so a crash leaves either the old
//! or the new version, never half of one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Longest file name kept whole in a temporary's name: with the dot and `.tmp-PID` it stays
/// within the 255 bytes a file name may have (NAME_MAX).
const TEMPORARY_NAME_KEPT: usize = 200;

/// A sibling path for a temporary file or directory (hidden, tagged with the process id). A
/// long name is shortened to its start and a checksum of the whole, so that any name that
/// may be written may have a temporary too.
pub fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match name.len() > TEMPORARY_NAME_KEPT {
        true => {
            let mut end = 100;
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}~{:08x}", &name[..end], crc32fast::hash(name.as_bytes()))
        }
        false => name,
    };
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// The name a temporary made by `temporary_sibling` stands for (shortened where long) and
/// its process id, from the temporary's file name.
pub fn temporary_parts(name: &str) -> Option<(&str, u32)> {
    let (stem, pid) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    Some((stem, pid.parse().ok()?))
}

/// Removes the temporaries (`temporary_sibling`) in `dir` left by interrupted writes: all of
/// them, or with `only_of_ended_processes` those whose process no longer runs (where another
/// live process may be writing). `what` names them in errors ("checkpoint", "download").
pub fn remove_temporaries(dir: &Path, what: &str, only_of_ended_processes: bool) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let Some((_, pid)) = temporary_parts(&entry.file_name().to_string_lossy()) else {
            continue;
        };
        if only_of_ended_processes && crate::support::lock::process_exists(pid) {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed
            .with_context(|| format!("cannot remove the unfinished {what} {}", path.display()))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` and syncs the file (not the directory).
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file =
        File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Syncs a directory so that renames inside it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync directory {}", dir.display()))
}

/// Replaces `path` with `bytes` atomically. Only a regular file (or nothing) is replaced: a
/// device, a directory or a fifo at `path` is refused, since renaming over it would remove it
/// (`--json /dev/null` run as root would replace /dev/null).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Ok(existing) = fs::metadata(path)
        && !existing.is_file()
    {
        bail!(
            "refusing to replace {}: it is not a regular file; name a file to write",
            path.display()
        );
    }
    let folder = parent_dir(path);
    if !folder.is_dir() {
        bail!(
            "cannot write {}: the folder {} does not exist (or is not a folder)",
            path.display(),
            folder.display()
        );
    }
    let tmp = temporary_sibling(path);
    let result = write_synced(&tmp, bytes).and_then(|_| {
        fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(parent_dir(path))
}

/// The directory holding `path`: `.` for a bare file name (whose `parent()` is empty).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Copies `path` to the first free `<path>.<tag>`, `<path>.<tag>-2`, ... beside it (a file
/// about to be rewritten whose old content must not be lost) and returns the copy's path.
pub fn keep_aside(path: &Path, tag: &str) -> Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let copy = (1..)
        .map(|n| match n {
            1 => path.with_file_name(format!("{name}.{tag}")),
            n => path.with_file_name(format!("{name}.{tag}-{n}")),
        })
        .find(|candidate| fs::symlink_metadata(candidate).is_err())
        .expect("some numbered name is free");
    fs::copy(path, &copy)
        .with_context(|| format!("cannot keep {} aside as {}", path.display(), copy.display()))?;
    Ok(copy)
}
