//! Using a trained network: `hftrain predict` on pictures of any size and format, and
//! `hftrain export` for PyTorch (the round trip where PyTorch is installed).

use std::path::{Path, PathBuf};
use std::process::Command;

use hftrain::config::Config;
use hftrain::data::{Source, Split};

use crate::common::{TempDir, assert_succeeded, small_config, synthetic_folder};

/// A checkpoint of a small network trained one epoch on the synthetic folder.
fn trained(dir: &Path) -> (PathBuf, Config) {
    let mut config = small_config(&synthetic_folder(), "flex");
    config.train.epochs = 1;
    crate::training::train(&config, &dir.join("run"), None, None).unwrap();
    (dir.join("run/checkpoints/latest"), config)
}

fn hftrain(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hftrain"))
        .args(args)
        .output()
        .unwrap()
}

/// A picture of `width` x `height` with a colour gradient, in the format of `path`'s
/// extension.
fn draw(path: &Path, width: u32, height: u32) {
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 128])
    })
    .save(path)
    .unwrap();
}

#[test]
fn predict_classifies_pictures_of_any_size_and_reports_the_ones_it_cannot_read() {
    let dir = TempDir::new();
    let (checkpoint, _) = trained(dir.path());
    let pictures = dir.path().join("pictures");
    std::fs::create_dir_all(pictures.join("folder")).unwrap();
    draw(&pictures.join("wide.png"), 300, 120);
    draw(&pictures.join("tall.jpg"), 50, 400);
    draw(&pictures.join("folder/a.bmp"), 64, 64);
    draw(&pictures.join("folder/b.gif"), 33, 31);
    std::fs::write(
        pictures.join("folder/readme.txt"),
        "not taken from a folder",
    )
    .unwrap();
    std::fs::write(pictures.join("broken.png"), "not a picture").unwrap();
    let json = dir.path().join("predictions.json");
    let path = |name: &str| pictures.join(name).to_string_lossy().into_owned();
    let out = hftrain(&[
        "predict",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        &path("wide.png"),
        &path("broken.png"),
        &path("tall.jpg"),
        &path("folder"),
        "--top",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // One picture unreadable: the others are classified, the status says something failed.
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("broken.png: not classified") && stderr.contains("1 of 5 pictures"),
        "{stderr}"
    );
    for name in ["wide.png", "tall.jpg", "folder/a.bmp", "folder/b.gif"] {
        let line = stdout
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{stdout}"));
        assert_eq!(line.matches('%').count(), 2, "top 2: {line}");
    }
    assert!(!stdout.contains("readme.txt"));
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let predictions = written["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 5);
    for p in predictions {
        match p["top"].as_array() {
            Some(top) => {
                let probabilities: Vec<f64> = top
                    .iter()
                    .map(|g| g["probability"].as_f64().unwrap())
                    .collect();
                assert!(probabilities[0] >= probabilities[1], "{p}");
                assert!(probabilities.iter().sum::<f64>() <= 1.0 + 1e-6, "{p}");
            }
            None => assert!(p["error"].as_str().unwrap().contains("not an image"), "{p}"),
        }
    }
    // A folder without pictures is refused, naming it.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = hftrain(&[
        "predict",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        empty.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("holds no image") && stderr.contains("empty"),
        "{stderr}"
    );
}

/// A CIFAR-sized picture goes in unchanged: the Lanczos filter at scale 1 samples each pixel
/// at its centre, where it weighs that pixel alone.
#[test]
fn a_32x32_picture_is_its_own_input() {
    let dir = TempDir::new();
    let source = Source::detect(&synthetic_folder()).unwrap();
    let test = source.load(Split::Test, 10).unwrap();
    let file = dir.path().join("one.png");
    let chw = test.image(3);
    image::RgbImage::from_fn(32, 32, |x, y| {
        let p = (y * 32 + x) as usize;
        image::Rgb([chw[p], chw[1024 + p], chw[2048 + p]])
    })
    .save(&file)
    .unwrap();
    assert_eq!(
        hftrain::commands::predict::prepare_image(&file).unwrap(),
        chw
    );
}

#[test]
fn export_holds_the_state_dict_with_what_rebuilds_it() {
    let dir = TempDir::new();
    let (checkpoint, config) = trained(dir.path());
    let file = dir.path().join("model.safetensors");
    let export = |force: bool| {
        let mut args = vec![
            "export",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--out",
            file.to_str().unwrap(),
        ];
        if force {
            args.push("--force");
        }
        hftrain(&args)
    };
    let out = export(false);
    assert_succeeded(&out);
    // An existing file is replaced only when asked.
    let again = export(false);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert!(export(true).status.success());

    let (tensors, metadata) = crate::curvature::read_safetensors(&file);
    let network = hftrain::model::Network::new(&config.model, 10).unwrap();
    let mut expected: Vec<(String, Vec<usize>)> = network
        .params
        .entries()
        .iter()
        .chain(network.buffers.entries())
        .map(|e| (e.name.clone(), e.shape.clone()))
        .collect();
    for e in network.buffers.entries() {
        if let Some(layer) = e.name.strip_suffix(".running_mean") {
            expected.push((format!("{layer}.num_batches_tracked"), vec![]));
        }
    }
    expected.sort();
    let found: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .map(|(name, (shape, _))| (name.clone(), shape.clone()))
        .collect();
    assert_eq!(found, expected);
    // The checkpoint's values, batch-norm running statistics included.
    let ckpt = hftrain::store::checkpoint::Checkpoint::load(&checkpoint).unwrap();
    let e = &network.buffers.entries()[1];
    let stored = &tensors[&e.name].1;
    for (a, b) in stored
        .iter()
        .zip(&ckpt.buffers[e.offset..e.offset + e.len()])
    {
        assert_eq!(*a, *b as f64);
    }
    assert_eq!(metadata["format"], "hftrain export v1");
    let model: hftrain::config::ModelConfig =
        toml::from_str(metadata["model"].as_str().unwrap()).unwrap();
    assert_eq!(model, config.model);
    let mean: Vec<f32> = serde_json::from_str(metadata["mean"].as_str().unwrap()).unwrap();
    assert_eq!(mean, config.data.mean);
    let classes: Vec<String> = serde_json::from_str(metadata["classes"].as_str().unwrap()).unwrap();
    assert_eq!(classes, ckpt.classes);

    round_trip_in_pytorch(&file, &checkpoint, dir.path());
}

/// The logits of PyTorch's rebuilt network equal hftrain's, where PyTorch is installed
/// (`HFTRAIN_PYTHON`, or `python3`, with torch, safetensors and Pillow).
fn round_trip_in_pytorch(export: &Path, checkpoint: &Path, dir: &Path) {
    let python = std::env::var("HFTRAIN_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_torch = Command::new(&python)
        .args(["-c", "import torch, safetensors, PIL"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_torch {
        // Straight to stderr, past the test harness's capture, so that CI's log shows it.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the PyTorch round trip of `hftrain export` ({python} has no torch, \
             safetensors and Pillow; set HFTRAIN_PYTHON to one that has)"
        );
        return;
    }
    let model = hftrain::session::open_model(checkpoint, Some(hftrain::config::DeviceChoice::Flex))
        .unwrap();
    let source = Source::detect(&synthetic_folder()).unwrap();
    let test = source.load(Split::Test, 20).unwrap();
    let transform = hftrain::data::batcher::Transform::eval(&model.config.data);
    let batch = hftrain::data::batcher::eval_batches(&test, 20, &transform)
        .next()
        .unwrap();
    let n = batch.len();
    let pixels = batch.pixels.clone();
    let (images, _) = batch.to_device(&model.device);
    let logits = hftrain::params::to_host(
        &model
            .network
            .predict(images, &model.params, &model.buffers)
            .reshape([-1]),
    );
    let mut check = hftrain::store::safetensors::SafeTensors::default();
    check.add_f32("images", &[n, 3, 32, 32], &pixels);
    check.add_f32("logits", &[n, model.classes.len()], &logits);
    let check_file = dir.join("check.safetensors");
    check.write(&check_file).unwrap();
    let script = crate::common::repository_root().join("scripts/load_export.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(export)
        .arg("--check")
        .arg(&check_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let difference: f64 = stdout
        .split("= ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no difference in {stdout}"));
    println!("measured: PyTorch's rebuilt network vs hftrain: {stdout}");
    // f32 logits of order 1 through a few layers: agreement to a few ulps of their sums.
    assert!(difference < 1e-4, "{stdout}");
}

/// A photo stored sideways with an EXIF orientation (as phones write them) is classified
/// upright, as a viewer shows it.
#[test]
fn a_picture_is_turned_upright_by_its_exif_orientation() {
    let dir = TempDir::new();
    // Stored 64 x 32: red on the left, blue on the right.
    let stored = image::RgbImage::from_fn(64, 32, |x, _| {
        if x < 32 {
            image::Rgb([250, 0, 0])
        } else {
            image::Rgb([0, 0, 250])
        }
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .encode_image(&stored)
        .unwrap();
    // An APP1 segment right after the start marker: Exif, a big-endian TIFF header and one
    // entry, orientation (0x0112) = 6, "turn 90 degrees clockwise to view".
    let mut exif = vec![0xFF, 0xE1, 0x00, 0x22];
    exif.extend_from_slice(b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01");
    exif.extend_from_slice(&[
        0x01, 0x12, 0x00, 0x03, 0, 0, 0, 1, 0x00, 0x06, 0, 0, 0, 0, 0, 0,
    ]);
    let file = dir.path().join("sideways.jpg");
    std::fs::write(&file, [&jpeg[..2], &exif, &jpeg[2..]].concat()).unwrap();

    let chw = hftrain::commands::predict::prepare_image(&file).unwrap();
    let side = 32;
    let at = |channel: usize, y: usize, x: usize| chw[channel * side * side + y * side + x];
    // Upright it is 32 x 64, red above blue; its centred square has red at the top and blue
    // at the bottom, across the whole width (sideways, red would be on the left instead).
    for x in [4, 28] {
        assert!(at(0, 4, x) > 128 && at(2, 4, x) < 128, "top row at x = {x}");
        assert!(
            at(2, 28, x) > 128 && at(0, 28, x) < 128,
            "bottom row at x = {x}"
        );
    }
}

/// A folder of class folders given to predict says its subfolders are not searched, and a
/// picture name that is no picture (a link to nothing) is named, not skipped in silence.
#[test]
fn predict_names_subfolders_it_does_not_search_and_links_to_nothing() {
    let dir = TempDir::new();
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(photos.join("cat")).unwrap();
    let expanded = hftrain::commands::predict::expand_inputs(std::slice::from_ref(&photos));
    let message = format!("{:#}", expanded.unwrap_err());
    assert!(
        message.contains("its subfolder") && message.contains("photos/cat is not searched"),
        "{message}"
    );
    std::os::unix::fs::symlink(dir.path().join("gone.png"), photos.join("dangling.png")).unwrap();
    image::RgbImage::new(8, 8)
        .save(photos.join("real.png"))
        .unwrap();
    let files = hftrain::commands::predict::expand_inputs(std::slice::from_ref(&photos)).unwrap();
    assert_eq!(files, [photos.join("real.png")]);
}
