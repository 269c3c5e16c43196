//! Checkpoints: a directory holding `manifest.json` (what the checkpoint is, the config, the
//! layouts, file sizes and CRC-32 checksums, metrics so far) and raw little-endian f32 files
//! (parameters, buffers, optimizer vectors).
//!
//! A checkpoint is written under a temporary name, every file synced, then renamed into
//! place, so a directory named `epoch-NNNN` is always complete. `latest` is a symbolic link
//! to the newest one, replaced atomically.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::optim::OptimizerState;
use crate::optim::averaging::AverageState;
use crate::params::Layout;
use crate::store::metrics::EpochMetrics;
use crate::support::fsutil::{
    remove_temporaries, sync_dir, temporary_sibling, write_atomic, write_synced,
};

pub const FORMAT: &str = "hftrain-checkpoint";
/// Version 2 added `manifest.crc32`; version 3 stores each optimizer's own settings and
/// typed scalars (`migrate_to_v3` reads versions 1 and 2).
pub const FORMAT_VERSION: u32 = 3;
pub const MANIFEST: &str = "manifest.json";
/// The CRC-32 of `manifest.json`'s bytes, as 8 hexadecimal digits.
pub const MANIFEST_CHECKSUM: &str = "manifest.crc32";
pub const LATEST: &str = "latest";
/// A manifest holds the config, layouts and metrics: megabytes at most for any real run.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;
/// The data files a checkpoint holds: the only names a manifest may list.
pub const DATA_FILES: [&str; 4] = ["params.bin", "buffers.bin", "optimizer.bin", AVERAGE_FILE];
/// The running average of the parameters (`train.average`), where the run keeps one.
pub const AVERAGE_FILE: &str = "average.bin";

/// Why a checkpoint could not be loaded: the caller branches on it (`--resume latest` skips
/// only damage, for an older checkpoint; the others are not the checkpoint's fault, and
/// falling back would hide them).
#[derive(Debug)]
pub enum LoadError {
    /// No checkpoint there: no directory, or no manifest in it.
    Missing(String),
    /// Truncated, bit-flipped, edited, cut short by a crash.
    Damaged(String),
    /// Written by a newer hftrain, in a format this one cannot read.
    NewerFormat(String),
    /// Made for another network than the config builds.
    LayoutMismatch(String),
    /// A file that is there but cannot be read (permissions, I/O).
    Io {
        message: String,
        source: std::io::Error,
    },
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Missing(m)
            | LoadError::Damaged(m)
            | LoadError::NewerFormat(m)
            | LoadError::LayoutMismatch(m) => f.write_str(m),
            LoadError::Io { message, source } => write!(f, "{message}: {source}"),
        }
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    pub fn is_damage(&self) -> bool {
        matches!(self, LoadError::Damaged(_))
    }

    fn io(path: &Path, source: std::io::Error) -> Self {
        LoadError::Io {
            message: format!("cannot read {}", path.display()),
            source,
        }
    }
}

fn damaged(message: String) -> LoadError {
    LoadError::Damaged(message)
}

/// Where training stands: the next step to run is `step_in_epoch` of epoch `epoch`
/// (both 0-based); `global_step` steps have been taken in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub epoch: usize,
    pub step_in_epoch: usize,
    pub global_step: usize,
}

/// What a checkpoint taken inside an epoch keeps of that epoch's progress, so that the resumed
/// epoch reports the loss, accuracy and time of the whole epoch, as an uninterrupted run does.
/// Zero at epoch boundaries (and in checkpoints written before it existed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochProgress {
    /// Sum over the steps so far of (mean batch loss x batch size), as the device summed it
    /// (f32, so that the resumed sum continues bit for bit).
    pub loss_sum: f32,
    pub correct: i64,
    pub images: usize,
    /// Seconds of training so far in this epoch.
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub crc32: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub hftrain_version: String,
    pub position: Position,
    pub config: Config,
    pub params: Layout,
    pub buffers: Layout,
    pub optimizer: OptimizerState,
    /// Names of the optimizer's vectors in `optimizer.bin`, in file order.
    pub optimizer_vectors: Vec<String>,
    /// Their lengths, in the same order (absent in checkpoints from before vectors of other
    /// lengths than the parameters', such as Kronecker factors: each is then as long as
    /// the parameters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optimizer_vector_lengths: Vec<usize>,
    pub metrics: Vec<EpochMetrics>,
    #[serde(default)]
    pub epoch_progress: EpochProgress,
    /// The class names the network was trained on, in label order (empty in checkpoints
    /// written before they were kept).
    #[serde(default)]
    pub classes: Vec<String>,
    /// The running average of the parameters (`train.average`), its values in
    /// `average.bin`; absent in runs without one and before its first iterate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average: Option<AverageState>,
    /// Milestones `[epoch, batch size]` that `train.batch_growth`'s test added (absent
    /// without it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grown_batch_sizes: Vec<[usize; 2]>,
    pub files: Vec<FileEntry>,
}

/// Everything a checkpoint holds, on the host.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub position: Position,
    pub config: Config,
    pub params_layout: Layout,
    pub buffers_layout: Layout,
    pub params: Vec<f32>,
    pub buffers: Vec<f32>,
    pub optimizer: OptimizerState,
    pub metrics: Vec<EpochMetrics>,
    pub epoch_progress: EpochProgress,
    /// The class names of the training data, in label order (empty when unknown).
    pub classes: Vec<String>,
    /// The running average of the parameters, where the run keeps one.
    pub average: Option<AverageState>,
    /// Milestones that `train.batch_growth` added.
    pub grown_batch_sizes: Vec<[usize; 2]>,
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The directory name of a checkpoint at a position: `epoch-0003` at an epoch boundary,
/// `epoch-0003-step-000120` inside an epoch.
pub fn dir_name(position: &Position) -> String {
    if position.step_in_epoch == 0 {
        format!("epoch-{:04}", position.epoch)
    } else {
        format!(
            "epoch-{:04}-step-{:06}",
            position.epoch, position.step_in_epoch
        )
    }
}

impl Checkpoint {
    /// Writes the checkpoint into `checkpoints_dir` atomically, points `latest` at it and
    /// removes all but the newest `keep` checkpoints. Returns the new directory.
    pub fn save(&self, checkpoints_dir: &Path, keep: usize) -> Result<PathBuf> {
        fs::create_dir_all(checkpoints_dir)
            .with_context(|| format!("cannot create {}", checkpoints_dir.display()))?;
        let target = checkpoints_dir.join(dir_name(&self.position));
        let tmp = temporary_sibling(&target);
        // Under the run lock no other process writes here: every temporary is a leftover.
        remove_temporaries(checkpoints_dir, "checkpoint", false)?;
        fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let written = self.write_into(&tmp);
        if let Err(e) = written {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e.context(format!(
                "checkpoint {} was not written (is the disk full or the directory read-only?); \
                 the earlier checkpoints are unchanged",
                target.display()
            )));
        }
        if target.exists() {
            // Only a resumed run re-writes a position; the new one replaces it.
            let old = temporary_sibling(&target.with_extension("old"));
            fs::rename(&target, &old)
                .with_context(|| format!("cannot move aside {}", target.display()))?;
            let _ = fs::remove_dir_all(&old);
        }
        fs::rename(&tmp, &target)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), target.display()))?;
        sync_dir(checkpoints_dir)?;
        point_latest(checkpoints_dir, &target)?;
        prune(checkpoints_dir, keep)?;
        Ok(target)
    }

    fn write_into(&self, dir: &Path) -> Result<()> {
        let mut optimizer_bytes = Vec::new();
        let mut optimizer_vectors = Vec::new();
        let mut optimizer_vector_lengths = Vec::new();
        for (name, values) in &self.optimizer.vectors {
            optimizer_vectors.push(name.clone());
            optimizer_vector_lengths.push(values.len());
            optimizer_bytes.extend(f32_bytes(values));
        }
        let mut files = Vec::new();
        let average = self
            .average
            .as_ref()
            .map(|a| (AVERAGE_FILE, f32_bytes(&a.values)));
        for (name, bytes) in [
            ("params.bin", f32_bytes(&self.params)),
            ("buffers.bin", f32_bytes(&self.buffers)),
            ("optimizer.bin", optimizer_bytes),
        ]
        .into_iter()
        .chain(average)
        {
            write_synced(&dir.join(name), &bytes)?;
            files.push(FileEntry {
                name: name.into(),
                bytes: bytes.len() as u64,
                crc32: crc32fast::hash(&bytes),
            });
        }
        let manifest = Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            hftrain_version: env!("CARGO_PKG_VERSION").into(),
            position: self.position,
            config: self.config.clone(),
            params: self.params_layout.clone(),
            buffers: self.buffers_layout.clone(),
            optimizer: self.optimizer.clone(),
            optimizer_vectors,
            optimizer_vector_lengths,
            metrics: self.metrics.clone(),
            epoch_progress: self.epoch_progress,
            classes: self.classes.clone(),
            average: self.average.clone(),
            grown_batch_sizes: self.grown_batch_sizes.clone(),
            files,
        };
        let json = serde_json::to_vec_pretty(&manifest).expect("a manifest always serialises");
        write_synced(
            &dir.join(MANIFEST_CHECKSUM),
            format!("{:08x}\n", crc32fast::hash(&json)).as_bytes(),
        )?;
        // The manifest is written last: a directory without it is never a checkpoint.
        write_synced(&dir.join(MANIFEST), &json)?;
        sync_dir(dir)
    }

    /// Reads and verifies a checkpoint directory (or the `latest` link).
    pub fn load(dir: &Path) -> Result<Checkpoint, LoadError> {
        let manifest = read_manifest(dir)?;
        let mut contents = Vec::new();
        for entry in &manifest.files {
            contents.push((entry.name.clone(), read_data_file(dir, entry)?));
        }
        let file = |name: &str| -> Result<Vec<f32>, LoadError> {
            contents
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, b)| f32_values(b))
                .ok_or_else(|| damaged(format!("checkpoint {} lists no {name}", dir.display())))
        };
        let params = file("params.bin")?;
        let buffers = file("buffers.bin")?;
        let optimizer_values = file("optimizer.bin")?;
        let (p, b) = (manifest.params.total(), manifest.buffers.total());
        if params.len() != p || buffers.len() != b {
            return Err(damaged(format!(
                "checkpoint {} is inconsistent: {} parameters and {} buffer values stored, its \
                 layout describes {p} and {b}",
                dir.display(),
                params.len(),
                buffers.len()
            )));
        }
        let mut optimizer = manifest.optimizer.clone();
        let names = &manifest.optimizer_vectors;
        let lengths = match manifest.optimizer_vector_lengths.is_empty() {
            true => vec![p; names.len()],
            false => manifest.optimizer_vector_lengths.clone(),
        };
        let expected: usize = lengths.iter().sum();
        if lengths.len() != names.len() || optimizer_values.len() != expected {
            return Err(damaged(format!(
                "checkpoint {} is inconsistent: optimizer.bin holds {} values, its manifest \
                 describes {} vectors of {expected} values in all",
                dir.display(),
                optimizer_values.len(),
                names.len()
            )));
        }
        let mut at = 0;
        for (name, length) in names.iter().zip(lengths) {
            let chunk = &optimizer_values[at..at + length];
            optimizer.vectors.insert(name.clone(), chunk.to_vec());
            at += length;
        }
        let average = match manifest.average.clone() {
            None => None,
            Some(mut average) => {
                average.values = file(AVERAGE_FILE)?;
                if average.values.len() != p {
                    return Err(damaged(format!(
                        "checkpoint {} is inconsistent: {AVERAGE_FILE} holds {} values, the \
                         layout describes {p} parameters",
                        dir.display(),
                        average.values.len()
                    )));
                }
                Some(average)
            }
        };
        Ok(Checkpoint {
            position: manifest.position,
            config: manifest.config,
            params_layout: manifest.params,
            buffers_layout: manifest.buffers,
            params,
            buffers,
            optimizer,
            metrics: manifest.metrics,
            epoch_progress: manifest.epoch_progress,
            classes: manifest.classes,
            average,
            grown_batch_sizes: manifest.grown_batch_sizes,
        })
    }

    /// Refuses a checkpoint whose layouts are not those of the model the config builds.
    pub fn check_layout(
        &self,
        dir: &Path,
        params: &Layout,
        buffers: &Layout,
    ) -> Result<(), LoadError> {
        if let Some(why) = params
            .mismatch(&self.params_layout)
            .or_else(|| buffers.mismatch(&self.buffers_layout))
        {
            return Err(LoadError::LayoutMismatch(format!(
                "checkpoint {} was made for a different model: {why}; use the config the \
                 checkpoint was trained with",
                dir.display()
            )));
        }
        Ok(())
    }
}

/// A data file the manifest lists, read and verified against the manifest.
fn read_data_file(dir: &Path, entry: &FileEntry) -> Result<Vec<u8>, LoadError> {
    // Only the names hftrain writes, as regular files inside the checkpoint, of the
    // size the manifest states (checked before reading: a manifest naming
    // /dev/zero or ../../etc/passwd reads nothing).
    if !DATA_FILES.contains(&entry.name.as_str()) {
        return Err(damaged(format!(
            "checkpoint {} is damaged: its manifest lists {:?}, not a file of a \
             checkpoint ({})",
            dir.display(),
            entry.name,
            DATA_FILES.join(", ")
        )));
    }
    let path = dir.join(&entry.name);
    let size = match fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => meta.len(),
        Ok(_) => {
            return Err(damaged(format!(
                "checkpoint {} is damaged: {} is not a regular file",
                dir.display(),
                entry.name
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(damaged(format!(
                "checkpoint {} is incomplete: {} is missing",
                dir.display(),
                entry.name
            )));
        }
        Err(e) => return Err(LoadError::io(&path, e)),
    };
    if size != entry.bytes {
        return Err(damaged(format!(
            "checkpoint {} is damaged: {} has {size} bytes, its manifest says {} \
             (truncated or replaced); use another checkpoint",
            dir.display(),
            entry.name,
            entry.bytes
        )));
    }
    let bytes = fs::read(&path).map_err(|e| LoadError::io(&path, e))?;
    if bytes.len() as u64 != entry.bytes || crc32fast::hash(&bytes) != entry.crc32 {
        return Err(damaged(format!(
            "checkpoint {} is damaged: {} fails its CRC-32 checksum; use another \
             checkpoint",
            dir.display(),
            entry.name
        )));
    }
    Ok(bytes)
}

/// Reads and checks a checkpoint's manifest.
pub fn read_manifest(dir: &Path) -> Result<Manifest, LoadError> {
    if !dir.is_dir() {
        return Err(LoadError::Missing(format!(
            "checkpoint {} does not exist or is not a directory",
            dir.display()
        )));
    }
    let path = dir.join(MANIFEST);
    // A regular file of a sensible size before it is read (not a link to /dev/zero).
    match fs::symlink_metadata(&path) {
        Ok(meta) if !meta.is_file() || meta.len() > MAX_MANIFEST_BYTES => {
            return Err(damaged(format!(
                "{} is damaged: not a regular file of at most {MAX_MANIFEST_BYTES} bytes",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LoadError::Missing(format!(
                "{} is not a checkpoint: it has no {MANIFEST}",
                dir.display()
            )));
        }
        _ => {}
    }
    let text = fs::read(&path).map_err(|e| LoadError::io(&path, e))?;
    let damaged_manifest = |why: String| damaged(format!("{} is damaged: {why}", path.display()));
    let mut value: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| damaged_manifest(format!("not valid JSON ({e})")))?;
    let format = value.get("format").and_then(|v| v.as_str()).unwrap_or("");
    let version = value
        .get("format_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    if format != FORMAT || version == 0 {
        return Err(damaged_manifest(
            "not an hftrain checkpoint manifest".into(),
        ));
    }
    if version > FORMAT_VERSION as u64 {
        return Err(LoadError::NewerFormat(format!(
            "{} has checkpoint format version {version}, written by a newer hftrain; this one \
             ({}) reads versions up to {FORMAT_VERSION}: use the newer hftrain",
            path.display(),
            env!("CARGO_PKG_VERSION")
        )));
    }
    if version >= 2 {
        let expected = fs::read_to_string(dir.join(MANIFEST_CHECKSUM)).map_err(|e| {
            damaged_manifest(format!(
                "its checksum {MANIFEST_CHECKSUM} cannot be read ({e})"
            ))
        })?;
        if expected.trim() != format!("{:08x}", crc32fast::hash(&text)) {
            return Err(damaged_manifest(format!(
                "it fails its CRC-32 checksum ({MANIFEST_CHECKSUM}): edited or corrupted"
            )));
        }
    }
    if version < 3 {
        migrate_to_v3(&mut value);
    }
    let manifest: Manifest =
        serde_json::from_value(value).map_err(|e| damaged_manifest(format!("{e}")))?;
    // The stored values must be usable; the run name is not checked (names that are paths
    // were accepted before, and a checkpoint names no directory).
    let mut stored = manifest.config.clone();
    stored.name = "checkpoint".into();
    stored
        .validate()
        .map_err(|e| damaged_manifest(format!("its config is not valid:\n{e:#}")))?;
    check_position(&manifest).map_err(damaged_manifest)?;
    Ok(manifest)
}

/// Versions 1 and 2 stored every optimizer's settings whatever the kind (SGD's `beta1`,
/// Adam's `momentum`, the Hessian-free table) and the optimizer's scalars as floats. Version
/// 3 keeps the settings of the configured optimizer only, and typed scalars (counts are
/// integers).
fn migrate_to_v3(manifest: &mut serde_json::Value) {
    use serde_json::Value;
    if let Some(optimizer) = manifest
        .pointer_mut("/config/optimizer")
        .and_then(Value::as_object_mut)
    {
        let kind = optimizer
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("sgd")
            .to_string();
        if let Some(keys) = crate::optim::keys_of(&kind) {
            optimizer.retain(|key, _| key == "kind" || keys.contains(key));
        }
    }
    if let Some(scalars) = manifest
        .pointer_mut("/optimizer/scalars")
        .and_then(Value::as_object_mut)
    {
        for value in scalars.values_mut() {
            if let Some(x) = value.as_f64()
                && x >= 0.0
                && x.fract() == 0.0
                && x < 2f64.powi(53)
            {
                *value = Value::from(x as u64);
            }
        }
    }
}

/// The position agrees with the metrics: one row per complete epoch, in order, and the global
/// step is the last complete epoch's plus the steps into the current one. (Epochs may differ
/// in length: a resumed run may read a data set of another size.)
fn check_position(manifest: &Manifest) -> std::result::Result<(), String> {
    let p = manifest.position;
    let rows = &manifest.metrics;
    if rows.len() != p.epoch {
        return Err(format!(
            "its position is after epoch {}, its metrics hold {} epochs",
            p.epoch,
            rows.len()
        ));
    }
    let in_order = rows.iter().enumerate().all(|(i, r)| r.epoch == i + 1)
        && rows.windows(2).all(|w| w[0].step < w[1].step)
        && rows.first().is_none_or(|r| r.step > 0);
    let done = rows.last().map_or(0, |r| r.step);
    if !in_order || p.global_step != done + p.step_in_epoch {
        return Err(format!(
            "its position (epoch {}, step {} in the epoch, global step {}) disagrees with its \
             metrics ({done} steps in the complete epochs)",
            p.epoch, p.step_in_epoch, p.global_step
        ));
    }
    Ok(())
}

/// Points `<dir>/latest` at `target` by renaming a fresh link over the old one.
fn point_latest(dir: &Path, target: &Path) -> Result<()> {
    let link = dir.join(LATEST);
    let tmp = temporary_sibling(&link);
    let _ = fs::remove_file(&tmp);
    let name = target
        .file_name()
        .expect("a checkpoint directory has a name");
    std::os::unix::fs::symlink(name, &tmp)
        .with_context(|| format!("cannot create link {}", tmp.display()))?;
    fs::rename(&tmp, &link).with_context(|| format!("cannot replace {}", link.display()))?;
    sync_dir(dir)
}

/// Complete checkpoint directories in `dir`, oldest first (by position in the name).
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("epoch-"))
                && !p.is_symlink()
                && p.join(MANIFEST).is_file()
        })
        .collect();
    found.sort();
    found
}

fn prune(dir: &Path, keep: usize) -> Result<()> {
    let all = list(dir);
    let latest = fs::canonicalize(dir.join(LATEST)).ok();
    let excess = all.len().saturating_sub(keep);
    for old in all.into_iter().take(excess) {
        if fs::canonicalize(&old).ok() == latest {
            continue;
        }
        fs::remove_dir_all(&old).with_context(|| format!("cannot remove {}", old.display()))?;
    }
    Ok(())
}

/// Resolves `--resume latest` (or a path) against a run's checkpoint directory.
pub fn resolve(spec: &str, checkpoints_dir: &Path) -> Result<PathBuf> {
    if spec == LATEST {
        let link = checkpoints_dir.join(LATEST);
        if link.exists() && !link.is_dir() {
            // Not a link to a checkpoint (a file put there by hand, say): the epoch folders
            // still say which is newest.
            log::warn!(
                "{} is not a link to a checkpoint folder: ignored; the newest checkpoint \
                 folder is resumed",
                link.display()
            );
        } else if link.exists() {
            // `latest` names a checkpoint of this run; one that leads elsewhere is not
            // followed silently.
            let target = fs::canonicalize(&link).ok();
            let here = fs::canonicalize(checkpoints_dir).ok();
            if target.as_deref().and_then(Path::parent) != here.as_deref() {
                bail!(
                    "{} points outside {} (to {}); resume that checkpoint by its own path if \
                     you mean it, or remove the link",
                    link.display(),
                    checkpoints_dir.display(),
                    target.map_or("nowhere".into(), |t| t.display().to_string())
                );
            }
            return Ok(link);
        }
        match list(checkpoints_dir).pop() {
            Some(newest) => Ok(newest),
            // A run stopped before its first checkpoint (killed while writing it, say) has
            // its config and metrics but nothing to resume: say how to start it over.
            None => match checkpoints_dir.parent() {
                // Finished epochs make it a run `train` will not start over without --force
                // (`RunPaths::holds_a_run`); a header alone it starts again by itself.
                Some(run)
                    if fs::read_to_string(run.join("metrics.csv"))
                        .is_ok_and(|text| text.lines().skip(1).any(|l| !l.trim().is_empty())) =>
                {
                    bail!(
                        "nothing to resume: the run in {} was stopped before its first \
                         checkpoint; start it over with `hftrain train --config {} --out {} \
                         --force` (removing only what hftrain wrote there)",
                        run.display(),
                        run.join("config.toml").display(),
                        run.display()
                    )
                }
                _ => bail!(
                    "nothing to resume: {} holds no checkpoint; start the run without --resume",
                    checkpoints_dir.display()
                ),
            },
        }
    } else {
        Ok(PathBuf::from(spec))
    }
}

/// Writes the config of a run into its directory (atomically).
pub fn write_run_config(run_dir: &Path, config: &Config) -> Result<()> {
    fs::create_dir_all(run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    write_atomic(&run_dir.join("config.toml"), config.to_toml().as_bytes())
}
