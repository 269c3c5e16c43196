//! The kernel cache's round trip (written by one run, read by the next, so that autotuning is
//! paid once: what the GPU campaign carries between sessions), the first epoch's start-up
//! time said apart, and the campaign script's ready-to-paste device call.

use std::path::Path;
use std::process::Command;

use hftrain::report::markdown::first_epoch_start_up;
use hftrain::store::metrics::EpochMetrics;

use crate::common::{TempDir, assert_succeeded, repository_root, small_config, synthetic_binary};

/// Every file under `dir` with its contents, sorted by path.
fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            found.push((path, bytes));
        }
    }
    found.sort();
    found
}

/// `hftrain bench` of one forward pass on the software Vulkan adapter, run in `dir`, whose
/// cubecl.toml has cubecl write every autotuning decision ("Fastest result ...") to stdout.
fn bench_in(dir: &Path, cache: &Path, config: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hftrain"))
        .args([
            "bench",
            "--repeats",
            "1",
            "--batch",
            "2",
            "--only",
            "forward",
        ])
        .args(["--device", "wgpu-cpu", "--config"])
        .arg(config)
        .current_dir(dir)
        .env("HFTRAIN_KERNEL_CACHE", cache)
        .output()
        .unwrap();
    assert_succeeded(&out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A second run finds the autotune results the first wrote and tunes nothing again.
#[test]
fn a_second_run_reads_the_kernel_cache_the_first_wrote_and_tunes_nothing() {
    let dir = TempDir::new();
    let cache = dir.path().join("kernels");
    let config = dir.path().join("bench.toml");
    std::fs::write(&config, small_config(&synthetic_binary(), "flex").to_toml()).unwrap();
    std::fs::write(
        dir.path().join("cubecl.toml"),
        "[autotune.logger]\nlevel = \"minimal\"\nstdout = true\n",
    )
    .unwrap();
    let tuned = |text: &str| {
        text.lines()
            .filter(|l| l.contains("Fastest result"))
            .count()
    };

    let first = bench_in(dir.path(), &cache, &config);
    let written = files(&cache);
    println!(
        "measured: {} autotuning decisions in the first run, {} files in the cache",
        tuned(&first),
        written.len()
    );
    if !cfg!(feature = "persistence") {
        // A build without the `persistence` feature keeps nothing, by design.
        assert!(written.is_empty(), "{written:?}");
        return;
    }
    assert!(tuned(&first) > 0, "the first run tuned nothing:\n{first}");
    assert!(!written.is_empty(), "nothing in {}", cache.display());

    // As the campaign carries it: the cache moved to another place between runs.
    let carried = dir.path().join("carried");
    std::fs::rename(&cache, &carried).unwrap();
    let second = bench_in(dir.path(), &carried, &config);
    assert_eq!(tuned(&second), 0, "the second run tuned again:\n{second}");
    let names = |f: &[(std::path::PathBuf, Vec<u8>)], root: &Path| {
        f.iter()
            .map(|(p, _)| p.strip_prefix(root).unwrap().to_path_buf())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&files(&carried), &carried),
        names(&written, &cache),
        "the second run changed the cache's files"
    );
}

fn epoch(epoch: usize, step: usize, seconds: f64) -> EpochMetrics {
    EpochMetrics {
        epoch,
        step,
        lr: 0.0,
        train_loss: 1.0,
        train_accuracy: 0.5,
        test_loss: 1.0,
        test_accuracy: 0.5,
        epoch_seconds: seconds,
        images_per_second: 1.0,
        sharpness: None,
        hessian_trace: None,
        averaged_test_loss: None,
        averaged_test_accuracy: None,
    }
}

#[test]
fn the_first_epochs_start_up_is_its_time_beyond_a_later_epoch_of_as_many_steps() {
    // 10 steps an epoch; epoch 3 doubles the batch (5 steps), which is left out.
    let metrics = [
        epoch(1, 10, 35.0),
        epoch(2, 20, 7.0),
        epoch(3, 25, 9.0),
        epoch(4, 35, 6.0),
        epoch(5, 45, 6.5),
    ];
    let (extra, later) = first_epoch_start_up(&metrics).unwrap();
    assert_eq!(later, 6.5, "the median of 7.0, 6.0 and 6.5");
    assert!((extra - 28.5).abs() < 1e-12, "{extra}");
    // Said in report.md.
    let config = small_config(&synthetic_binary(), "flex");
    let facts = hftrain::report::markdown::RunFacts {
        device: "flex",
        model: "m",
        data: "d",
        step_log: false,
    };
    let report = hftrain::report::markdown::render(&config, &facts, &metrics);
    assert!(
        report.contains("of the first epoch's 35.0 s, about 28.5 s went to start-up"),
        "{report}"
    );
    // Nothing to say: one epoch, no later epoch of as many steps, or an excess that is noise.
    assert_eq!(first_epoch_start_up(&metrics[..1]), None);
    assert_eq!(
        first_epoch_start_up(&[epoch(1, 10, 9.0), epoch(2, 15, 5.0)]),
        None
    );
    assert_eq!(
        first_epoch_start_up(&[epoch(1, 10, 6.3), epoch(2, 20, 6.0)]),
        None
    );
}

/// The campaign script parses, and the device call its header prints fits the tool's
/// 2000-character command and carries what the campaign reads.
#[test]
fn the_campaign_script_parses_and_its_device_call_fits() {
    let script = repository_root().join("scripts/gpu-campaign.sh");
    let status = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(status.success(), "bash -n {}", script.display());
    let text = std::fs::read_to_string(&script).unwrap();
    let call = text
        .lines()
        .find_map(|l| l.strip_prefix("#   run(command=\""))
        .expect("the header prints the run command");
    let command = &call[..call.find("\",").expect("the command is quoted")];
    assert!(command.len() < 2000, "{} characters", command.len());
    assert!(
        command.contains("scripts/gpu-campaign.sh $OUT full"),
        "{command}"
    );
    assert!(command.contains("VK_DRIVER_FILES=") && command.contains("dpkg -x"));
    assert!(text.contains("carry=[\".campaign\", \".gl\"]"));
}
