//! `hftrain bench`: every quantity is timed and reported consistently (table, JSON), the
//! Hessian-free step's breakdown fits inside its time, and bad options name themselves.

use std::process::Command;

use hftrain::commands::bench::{BenchArgs, BenchReport, QUANTITIES, run};

use crate::common::{
    TempDir, assert_error, assert_succeeded, hftrain, small_config, synthetic_binary,
};

/// The names of a report's measurements, in its order.
fn measured_names(report: &BenchReport) -> Vec<&str> {
    report
        .measurements
        .iter()
        .map(|m| m.name.as_str())
        .collect()
}

/// A small network's config file (the bench needs no data: it times random images).
fn config_file(dir: &TempDir) -> std::path::PathBuf {
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, small_config(&synthetic_binary(), "flex").to_toml()).unwrap();
    path
}

fn args(config: std::path::PathBuf) -> BenchArgs {
    BenchArgs {
        config,
        device: None,
        batch: Some(16),
        repeats: 3,
        cg_iterations: 3,
        only: Vec::new(),
        json: None,
        force: false,
        layers: false,
        precision: None,
    }
}

#[test]
fn bench_times_every_quantity_and_writes_them_as_json() {
    let dir = TempDir::new();
    let json = dir.path().join("bench.json");
    let report = run(&BenchArgs {
        json: Some(json.clone()),
        ..args(config_file(&dir))
    })
    .unwrap();
    let names = measured_names(&report);
    assert_eq!(names, QUANTITIES.map(|q| q.name).to_vec());
    assert_eq!((report.batch, report.repeats), (16, 3));
    for m in &report.measurements {
        assert_eq!(m.seconds.len(), 3, "{}", m.name);
        assert!(
            m.median_seconds > 0.0 && m.median_seconds.is_finite(),
            "{}: {}",
            m.name,
            m.median_seconds
        );
        let mut sorted = m.seconds.clone();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(
            m.median_seconds, sorted[1],
            "{}: the median of its calls",
            m.name
        );
        let per_image = 16.0 / m.median_seconds;
        assert!(
            (m.images_per_second - per_image).abs() <= 1e-9 * per_image,
            "{}",
            m.name
        );
        assert!(
            m.process_peak_bytes.unwrap_or(0) > 0,
            "{}: peak memory",
            m.name
        );
    }
    // The Hessian-free step's parts happen inside it: they cannot add up to more.
    let step = report
        .measurements
        .iter()
        .find(|m| m.name == "hessian_free_step")
        .unwrap();
    let parts = report.hessian_free_step.as_ref().expect("a breakdown");
    assert!(parts.cg_iterations >= 1 && parts.curvature_products >= parts.cg_iterations);
    let sum = parts.gradient_seconds
        + parts.cg_seconds
        + parts.backtracking_seconds
        + parts.line_search_seconds;
    let slowest = step.seconds.iter().cloned().fold(0.0, f64::max);
    assert!(
        sum <= slowest * 1.001,
        "parts {sum} s, slowest step {slowest} s"
    );

    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = written["measurements"].as_array().unwrap();
    assert_eq!(rows.len(), QUANTITIES.len());
    assert_eq!(rows[2]["name"], "gradient_autodiff");
    assert_eq!(
        rows[2]["median_seconds"].as_f64().unwrap(),
        report.measurements[2].median_seconds
    );
    let table = report.table();
    for name in QUANTITIES.map(|q| q.name) {
        assert!(table.contains(name), "the table lacks {name}:\n{table}");
    }
}

#[test]
fn bench_times_only_what_is_asked_and_names_a_wrong_quantity() {
    let dir = TempDir::new();
    let only = vec!["gradient_backprop".to_string(), "forward".to_string()];
    let report = run(&BenchArgs {
        only,
        repeats: 1,
        ..args(config_file(&dir))
    })
    .unwrap();
    // In the bench's own order, whatever the order asked.
    let names = measured_names(&report);
    assert_eq!(names, ["forward", "gradient_backprop"]);
    assert!(report.hessian_free_step.is_none());
    assert_eq!(report.precision, "f32");

    // `--precision` times the first-order quantities in it and says so.
    let report = run(&BenchArgs {
        only: vec!["gradient_autodiff".into(), "sgd_step".into()],
        repeats: 1,
        precision: Some(hftrain::config::Precision::Bf16),
        ..args(config_file(&dir))
    })
    .unwrap();
    assert_eq!(measured_names(&report), ["gradient_autodiff", "sgd_step"]);
    assert_eq!(report.precision, "bf16");
    assert!(
        report.table().contains("first-order gradients in bf16"),
        "{}",
        report.table()
    );

    assert_error(
        run(&BenchArgs {
            only: vec!["gradients".into()],
            ..args(config_file(&dir))
        }),
        &["--only gradients", "gradient_autodiff"],
    );
    assert_error(
        run(&BenchArgs {
            batch: Some(0),
            ..args(config_file(&dir))
        }),
        &["--batch 0"],
    );
    assert_error(
        run(&args(dir.path().join("missing.toml"))),
        &["missing.toml"],
    );
}

#[test]
fn bench_command_prints_its_table() {
    let dir = TempDir::new();
    let config = config_file(&dir);
    let (ok, text) = hftrain(&[
        "bench",
        "--repeats",
        "1",
        "--batch",
        "4",
        "--only",
        "forward,sgd_step",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("sgd_step") && text.contains("images/s"),
        "{text}"
    );
    assert!(text.contains("batch 4"), "{text}");
}

#[test]
fn kernel_cache_lives_where_the_user_expects() {
    use hftrain::support::kernel_cache::directory_from;
    let os = |s: &str| Some(std::ffi::OsString::from(s));
    assert_eq!(
        directory_from(None, None, os("/home/ada")),
        Some("/home/ada/.cache/hftrain/kernels".into())
    );
    assert_eq!(
        directory_from(os(""), os("/xdg"), os("/home/ada")),
        Some("/xdg/hftrain/kernels".into())
    );
    assert_eq!(
        directory_from(os("/scratch/k"), os("/xdg"), os("/home/ada")),
        Some("/scratch/k".into())
    );
    assert_eq!(directory_from(os("off"), os("/xdg"), os("/home/ada")), None);
    assert_eq!(directory_from(None, None, None), None);
}

/// A wgpu run leaves its autotune results in HFTRAIN_KERNEL_CACHE, for the next run.
#[test]
fn a_wgpu_run_keeps_its_autotune_results_in_the_kernel_cache() {
    let dir = TempDir::new();
    let cache = dir.path().join("kernels");
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
        .arg(config_file(&dir))
        .env("HFTRAIN_KERNEL_CACHE", &cache)
        .output()
        .unwrap();
    assert_succeeded(&out);
    let files = walk(&cache);
    println!(
        "measured: {} files in the kernel cache after one wgpu run",
        files.len()
    );
    // A build without the `persistence` feature keeps nothing, by design.
    assert_eq!(
        !files.is_empty(),
        cfg!(feature = "persistence"),
        "files in {}: {files:?}",
        cache.display()
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn bench_times_each_layer_and_the_layers_make_the_network() {
    let dir = TempDir::new();
    let report = run(&BenchArgs {
        only: vec!["forward".into()],
        layers: true,
        repeats: 1,
        ..args(config_file(&dir))
    })
    .unwrap();
    let config = small_config(&synthetic_binary(), "flex");
    let network = hftrain::model::Network::new(&config.model, 10).unwrap();
    let layers = report
        .layers
        .as_ref()
        .expect("--layers gives per-layer times");
    // Three stages of 4, 4 and 5 layers, then the classifier.
    assert_eq!(layers.len(), 14);
    for (row, layer) in layers.iter().zip(network.layers()) {
        assert_eq!(row.layer, layer.describe());
        assert!(row.forward_seconds > 0.0 && row.vjp_seconds > 0.0 && row.jvp_seconds > 0.0);
    }
    assert!(report.table().contains("each layer alone"));

    // The layers one after another compute the network's own recorded pass.
    let device = hftrain::device::select(hftrain::device::DeviceChoice::Flex)
        .unwrap()
        .device;
    let (params, _) = network.init(5, &device);
    let parts = network.params.split(&params);
    let images = crate::common::random_tensor(9, [3, 3, 32, 32], &device);
    let mut x = images.clone();
    for layer in network.layers() {
        x = layer.record(x, &parts).0;
    }
    let whole = network.forward_recorded(images, &parts).logits;
    let by_layers = x.reshape([3, 10]);
    assert_eq!(
        by_layers.into_data().try_to_vec::<f32>().unwrap(),
        whole.into_data().try_to_vec::<f32>().unwrap()
    );
}

/// After `keep_freed_memory_for_reuse` (which `main` sets up first), a large block freed and
/// allocated again is served from memory already mapped: the kernel does not fault its pages
/// in (and zero them) a second time. (The setting then holds for the rest of this test
/// process, as it does for hftrain's: it changes where blocks come from, not their contents.) Measured on this thread only (`RUSAGE_THREAD`), over a
/// block larger than glibc's largest mmap threshold (32 MiB), which glibc's defaults would
/// always map afresh. A few tries, in case another test's thread takes the freed block first.
#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn freed_large_blocks_are_reused_without_faulting_their_pages_in_again() {
    hftrain::support::allocator::keep_freed_memory_for_reuse();
    const BYTES: usize = 48 << 20;
    let pages = (BYTES / 4096) as i64;
    let faults = || {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage fills the struct it is given.
        let usage = unsafe {
            assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()), 0);
            usage.assume_init()
        };
        usage.ru_minflt
    };
    let mut seen = Vec::new();
    for _ in 0..3 {
        drop(std::hint::black_box(vec![1u8; BYTES]));
        let before = faults();
        let again = std::hint::black_box(vec![2u8; BYTES]);
        let faulted = faults() - before;
        drop(again);
        if faulted < pages / 10 {
            println!("measured: a {BYTES}-byte block again: {faulted} page faults ({pages} pages)");
            return;
        }
        seen.push(faulted);
    }
    panic!("a freed {BYTES}-byte block was not reused: {seen:?} page faults of {pages} pages");
}
