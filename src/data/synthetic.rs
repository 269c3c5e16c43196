//! A generated stand-in for CIFAR-10: ten classes of 32x32 colour images that a small network
//! tells apart within a few hundred steps, written in either of the two formats the readers
//! take. The test suite trains, resumes, kills and evaluates on it (no download, no copy of
//! CIFAR-10 needed), and `hftrain data synthetic` writes it for a quick check offline.
//!
//! Each class has a hue (ten steps round the colour wheel) and a stripe orientation and
//! period of its own; every image draws its brightness, stripe phase, a small jitter of hue
//! and angle, and per-pixel noise from a stream seeded by (seed, split, index). So the classes
//! are learnable (mean colour alone separates most of them, the stripes the rest) but no two
//! images are alike, and test images are never copies of training images. The same seed gives
//! the same bytes on every machine: the generator uses only integer-seeded f64 arithmetic.

use std::f64::consts::PI;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use image::RgbImage;

use super::binary::{TEST_FILE, TRAIN_FILES};
use super::{CIFAR10_CLASSES, Dataset, Format, IMAGE_BYTES, IMAGE_SIDE, Split};
use crate::support::fsutil;
use crate::support::rng::Rng;

/// How much of a generated data set there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticSpec {
    pub train_per_class: usize,
    pub test_per_class: usize,
    pub seed: u64,
}

impl SyntheticSpec {
    pub fn generate(&self, split: Split) -> Dataset {
        let per_class = match split {
            Split::Train => self.train_per_class,
            Split::Test => self.test_per_class,
        };
        generate(split, per_class, self.seed)
    }
}

/// `per_class` images of each of the ten classes, labels interleaved (0, 1, ..., 9, 0, ...)
/// as a shuffled data set's would be, named as CIFAR-10's classes.
pub fn generate(split: Split, per_class: usize, seed: u64) -> Dataset {
    let classes = CIFAR10_CLASSES.len();
    let n = per_class * classes;
    let mut images = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    let split_label = match split {
        Split::Train => 0,
        Split::Test => 1,
    };
    for index in 0..n {
        let label = index % classes;
        let mut rng = Rng::derive(seed, &[0x5E_7417, split_label, index as u64]);
        draw_image(label, &mut rng, &mut images);
        labels.push(label as u8);
    }
    Dataset {
        images,
        labels,
        classes: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
    }
}

/// Appends one image of class `label` (CHW bytes) to `out`.
fn draw_image(label: usize, rng: &mut Rng, out: &mut Vec<u8>) {
    let mut uniform = |lo: f64, hi: f64| lo + (hi - lo) * rng.next_f64();
    let hue = label as f64 / 10.0 + uniform(-0.02, 0.02);
    let value = uniform(0.45, 0.8);
    let base = hsv_to_rgb(hue, 0.65, value);
    let angle = label as f64 * PI / 10.0 + uniform(-0.1, 0.1);
    let period = 4.0 + 2.0 * (label % 4) as f64;
    let phase = uniform(0.0, 2.0 * PI);
    let (dx, dy) = (
        angle.cos() * 2.0 * PI / period,
        angle.sin() * 2.0 * PI / period,
    );
    let plane = IMAGE_SIDE * IMAGE_SIDE;
    let start = out.len();
    out.resize(start + IMAGE_BYTES, 0);
    for y in 0..IMAGE_SIDE {
        for x in 0..IMAGE_SIDE {
            let stripe = (x as f64 * dx + y as f64 * dy + phase).sin();
            for (c, &channel) in base.iter().enumerate() {
                let level = channel * (1.0 + 0.35 * stripe) + uniform(-0.12, 0.12);
                out[start + c * plane + y * IMAGE_SIDE + x] =
                    (level.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
}

/// HSV (each in [0, 1], hue wrapping) to RGB in [0, 1].
fn hsv_to_rgb(hue: f64, saturation: f64, value: f64) -> [f64; 3] {
    let h = hue.rem_euclid(1.0) * 6.0;
    let chroma = value * saturation;
    let x = chroma * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as usize {
        0 => (chroma, x, 0.0),
        1 => (x, chroma, 0.0),
        2 => (0.0, chroma, x),
        3 => (0.0, x, chroma),
        4 => (x, 0.0, chroma),
        _ => (chroma, 0.0, x),
    };
    let m = value - chroma;
    [r + m, g + m, b + m]
}

/// Writes the two splits to `dir` in `format`: the official binary batches
/// (`data_batch_1.bin` ... `data_batch_5.bin`, `test_batch.bin`) or an image folder
/// (`train/<class>/NNNNN.png`, `test/<class>/NNNNN.png`). The folder is written under a
/// temporary name and renamed into place, so it appears whole or not at all; a `dir` that
/// exists and is not empty is refused (nothing of a user's is overwritten).
pub fn write(dir: &Path, format: Format, train: &Dataset, test: &Dataset) -> Result<()> {
    if fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        bail!(
            "{} already exists and is not empty; choose a new folder for the generated data set",
            dir.display()
        );
    }
    if train.len() < TRAIN_FILES.len() || test.is_empty() {
        bail!(
            "a generated data set needs at least {} training images and one test image (it has {} and {})",
            TRAIN_FILES.len(),
            train.len(),
            test.len()
        );
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let staging = fsutil::temporary_sibling(dir);
    let _ = fs::remove_dir_all(&staging);
    let written = write_format(&staging, format, train, test).and_then(|()| {
        // An empty `dir` may exist (refused above when it is not empty): rename replaces it.
        let _ = fs::remove_dir(dir);
        fs::rename(&staging, dir)
            .with_context(|| format!("cannot rename {} to {}", staging.display(), dir.display()))
    });
    if written.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    written
}

/// The most images per class and split `hftrain data synthetic` makes (twenty times
/// CIFAR-10's 5,000: about 3 GB in all), checked before any is allocated.
pub const MAX_PER_CLASS: usize = 100_000;

/// Whether `dir` holds nothing but what `write` writes (either format), so that `--force`
/// may replace it: nothing of the user's would be lost.
pub fn is_generated(dir: &Path) -> bool {
    let names = |dir: &Path| -> Option<Vec<(String, bool)>> {
        fs::read_dir(dir)
            .ok()?
            .map(|e| {
                let e = e.ok()?;
                let is_dir = e.file_type().ok()?.is_dir();
                Some((e.file_name().into_string().ok()?, is_dir))
            })
            .collect()
    };
    let is_picture = |name: &str| {
        name.strip_suffix(".png")
            .is_some_and(|n| n.len() == 5 && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let split_folder = |split: &Path| {
        names(split).is_some_and(|classes| {
            classes.iter().all(|(class, is_dir)| {
                *is_dir
                    && CIFAR10_CLASSES.contains(&class.as_str())
                    && names(&split.join(class))
                        .is_some_and(|files| files.iter().all(|(f, d)| !d && is_picture(f)))
            })
        })
    };
    names(dir).is_some_and(|entries| {
        entries.iter().all(|(name, is_dir)| match is_dir {
            false => TRAIN_FILES.contains(&name.as_str()) || name == TEST_FILE,
            true => ["train", "test"].contains(&name.as_str()) && split_folder(&dir.join(name)),
        })
    })
}

fn write_format(root: &Path, format: Format, train: &Dataset, test: &Dataset) -> Result<()> {
    fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    match format {
        Format::Binary => {
            // The training images spread over the five batch files, as in the official set.
            let per_file = train.len().div_ceil(TRAIN_FILES.len());
            let indices: Vec<usize> = (0..train.len()).collect();
            for (name, chunk) in TRAIN_FILES.iter().zip(indices.chunks(per_file)) {
                write_records(&root.join(name), train, chunk)?;
            }
            let all: Vec<usize> = (0..test.len()).collect();
            write_records(&root.join(TEST_FILE), test, &all)
        }
        Format::ImageFolder => {
            for (split, data) in [(Split::Train, train), (Split::Test, test)] {
                for class in &data.classes {
                    let dir = root.join(split.name()).join(class);
                    fs::create_dir_all(&dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
                for index in 0..data.len() {
                    let class = &data.classes[data.labels[index] as usize];
                    let path = root
                        .join(split.name())
                        .join(class)
                        .join(format!("{index:05}.png"));
                    rgb_image(data.image(index))
                        .save(&path)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
            }
            Ok(())
        }
    }
}

/// One record per image: the label byte, then the CHW pixel bytes.
fn write_records(path: &Path, data: &Dataset, indices: &[usize]) -> Result<()> {
    let mut bytes = Vec::with_capacity(indices.len() * (1 + IMAGE_BYTES));
    for &i in indices {
        bytes.push(data.labels[i]);
        bytes.extend_from_slice(data.image(i));
    }
    fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// A CHW image as an RGB picture.
fn rgb_image(chw: &[u8]) -> RgbImage {
    let plane = IMAGE_SIDE * IMAGE_SIDE;
    let side = IMAGE_SIDE as u32;
    RgbImage::from_fn(side, side, |x, y| {
        let p = y as usize * IMAGE_SIDE + x as usize;
        image::Rgb([chw[p], chw[plane + p], chw[2 * plane + p]])
    })
}
