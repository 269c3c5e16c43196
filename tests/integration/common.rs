//! Helpers shared by the tests: the generated data set every test trains on, the real CIFAR-10
//! folder where a checkout has it, small configs, synthetic binary records.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use hftrain::config::{Config, StageConfig};
use hftrain::data::synthetic::SyntheticSpec;
use hftrain::data::{Format, Split};

/// The repository root. `cargo test` sets CARGO_MANIFEST_DIR when it runs the tests too;
/// that value wins over the one compiled in, which names wherever the binary was built (a
/// target directory shared by two checkouts may hand one the other's binary).
pub fn repository_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The generated stand-in for CIFAR-10 (`hftrain::data::synthetic`) that the tests train,
/// resume, kill and evaluate on, in the official binary format: 60 training and 20 test
/// images per class. Written once under cargo's temporary folder for integration tests and
/// shared by every test and child process (see `synthetic_data`).
pub fn synthetic_binary() -> PathBuf {
    synthetic_data(Format::Binary)
}

/// The same images as `synthetic_binary`, as an image folder of PNG files.
pub fn synthetic_folder() -> PathBuf {
    synthetic_data(Format::ImageFolder)
}

/// The generated data set in `format`. Its folder is named by a checksum of the generated
/// bytes, so a change to the generator writes a new one instead of reusing a stale copy;
/// `synthetic::write` renames a complete folder into place, so a folder that exists is
/// whole (another test process may have written it first).
fn synthetic_data(format: Format) -> PathBuf {
    static WRITING: Mutex<()> = Mutex::new(());
    let spec = SyntheticSpec {
        train_per_class: 60,
        test_per_class: 20,
        seed: 0,
    };
    let (train, test) = (spec.generate(Split::Train), spec.generate(Split::Test));
    let mut crc = crc32fast::Hasher::new();
    for data in [&train, &test] {
        crc.update(&data.images);
        crc.update(&data.labels);
    }
    let name = match format {
        Format::Binary => "binary",
        Format::ImageFolder => "folder",
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("synthetic-cifar10-{:08x}", crc.finalize()))
        .join(name);
    let _guard = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    if !dir.is_dir() {
        let written = hftrain::data::synthetic::write(&dir, format, &train, &test);
        assert!(
            dir.is_dir(),
            "cannot write the synthetic data set to {}: {written:?}",
            dir.display()
        );
    }
    dir
}

/// `../shared/data/cifar10`, the real CIFAR-10 images, where a checkout has them beside it
/// (not on a user's machine, nor in CI): only the checks of real images use it, and they say
/// that they skipped, since libtest would otherwise show them as passed.
pub fn real_cifar10_folder() -> Option<PathBuf> {
    let dir = repository_root().join("../shared/data/cifar10");
    if dir.join("train").is_dir() && dir.join("test").is_dir() {
        Some(dir)
    } else {
        // Written to the stderr handle itself: libtest captures `eprintln!` of a passing test,
        // which would hide the skip.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the real CIFAR-10 image folder ../shared/data/cifar10 is absent; this \
             check of real images needs it (every other test runs on generated images)"
        );
        None
    }
}

/// A small network and a few hundred images: seconds per epoch on a CPU.
pub fn small_config(data: &Path, device: &str) -> Config {
    let mut c = Config::parse("").unwrap();
    c.name = "test".into();
    c.seed = 7;
    c.device = device.parse().unwrap();
    c.data.dir = data.to_path_buf();
    c.data.train_limit = 300;
    c.data.test_limit = 200;
    c.data.crop_padding = 2;
    c.model.stages = vec![
        StageConfig::new(&["conv 8", "batch-norm", "relu", "max-pool"]),
        StageConfig::new(&["conv 16", "batch-norm", "relu", "max-pool"]),
        StageConfig::new(&[
            "conv 16",
            "batch-norm",
            "relu",
            "max-pool",
            "global-avg-pool",
        ]),
    ];
    c.model.logit_scale = 1.0;
    c.train.epochs = 2;
    c.train.batch_size = 50;
    c.train.eval_batch_size = 100;
    c.train.log_every = 3;
    sgd(&mut c).lr = 0.05;
    c.schedule.warmup_epochs = 0.5;
    c.validate().unwrap();
    c
}

/// One CIFAR-10 binary record per label in `labels`; pixel bytes encode (image, position).
pub fn binary_records(labels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (i, &label) in labels.iter().enumerate() {
        bytes.push(label);
        bytes.extend((0..3072).map(|p| ((i * 7 + p) % 251) as u8));
    }
    bytes
}

/// Asserts that `result` failed with a message containing every one of `needles`.
pub fn assert_error<T: std::fmt::Debug, E: Into<anyhow::Error>>(
    result: Result<T, E>,
    needles: &[&str],
) -> String {
    let message = format!(
        "{:#}",
        result.map_err(Into::into).expect_err("expected an error")
    );
    for needle in needles {
        assert!(
            message.contains(needle),
            "error message lacks {needle:?}:\n{message}"
        );
    }
    message
}

/// A fresh directory under the system's temporary directory, removed when dropped.
///
/// Our own instead of the `tempfile` crate: that dev-dependency turns on features of crates
/// wgpu depends on (bitflags/std), so `cargo test` and `cargo build` would each compile Burn
/// and wgpu once: two full builds instead of one (BENCHMARKS.md).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "hftrain-test-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Set in the child process that runs the f64 tests (see `run_f64_tests_in_child`).
pub const F64_CHILD: &str = "HFTRAIN_TEST_F64_CHILD";

/// Burn's CPU backend (flex) in f64. Burn keeps one dtype setting per device for the whole
/// process, so the f64 tests run in a process of their own, where nothing else uses flex;
/// elsewhere this refuses instead of switching the other tests to f64 under their feet.
pub fn flex_f64() -> burn::prelude::Device {
    assert!(
        std::env::var_os(F64_CHILD).is_some(),
        "the f64 tests run in a process of their own: `cargo test --release -- \
         f64_tests_pass_in_their_own_process` starts it (or set {F64_CHILD}=1 and pass --ignored)"
    );
    static CONFIGURED: std::sync::Once = std::sync::Once::new();
    let mut device = burn::prelude::Device::flex();
    CONFIGURED.call_once(|| {
        device
            .configure(burn::tensor::FloatDType::F64)
            .expect("flex is configured before any tensor of this process exists");
    });
    let probe = burn::prelude::Tensor::<1>::zeros([1], &device);
    assert_eq!(
        probe.dtype(),
        burn::tensor::DType::F64,
        "flex is not in f64"
    );
    device
}

/// Runs every ignored test of this binary in a child process with flex in f64, and returns
/// the lines they printed with `measured:`. The tests to run are discovered (`--list
/// --ignored`), not counted by hand: every ignored test must be an f64 test (named `f64_...`,
/// so that none is left out unseen), and each listed one must be reported passed.
pub fn run_f64_tests_in_child() -> Vec<String> {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let listing = std::process::Command::new(&exe)
        .args(["--list", "--ignored", "--format", "terse"])
        .output()
        .expect("the test binary lists its tests");
    let listing = String::from_utf8_lossy(&listing.stdout);
    let ignored: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .collect();
    assert!(
        !ignored.is_empty(),
        "no ignored (f64) tests found in:\n{listing}"
    );
    let not_f64: Vec<&&str> = ignored
        .iter()
        .filter(|name| !name.rsplit("::").next().unwrap_or("").starts_with("f64_"))
        .collect();
    assert!(
        not_f64.is_empty(),
        "ignored tests that no process runs (only f64_ tests may be ignored): {not_f64:?}"
    );

    let out = std::process::Command::new(exe)
        .args(["f64_", "--ignored", "--test-threads=1", "--show-output"])
        .env(F64_CHILD, "1")
        // The convolution's choice of patches or Burn's kernels by its own rule, which the
        // f64 tests check both sides of.
        .env_remove("HFTRAIN_CONV_PATCHES")
        .output()
        .expect("the test binary starts again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "f64 tests failed:\n{stdout}\n{stderr}"
    );
    for name in &ignored {
        assert!(
            stdout.contains(&format!("test {name} ... ok")),
            "{name} did not pass in the f64 process:\n{stdout}"
        );
    }
    let mut measured: Vec<String> = stdout
        .lines()
        .filter(|l| l.contains("measured:"))
        .map(str::to_owned)
        .collect();
    measured.push(format!(
        "measured: {} f64 tests passed in their own process",
        ignored.len()
    ));
    measured
}

/// Uniform values in [-1, 1) from `seed`, as a tensor of `shape` on `device`.
pub fn random_tensor<const D: usize>(
    seed: u64,
    shape: [usize; D],
    device: &burn::prelude::Device,
) -> burn::prelude::Tensor<D> {
    let n: usize = shape.iter().product();
    let mut rng = hftrain::support::rng::Rng::derive(seed, &[0x7E57]);
    let values: Vec<f32> = (0..n)
        .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32)
        .collect();
    hftrain::params::from_host(values, device).reshape(shape)
}

/// `|a - b| / |b|` in the Euclidean norm, read back in f64.
pub fn relative_error<const D: usize>(
    a: &burn::prelude::Tensor<D>,
    b: &burn::prelude::Tensor<D>,
) -> f64 {
    let diff = (a.clone() - b.clone())
        .powi_scalar(2)
        .sum()
        .into_scalar::<f64>()
        .sqrt();
    let norm = b.clone().powi_scalar(2).sum().into_scalar::<f64>().sqrt();
    diff / norm.max(f64::MIN_POSITIVE)
}

/// The SGD settings of a config that trains with SGD (the default optimizer).
pub fn sgd(config: &mut Config) -> &mut hftrain::config::SgdConfig {
    let name = config.optimizer.name();
    config
        .optimizer
        .settings_mut::<hftrain::config::SgdConfig>()
        .unwrap_or_else(|| panic!("the config trains with {name}, not SGD"))
}

/// Switches a config to Hessian-free (with the weight decay it had, and no learning-rate
/// schedule) and returns its settings, at their defaults.
pub fn use_hessian_free(config: &mut Config) -> &mut hftrain::config::HessianFreeConfig {
    config.schedule = Default::default();
    config.optimizer =
        hftrain::config::OptimizerConfig::new(hftrain::config::HessianFreeSettings {
            weight_decay: config.optimizer.weight_decay(),
            hessian_free: Default::default(),
        });
    hessian_free(config)
}

/// The Hessian-free settings of a config that trains with Hessian-free.
pub fn hessian_free(config: &mut Config) -> &mut hftrain::config::HessianFreeConfig {
    let name = config.optimizer.name();
    config
        .optimizer
        .hessian_free_mut()
        .unwrap_or_else(|| panic!("the config trains with {name}, not Hessian-free"))
}

/// Runs the hftrain binary with `args` (without a data directory from the environment):
/// whether it succeeded, and its standard error then standard output.
pub fn hftrain(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hftrain"))
        .args(args)
        .env_remove("HFTRAIN_DATA")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

/// Asserts that a finished command succeeded, with what it printed as the message where not.
pub fn assert_succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The position of column `name` in a Hessian-free run's `steps.csv`.
pub fn hessian_free_step_column(name: &str) -> usize {
    use hftrain::optim::OptimizerSettings;
    hftrain::store::metrics::step_columns(hftrain::config::HessianFreeSettings::STEP_COLUMNS)
        .iter()
        .position(|c| *c == name)
        .unwrap_or_else(|| panic!("steps.csv has no column {name}"))
}

/// `small_config` on the generated binary data and Burn's CPU backend, with its first
/// `train_images` and `test_images` images, for `epochs` epochs: a run of seconds.
pub fn flex_config(train_images: usize, test_images: usize, epochs: usize) -> Config {
    let mut config = small_config(&synthetic_binary(), "flex");
    config.data.train_limit = train_images;
    config.data.test_limit = test_images;
    config.train.epochs = epochs;
    config
}

/// A tiny run's config (one epoch of 100 images on flex), written to `dir/tiny.toml`.
pub fn tiny_config_file(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.toml");
    std::fs::write(&path, flex_config(100, 50, 1).to_toml()).unwrap();
    path
}

/// Trains `config` into `out` in this process, as `hftrain train --resume RESUME
/// --stop-after-epoch N` would.
pub fn train(
    config: &Config,
    out: &Path,
    resume: Option<&str>,
    stop_after_epoch: Option<usize>,
) -> anyhow::Result<hftrain::train::TrainOutcome> {
    hftrain::train::run(hftrain::train::TrainRequest {
        config: Some(config.clone()),
        out_dir: Some(out.to_path_buf()),
        resume: resume.map(String::from),
        stop_after_epoch,
        ..Default::default()
    })
}

/// `hftrain train --config CONFIG --out OUT EXTRA...` as a child process: whether it
/// succeeded, and what it printed.
pub fn train_command(config: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let args = [
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    hftrain(&[&args[..], extra].concat())
}

/// `hftrain train --out RUN --resume latest` (the checkpoint's own config): whether it
/// succeeded, and its standard error then standard output.
pub fn resume_by_binary(run: &Path) -> (bool, String) {
    hftrain(&[
        "train",
        "--out",
        run.to_str().unwrap(),
        "--resume",
        "latest",
    ])
}
