//! The binary itself: exit codes and messages for bad input.

use std::process::Command;

use crate::common::{TempDir, assert_succeeded, hftrain, tiny_config_file, train_command};

#[test]
fn bad_config_exits_non_zero_naming_file_and_key() {
    let dir = TempDir::new();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[train]\nbatch_size = 0\n").unwrap();
    let (ok, text) = hftrain(&["train", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        text.contains("bad.toml") && text.contains("train.batch_size = 0"),
        "{text}"
    );
}

#[test]
fn data_directory_without_data_exits_non_zero_with_what_to_do() {
    let dir = TempDir::new();
    let path = dir.path().join("c.toml");
    // Not empty (so nothing is downloaded) and holding no data set.
    let data = dir.path().join("not-cifar");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("notes.txt"), "x").unwrap();
    std::fs::write(
        &path,
        format!(
            "device = \"flex\"\n[data]\ndir = {:?}\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let (ok, text) = train_command(&path, &dir.path().join("run"), &[]);
    assert!(!ok);
    assert!(
        text.contains("not-cifar")
            && text.contains("holds neither")
            && text.contains("data_batch_1.bin"),
        "{text}"
    );
}

#[test]
fn eval_of_a_non_checkpoint_exits_non_zero() {
    let dir = TempDir::new();
    let (ok, text) = hftrain(&["eval", "--checkpoint", dir.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(text.contains("is not a checkpoint"), "{text}");
}

#[test]
fn off_a_terminal_progress_becomes_lines_and_quiet_prints_only_the_result() {
    let dir = TempDir::new();
    let path = tiny_config_file(dir.path());
    let run = |extra: &[&str], out: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_hftrain"))
            .args(extra)
            .args([
                "train",
                "--config",
                path.to_str().unwrap(),
                "--out",
                dir.path().join(out).to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Output captured (not a terminal): no bar, its content as plain lines.
    let (stdout, stderr) = run(&[], "normal");
    assert!(stdout.contains("epoch 1/1 step 2/2  loss"), "{stdout}");
    assert!(
        stdout.contains("device: flex") && stdout.contains("checkpoint:"),
        "{stdout}"
    );
    assert!(
        !stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'),
        "terminal escapes off a terminal"
    );
    let (stdout, _) = run(&["-q"], "quiet");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("done: test accuracy"), "{stdout}");
    let (ok, text) = hftrain(&["-q", "-v", "train"]);
    assert!(!ok && text.contains("cannot be used with"), "{text}");
}

#[test]
fn an_unusable_run_directory_is_named() {
    let dir = TempDir::new();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "not a directory").unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "device = \"flex\"\n").unwrap();
    let out = blocker.join("run");
    let (ok, text) = hftrain(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        text.contains("cannot create run directory") && text.contains("a-file/run"),
        "{text}"
    );
}

/// Every option of every command's help says what it does, and every option that takes a
/// value names its default (or is required: named in the usage line).
#[test]
fn every_option_in_the_help_is_described_with_its_default() {
    let commands: [&[&str]; 11] = [
        &[],
        &["train"],
        &["eval"],
        &["predict"],
        &["export"],
        &["data", "download"],
        &["data", "synthetic"],
        &["plot"],
        &["curvature"],
        &["spectrum"],
        &["bench"],
    ];
    let mut checked = 0;
    for command in commands {
        let (ok, text) = hftrain(&[command, &["--help"]].concat());
        assert!(ok, "{command:?} --help failed:\n{text}");
        let usage = text.lines().find(|l| l.starts_with("Usage:")).unwrap_or("");
        // An option starts a line with `-`; its description follows on the same line (after
        // two spaces) or on the more indented lines below, up to the next option.
        let mut options: Vec<(String, String)> = Vec::new();
        let mut in_options = false;
        for line in text.lines() {
            if line == "Options:" {
                in_options = true;
                continue;
            }
            if !in_options || line.trim().is_empty() {
                continue;
            }
            let trimmed = line.trim();
            // `-v, --verbose` or `--data <DATA>`; not `- all` (a listed possible value).
            if trimmed.starts_with("--")
                || trimmed
                    .chars()
                    .nth(1)
                    .is_some_and(|c| trimmed.starts_with('-') && c.is_ascii_alphabetic())
            {
                let (option, description) = trimmed.split_once("  ").unwrap_or((trimmed, ""));
                options.push((option.to_string(), description.trim().to_string()));
            } else if let Some(last) = options.last_mut() {
                last.1.push(' ');
                last.1.push_str(trimmed);
            }
        }
        assert!(
            !options.is_empty(),
            "{command:?}: no options found in\n{text}"
        );
        for (option, description) in &options {
            assert!(
                !description.trim().is_empty(),
                "{command:?}: option {option:?} is not described:\n{text}"
            );
            let long = option
                .split([',', ' '])
                .find(|w| w.starts_with("--"))
                .unwrap_or(option);
            let required = usage.contains(&format!("{long} "));
            if option.contains('<') && !required {
                assert!(
                    description.contains("[default"),
                    "{command:?}: option {option:?} names no default: {description}"
                );
            }
            checked += 1;
        }
    }
    println!("measured: {checked} options described, each with its default where it takes a value");
    // Where autotune results are kept is said where a user looks first.
    let (_, top) = hftrain(&["--help"]);
    assert!(
        top.contains("~/.cache/hftrain/kernels") && top.contains("HFTRAIN_KERNEL_CACHE=off"),
        "the help does not say where kernels are cached:\n{top}"
    );
}

/// A tiny run on the generated data (one epoch of 100 images on flex): its config file and
/// run directory inside `dir`.
fn tiny_run(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    (tiny_config_file(dir), dir.join("run"))
}

/// `eval --json NAME` with a bare file name writes it in the working directory; a target that
/// is not a regular file (a fifo here; /dev/null for a root user) is refused, not replaced.
#[test]
fn eval_writes_a_bare_file_name_and_never_replaces_what_is_not_a_file() {
    let dir = TempDir::new();
    let (config, run) = tiny_run(dir.path());
    let (ok, text) = train_command(&config, &run, &[]);
    assert!(ok, "{text}");
    let checkpoint = run.join("checkpoints/latest");
    let eval = |json: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_hftrain"))
            .args([
                "eval",
                "--checkpoint",
                checkpoint.to_str().unwrap(),
                "--device",
                "flex",
                "--limit",
                "20",
            ])
            .args(["--json", json])
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = eval("bare.json");
    assert!(ok, "{stderr}");
    assert!(
        dir.path().join("bare.json").is_file() && dir.path().join("bare-confusion.png").is_file()
    );

    let fifo = dir.path().join("pipe");
    let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a path we own.
    assert_eq!(
        unsafe { libc::mkfifo(name.as_ptr(), 0o600) },
        0,
        "mkfifo failed"
    );
    let (ok, stderr) = eval(fifo.to_str().unwrap());
    assert!(
        !ok && stderr.contains("refusing to replace") && stderr.contains("not a regular file"),
        "{stderr}"
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo(),
        "the fifo was replaced"
    );
}

/// Options given empty or zero: `HFTRAIN_DATA=` counts as unset, `--stop-after-epoch 0` is
/// refused by name.
#[test]
fn empty_environment_is_unset_and_zero_epochs_is_refused() {
    let dir = TempDir::new();
    let (config, run) = tiny_run(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_hftrain"))
        .args([
            "train",
            "--config",
            config.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ])
        .env("HFTRAIN_DATA", "")
        .env("HFTRAIN_DATA_URL", "")
        .output()
        .unwrap();
    assert_succeeded(&out);
    let (ok, text) = hftrain(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--stop-after-epoch",
        "0",
    ]);
    assert!(
        !ok && text.contains("--stop-after-epoch") && text.contains("at least 1"),
        "{text}"
    );
}

/// A run killed before its first epoch ended leaves a metrics header and no checkpoint:
/// nothing to protect, so `train` starts it again without --force (and --resume says to).
#[test]
fn a_run_killed_before_its_first_epoch_starts_again_without_force() {
    let dir = TempDir::new();
    let (config, run) = tiny_run(dir.path());
    std::fs::create_dir_all(&run).unwrap();
    let header = hftrain::store::metrics::to_csv(&[]);
    std::fs::write(run.join("metrics.csv"), &header).unwrap();
    let (ok, text) = train_command(&config, &run, &["--resume", "latest"]);
    assert!(
        !ok && text.contains("start the run without --resume"),
        "{text}"
    );
    let (ok, text) = train_command(&config, &run, &[]);
    assert!(ok, "{text}");
    assert_eq!(
        hftrain::store::metrics::read(&run.join("metrics.csv"))
            .unwrap()
            .len(),
        1
    );
    // A run with an epoch behind it is protected.
    let (ok, text) = train_command(&config, &run, &[]);
    assert!(!ok && text.contains("already holds a run"), "{text}");
}

/// Nothing of the user's is overwritten or deleted: a folder of the user's own files is not a
/// run directory; `--force` removes only what hftrain wrote; a checkpoint of one run is not
/// resumed into another.
#[test]
fn user_files_in_a_run_directory_are_never_overwritten_or_deleted() {
    let dir = TempDir::new();
    let (config, run) = tiny_run(dir.path());

    // A folder of the user's with the names hftrain writes.
    let mine = dir.path().join("mine");
    std::fs::create_dir_all(mine.join("plots")).unwrap();
    // Even a file of the user's named as hftrain's lock is left alone.
    std::fs::write(mine.join(".lock"), "my lock").unwrap();
    for (name, text) in [
        ("config.toml", "# my notes"),
        ("report.md", "# my report"),
        ("plots/loss.png", "my picture"),
    ] {
        std::fs::write(mine.join(name), text).unwrap();
    }
    for extra in [&[][..], &["--force"][..]] {
        let (ok, text) = train_command(&config, &mine, extra);
        assert!(
            !ok && text.contains("is not empty and holds no hftrain run")
                && text.contains("config.toml"),
            "{text}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(mine.join("config.toml")).unwrap(),
        "# my notes"
    );
    assert_eq!(
        std::fs::read_to_string(mine.join(".lock")).unwrap(),
        "my lock"
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("plots/loss.png")).unwrap(),
        "my picture"
    );

    // --force on a run: hftrain's files go, the user's stay.
    let (ok, text) = train_command(&config, &run, &[]);
    assert!(ok, "{text}");
    std::fs::write(run.join("notes.txt"), "keep").unwrap();
    std::fs::write(run.join("checkpoints/my-weights.bin"), "keep").unwrap();
    let (ok, text) = train_command(&config, &run, &["--force"]);
    assert!(ok, "{text}");
    assert_eq!(
        std::fs::read_to_string(run.join("notes.txt")).unwrap(),
        "keep"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("checkpoints/my-weights.bin")).unwrap(),
        "keep"
    );
    assert_eq!(
        hftrain::store::metrics::read(&run.join("metrics.csv"))
            .unwrap()
            .len(),
        1,
        "started afresh"
    );

    // Another run's checkpoint is not resumed into this run.
    let other = dir.path().join("other");
    let (ok, text) = train_command(&config, &other, &[]);
    assert!(ok, "{text}");
    let metrics_before = std::fs::read(run.join("metrics.csv")).unwrap();
    let checkpoint = other.join("checkpoints/epoch-0001");
    let (ok, text) = train_command(&config, &run, &["--resume", checkpoint.to_str().unwrap()]);
    assert!(
        !ok && text.contains("holds another run than the checkpoint"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(run.join("metrics.csv")).unwrap(),
        metrics_before,
        "the run was changed"
    );
    // Into a new directory it is resumed (a fork of the run).
    let fork = dir.path().join("fork");
    let (ok, text) = train_command(&config, &fork, &["--resume", checkpoint.to_str().unwrap()]);
    assert!(ok, "{text}");
}

/// A `--data` path that does not exist is named, not created and downloaded into (only the
/// default folder is fetched into on first use); a file is not a data directory.
#[test]
fn a_mistyped_or_file_data_path_is_named_and_nothing_is_created() {
    let dir = TempDir::new();
    let (config, run) = tiny_run(dir.path());
    let missing = dir.path().join("cifra10");
    let (ok, text) = train_command(&config, &run, &["--data", missing.to_str().unwrap()]);
    assert!(
        !ok && text.contains("does not exist") && text.contains("hftrain data download --data"),
        "{text}"
    );
    assert!(!missing.exists(), "the mistyped data directory was created");
    let file = dir.path().join("data.bin");
    std::fs::write(&file, "x").unwrap();
    let (ok, text) = train_command(&config, &run, &["--data", file.to_str().unwrap()]);
    assert!(!ok && text.contains("is a file, not a folder"), "{text}");
}

/// `eval` on data whose classes are not the checkpoint's says so (the labels would mean
/// other classes).
#[test]
fn eval_warns_when_the_data_has_other_classes() {
    let dir = TempDir::new();
    let (config, run) = tiny_run(dir.path());
    let (ok, text) = train_command(&config, &run, &[]);
    assert!(ok, "{text}");
    // The generated data's images under ten other class names.
    let renamed = dir.path().join("renamed");
    for split in ["train", "test"] {
        for (i, class) in hftrain::data::CIFAR10_CLASSES.iter().enumerate() {
            let from = crate::common::synthetic_folder().join(split).join(class);
            let to = renamed.join(split).join(format!("kind-{i}"));
            std::fs::create_dir_all(&to).unwrap();
            for entry in std::fs::read_dir(&from).unwrap().take(3) {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }
    let checkpoint = run.join("checkpoints/latest");
    let eval = |data: &std::path::Path| {
        hftrain(&[
            "eval",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--device",
            "flex",
            "--data",
            data.to_str().unwrap(),
            "--json",
            dir.path().join("e.json").to_str().unwrap(),
            // Evaluated twice into the same file.
            "--force",
        ])
    };
    let (ok, text) = eval(&renamed);
    assert!(
        ok && text.contains("warning: the data's classes (kind-0")
            && text.contains("trained on (airplane"),
        "{text}"
    );
    let (ok, text) = eval(&crate::common::synthetic_folder());
    assert!(ok && !text.contains("warning"), "{text}");
}

/// What the run-directory protection must let through: a run killed at its first write
/// (a lock and a temporary left), a run folder holding only its checkpoints, a checkpoints
/// folder that is a link to another disk, and a fork retried after it was killed before its
/// first checkpoint.
#[test]
fn legitimate_restarts_and_resumes_are_not_refused() {
    let dir = TempDir::new();
    let (config, run) = tiny_run(dir.path());
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join(".lock"), "999999999").unwrap();
    std::fs::write(run.join(".metrics.csv.tmp-999999999"), "epoch,st").unwrap();
    let (ok, text) = train_command(&config, &run, &[]);
    assert!(ok, "killed at its first write: {text}");

    // Only the checkpoints left (metrics and events deleted, or the folder copied).
    std::fs::remove_file(run.join("metrics.csv")).unwrap();
    std::fs::remove_file(run.join(hftrain::store::tensorboard::FILE_NAME)).unwrap();
    let (ok, text) = train_command(&config, &run, &["--resume", "latest"]);
    assert!(ok, "a folder of checkpoints: {text}");

    // The checkpoints folder moved to another disk and linked.
    let elsewhere = dir.path().join("scratch");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::rename(run.join("checkpoints"), elsewhere.join("ck")).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("ck"), run.join("checkpoints")).unwrap();
    let (ok, text) = train_command(&config, &run, &["--resume", "latest"]);
    assert!(ok, "a linked checkpoints folder: {text}");

    // A fork killed before its first checkpoint left the source's metrics rows: retried.
    let fork = dir.path().join("fork");
    std::fs::create_dir_all(&fork).unwrap();
    std::fs::copy(run.join("metrics.csv"), fork.join("metrics.csv")).unwrap();
    let checkpoint = run.join("checkpoints/epoch-0001");
    let (ok, text) = train_command(&config, &fork, &["--resume", checkpoint.to_str().unwrap()]);
    assert!(ok, "a retried fork: {text}");
}

/// A run too long for the CPU says so after its first step, with what fits one; every run
/// says how long its epoch and the whole run will take at that pace.
#[test]
fn after_the_first_step_a_run_estimates_its_time_and_names_a_cpu_config_if_hours() {
    let dir = TempDir::new();
    let (short, run) = tiny_run(dir.path());
    let mut config = hftrain::config::Config::load(&short).unwrap();
    config.train.epochs = 100_000;
    let long = dir.path().join("long.toml");
    std::fs::write(&long, config.to_toml()).unwrap();
    let (ok, text) = train_command(&long, &run, &["--stop-after-epoch", "1"]);
    assert!(ok, "{text}");
    let estimate = text
        .lines()
        .find(|l| l.contains("first step took"))
        .unwrap_or_else(|| panic!("no estimate:\n{text}"));
    assert!(
        estimate.contains("an epoch") && estimate.contains("for the run"),
        "{estimate}"
    );
    assert!(
        text.contains("on the CPU; configs/cifar10-small-hf.toml"),
        "no advice for a run of hours on the CPU:\n{text}"
    );
    // A run of one epoch is not told to change.
    let (ok, text) = train_command(&short, &dir.path().join("short"), &[]);
    assert!(ok, "{text}");
    assert!(!text.contains("configs/cifar10-small-hf.toml"), "{text}");
}

#[test]
fn numbers_are_printed_as_people_read_them() {
    use hftrain::support::words::{count, group_thousands, human_duration};
    assert_eq!(group_thousands(4_655_434), "4,655,434");
    assert_eq!(group_thousands(999), "999");
    assert_eq!(count(1, "epoch"), "1 epoch");
    assert_eq!(count(18, "epoch"), "18 epochs");
    assert_eq!(count(50_000, "image"), "50,000 images");
    assert_eq!(human_duration(42.4), "42 s");
    assert_eq!(human_duration(287.0), "4 min 47 s");
    assert_eq!(human_duration(59.7), "1 min 0 s");
    assert_eq!(human_duration(4.0 * 3600.0), "4.0 h");
}
