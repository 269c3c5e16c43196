//! CIFAR-10 data: the two on-disk formats, balanced subsets, augmentation and batching.
//!
//! Images are kept in memory as bytes in CHW order (3 x 32 x 32 per image, 3 KiB), the way
//! the official binary format stores them; conversion to normalised floats happens per batch.

pub mod batcher;
pub mod binary;
mod config;
pub mod download;
pub mod folder;
pub mod synthetic;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

pub use config::DataConfig;

pub const IMAGE_SIDE: usize = 32;
pub const CHANNELS: usize = 3;
pub const IMAGE_BYTES: usize = CHANNELS * IMAGE_SIDE * IMAGE_SIDE;

/// CIFAR-10's class names in its label order.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// One split: `len()` images with their labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// `len() * IMAGE_BYTES` bytes, each image in CHW order.
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub classes: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, index: usize) -> &[u8] {
        &self.images[index * IMAGE_BYTES..(index + 1) * IMAGE_BYTES]
    }

    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &label in &self.labels {
            counts[label as usize] += 1;
        }
        counts
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(indices.len() * IMAGE_BYTES);
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Dataset {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Binary,
    ImageFolder,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Binary => "CIFAR-10 binary batches",
            Format::ImageFolder => "image folder",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// Where a data set was found and in which format.
#[derive(Debug, Clone)]
pub struct Source {
    pub format: Format,
    /// The directory holding the files (for binary batches, possibly the
    /// `cifar-10-batches-bin` folder inside the configured directory).
    pub root: PathBuf,
}

impl Source {
    /// The data set of a command: fetched first where `dir` is empty or missing (the official
    /// archive, or the mirror of HFTRAIN_DATA_URL and HFTRAIN_DATA_MD5), then detected.
    pub fn prepare(dir: &Path) -> Result<Source> {
        // The default folder is fetched into on first use; a folder named by the user that
        // does not exist is more likely a mistyped path than a wish to download 163 MB there.
        let default = DataConfig::default().dir;
        if !dir.exists() && dir.strip_prefix(".").unwrap_or(dir) != default {
            bail!(
                "data directory {} does not exist; check the path (--data, HFTRAIN_DATA or \
                 data.dir in the config), or download CIFAR-10 there first with `hftrain data \
                 download --data {}`",
                dir.display(),
                dir.display()
            );
        }
        if download::should_fetch(dir) {
            log::info!(
                "data directory {} holds no data set: fetching CIFAR-10 (point --data or \
                 HFTRAIN_DATA elsewhere to use a copy you have)",
                dir.display()
            );
            download::fetch(dir, &download::ArchiveSource::from_env()?)?;
        }
        Source::detect(dir)
    }

    /// Detects the format of `dir`.
    pub fn detect(dir: &Path) -> Result<Source> {
        if dir.exists() && !dir.is_dir() {
            bail!(
                "data directory {} is a file, not a folder; point `data.dir`, `--data DIR` or \
                 HFTRAIN_DATA at the folder that holds CIFAR-10",
                dir.display()
            );
        }
        if !dir.is_dir() {
            bail!(
                "data directory {} does not exist; point `data.dir` in the config, `--data DIR` \
                 or HFTRAIN_DATA at a folder with CIFAR-10 binary batches (data_batch_1.bin ... \
                 test_batch.bin) or an image folder (train/<class>/*.png, test/<class>/*.png)",
                dir.display()
            );
        }
        for root in [dir.to_path_buf(), dir.join("cifar-10-batches-bin")] {
            if root.join("data_batch_1.bin").is_file() || root.join("test_batch.bin").is_file() {
                return Ok(Source {
                    format: Format::Binary,
                    root,
                });
            }
        }
        if dir.join("train").is_dir() || dir.join("test").is_dir() {
            return Ok(Source {
                format: Format::ImageFolder,
                root: dir.to_path_buf(),
            });
        }
        bail!(
            "data directory {} holds neither CIFAR-10 binary batches (data_batch_1.bin ... \
             test_batch.bin, possibly inside cifar-10-batches-bin/) nor an image folder \
             (train/<class>/*.png and test/<class>/*.png)",
            dir.display()
        )
    }

    /// Reads one split, keeping at most `limit` images balanced over classes (0: all).
    pub fn load(&self, split: Split, limit: usize) -> Result<Dataset> {
        match self.format {
            Format::Binary => binary::load_split(&self.root, split, limit),
            Format::ImageFolder => folder::load_split(&self.root, split, limit),
        }
    }
}

/// How many of each class a balanced subset of `limit` items takes, given the counts
/// available: an equal share each, the remainder to the first classes, never more than
/// a class has (what a small class cannot take is not handed to others, so the subset
/// stays balanced where it can be).
pub fn balanced_quotas(available: &[usize], limit: usize) -> Vec<usize> {
    let total: usize = available.iter().sum();
    if limit == 0 || limit >= total {
        return available.to_vec();
    }
    let n = available.len().max(1);
    available
        .iter()
        .enumerate()
        .map(|(i, &have)| (limit / n + usize::from(i < limit % n)).min(have))
        .collect()
}

/// Indices of a balanced subset of `labels`, taking each class's first items in order.
pub fn balanced_indices(labels: &[u8], num_classes: usize, limit: usize) -> Vec<usize> {
    let mut available = vec![0; num_classes];
    for &l in labels {
        available[l as usize] += 1;
    }
    let mut quota = balanced_quotas(&available, limit);
    labels
        .iter()
        .enumerate()
        .filter(|&(_, &l)| {
            let q = &mut quota[l as usize];
            let take = *q > 0;
            *q = q.saturating_sub(1);
            take
        })
        .map(|(i, _)| i)
        .collect()
}

/// One line per split for the start of a run: counts and classes.
pub fn describe(source: &Source, train: &Dataset, test: &Dataset) -> String {
    let counts = |d: &Dataset| {
        let c = d.class_counts();
        let (lo, hi) = (
            c.iter().min().copied().unwrap_or(0),
            c.iter().max().copied().unwrap_or(0),
        );
        let (images, lo, hi) = (
            crate::support::words::count(d.len(), "image"),
            crate::support::words::group_thousands(lo),
            crate::support::words::group_thousands(hi),
        );
        if lo == hi {
            format!("{images} ({lo} per class)")
        } else {
            format!("{images} ({lo} to {hi} per class)")
        }
    };
    format!(
        "data: {} at {}\n  train: {}\n  test:  {}\n  classes: {}",
        source.format,
        source.root.display(),
        counts(train),
        counts(test),
        train.classes.join(", ")
    )
}
