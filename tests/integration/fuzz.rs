//! Both readers fed random bytes and random trees: every outcome is data or an error that
//! names a path; never a panic.

use std::path::Path;

use hftrain::data::{Source, Split};
use hftrain::support::rng::Rng;

use crate::common::TempDir;

/// Loads both splits of `root`; panics (failing the test) if a reader panics, and checks
/// that an error names a file or directory under `root`.
fn read_all(root: &Path, case: usize) -> Result<(), String> {
    read_all_inner(root, case).map_err(|m| m.replace(&root.display().to_string(), "<dir>"))
}

/// The distinct kinds of message (their text up to the first digit after `<dir>`), for the
/// record of what bad input produces.
fn kinds(messages: &[String]) -> Vec<String> {
    let mut kinds: Vec<String> = messages
        .iter()
        .map(|m| {
            m.chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .collect::<String>()
        })
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

fn read_all_inner(root: &Path, case: usize) -> Result<(), String> {
    let outcome = std::panic::catch_unwind(|| -> anyhow::Result<()> {
        let source = Source::detect(root)?;
        source.load(Split::Train, 0)?;
        source.load(Split::Test, 0)?;
        Ok(())
    });
    match outcome {
        Err(_) => panic!("case {case}: a reader panicked on {}", root.display()),
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            let message = format!("{e:#}");
            assert!(
                message.contains(&root.display().to_string()),
                "case {case}: the error names no path: {message}"
            );
            Err(message)
        }
    }
}

fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

#[test]
fn binary_reader_survives_random_files() {
    let mut errors = Vec::new();
    let mut accepted = 0;
    for case in 0..150 {
        let mut rng = Rng::derive(case as u64, &[0xF022]);
        let dir = TempDir::new();
        for name in [
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
            "test_batch.bin",
        ] {
            if rng.below(20) == 0 {
                continue; // a missing file
            }
            // Mostly whole records (labels random, often out of range), sometimes cut short.
            let records = rng.below(3);
            let len = records * 3073 + if rng.below(6) > 0 { 0 } else { rng.below(3073) };
            let mut bytes = random_bytes(&mut rng, len);
            if rng.below(6) > 0 {
                for r in 0..records {
                    bytes[r * 3073] %= 10; // valid labels
                }
            }
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        match read_all(dir.path(), case) {
            Ok(()) => accepted += 1,
            Err(message) => errors.push(message),
        }
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "measured: binary reader, 150 random data sets: {accepted} read, {} refused with a path, no panic",
        errors.len()
    );
    for kind in kinds(&errors) {
        let _ = writeln!(std::io::stderr(), "measured:   refused: {kind}");
    }
    assert!(
        !errors.is_empty() && accepted > 0,
        "{accepted} read, {} refused",
        errors.len()
    );
}

#[test]
fn folder_reader_survives_random_trees() {
    let mut errors = Vec::new();
    let mut accepted = 0;
    for case in 0..60 {
        let mut rng = Rng::derive(case as u64, &[0xF023]);
        let dir = TempDir::new();
        let classes = ["cat", "dog", "x"];
        for split in ["train", "test"] {
            if rng.below(8) == 0 {
                continue; // a missing split
            }
            for class in &classes[..1 + rng.below(3)] {
                let class_dir = dir.path().join(split).join(class);
                std::fs::create_dir_all(&class_dir).unwrap();
                for i in 0..rng.below(3) {
                    let path = class_dir.join(format!("{i}.png"));
                    match rng.below(4) {
                        0 => std::fs::write(&path, random_bytes(&mut rng, 64)).unwrap(),
                        1 => image::RgbImage::new(8, 8).save(&path).unwrap(),
                        2 => {
                            // A real PNG with its tail cut off.
                            let mut bytes = Vec::new();
                            image::RgbImage::new(32, 32)
                                .write_to(
                                    &mut std::io::Cursor::new(&mut bytes),
                                    image::ImageFormat::Png,
                                )
                                .unwrap();
                            bytes.truncate(bytes.len() / 2);
                            std::fs::write(&path, bytes).unwrap();
                        }
                        _ => image::RgbImage::from_fn(32, 32, |x, y| {
                            image::Rgb([x as u8, y as u8, i as u8])
                        })
                        .save(&path)
                        .unwrap(),
                    }
                }
            }
        }
        match read_all(dir.path(), case) {
            Ok(()) => accepted += 1,
            Err(message) => errors.push(message),
        }
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "measured: image-folder reader, 60 random trees: {accepted} read, {} refused with a path, no panic",
        errors.len()
    );
    for kind in kinds(&errors) {
        let _ = writeln!(std::io::stderr(), "measured:   refused: {kind}");
    }
    assert!(!errors.is_empty());
}

/// Files replaced, truncated and removed while the folder reader decodes them: each load
/// gives data or an error naming a file, never a panic.
#[test]
fn folder_reader_survives_files_replaced_while_reading() {
    let dir = TempDir::new();
    let root = dir.path().to_path_buf();
    let mut files = Vec::new();
    for split in ["train", "test"] {
        for class in ["cat", "dog"] {
            let class_dir = root.join(split).join(class);
            std::fs::create_dir_all(&class_dir).unwrap();
            for i in 0..150 {
                let path = class_dir.join(format!("{i:03}.png"));
                image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8, y as u8, i as u8]))
                    .save(&path)
                    .unwrap();
                files.push(path);
            }
        }
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let vandal = {
        let (files, stop) = (files.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = Rng::new(99);
            let mut changes = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let path = &files[rng.below(files.len())];
                let tmp = path.with_extension("swap");
                match rng.below(3) {
                    // Replaced by a rename (the reader sees the old or the new file whole).
                    0 => {
                        std::fs::write(&tmp, random_bytes(&mut rng, 100)).unwrap();
                        std::fs::rename(&tmp, path).unwrap();
                    }
                    // Rewritten in place (the reader may see it half-written).
                    1 => std::fs::write(path, random_bytes(&mut rng, 10)).unwrap(),
                    _ => {
                        let _ = std::fs::remove_file(path);
                    }
                }
                changes += 1;
            }
            changes
        })
    };
    let (mut read, mut refused) = (0, Vec::new());
    for case in 0..20 {
        match read_all(&root, case) {
            Ok(()) => read += 1,
            Err(message) => refused.push(message),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let changes = vandal.join().unwrap();
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "measured: folder reader while {changes} files were replaced, rewritten or removed: {read} of 20 loads read, {} refused with a path, no panic",
        refused.len()
    );
    for kind in kinds(&refused) {
        let _ = writeln!(std::io::stderr(), "measured:   refused: {kind}");
    }
    assert!(!refused.is_empty(), "the changes were never noticed");
}
