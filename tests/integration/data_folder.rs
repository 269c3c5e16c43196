use hftrain::data::folder::decode_image;
use hftrain::data::{CIFAR10_CLASSES, Format, IMAGE_SIDE, Source, Split};

use crate::common::{
    TempDir, assert_error, real_cifar10_folder, synthetic_binary, synthetic_folder,
};

/// The one check of the real CIFAR-10 images, where a checkout has them beside it; it says
/// when it skips. Everything else runs on generated images.
#[test]
fn reads_real_images_in_cifar_label_order() {
    let Some(root) = real_cifar10_folder() else {
        return;
    };
    let source = Source::detect(&root).unwrap();
    assert_eq!(source.format, Format::ImageFolder);
    let test = source.load(Split::Test, 50).unwrap();
    assert_eq!(test.len(), 50);
    assert_eq!(test.classes, CIFAR10_CLASSES.map(String::from).to_vec());
    assert!(test.class_counts().iter().all(|&c| c == 5));
    // The first image of class 3 is test/cat/<first file>, stored CHW.
    let index = test.labels.iter().position(|&l| l == 3).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(root.join("test/cat"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let rgb = image::open(&files[0]).unwrap().into_rgb8();
    let (x, y) = (5u32, 17u32);
    let plane = IMAGE_SIDE * IMAGE_SIDE;
    let p = y as usize * IMAGE_SIDE + x as usize;
    let stored = test.image(index);
    for c in 0..3 {
        assert_eq!(stored[c * plane + p], rgb.get_pixel(x, y).0[c]);
    }
    // Pictures are not blank.
    assert!(stored.iter().any(|&v| v != stored[0]));
}

/// A folder `root/<split>/<class>/` with `count` images of `side` x `side`.
fn write_images(root: &std::path::Path, split: &str, class: &str, count: usize, side: u32) {
    let dir = root.join(split).join(class);
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..count {
        let img =
            image::RgbImage::from_fn(side, side, |x, y| image::Rgb([x as u8, y as u8, i as u8]));
        img.save(dir.join(format!("{i:04}.png"))).unwrap();
    }
}

#[test]
fn other_class_names_are_sorted_and_decoded() {
    let dir = TempDir::new();
    for class in ["zebra", "ant"] {
        write_images(dir.path(), "train", class, 3, 32);
    }
    let train = Source::detect(dir.path())
        .unwrap()
        .load(Split::Train, 0)
        .unwrap();
    assert_eq!(train.classes, vec!["ant", "zebra"]);
    assert_eq!(train.labels, vec![0, 0, 0, 1, 1, 1]);
    // Red channel = x, green = y.
    assert_eq!(train.image(0)[31], 31);
    assert_eq!(train.image(0)[1024 + 32 * 9], 9);
}

#[test]
fn image_of_the_wrong_size_is_named() {
    let dir = TempDir::new();
    write_images(dir.path(), "train", "cat", 2, 32);
    write_images(dir.path(), "train", "dog", 1, 16);
    assert_error(
        Source::detect(dir.path()).unwrap().load(Split::Train, 0),
        &["dog", "0000.png", "16x16", "32x32"],
    );
}

#[test]
fn empty_class_folder_is_named() {
    let dir = TempDir::new();
    write_images(dir.path(), "train", "cat", 2, 32);
    std::fs::create_dir_all(dir.path().join("train/dog")).unwrap();
    assert_error(
        Source::detect(dir.path()).unwrap().load(Split::Train, 0),
        &["train/dog", "holds no images"],
    );
}

#[test]
fn unreadable_image_is_named() {
    let dir = TempDir::new();
    write_images(dir.path(), "train", "cat", 1, 32);
    std::fs::write(dir.path().join("train/cat/0001.png"), b"not a png").unwrap();
    assert_error(
        decode_image(&dir.path().join("train/cat/0001.png")),
        &["0001.png"],
    );
    assert_error(
        Source::detect(dir.path()).unwrap().load(Split::Train, 0),
        &["0001.png"],
    );
}

#[test]
fn missing_split_is_named() {
    let dir = TempDir::new();
    write_images(dir.path(), "train", "cat", 1, 32);
    assert_error(
        Source::detect(dir.path()).unwrap().load(Split::Test, 0),
        &["`test` split"],
    );
}

/// The generated data set in both formats: the same images and labels through both readers
/// (PNG is lossless), CIFAR-10's class names and label order, balanced subsets, and images
/// that differ from one another.
#[test]
fn generated_data_reads_the_same_in_both_formats() {
    let binary = Source::detect(&synthetic_binary()).unwrap();
    let folder = Source::detect(&synthetic_folder()).unwrap();
    assert_eq!(
        (binary.format, folder.format),
        (Format::Binary, Format::ImageFolder)
    );
    for (split, count) in [(Split::Train, 600), (Split::Test, 200)] {
        let a = binary.load(split, 0).unwrap();
        let b = folder.load(split, 0).unwrap();
        assert_eq!(a.len(), count);
        assert_eq!(a.classes, CIFAR10_CLASSES.map(String::from).to_vec());
        assert_eq!(b.classes, a.classes);
        assert!(a.class_counts().iter().all(|&c| c == count / 10));
        // The folder lists each class's files in name order; match images by content.
        let mut from_binary: Vec<(u8, &[u8])> =
            (0..a.len()).map(|i| (a.labels[i], a.image(i))).collect();
        let mut from_folder: Vec<(u8, &[u8])> =
            (0..b.len()).map(|i| (b.labels[i], b.image(i))).collect();
        from_binary.sort();
        from_folder.sort();
        assert!(
            from_binary == from_folder,
            "{split:?}: the two formats hold different images"
        );
        from_binary.dedup_by(|x, y| x.1 == y.1);
        assert_eq!(
            from_binary.len(),
            count,
            "{split:?}: some generated images are identical"
        );
    }
    let subset = binary.load(Split::Train, 100).unwrap();
    assert!(
        subset.class_counts().iter().all(|&c| c == 10),
        "{:?}",
        subset.class_counts()
    );
}

/// The classes differ in what a network sees: the mean colour of two classes differs by
/// more than the spread of that mean within a class (so a small network can learn them).
#[test]
fn generated_classes_differ_in_mean_colour() {
    let data = Source::detect(&synthetic_binary())
        .unwrap()
        .load(Split::Train, 0)
        .unwrap();
    let plane = 32 * 32;
    let mut means = vec![Vec::new(); 10];
    for i in 0..data.len() {
        let image = data.image(i);
        let mean: Vec<f64> = (0..3)
            .map(|c| {
                image[c * plane..(c + 1) * plane]
                    .iter()
                    .map(|&v| v as f64)
                    .sum::<f64>()
                    / plane as f64
            })
            .collect();
        means[data.labels[i] as usize].push(mean);
    }
    let centre = |m: &[Vec<f64>]| {
        (0..3)
            .map(|c| m.iter().map(|v| v[c]).sum::<f64>() / m.len() as f64)
            .collect::<Vec<f64>>()
    };
    let distance = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let centres: Vec<Vec<f64>> = means.iter().map(|m| centre(m)).collect();
    let spread = means
        .iter()
        .zip(&centres)
        .map(|(m, c)| {
            (m.iter().map(|v| distance(v, c).powi(2)).sum::<f64>() / m.len() as f64).sqrt()
        })
        .fold(0.0, f64::max);
    for a in 0..10 {
        for b in a + 1..10 {
            let gap = distance(&centres[a], &centres[b]);
            assert!(
                gap > spread,
                "classes {a} and {b}: mean colours {gap:.1} apart, spread within a class {spread:.1}"
            );
        }
    }
}

/// `hftrain data synthetic` writes a data set `train` reads, and never writes into a folder
/// that holds something.
#[test]
fn data_synthetic_command_writes_a_new_folder_only() {
    let dir = TempDir::new();
    let out = dir.path().join("generated");
    let hftrain = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hftrain"))
            .args(args)
            .output()
            .unwrap()
    };
    let made = hftrain(&[
        "data",
        "synthetic",
        "--out",
        out.to_str().unwrap(),
        "--format",
        "folder",
        "--train-per-class",
        "3",
        "--test-per-class",
        "2",
    ]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let source = Source::detect(&out).unwrap();
    assert_eq!(source.format, Format::ImageFolder);
    assert_eq!(source.load(Split::Train, 0).unwrap().len(), 30);
    assert_eq!(source.load(Split::Test, 0).unwrap().len(), 20);
    let before: Vec<_> = std::fs::read_dir(out.join("train/cat"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let again = hftrain(&["data", "synthetic", "--out", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success()
            && stderr.contains("already exists and is not empty")
            && stderr.contains("generated"),
        "{stderr}"
    );
    let after: Vec<_> = std::fs::read_dir(out.join("train/cat"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "the existing folder was changed");
    assert!(!out.join("data_batch_1.bin").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporaries left: {leftovers:?}");
}

/// A picture's size is read from its header before any pixel is decoded: a PNG whose header
/// says 13000 x 13000 (510 MB of pixels; here none follow the header) is refused by size.
#[test]
fn an_oversized_image_is_refused_from_its_header() {
    let dir = TempDir::new();
    write_images(dir.path(), "train", "cat", 1, 32);
    // Signature, then the IHDR chunk: length, type, width, height, depth 8, colour type 2
    // (RGB), compression, filter, interlace, CRC over type and data.
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(13000u32.to_be_bytes());
    ihdr.extend(13000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32fast::hash(&ihdr).to_be_bytes());
    // An empty IDAT chunk: the header is complete, the pixels are missing.
    png.extend(0u32.to_be_bytes());
    png.extend(b"IDAT");
    png.extend(crc32fast::hash(b"IDAT").to_be_bytes());
    let path = dir.path().join("train/cat/huge.png");
    std::fs::write(&path, png).unwrap();
    assert_error(decode_image(&path), &["huge.png", "13000x13000", "32x32"]);
}

/// A class folder whose name is not UTF-8 is named as such (it was "cannot list .../c\u{fffd}at:
/// No such file or directory").
#[test]
fn a_class_folder_name_that_is_not_utf8_is_named() {
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::new();
    write_images(dir.path(), "train", "dog", 1, 32);
    let name = std::ffi::OsStr::from_bytes(b"c\xffat");
    std::fs::create_dir_all(dir.path().join("train").join(name)).unwrap();
    assert_error(
        Source::detect(dir.path()).unwrap().load(Split::Train, 0),
        &["not valid UTF-8", "rename it"],
    );
}

/// A file named as a picture that cannot be read as one (a link to nothing, a folder) is
/// named when the data set is read, not passed over in silence.
#[test]
fn a_picture_name_that_is_no_picture_is_named() {
    let dir = TempDir::new();
    let root = dir.path().join("data");
    for class in hftrain::data::CIFAR10_CLASSES {
        write_images(&root, "train", class, 3, 32);
        write_images(&root, "test", class, 1, 32);
    }
    let cat = root.join("train/cat");
    std::os::unix::fs::symlink(dir.path().join("gone.png"), cat.join("dangling.png")).unwrap();
    std::fs::create_dir(cat.join("folder.png")).unwrap();
    let mut config = crate::common::small_config(&root, "flex");
    config.data.train_limit = 0;
    config.data.test_limit = 0;
    config.train.epochs = 1;
    config.train.batch_size = 10;
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    let out = dir.path().join("run");
    let (ok, text) = crate::common::hftrain(&[
        "train",
        "--config",
        path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("dangling.png: skipped, it is a link to nothing readable")
            && text.contains("folder.png: skipped, it is a folder"),
        "{text}"
    );
}

/// An override that is neither `on` nor `off` is named, not ignored in silence.
#[test]
fn a_misspelt_conv_patches_override_is_named() {
    let dir = TempDir::new();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hftrain"))
        .args([
            "bench",
            "--config",
            "configs/smoke.toml",
            "--device",
            "flex",
        ])
        .args(["--batch", "2", "--repeats", "1", "--only", "forward"])
        .env("HFTRAIN_CONV_PATCHES", "bogus")
        .env("HFTRAIN_KERNEL_CACHE", dir.path())
        .current_dir(crate::common::repository_root())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("HFTRAIN_CONV_PATCHES=\"bogus\" is neither `on` nor `off`: ignored"),
        "{stderr}"
    );
}
