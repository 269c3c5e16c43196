//! An image folder: `<root>/<split>/<class>/*.{png,jpg,jpeg}`, 32x32 RGB images.
//!
//! Classes are ordered as CIFAR-10's labels when the folder names are CIFAR-10's classes,
//! else alphabetically, so label numbers are stable across machines. Files are listed in
//! name order and decoded in parallel.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rayon::prelude::*;

use super::{CIFAR10_CLASSES, Dataset, IMAGE_BYTES, IMAGE_SIDE, Split, balanced_quotas};

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The class folders of `split_dir`, in label order.
pub fn class_folders(split_dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(split_dir)
        .with_context(|| format!("cannot list {}", split_dir.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", split_dir.display()))?;
        if entry.path().is_dir() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                bail!(
                    "class folder {} has a name that is not valid UTF-8; rename it (class \
                     names are shown and stored as text)",
                    entry.path().display()
                );
            };
            names.push(name.to_string());
        }
    }
    if names.is_empty() {
        bail!(
            "{} has no class folders; expected one folder per class ({}) holding images",
            split_dir.display(),
            CIFAR10_CLASSES.join(", ")
        );
    }
    let is_cifar = names.len() == CIFAR10_CLASSES.len()
        && CIFAR10_CLASSES.iter().all(|c| names.iter().any(|n| n == c));
    if is_cifar {
        names = CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect();
    } else {
        names.sort();
    }
    if names.len() > u8::MAX as usize {
        bail!(
            "{} has {} class folders; at most 255 classes are supported",
            split_dir.display(),
            names.len()
        );
    }
    Ok(names)
}

/// The image files of one class folder, in name order.
fn image_files(class_dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(class_dir)
        .with_context(|| format!("cannot list {}", class_dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list {}", class_dir.display()))?
            .path();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if is_image && path.is_file() {
            files.push(path);
        } else if is_image {
            // Named as a picture but not one to read: say so rather than train on fewer.
            let what = match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => "a link to nothing readable",
                Ok(m) if m.is_dir() => "a folder",
                _ => "not a regular file",
            };
            log::warn!("{}: skipped, it is {what}", path.display());
        }
    }
    if files.is_empty() {
        bail!(
            "class folder {} holds no images (.png, .jpg or .jpeg); remove the folder or add \
             its images",
            class_dir.display()
        );
    }
    files.sort();
    Ok(files)
}

/// Decodes one image file into CHW bytes, checking its size.
pub fn decode_image(path: &Path) -> Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot open image {}", path.display()))?;
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(bytes.as_slice()))
            .with_guessed_format()
            .expect("reading from memory cannot fail")
    };
    // The size from the header first: a picture much larger than 32x32 is refused before
    // its pixels are decoded (a 13000 x 13000 PNG would take 510 MB).
    // The image crate's error repeats its cause in its own message, so the cause chain is
    // left out (it would print "Invalid PNG signature.: Invalid PNG signature.").
    let undecodable =
        |e: image::ImageError| anyhow::anyhow!("cannot decode image {}: {e}", path.display());
    let (width, height) = reader().into_dimensions().map_err(undecodable)?;
    if width as usize != IMAGE_SIDE || height as usize != IMAGE_SIDE {
        bail!(
            "image {} is {width}x{height}; CIFAR-10 images are {IMAGE_SIDE}x{IMAGE_SIDE}",
            path.display(),
        );
    }
    let image = reader().decode().map_err(undecodable)?;
    let rgb = image.into_rgb8();
    let plane = IMAGE_SIDE * IMAGE_SIDE;
    let mut chw = vec![0u8; IMAGE_BYTES];
    for (p, pixel) in rgb.pixels().enumerate() {
        for c in 0..3 {
            chw[c * plane + p] = pixel.0[c];
        }
    }
    Ok(chw)
}

/// Reads one split, keeping at most `limit` images balanced over classes (0: all). Only the
/// kept images are decoded.
pub fn load_split(root: &Path, split: Split, limit: usize) -> Result<Dataset> {
    let split_dir = root.join(split.name());
    if !split_dir.is_dir() {
        bail!(
            "the image folder {} has no `{}` split: expected {}/<class>/*.png",
            root.display(),
            split.name(),
            split_dir.display()
        );
    }
    let classes = class_folders(&split_dir)?;
    let per_class = classes
        .iter()
        .map(|c| image_files(&split_dir.join(c)))
        .collect::<Result<Vec<_>>>()?;
    let available: Vec<usize> = per_class.iter().map(Vec::len).collect();
    let quotas = balanced_quotas(&available, limit);
    let chosen: Vec<(u8, &PathBuf)> = per_class
        .iter()
        .zip(&quotas)
        .enumerate()
        .flat_map(|(label, (files, &q))| files.iter().take(q).map(move |f| (label as u8, f)))
        .collect();
    let decoded = chosen
        .par_iter()
        .map(|(_, path)| decode_image(path))
        .collect::<Result<Vec<_>>>()?;
    Ok(Dataset {
        images: decoded.concat(),
        labels: chosen.iter().map(|(l, _)| *l).collect(),
        classes,
    })
}

/// Checks that the test split's classes are the training split's.
pub fn check_same_classes(root: &Path, train: &Dataset, test: &Dataset) -> Result<()> {
    if train.classes != test.classes {
        bail!(
            "the image folder {} has different classes in train/ ({}) and test/ ({})",
            root.display(),
            train.classes.join(", "),
            test.classes.join(", ")
        );
    }
    Ok(())
}
