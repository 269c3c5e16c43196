use hftrain::data::binary::{RECORD_BYTES, TEST_FILE, TRAIN_FILES};
use hftrain::data::{Format, IMAGE_BYTES, Source, Split};

use crate::common::{TempDir, assert_error, binary_records};

/// Writes the six batch files with `per_file` records each, labels cycling 0..10.
fn write_batches(dir: &std::path::Path, per_file: usize) {
    let labels: Vec<u8> = (0..per_file).map(|i| (i % 10) as u8).collect();
    for name in TRAIN_FILES.iter().chain([&TEST_FILE]) {
        std::fs::write(dir.join(name), binary_records(&labels)).unwrap();
    }
}

#[test]
fn reads_records_into_chw_images_and_labels() {
    let dir = TempDir::new();
    write_batches(dir.path(), 20);
    let source = Source::detect(dir.path()).unwrap();
    assert_eq!(source.format, Format::Binary);
    let train = source.load(Split::Train, 0).unwrap();
    let test = source.load(Split::Test, 0).unwrap();
    assert_eq!(train.len(), 100);
    assert_eq!(test.len(), 20);
    assert_eq!(train.classes.len(), 10);
    assert_eq!(train.classes[3], "cat");
    // Record i of each file: label i % 10, pixel p = (i*7 + p) % 251, stored as-is (CHW).
    let image = train.image(23); // file 2, record 3
    assert_eq!(train.labels[23], 3);
    assert_eq!(image.len(), IMAGE_BYTES);
    for p in [0, 1, 1024, 3071] {
        assert_eq!(image[p] as usize, (3 * 7 + p) % 251);
    }
}

#[test]
fn finds_batches_inside_the_official_archive_folder() {
    let dir = TempDir::new();
    let inner = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&inner).unwrap();
    write_batches(&inner, 10);
    let source = Source::detect(dir.path()).unwrap();
    assert_eq!(source.root, inner);
}

#[test]
fn limit_takes_a_balanced_subset() {
    let dir = TempDir::new();
    write_batches(dir.path(), 40);
    let train = Source::detect(dir.path())
        .unwrap()
        .load(Split::Train, 30)
        .unwrap();
    assert_eq!(train.len(), 30);
    assert!(
        train.class_counts().iter().all(|&c| c == 3),
        "{:?}",
        train.class_counts()
    );
}

#[test]
fn truncated_file_is_named_with_its_size() {
    let dir = TempDir::new();
    write_batches(dir.path(), 10);
    let path = dir.path().join("data_batch_3.bin");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let size = (10 * RECORD_BYTES - 100).to_string();
    assert_error(
        Source::detect(dir.path()).unwrap().load(Split::Train, 0),
        &["data_batch_3.bin", &size, "3073"],
    );
}

#[test]
fn label_out_of_range_is_named() {
    let dir = TempDir::new();
    write_batches(dir.path(), 10);
    let mut bytes = binary_records(&[1, 2, 3]);
    bytes[2 * RECORD_BYTES] = 42;
    std::fs::write(dir.path().join(TEST_FILE), bytes).unwrap();
    assert_error(
        Source::detect(dir.path()).unwrap().load(Split::Test, 0),
        &["test_batch.bin", "record 2", "label 42"],
    );
}

#[test]
fn missing_train_file_is_named() {
    let dir = TempDir::new();
    write_batches(dir.path(), 10);
    std::fs::remove_file(dir.path().join("data_batch_5.bin")).unwrap();
    assert_error(
        Source::detect(dir.path()).unwrap().load(Split::Train, 0),
        &["data_batch_5.bin"],
    );
}

#[test]
fn missing_or_unrecognised_directory_is_explained() {
    assert_error(
        Source::detect(std::path::Path::new("no/such/dir")),
        &["no/such/dir", "does not exist"],
    );
    let dir = TempDir::new();
    assert_error(Source::detect(dir.path()), &["neither", "data_batch_1.bin"]);
}
