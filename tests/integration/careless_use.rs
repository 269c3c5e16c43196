//! Careless and hostile use of the commands (issue 33): no output replaces a file of the
//! user's or of a run, no input aborts or hangs the program, every count and limit is checked
//! before the work starts. Real `hftrain` child processes on a tiny run trained once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{TempDir, hftrain, small_config, synthetic_binary, synthetic_folder};

/// A run of one short epoch on the synthetic data, trained once for the tests here (each
/// test copies nothing into it: what a test writes goes into its own folder).
fn shared_run() -> &'static Path {
    static RUN: OnceLock<(TempDir, PathBuf)> = OnceLock::new();
    &RUN.get_or_init(|| {
        let dir = TempDir::new();
        let run = dir.path().join("run");
        crate::training::train(&tiny_config(&synthetic_binary()), &run, None, None).unwrap();
        (dir, run)
    })
    .1
}

fn tiny_config(data: &Path) -> hftrain::config::Config {
    let mut config = small_config(data, "flex");
    config.data.train_limit = 100;
    config.data.test_limit = 50;
    config.train.epochs = 1;
    config
}

fn checkpoint() -> PathBuf {
    shared_run().join("checkpoints/latest")
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn assert_refused(args: &[&str], needles: &[&str]) -> String {
    let (ok, out) = hftrain(args);
    assert!(!ok, "{args:?} was accepted:\n{out}");
    for needle in needles {
        assert!(out.contains(needle), "{args:?}: lacks {needle:?}:\n{out}");
    }
    out
}

fn picture(path: &Path, side: u32) {
    image::RgbImage::from_fn(side, side, |x, y| image::Rgb([x as u8, y as u8, 90]))
        .save(path)
        .unwrap();
}

/// Every file the shared run's checkpoint and run hold, with its bytes.
fn run_files() -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                walk(&path, out);
            } else if path.is_file() {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut files = Vec::new();
    walk(shared_run(), &mut files);
    files.retain(|(p, _)| !p.ends_with(".lock"));
    files.sort();
    files
}

/// Item 1: an existing file is replaced only with --force, a run's and a checkpoint's files
/// never, a link never; the picture given after `--json` stays a picture.
#[test]
fn outputs_never_replace_a_users_or_a_runs_file() {
    let dir = TempDir::new();
    let ck = checkpoint();
    let run = shared_run();
    let before = run_files();
    let photo = dir.path().join("photo.png");
    let other = dir.path().join("other.png");
    picture(&photo, 40);
    picture(&other, 40);
    let photo_bytes = std::fs::read(&photo).unwrap();

    // The shell put a.png after --json: refused, the picture kept.
    assert_refused(
        &[
            "predict",
            "--checkpoint",
            text(&ck),
            "--json",
            text(&photo),
            text(&other),
        ],
        &["photo.png exists", "--force"],
    );
    // The same file as input and output: refused even with --force.
    assert_refused(
        &[
            "predict",
            "--checkpoint",
            text(&ck),
            text(&photo),
            "--json",
            text(&photo),
            "--force",
        ],
        &["is the input"],
    );
    assert_eq!(
        std::fs::read(&photo).unwrap(),
        photo_bytes,
        "the picture was replaced"
    );

    // A run's and a checkpoint's own files: never, not even with --force.
    let metrics = run.join("metrics.csv");
    let refusals: [(Vec<&str>, &str); 5] = [
        (
            vec![
                "eval",
                "--checkpoint",
                text(&ck),
                "--json",
                "PATH",
                "--force",
            ],
            "params.bin",
        ),
        (
            vec!["compare", text(run), "--out", "PATH", "--force"],
            "metrics.csv",
        ),
        (
            vec![
                "curvature",
                "--checkpoint",
                text(&ck),
                "--out",
                "PATH",
                "--force",
            ],
            "metrics.csv",
        ),
        (
            vec![
                "spectrum",
                "--checkpoint",
                text(&ck),
                "--json",
                "PATH",
                "--force",
            ],
            "manifest.json",
        ),
        (
            vec![
                "export",
                "--checkpoint",
                text(&ck),
                "--out",
                "PATH",
                "--force",
            ],
            "config.toml",
        ),
    ];
    for (args, target) in refusals {
        let path = match target {
            "metrics.csv" => metrics.clone(),
            "config.toml" => run.join("config.toml"),
            name => ck.join(name),
        };
        let args: Vec<&str> = args
            .iter()
            .map(|&a| if a == "PATH" { text(&path) } else { a })
            .collect();
        assert_refused(&args, &["refusing to write", "never replaces"]);
    }
    assert_eq!(run_files(), before, "a run's or checkpoint's file changed");

    // A symbolic link is named, not replaced.
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&photo, &link).unwrap();
    assert_refused(
        &[
            "predict",
            "--checkpoint",
            text(&ck),
            text(&other),
            "--json",
            text(&link),
            "--force",
        ],
        &["symbolic link", "link.json"],
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&photo).unwrap(), photo_bytes);

    // With --force a file of the user's may be replaced.
    let old = dir.path().join("old.json");
    std::fs::write(&old, "old").unwrap();
    let (ok, out) = hftrain(&[
        "predict",
        "--checkpoint",
        text(&ck),
        text(&other),
        "--json",
        text(&old),
        "--force",
    ]);
    assert!(ok, "{out}");
    assert!(
        std::fs::read_to_string(&old)
            .unwrap()
            .contains("hftrain predictions")
    );
}

/// Items 13, 16, 24: the path is checked before the work; a folder, `.`, a missing parent
/// and a file where a folder is wanted are named as such; a 250-character name works.
#[test]
fn output_paths_are_checked_first_and_named_plainly() {
    let dir = TempDir::new();
    let ck = checkpoint();
    // `--out .` names a folder: no advice to use --force.
    let out = assert_refused(
        &["export", "--checkpoint", text(&ck), "--out", "."],
        &["names a folder, not a file"],
    );
    assert!(!out.contains("--force"), "{out}");
    // A folder as --json: refused before the spectrum is computed.
    assert_refused(
        &[
            "spectrum",
            "--checkpoint",
            text(&ck),
            "--json",
            text(dir.path()),
        ],
        &["is a folder"],
    );
    // A missing parent folder, named (not a temporary's name).
    let missing = dir.path().join("nodir/x.json");
    let out = assert_refused(
        &["eval", "--checkpoint", text(&ck), "--json", text(&missing)],
        &["nodir", "does not exist"],
    );
    assert!(!out.contains(".tmp-"), "{out}");
    // A file where data synthetic wants a folder.
    let file = dir.path().join("afile");
    std::fs::write(&file, "mine").unwrap();
    assert_refused(
        &["data", "synthetic", "--out", text(&file)],
        &["is a file, not a folder"],
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    // A 250-character file name: its temporary fits NAME_MAX.
    let long = dir.path().join(format!("{}.safetensors", "b".repeat(238)));
    assert_eq!(long.file_name().unwrap().len(), 250);
    let (ok, out) = hftrain(&["export", "--checkpoint", text(&ck), "--out", text(&long)]);
    assert!(ok && long.is_file(), "{out}");
    let picture_file = dir.path().join("p.png");
    picture(&picture_file, 32);
    let long_json = dir.path().join(format!("{}.json", "c".repeat(245)));
    let (ok, out) = hftrain(&[
        "predict",
        "--checkpoint",
        text(&ck),
        text(&picture_file),
        "--json",
        text(&long_json),
    ]);
    assert!(ok && long_json.is_file(), "{out}");
}

/// `data synthetic --force` replaces a data set it wrote, nothing else.
#[test]
fn data_synthetic_force_replaces_only_a_generated_data_set() {
    let dir = TempDir::new();
    let out = dir.path().join("set");
    let make = |extra: &[&str]| {
        let mut args = vec![
            "data",
            "synthetic",
            "--out",
            text(&out),
            "--train-per-class",
            "1",
        ];
        args.extend_from_slice(&["--test-per-class", "1"]);
        args.extend_from_slice(extra);
        hftrain(&args)
    };
    assert!(make(&[]).0);
    let (ok, text_out) = make(&[]);
    assert!(!ok && text_out.contains("--force"), "{text_out}");
    let (ok, text_out) = make(&["--force", "--seed", "3"]);
    assert!(ok, "{text_out}");
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let (ok, text_out) = make(&["--force"]);
    assert!(
        !ok && text_out.contains("nothing but a data set"),
        "{text_out}"
    );
    assert!(out.join("notes.txt").is_file());
}

/// Item 17: temporaries of killed processes are removed when the run starts again.
#[test]
fn temporaries_of_killed_processes_are_removed_on_the_next_start() {
    let dir = TempDir::new();
    let run = dir.path().join("run");
    let config = tiny_config(&synthetic_binary());
    crate::training::train(&config, &run, None, None).unwrap();
    // The pid of a process that has ended.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let leftovers = [
        run.join(format!(".report.md.tmp-{dead}")),
        run.join(format!(".metrics.csv.tmp-{dead}")),
        run.join(format!("plots/.loss.png.tmp-{dead}")),
    ];
    // A process still running (it might be writing).
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let live = run.join(format!(".report.md.tmp-{}", sleeper.id()));
    for path in leftovers.iter().chain([&live]) {
        std::fs::write(path, "half").unwrap();
    }
    // Starting over (as a resume does) removes them first.
    hftrain::train::run(hftrain::train::TrainRequest {
        config: Some(config),
        out_dir: Some(run.clone()),
        force: true,
        ..Default::default()
    })
    .unwrap();
    for path in &leftovers {
        assert!(!path.exists(), "{} survived the resume", path.display());
    }
    let kept = live.exists();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(kept, "a live process's temporary was removed");
}

/// Item 3: `eval --limit 3` leaves most classes without an image: "no images", null in JSON.
#[test]
fn eval_says_no_images_for_a_class_without_test_images() {
    let dir = TempDir::new();
    let json = dir.path().join("e.json");
    let (ok, out) = hftrain(&[
        "eval",
        "--checkpoint",
        text(&checkpoint()),
        "--limit",
        "3",
        "--json",
        text(&json),
        "--device",
        "flex",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("no images"), "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let per_class = report["per_class_accuracy"].as_array().unwrap();
    assert_eq!(
        per_class.iter().filter(|v| v.is_null()).count(),
        7,
        "{per_class:?}"
    );
    // Run again into the same file: refused without --force, replaced with it.
    let ck = checkpoint();
    let again = |extra: &[&str]| {
        let mut args = vec!["eval", "--checkpoint", text(&ck)];
        args.extend_from_slice(&["--limit", "3", "--json", text(&json), "--device", "flex"]);
        args.extend_from_slice(extra);
        hftrain(&args)
    };
    assert!(!again(&[]).0);
    assert!(again(&["--force"]).0);
}

/// Item 5: a milestone of three numbers is refused, naming it.
#[test]
fn a_milestone_with_three_values_is_refused() {
    let err = hftrain::config::Config::parse("[train]\nbatch_size_milestones = [[2, 7, 9]]\n")
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("[2, 7, 9]") && message.contains("expected 2"),
        "{message}"
    );
}

/// Items 6, 7, 23: counts checked before anything is allocated or timed.
#[test]
fn counts_and_limits_are_checked_before_the_work() {
    for count in ["1000000000", "18446744073709551615", "0"] {
        let dir = TempDir::new();
        let out = dir.path().join("d");
        for option in ["--train-per-class", "--test-per-class"] {
            assert_refused(
                &["data", "synthetic", "--out", text(&out), option, count],
                &[&format!("{option} {count}"), "images per class"],
            );
        }
    }
    let dir = TempDir::new();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, tiny_config(&synthetic_binary()).to_toml()).unwrap();
    assert_refused(
        &["bench", "-c", text(&config), "--batch", "1000000000"],
        &["needs at least", "lower --batch"],
    );
    assert_refused(
        &["bench", "-c", text(&config), "--cg-iterations", "0"],
        &["--cg-iterations 0"],
    );
    let ck = checkpoint();
    assert_refused(
        &["curvature", "--checkpoint", text(&ck), "--repeats", "0"],
        &["--repeats 0"],
    );
    for (option, value, needle) in [
        ("--broadening", "1e308", "--broadening 1"),
        ("--max-steps", "0", "--max-steps 0"),
    ] {
        assert_refused(
            &["spectrum", "--checkpoint", text(&ck), option, value],
            &[needle],
        );
    }
}

/// A PNG whose header declares `width` x `height` (its pixels are not there).
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    bytes.extend_from_slice(&13u32.to_be_bytes());
    bytes.extend_from_slice(&ihdr);
    bytes.extend_from_slice(&crc32fast::hash(&ihdr).to_be_bytes());
    // An empty first data chunk: the header is read up to it.
    bytes.extend_from_slice(&0u32.to_be_bytes());
    bytes.extend_from_slice(b"IDAT");
    bytes.extend_from_slice(&crc32fast::hash(b"IDAT").to_be_bytes());
    bytes
}

/// Items 8, 9: a huge declared size is refused from the header, a fifo without opening it;
/// the other pictures are still classified.
#[test]
fn predict_refuses_huge_pictures_and_fifos_and_classifies_the_rest() {
    let dir = TempDir::new();
    let huge = dir.path().join("huge.png");
    std::fs::write(&huge, png_header(20000, 20000)).unwrap();
    let fifo = dir.path().join("x.png");
    let name = std::ffi::CString::new(text(&fifo)).unwrap();
    // SAFETY: mkfifo(3) on a path we own.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    let good = dir.path().join("good.png");
    picture(&good, 64);
    let mut child = Command::new(env!("CARGO_BIN_EXE_hftrain"))
        .args(["predict", "--checkpoint", text(&checkpoint())])
        .args([text(&huge), text(&fifo), text(&good)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("predict blocked on the fifo");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("huge.png: not classified") && stderr.contains("20000x20000"),
        "{stderr}"
    );
    assert!(
        stderr.contains("x.png: not classified") && stderr.contains("not a regular file"),
        "{stderr}"
    );
    assert!(stdout.contains("good.png: "), "{stdout}");
}

/// Item 18: data of another number of classes is named as the difference.
#[test]
fn eval_on_data_with_other_classes_says_the_data_differs() {
    let dir = TempDir::new();
    let data = dir.path().join("three");
    let source = synthetic_folder();
    for split in ["train", "test"] {
        for class in ["airplane", "automobile", "bird"] {
            let to = data.join(split).join(class);
            std::fs::create_dir_all(&to).unwrap();
            for entry in std::fs::read_dir(source.join(split).join(class))
                .unwrap()
                .take(3)
            {
                let from = entry.unwrap().path();
                std::fs::copy(&from, to.join(from.file_name().unwrap())).unwrap();
            }
        }
    }
    let out = assert_refused(
        &[
            "eval",
            "--checkpoint",
            text(&checkpoint()),
            "--data",
            text(&data),
        ],
        &["data", "differs", "3 classes", "trained on 10"],
    );
    assert!(!out.contains("different model"), "{out}");
}

/// Items 14, 15: a hand-edited metrics.csv is refused naming its line; `plot` of a run
/// without an epoch fails instead of drawing empty charts.
#[test]
fn compare_and_plot_refuse_metrics_no_run_writes() {
    let dir = TempDir::new();
    let run = dir.path().join("edited");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::copy(shared_run().join("config.toml"), run.join("config.toml")).unwrap();
    let original = std::fs::read_to_string(shared_run().join("metrics.csv")).unwrap();
    let header = original.lines().next().unwrap();
    let row: Vec<&str> = original.lines().nth(1).unwrap().split(',').collect();
    let edited = |column: usize, value: &str| {
        let mut fields = row.clone();
        fields[column] = value;
        std::fs::write(
            run.join("metrics.csv"),
            format!("{header}\n{}\n", fields.join(",")),
        )
        .unwrap();
    };
    let picture = dir.path().join("c.png");
    for (column, value, needle) in [
        (6, "5.0", "test_accuracy 5"),
        (7, "NaN", "epoch_seconds NaN"),
        (7, "-10", "epoch_seconds -10"),
        (8, "inf", "images_per_second inf"),
    ] {
        edited(column, value);
        assert_refused(
            &["compare", text(&run), "--out", text(&picture)],
            &["metrics.csv line 2", needle],
        );
    }
    // No header: the first epoch is not taken for one.
    std::fs::write(run.join("metrics.csv"), original.lines().nth(1).unwrap()).unwrap();
    assert_refused(
        &["compare", text(&run), "--out", text(&picture)],
        &["line 1", "expected the header"],
    );
    // Only the header: nothing to plot.
    std::fs::write(run.join("metrics.csv"), format!("{header}\n")).unwrap();
    assert_refused(
        &["plot", text(&run)],
        &["no finished epoch", "nothing to plot"],
    );
    assert!(!run.join("plots/loss.png").exists());
}

/// Item 10: a container's memory limit (cgroup v2 here, v1 too) counts where it is below the
/// host's available memory; its reclaimable page cache does not count as used.
#[test]
fn the_memory_check_reads_the_cgroup_limit() {
    let dir = TempDir::new();
    let meminfo = dir.path().join("meminfo");
    std::fs::write(
        &meminfo,
        "MemTotal: 99999999 kB\nMemAvailable:   50000000 kB\n",
    )
    .unwrap();
    let self_cgroup = dir.path().join("self-cgroup");
    std::fs::write(&self_cgroup, "0::/box\n").unwrap();
    let root = dir.path().join("cgroup");
    let own = root.join("box");
    std::fs::create_dir_all(&own).unwrap();
    let sources = hftrain::memory::MemorySources {
        meminfo,
        cgroup_root: root.clone(),
        self_cgroup,
    };
    let host = 50_000_000 * 1024;
    assert_eq!(
        sources.available(),
        Some(host),
        "no cgroup files: the host's"
    );
    std::fs::write(own.join("memory.max"), "419430400\n").unwrap();
    std::fs::write(own.join("memory.current"), "104857600\n").unwrap();
    std::fs::write(own.join("memory.stat"), "anon 5\ninactive_file 4857600\n").unwrap();
    assert_eq!(sources.available(), Some(419_430_400 - 100_000_000));
    std::fs::write(own.join("memory.max"), "max\n").unwrap();
    assert_eq!(sources.available(), Some(host), "no limit: the host's");
    std::fs::remove_dir_all(&own).unwrap();
    let v1 = root.join("memory");
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::write(v1.join("memory.limit_in_bytes"), "419430400\n").unwrap();
    std::fs::write(v1.join("memory.usage_in_bytes"), "19430400\n").unwrap();
    assert_eq!(sources.available(), Some(400_000_000));
    // A run with a lower bound of about 0.5 GB is refused in that room.
    let mut config = tiny_config(&synthetic_binary());
    config.train.batch_size = 4000;
    let network = hftrain::model::Network::new(&config.model, 10).unwrap();
    let (params, activations) = hftrain::memory::lower_bound(&config, &network);
    assert!(params + activations > 400_000_000, "{activations}");
    let refused = hftrain::memory::check_fits(&config, &network, sources.available().unwrap());
    assert!(format!("{:#}", refused.unwrap_err()).contains("needs at least"));
}

/// Item 21: layers without parameters count in the memory bound.
#[test]
fn the_memory_bound_counts_layers_without_parameters() {
    let mut config = tiny_config(&synthetic_binary());
    let mut lines = vec!["conv 8"];
    lines.extend(std::iter::repeat_n("relu", 1000));
    lines.push("global-avg-pool");
    config.model.stages = vec![hftrain::config::StageConfig::new(&lines)];
    let network = hftrain::model::Network::new(&config.model, 10).unwrap();
    let (_, activations) = hftrain::memory::lower_bound(&config, &network);
    let one_output = 4 * 8 * 32 * 32 * config.train.batch_size as u64;
    assert!(
        activations >= 1001 * one_output,
        "{activations} < 1001 x {one_output}"
    );
}
