//! Helpers shared by the tests: the real CIFAR-10 folder beside the repository, small configs,
//! synthetic binary batches.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use hftrain::config::{BlockConfig, Config, HeadKind};

/// `../shared/data/cifar10` (the image folder every test and run reads in place), or None
/// with the reason printed, so a missing folder never passes silently.
pub fn cifar10_folder() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cifar10");
    if dir.join("train").is_dir() && dir.join("test").is_dir() {
        Some(dir)
    } else {
        // Written to the stderr handle itself: libtest captures `eprintln!` of a passing test,
        // which would hide the skip.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the CIFAR-10 image folder {} is absent; this test needs real images",
            dir.display()
        );
        None
    }
}

/// A small network and a few hundred images: seconds per epoch on a CPU.
pub fn small_config(data: &Path, device: &str) -> Config {
    let mut c = Config::parse("").unwrap();
    c.name = "test".into();
    c.seed = 7;
    c.device = device.into();
    c.data.dir = data.to_path_buf();
    c.data.train_limit = 300;
    c.data.test_limit = 200;
    c.data.crop_padding = 2;
    c.model.blocks = vec![
        BlockConfig { channels: 8, pool: true },
        BlockConfig { channels: 16, pool: true },
        BlockConfig { channels: 16, pool: true },
    ];
    c.model.head = HeadKind::Avg;
    c.model.logit_scale = 1.0;
    c.train.epochs = 2;
    c.train.batch_size = 50;
    c.train.eval_batch_size = 100;
    c.train.log_every = 3;
    c.optimizer.lr = 0.05;
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
pub fn assert_error<T: std::fmt::Debug>(result: anyhow::Result<T>, needles: &[&str]) -> String {
    let message = format!("{:#}", result.expect_err("expected an error"));
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
