use std::path::Path;

use hftrain::config::Config;
use hftrain::model::Network;
use hftrain::optim::OptimizerState;
use hftrain::store::checkpoint::{self, Checkpoint, Position};

use crate::common::{TempDir, assert_error};

fn sample(epoch: usize) -> (Checkpoint, Network) {
    let config = Config::parse(
        "name = \"sample\"\n[[model.stages]]\n\
             layers = [\"conv 4\", \"batch-norm\", \"relu\", \"max-pool\", \"global-max-pool\"]\n",
    )
    .unwrap();
    config.validate().unwrap();
    let network = Network::new(&config.model, 10).unwrap();
    let p = network.params.total();
    let mut optimizer = OptimizerState::new("sgd", &serde_json::json!({}));
    optimizer
        .vectors
        .insert("velocity".into(), (0..p).map(|i| i as f32 * 0.5).collect());
    let ckpt = Checkpoint {
        position: Position {
            epoch,
            step_in_epoch: 0,
            global_step: epoch * 10,
        },
        config,
        params_layout: network.params.clone(),
        buffers_layout: network.buffers.clone(),
        params: (0..p).map(|i| (i as f32).sin()).collect(),
        buffers: vec![0.25; network.buffers.total()],
        optimizer,
        // One row per complete epoch, 10 steps each (the position agrees).
        metrics: (1..=epoch)
            .map(|e| hftrain::store::metrics::EpochMetrics {
                epoch: e,
                step: 10 * e,
                lr: 0.1,
                train_loss: 1.0,
                train_accuracy: 0.5,
                test_loss: 1.0,
                test_accuracy: 0.5,
                epoch_seconds: 1.0,
                images_per_second: 100.0,
                sharpness: None,
                hessian_trace: None,
                averaged_test_loss: None,
                averaged_test_accuracy: None,
            })
            .collect(),
        classes: hftrain::data::CIFAR10_CLASSES.map(String::from).to_vec(),
        epoch_progress: checkpoint::EpochProgress {
            loss_sum: 0.1 + epoch as f32,
            correct: 17,
            images: 40,
            seconds: 2.5,
        },
        average: None,
        grown_batch_sizes: Vec::new(),
    };
    (ckpt, network)
}

#[test]
fn round_trip_is_exact_and_latest_points_at_the_newest() {
    let dir = TempDir::new();
    let (ckpt, network) = sample(1);
    let saved = ckpt.save(dir.path(), 5).unwrap();
    assert_eq!(saved.file_name().unwrap(), "epoch-0001");
    let (second, _) = sample(2);
    second.save(dir.path(), 5).unwrap();
    let latest = checkpoint::resolve("latest", dir.path()).unwrap();
    let loaded = Checkpoint::load(&latest).unwrap();
    assert_eq!(loaded.position.epoch, 2);
    assert_eq!(loaded.params, second.params);
    assert_eq!(loaded.epoch_progress, second.epoch_progress);
    assert_eq!(loaded.buffers, second.buffers);
    assert_eq!(loaded.optimizer, second.optimizer);
    assert_eq!(loaded.config, second.config);
    assert_eq!(loaded.classes, second.classes);
    loaded
        .check_layout(&latest, &network.params, &network.buffers)
        .unwrap();
    // No temporary directory is left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

#[test]
fn only_the_newest_k_are_kept() {
    let dir = TempDir::new();
    for epoch in 1..=5 {
        sample(epoch).0.save(dir.path(), 2).unwrap();
    }
    let kept: Vec<_> = checkpoint::list(dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept, vec!["epoch-0004", "epoch-0005"]);
}

fn saved_copy(dir: &Path) -> std::path::PathBuf {
    sample(3).0.save(dir, 3).unwrap()
}

#[test]
fn truncated_file_is_detected() {
    let dir = TempDir::new();
    let ckpt = saved_copy(dir.path());
    let file = ckpt.join("params.bin");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    assert_error(
        Checkpoint::load(&ckpt),
        &["epoch-0003", "params.bin", "truncated"],
    );
}

#[test]
fn flipped_bit_is_detected() {
    let dir = TempDir::new();
    let ckpt = saved_copy(dir.path());
    let file = ckpt.join("optimizer.bin");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[17] ^= 0x10;
    std::fs::write(&file, &bytes).unwrap();
    assert_error(Checkpoint::load(&ckpt), &["optimizer.bin", "checksum"]);
}

#[test]
fn missing_manifest_means_not_a_checkpoint() {
    let dir = TempDir::new();
    let ckpt = saved_copy(dir.path());
    std::fs::remove_file(ckpt.join("manifest.json")).unwrap();
    assert_error(
        Checkpoint::load(&ckpt),
        &["is not a checkpoint", "manifest.json"],
    );
    assert_error(
        Checkpoint::load(&dir.path().join("nothing")),
        &["does not exist"],
    );
}

#[test]
fn other_format_version_is_refused() {
    let dir = TempDir::new();
    let ckpt = saved_copy(dir.path());
    let path = ckpt.join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"format_version\": 3", "\"format_version\": 99");
    std::fs::write(&path, text).unwrap();
    let error = Checkpoint::load(&ckpt);
    let message = assert_error(error, &["format version 99", "newer hftrain", "up to 3"]);
    // Not damage: `--resume latest` reports it instead of falling back to an older one.
    let error = Checkpoint::load(&ckpt).unwrap_err();
    assert!(
        matches!(error, checkpoint::LoadError::NewerFormat(_)),
        "{message}"
    );
}

/// The manifest is checksummed and its values checked: an edited position, or metrics that
/// disagree with it, is damage (`--resume latest` then takes an older checkpoint).
#[test]
fn an_edited_manifest_is_damage() {
    let dir = TempDir::new();
    let ckpt = saved_copy(dir.path());
    let path = ckpt.join("manifest.json");
    let original = std::fs::read_to_string(&path).unwrap();
    let edited = original.replace("\"global_step\": 30", "\"global_step\": 31");
    assert_ne!(edited, original);
    std::fs::write(&path, &edited).unwrap();
    let message = assert_error(
        Checkpoint::load(&ckpt),
        &["manifest.json", "CRC-32", "edited"],
    );
    assert!(
        Checkpoint::load(&ckpt).unwrap_err().is_damage(),
        "{message}"
    );
    // The same edit with a checksum that matches it: the values themselves are checked.
    std::fs::write(
        ckpt.join("manifest.crc32"),
        format!("{:08x}", crc32fast::hash(edited.as_bytes())),
    )
    .unwrap();
    assert_error(
        Checkpoint::load(&ckpt),
        &["global step 31", "disagrees with its metrics", "30 steps"],
    );
    let zero_std = original.replace("\"std\": [\n        0.247", "\"std\": [\n        0.0");
    assert_ne!(zero_std, original, "the manifest's std was not found");
    std::fs::write(&path, &zero_std).unwrap();
    std::fs::write(
        ckpt.join("manifest.crc32"),
        format!("{:08x}", crc32fast::hash(zero_std.as_bytes())),
    )
    .unwrap();
    assert_error(
        Checkpoint::load(&ckpt),
        &["config is not valid", "data.std[0]"],
    );
}

/// File names in a manifest are only the ones hftrain writes, regular files of the stated
/// size, checked before anything is read.
#[test]
fn manifest_file_names_are_not_paths() {
    for name in ["/dev/zero", "../../etc/passwd", "notes.txt"] {
        let dir = TempDir::new();
        let ckpt = saved_copy(dir.path());
        let path = ckpt.join("manifest.json");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"params.bin\"", &format!("{name:?}"));
        std::fs::write(&path, &text).unwrap();
        std::fs::write(
            ckpt.join("manifest.crc32"),
            format!("{:08x}", crc32fast::hash(text.as_bytes())),
        )
        .unwrap();
        assert_error(
            Checkpoint::load(&ckpt),
            &["lists", name, "not a file of a checkpoint"],
        );
    }
    // A data file replaced by a link to a device is not read.
    let dir = TempDir::new();
    let ckpt = saved_copy(dir.path());
    std::fs::remove_file(ckpt.join("params.bin")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", ckpt.join("params.bin")).unwrap();
    assert_error(
        Checkpoint::load(&ckpt),
        &["params.bin", "not a regular file"],
    );
}

/// `latest` that leads into another run is not followed silently.
#[test]
fn latest_pointing_into_another_run_is_refused() {
    let dir = TempDir::new();
    let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
    sample(1).0.save(&ours, 3).unwrap();
    let other = sample(2).0.save(&theirs, 3).unwrap();
    std::fs::remove_file(ours.join("latest")).unwrap();
    std::os::unix::fs::symlink(&other, ours.join("latest")).unwrap();
    assert_error(
        checkpoint::resolve("latest", &ours),
        &["points outside", "theirs"],
    );
}

#[test]
fn checkpoint_of_another_model_shape_is_refused() {
    let dir = TempDir::new();
    let ckpt_dir = saved_copy(dir.path());
    let loaded = Checkpoint::load(&ckpt_dir).unwrap();
    let other =
        Config::parse("[[model.stages]]\nlayers = [\"conv 8\", \"global-max-pool\"]\n").unwrap();
    let network = Network::new(&other.model, 10).unwrap();
    assert_error(
        loaded.check_layout(&ckpt_dir, &network.params, &network.buffers),
        &[
            "different model",
            "stages.0.layers.0.weight",
            "[8, 3, 3, 3]",
            "[4, 3, 3, 3]",
        ],
    );
}

#[test]
fn resume_latest_without_checkpoints_says_so() {
    let dir = TempDir::new();
    assert_error(
        checkpoint::resolve("latest", dir.path()),
        &["nothing to resume"],
    );
}

/// Rewrites a saved checkpoint's manifest with `edit` and a checksum that matches.
fn rewrite_manifest(ckpt: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = ckpt.join("manifest.json");
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut value);
    let text = serde_json::to_string_pretty(&value).unwrap();
    std::fs::write(&path, &text).unwrap();
    std::fs::write(
        ckpt.join("manifest.crc32"),
        format!("{:08x}\n", crc32fast::hash(text.as_bytes())),
    )
    .unwrap();
}

/// A checkpoint of format 2 (every optimizer's settings in its config, scalars as floats)
/// still loads and resumes: its optimizer's own settings are kept, counts become integers.
#[test]
fn a_format_2_checkpoint_still_loads() {
    let dir = TempDir::new();
    let ckpt = saved_copy(dir.path());
    let hessian_free = serde_json::to_value(hftrain::config::HessianFreeConfig::default()).unwrap();
    rewrite_manifest(&ckpt, |m| {
        m["format_version"] = 2.into();
        m["config"]["optimizer"] = serde_json::json!({
            "kind": "hessian-free", "lr": 0.1, "momentum": 0.9, "nesterov": true,
            "weight_decay": 0.002, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
            "hessian_free": hessian_free,
        });
        m["optimizer"] = serde_json::json!({
            "kind": "hessian-free",
            "scalars": {"damping": 0.5, "steps": 12.0, "rejected_in_a_row": 1.0,
                        "rejected_total": 3.0},
        });
        m["optimizer_vectors"] = serde_json::json!(["previous_solution"]);
    });
    let loaded = Checkpoint::load(&ckpt).unwrap();
    let optimizer = &loaded.config.optimizer;
    assert_eq!(optimizer.name(), "hessian-free");
    assert_eq!(optimizer.weight_decay(), 0.002);
    assert_eq!(optimizer.lr(), None);
    assert_eq!(loaded.optimizer.scalars["steps"], 12);
    let d = burn::prelude::Device::flex();
    let mut hf = hftrain::optim::hessian_free::HessianFree::new(
        optimizer.hessian_free().unwrap(),
        loaded.params.len(),
    );
    use hftrain::optim::Optimizer;
    hf.load_state(&loaded.optimizer, &d).unwrap();
    assert_eq!(hf.damping(), 0.5);
}

/// Load errors are typed where the caller branches on them.
#[test]
fn load_errors_say_what_kind_of_failure_they_are() {
    use checkpoint::LoadError;
    let dir = TempDir::new();
    assert!(matches!(
        Checkpoint::load(&dir.path().join("nothing")),
        Err(LoadError::Missing(_))
    ));
    let ckpt = saved_copy(dir.path());
    let loaded = Checkpoint::load(&ckpt).unwrap();
    let other =
        Config::parse("[[model.stages]]\nlayers = [\"conv 8\", \"global-max-pool\"]\n").unwrap();
    let network = Network::new(&other.model, 10).unwrap();
    assert!(matches!(
        loaded.check_layout(&ckpt, &network.params, &network.buffers),
        Err(LoadError::LayoutMismatch(_))
    ));
    std::fs::write(ckpt.join("buffers.bin"), b"short").unwrap();
    let error = Checkpoint::load(&ckpt).unwrap_err();
    assert!(error.is_damage(), "{error}");
    // Through anyhow, the kind is still there to branch on.
    let chain = anyhow::Error::new(error).context("resuming");
    assert!(
        chain
            .downcast_ref::<LoadError>()
            .is_some_and(LoadError::is_damage)
    );
}
