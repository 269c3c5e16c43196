use hftrain::data::folder::decode_image;
use hftrain::data::{CIFAR10_CLASSES, Format, IMAGE_SIDE, Source, Split};

use crate::common::{assert_error, cifar10_folder, TempDir};

#[test]
fn reads_real_images_in_cifar_label_order() {
    let Some(root) = cifar10_folder() else { return };
    let source = Source::detect(&root).unwrap();
    assert_eq!(source.format, Format::ImageFolder);
    let test = source.load(Split::Test, 50).unwrap();
    assert_eq!(test.len(), 50);
    assert_eq!(test.classes, CIFAR10_CLASSES.map(String::from).to_vec());
    assert!(test.class_counts().iter().all(|&c| c == 5));
    // The first image of class 3 is test/cat/<first file>, stored CHW.
    let index = test.labels.iter().position(|&l| l == 3).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(root.join("test/cat")).unwrap().map(|e| e.unwrap().path()).collect();
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
        let img = image::RgbImage::from_fn(side, side, |x, y| image::Rgb([x as u8, y as u8, i as u8]));
        img.save(dir.join(format!("{i:04}.png"))).unwrap();
    }
}

#[test]
fn other_class_names_are_sorted_and_decoded() {
    let dir = TempDir::new();
    for class in ["zebra", "ant"] {
        write_images(dir.path(), "train", class, 3, 32);
    }
    let train = Source::detect(dir.path()).unwrap().load(Split::Train, 0).unwrap();
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
    assert_error(decode_image(&dir.path().join("train/cat/0001.png")), &["0001.png"]);
    assert_error(Source::detect(dir.path()).unwrap().load(Split::Train, 0), &["0001.png"]);
}

#[test]
fn missing_split_is_named() {
    let dir = TempDir::new();
    write_images(dir.path(), "train", "cat", 1, 32);
    assert_error(Source::detect(dir.path()).unwrap().load(Split::Test, 0), &["`test` split"]);
}
