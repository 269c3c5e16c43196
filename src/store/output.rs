//! The files commands write where the user says (`--json`, `--out`, `--plot`), checked before
//! the command's work starts, so that a mistaken path costs no time and nothing of the user's
//! is lost. The rule, the same for every command:
//!
//! - a file that exists is replaced only with `--force`, except what a command writes in its
//!   own default place (eval's `<run>/eval/`, `compare.png`), which it replaces each time;
//! - a symbolic link, a folder or a special file (fifo, device) is never replaced;
//! - nothing is written into a run directory's own files (config.toml, metrics.csv, steps.csv,
//!   report.md, the event file, checkpoints/, plots/) nor into a checkpoint's folder, not even
//!   with `--force`: those are the run's, and a resume or an `eval` would read the damage;
//! - the folder the file goes into must exist (it is named when it does not).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::store::{checkpoint, run_dir};
use crate::support::fsutil::parent_dir;

/// How an existing file at the path is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refused, unless `force` (the user's `--force`).
    ReplaceWithForce { force: bool },
    /// Replaced: the command's default output in its default place, which belongs to it.
    Replace,
}

impl Existing {
    /// A path the user named: replaced only with `--force`.
    pub fn named(force: bool) -> Self {
        Existing::ReplaceWithForce { force }
    }
}

/// Checks that `path`, given as `option` (e.g. "--json"), may be written, before any work:
/// see the module's rule. With `Existing::Replace` a missing parent folder is created (a
/// default place such as `<run>/eval/`); a path the user named needs its folder to exist.
pub fn check(path: &Path, option: &str, existing: Existing) -> Result<()> {
    if names_a_folder(path) {
        bail!(
            "{option} {}: names a folder, not a file; name the file to write, e.g. {option} {}",
            path.display(),
            Path::new(path).join("out.json").display()
        );
    }
    let parent = parent_dir(path);
    match fs::metadata(parent) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => bail!(
            "cannot write {}: {} is not a folder; choose another {option}",
            path.display(),
            parent.display()
        ),
        Err(_) if existing == Existing::Replace => fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?,
        Err(_) => bail!(
            "cannot write {}: the folder {} does not exist; create it first, or choose another \
             {option}",
            path.display(),
            parent.display()
        ),
    }
    // Writable, found before the work (a read-only run's eval folder used to fail after its
    // results were printed): the write goes through a temporary beside the file.
    let probe = crate::support::fsutil::temporary_sibling(path);
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => bail!(
            "cannot write into {} ({e}); choose another {option} in a folder you can write to",
            parent.display()
        ),
    }
    if let Some(owner) = owner_of(path) {
        bail!(
            "refusing to write {}: it is {owner}, which hftrain never replaces (not even with \
             --force); choose another {option}",
            path.display()
        );
    }
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        let target = fs::read_link(path).unwrap_or_default();
        bail!(
            "refusing to replace {}: it is a symbolic link (to {}), and a link is never \
             replaced; name the file itself, or a new one, with {option}",
            path.display(),
            target.display()
        );
    }
    if file_type.is_dir() {
        bail!(
            "{option} {}: is a folder; name a file to write, e.g. {option} {}",
            path.display(),
            path.join("out.json").display()
        );
    }
    if !file_type.is_file() {
        bail!(
            "refusing to replace {}: it is not a regular file; name a file to write",
            path.display()
        );
    }
    if existing == (Existing::ReplaceWithForce { force: false }) {
        bail!(
            "{} exists; choose another {option}, or pass --force to replace it",
            path.display()
        );
    }
    Ok(())
}

/// Whether `path` can only mean a folder: `.`, `..`, `/`, or a name ending in `/`.
fn names_a_folder(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    path.file_name().is_none() || path.as_os_str().as_bytes().ends_with(b"/")
}

/// What of a run's or a checkpoint's `path` is, in words ("the run r's metrics.csv"), or
/// None where it belongs to neither. Its folder exists (checked before).
fn owner_of(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let folder = fs::canonicalize(parent_dir(path)).ok()?;
    if let Some(found) = folder.ancestors().find(|a| is_checkpoint(a)) {
        return Some(format!("inside the checkpoint {}", found.display()));
    }
    let is_run = |dir: &Path| run_dir::was_started_by_hftrain(dir);
    if is_run(&folder)
        && (run_dir::FILES.contains(&name.as_str()) || ["checkpoints", "plots"].contains(&&*name))
    {
        return Some(format!("the run {}'s {name}", folder.display()));
    }
    let run_of = |sub: &str| {
        (folder.file_name()? == sub)
            .then(|| folder.parent().map(PathBuf::from))
            .flatten()
            .filter(|run| is_run(run))
    };
    if let Some(run) = run_of("checkpoints") {
        return Some(format!("inside the run {}'s checkpoints", run.display()));
    }
    if let Some(run) = run_of("plots") {
        return Some(format!("the run {}'s plots/{name}", run.display()));
    }
    None
}

/// Whether `dir` is a checkpoint's folder: its manifest and its parameters.
fn is_checkpoint(dir: &Path) -> bool {
    dir.join(checkpoint::MANIFEST).is_file() && dir.join(checkpoint::DATA_FILES[0]).is_file()
}

/// Refuses an output path that is also one of the command's inputs (`predict a.png --json
/// a.png --force` would classify the picture, then replace it with the JSON).
pub fn check_not_an_input(path: &Path, option: &str, inputs: &[PathBuf]) -> Result<()> {
    let Ok(real) = fs::canonicalize(path) else {
        return Ok(());
    };
    if let Some(input) = inputs
        .iter()
        .find(|i| fs::canonicalize(i).is_ok_and(|r| r == real))
    {
        bail!(
            "{option} {}: is the input {}; choose another {option}",
            path.display(),
            input.display()
        );
    }
    Ok(())
}

/// Checks a folder a command creates and fills (`data synthetic --out`), before any work:
/// not a symbolic link, not a file, not inside a run's or a checkpoint's folders. Whether
/// an existing folder may be filled is the command's to say.
pub fn check_folder(path: &Path, option: &str) -> Result<()> {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if meta.file_type().is_symlink() {
            bail!(
                "refusing to write into {}: it is a symbolic link, and a link is never \
                 replaced; name a new folder with {option}",
                path.display()
            );
        }
        if !meta.is_dir() {
            bail!(
                "{option} {}: is a file, not a folder; name a new folder to create",
                path.display()
            );
        }
    }
    let parent = parent_dir(path);
    if fs::metadata(parent).is_ok()
        && let Some(owner) = owner_of(path)
    {
        bail!(
            "refusing to write {}: it is {owner}, which hftrain never replaces; choose \
             another {option}",
            path.display()
        );
    }
    Ok(())
}
