//! The official CIFAR-10 binary format: each file is a run of 3073-byte records, one label
//! byte then 3072 pixel bytes (1024 red, 1024 green, 1024 blue, rows top to bottom), which is
//! already the CHW layout we keep in memory.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::{CIFAR10_CLASSES, Dataset, IMAGE_BYTES, Split, balanced_indices};

pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub const TEST_FILE: &str = "test_batch.bin";

/// Parses one batch file's bytes; `path` only names the file in errors.
pub fn parse_records(path: &Path, bytes: &[u8], num_classes: usize) -> Result<Dataset> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD_BYTES) {
        bail!(
            "{}: size {} bytes is not a positive multiple of {RECORD_BYTES} (one label byte + \
             {IMAGE_BYTES} pixel bytes per image); the file is truncated or not a CIFAR-10 \
             binary batch",
            path.display(),
            bytes.len()
        );
    }
    let n = bytes.len() / RECORD_BYTES;
    let mut images = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for (i, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = record[0];
        if label as usize >= num_classes {
            bail!(
                "{}: record {i} (byte offset {}) has label {label}; CIFAR-10 labels are 0 to {}",
                path.display(),
                i * RECORD_BYTES,
                num_classes - 1
            );
        }
        labels.push(label);
        images.extend_from_slice(&record[1..]);
    }
    Ok(Dataset {
        images,
        labels,
        classes: class_names(path.parent().unwrap_or(Path::new("."))),
    })
}

/// Class names from `batches.meta.txt` when present and sensible, else CIFAR-10's.
fn class_names(root: &Path) -> Vec<String> {
    let defaults = || CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect();
    match std::fs::read_to_string(root.join("batches.meta.txt")) {
        Ok(text) => {
            let names: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            if names.len() == CIFAR10_CLASSES.len() {
                names
            } else {
                defaults()
            }
        }
        Err(_) => defaults(),
    }
}

/// Reads the files of one split (each in one read), then keeps a balanced subset.
pub fn load_split(root: &Path, split: Split, limit: usize) -> Result<Dataset> {
    let files: &[&str] = match split {
        Split::Train => &TRAIN_FILES,
        Split::Test => &[TEST_FILE],
    };
    let mut all: Option<Dataset> = None;
    for name in files {
        let path = root.join(name);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "cannot read {} (the {} split of the CIFAR-10 binary format needs {})",
                path.display(),
                split.name(),
                files.join(", ")
            )
        })?;
        let part = parse_records(&path, &bytes, CIFAR10_CLASSES.len())?;
        match &mut all {
            None => all = Some(part),
            Some(d) => {
                d.images.extend_from_slice(&part.images);
                d.labels.extend_from_slice(&part.labels);
            }
        }
    }
    let all = all.expect("every split names at least one file");
    if limit == 0 || limit >= all.len() {
        return Ok(all);
    }
    let keep = balanced_indices(&all.labels, all.classes.len(), limit);
    Ok(all.select(&keep))
}
