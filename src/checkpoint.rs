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
use crate::fsutil::{remove_temporaries, sync_dir, temporary_sibling, write_atomic, write_synced};
use crate::metrics::EpochMetrics;
use crate::optim::OptimizerState;
use crate::params::Layout;

pub const FORMAT: &str = "hftrain-checkpoint";
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
pub const LATEST: &str = "latest";

/// Where training stands: the next step to run is `step_in_epoch` of epoch `epoch`
/// (both 0-based); `global_step` steps have been taken in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    pub metrics: Vec<EpochMetrics>,
    #[serde(default)]
    pub epoch_progress: EpochProgress,
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
        for (name, values) in &self.optimizer.vectors {
            optimizer_vectors.push(name.clone());
            optimizer_bytes.extend(f32_bytes(values));
        }
        let mut files = Vec::new();
        for (name, bytes) in [
            ("params.bin", f32_bytes(&self.params)),
            ("buffers.bin", f32_bytes(&self.buffers)),
            ("optimizer.bin", optimizer_bytes),
        ] {
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
            metrics: self.metrics.clone(),
            epoch_progress: self.epoch_progress,
            files,
        };
        let json = serde_json::to_vec_pretty(&manifest).expect("a manifest always serialises");
        // The manifest is written last: a directory without it is never a checkpoint.
        write_synced(&dir.join(MANIFEST), &json)?;
        sync_dir(dir)
    }

    /// Reads and verifies a checkpoint directory (or the `latest` link).
    pub fn load(dir: &Path) -> Result<Checkpoint> {
        let manifest = read_manifest(dir)?;
        let mut contents = Vec::new();
        for entry in &manifest.files {
            let path = dir.join(&entry.name);
            let bytes = fs::read(&path).with_context(|| {
                format!(
                    "checkpoint {} is incomplete: cannot read {}",
                    dir.display(),
                    entry.name
                )
            })?;
            if bytes.len() as u64 != entry.bytes {
                bail!(
                    "checkpoint {} is damaged: {} has {} bytes, its manifest says {} (truncated \
                     or replaced); use another checkpoint",
                    dir.display(),
                    entry.name,
                    bytes.len(),
                    entry.bytes
                );
            }
            if crc32fast::hash(&bytes) != entry.crc32 {
                bail!(
                    "checkpoint {} is damaged: {} fails its CRC-32 checksum; use another \
                     checkpoint",
                    dir.display(),
                    entry.name
                );
            }
            contents.push((entry.name.clone(), bytes));
        }
        let file = |name: &str| -> Result<Vec<f32>> {
            contents
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, b)| f32_values(b))
                .with_context(|| format!("checkpoint {} lists no {name}", dir.display()))
        };
        let params = file("params.bin")?;
        let buffers = file("buffers.bin")?;
        let optimizer_values = file("optimizer.bin")?;
        let (p, b) = (manifest.params.total(), manifest.buffers.total());
        if params.len() != p || buffers.len() != b {
            bail!(
                "checkpoint {} is inconsistent: {} parameters and {} buffer values stored, its \
                 layout describes {p} and {b}",
                dir.display(),
                params.len(),
                buffers.len()
            );
        }
        let mut optimizer = manifest.optimizer.clone();
        let names = &manifest.optimizer_vectors;
        if optimizer_values.len() != names.len() * p {
            bail!(
                "checkpoint {} is inconsistent: optimizer.bin holds {} values, expected {} \
                 vectors of {p}",
                dir.display(),
                optimizer_values.len(),
                names.len()
            );
        }
        for (name, chunk) in names.iter().zip(optimizer_values.chunks(p.max(1))) {
            optimizer.vectors.insert(name.clone(), chunk.to_vec());
        }
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
        })
    }

    /// Refuses a checkpoint whose layouts are not those of the model the config builds.
    pub fn check_layout(&self, dir: &Path, params: &Layout, buffers: &Layout) -> Result<()> {
        if let Some(why) = params
            .mismatch(&self.params_layout)
            .or_else(|| buffers.mismatch(&self.buffers_layout))
        {
            bail!(
                "checkpoint {} was made for a different model: {why}; use the config the \
                 checkpoint was trained with",
                dir.display()
            );
        }
        Ok(())
    }
}

/// Reads and checks a checkpoint's manifest.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    if !dir.is_dir() {
        bail!(
            "checkpoint {} does not exist or is not a directory",
            dir.display()
        );
    }
    let path = dir.join(MANIFEST);
    let text = fs::read(&path).with_context(|| {
        format!(
            "{} is not a checkpoint: it has no readable {MANIFEST}",
            dir.display()
        )
    })?;
    let value: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is damaged: not valid JSON", path.display()))?;
    let format = value.get("format").and_then(|v| v.as_str()).unwrap_or("");
    let version = value
        .get("format_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    if format != FORMAT {
        bail!("{} is not an hftrain checkpoint manifest", path.display());
    }
    if version != FORMAT_VERSION as u64 {
        bail!(
            "{} has checkpoint format version {version}; this hftrain ({}) reads version \
             {FORMAT_VERSION}",
            path.display(),
            env!("CARGO_PKG_VERSION")
        );
    }
    serde_json::from_value(value).with_context(|| format!("{} is damaged", path.display()))
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
        if link.exists() {
            return Ok(link);
        }
        match list(checkpoints_dir).pop() {
            Some(newest) => Ok(newest),
            None => bail!(
                "nothing to resume: {} holds no checkpoint; start the run without --resume",
                checkpoints_dir.display()
            ),
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
