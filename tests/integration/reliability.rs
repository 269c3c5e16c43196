//! What happens to a run when things go wrong: Ctrl-C, SIGKILL at many moments, a second
//! process on the same run directory, a damaged newest checkpoint. Real `hftrain` child
//! processes on Burn's CPU backend (deterministic, so a resumed run must end bit-exact).

use hftrain::config::StageConfig;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hftrain::config::Config;
use hftrain::store::checkpoint::{self, Checkpoint};

use crate::common::{TempDir, small_config, synthetic_binary};

fn config(data: &Path, epochs: usize) -> Config {
    let mut c = small_config(data, "flex");
    c.data.train_limit = 200;
    c.data.test_limit = 50;
    c.train.epochs = epochs;
    c.checkpoint.keep = 100;
    c
}

/// A network of about 330,000 parameters (1.3 MB per checkpoint file) on 100 images: each
/// checkpoint write takes long enough to be caught in the act, training stays fast.
fn large_model_config(data: &Path, epochs: usize) -> Config {
    let mut c = config(data, epochs);
    c.model.stages = vec![
        StageConfig::new(&["conv 32", "batch-norm", "relu", "max-pool"]),
        StageConfig::new(&["conv 64", "batch-norm", "relu", "max-pool"]),
        StageConfig::new(&[
            "conv 512",
            "batch-norm",
            "relu",
            "max-pool",
            "global-avg-pool",
        ]),
    ];
    c.data.train_limit = 100;
    c
}

/// `hftrain train` on `config` into `out`, stdout piped.
fn spawn(config: &Config, out: &Path, extra: &[&str]) -> Child {
    let file = out.with_extension("toml");
    std::fs::write(&file, config.to_toml()).unwrap();
    Command::new(env!("CARGO_BIN_EXE_hftrain"))
        .args([
            "train",
            "--config",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill failed");
}

/// Reads the child's stdout until a line contains `needle` (returns the lines read).
fn wait_for_line(child: &mut Child, needle: &str) -> Vec<String> {
    let stdout = child.stdout.as_mut().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let found = line.contains(needle);
        lines.push(line);
        if found {
            return lines;
        }
    }
    panic!(
        "the child ended before printing {needle:?}:\n{}",
        lines.join("\n")
    );
}

fn finish(child: Child) -> (i32, String, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn final_params(run: &Path) -> Vec<f32> {
    let latest = checkpoint::resolve("latest", &run.join("checkpoints")).unwrap();
    Checkpoint::load(&latest).unwrap().params
}

/// A killed run's next process: `--resume latest` once it has a checkpoint, else `--force`
/// (a run killed before its first checkpoint starts over).
fn resume_or_start_over(checkpoints: &Path) -> &'static [&'static str] {
    if checkpoint::list(checkpoints).is_empty() {
        &["--force"]
    } else {
        &["--resume", "latest"]
    }
}

/// The killed and resumed `run` ended as the uninterrupted `reference_run`: the same
/// parameters, and the same TensorBoard curves (what the killed processes wrote past their
/// checkpoints was cut off on resume).
fn assert_ends_as_uninterrupted(run: &Path, reference_run: &Path) {
    assert_eq!(
        final_params(run),
        final_params(reference_run),
        "killed + resumed differs from uninterrupted"
    );
    assert_eq!(
        crate::tensorboard::curves(run),
        crate::tensorboard::curves(reference_run),
        "TensorBoard curves of the killed + resumed run differ from uninterrupted"
    );
}

fn uninterrupted(config: &Config, dir: &Path) -> PathBuf {
    let run = dir.join("uninterrupted");
    crate::common::train(config, &run, None, None).unwrap();
    run
}

#[test]
fn ctrl_c_checkpoints_the_current_step_and_resume_ends_bit_exact() {
    let data = synthetic_binary();
    let mut config = config(&data, 3);
    // 20 steps per epoch with a line after each: Ctrl-C right after step 2 of epoch 2 lands
    // inside the epoch, however slow the machine.
    config.train.batch_size = 10;
    config.train.log_every = 1;
    let dir = TempDir::new();
    let reference_run = uninterrupted(&config, dir.path());
    let reference = final_params(&reference_run);

    let run = dir.path().join("interrupted");
    let mut child = spawn(&config, &run, &[]);
    wait_for_line(&mut child, "epoch 2/3 step 2/20");
    signal(&child, libc::SIGINT);
    let (code, stdout, stderr) = finish(child);
    assert_eq!(code, 130, "exit code after Ctrl-C\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("interrupted: finishing this step"),
        "{stderr}"
    );
    assert!(
        stdout.contains("interrupted at epoch 2 step") && stdout.contains("--resume latest"),
        "not stopped inside epoch 2:\n{stdout}"
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "measured: Ctrl-C {}",
        stdout
            .lines()
            .find(|l| l.contains("interrupted at"))
            .unwrap_or("")
    );
    assert!(
        !run.join(".lock").exists(),
        "the lock is released on a clean exit"
    );

    let resumed = spawn(&config, &run, &["--resume", "latest"]);
    let (code, stdout, stderr) = finish(resumed);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(
        final_params(&run),
        reference,
        "interrupted + resumed differs from uninterrupted"
    );
    // The interrupted epoch's row covers the whole epoch, as in the uninterrupted run (the
    // checkpoint keeps the sums of the steps before Ctrl-C).
    let without_times = |run: &Path| -> Vec<String> {
        let rows = hftrain::store::metrics::read(&run.join("metrics.csv")).unwrap();
        rows.iter()
            .map(|r| {
                format!(
                    "{} {} {} {} {} {} {}",
                    r.epoch,
                    r.step,
                    r.lr,
                    r.train_loss,
                    r.train_accuracy,
                    r.test_loss,
                    r.test_accuracy
                )
            })
            .collect()
    };
    assert_eq!(
        without_times(&run),
        without_times(&reference_run),
        "metrics.csv differs after Ctrl-C and resume"
    );
    assert_eq!(
        crate::tensorboard::curves(&run),
        crate::tensorboard::curves(&reference_run),
        "TensorBoard curves differ after Ctrl-C and resume"
    );
}

#[test]
fn second_ctrl_c_quits_at_once_and_the_last_checkpoint_still_loads() {
    let data = synthetic_binary();
    let mut config = config(&data, 20);
    // Slow steps (Hessian-free with long CG solves), so that both signals land in one step.
    crate::common::use_hessian_free(&mut config);
    crate::common::hessian_free(&mut config).cg_max_iterations = 200;
    crate::common::hessian_free(&mut config).cg_tolerance = 1e-12;
    config.train.batch_size = 100;
    crate::common::hessian_free(&mut config).curvature_batch_size = 100;
    let dir = TempDir::new();
    let run = dir.path().join("run");
    let mut child = spawn(&config, &run, &[]);
    wait_for_line(&mut child, "checkpoint:");
    signal(&child, libc::SIGINT);
    // Standard signals are not queued: a second one sent while the first is pending is lost.
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, libc::SIGINT);
    let started = Instant::now();
    let (code, _, stderr) = finish(child);
    assert_eq!(code, 130, "{stderr}");
    assert!(stderr.contains("interrupted twice"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the second Ctrl-C did not quit at once"
    );
    let latest = checkpoint::resolve("latest", &run.join("checkpoints")).unwrap();
    Checkpoint::load(&latest).unwrap();
}

/// SIGTERM (`kill`, a scheduler) and SIGHUP (the terminal closed) stop a run as Ctrl-C does:
/// a checkpoint of the step it was at, and the status a shell reports for the signal.
#[test]
fn sigterm_and_sighup_checkpoint_like_ctrl_c() {
    let data = synthetic_binary();
    let mut config = config(&data, 3);
    config.train.batch_size = 10;
    config.train.log_every = 1;
    let dir = TempDir::new();
    for (sig, status, said) in [
        (libc::SIGTERM, 143, "terminated (SIGTERM)"),
        (libc::SIGHUP, 129, "hung up (SIGHUP)"),
    ] {
        let run = dir.path().join(format!("run-{sig}"));
        let mut child = spawn(&config, &run, &[]);
        wait_for_line(&mut child, "epoch 1/3 step 2/20");
        signal(&child, sig);
        let (code, stdout, stderr) = finish(child);
        assert_eq!(
            code, status,
            "exit status after signal {sig}\n{stdout}\n{stderr}"
        );
        assert!(stderr.contains(said), "{stderr}");
        assert!(stdout.contains("interrupted at epoch 1 step"), "{stdout}");
        let latest = checkpoint::resolve("latest", &run.join("checkpoints")).unwrap();
        Checkpoint::load(&latest).unwrap();
    }
}

/// SIGKILL at many moments of a run (spread over training, evaluation and checkpoint
/// writes): after each, every checkpoint that looks complete loads, `--resume latest` starts
/// from one, and the run finally ends with the parameters of an uninterrupted run.
#[test]
fn sigkill_at_many_points_never_loses_or_corrupts_a_checkpoint() {
    let data = synthetic_binary();
    // Long enough that at least ten kills land before the run ends, also on a machine twice
    // as fast as the one it was written on (about 0.3 s an epoch there, 17 kills with 40
    // epochs; the binary batches load at once, so each process starts training at once).
    let mut config = config(&data, 80);
    config.data.train_limit = 400;
    config.checkpoint.every_epochs = 1;
    let dir = TempDir::new();
    let reference_run = uninterrupted(&config, dir.path());
    let run = dir.path().join("killed");
    let mut kills = 0;
    let mut delay_ms = 150u64;
    let mut finished = false;
    let checkpoints = run.join("checkpoints");
    for attempt in 0..25 {
        let before = checkpoint::list(&checkpoints).len();
        let mut child = spawn(&config, &run, resume_or_start_over(&checkpoints));
        // Every third process is let run until it has written one more checkpoint, so the
        // run moves on however slow the machine is; then the kill comes after the delay.
        if attempt % 3 == 2 {
            let deadline = Instant::now() + Duration::from_secs(120);
            while checkpoint::list(&checkpoints).len() == before
                && Instant::now() < deadline
                && !matches!(child.try_wait(), Ok(Some(_)))
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "the run failed on its own: {status}");
            finished = true;
            break;
        }
        signal(&child, libc::SIGKILL);
        let (code, stdout, _) = finish(child);
        if code == 0 {
            // It finished before the kill landed.
            finished = true;
            break;
        }
        kills += 1;
        for ckpt in checkpoint::list(&run.join("checkpoints")) {
            Checkpoint::load(&ckpt).unwrap_or_else(|e| {
                panic!(
                    "kill {attempt}: a complete-looking checkpoint fails to load: {e:#}\n{stdout}"
                )
            });
        }
        // Vary the moment: a different point of start-up, training, evaluation or writing.
        delay_ms = 100 + (delay_ms * 7 + 113) % 900;
    }
    if !finished {
        let (code, stdout, stderr) =
            finish(spawn(&config, &run, resume_or_start_over(&checkpoints)));
        assert_eq!(code, 0, "{stdout}\n{stderr}");
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "measured: SIGKILL at {kills} points; every checkpoint loaded after each; the resumed run ended bit-exact"
    );
    assert!(kills >= 10, "only {kills} kills landed");
    assert_ends_as_uninterrupted(&run, &reference_run);
}

#[test]
fn a_second_process_on_the_same_run_directory_is_refused_and_stale_locks_are_taken_over() {
    let data = synthetic_binary();
    let config = config(&data, 1);
    let dir = TempDir::new();
    let run = dir.path().join("run");
    let held = hftrain::support::lock::RunLock::acquire(&run).unwrap();
    let refused = crate::common::train(&config, &run, None, None);
    crate::common::assert_error(
        refused,
        &["in use by another hftrain process", ".lock", "--out"],
    );
    drop(held);
    // A lock left by a process that no longer exists (as after SIGKILL).
    std::fs::write(run.join(".lock"), "999999999").unwrap();
    crate::common::train(&config, &run, None, None).unwrap();
    assert!(!run.join(".lock").exists());
}

#[test]
fn resume_latest_skips_a_damaged_newest_checkpoint() {
    let data = synthetic_binary();
    let config = config(&data, 3);
    let dir = TempDir::new();
    let run = dir.path().join("run");
    crate::common::train(&config, &run, None, Some(2)).unwrap();
    // Flip one byte of the newest checkpoint's parameters.
    let newest = run.join("checkpoints/epoch-0002/params.bin");
    let mut bytes = std::fs::read(&newest).unwrap();
    bytes[17] ^= 0x40;
    std::fs::write(&newest, bytes).unwrap();
    let (code, stdout, stderr) = finish(spawn(&config, &run, &["--resume", "latest"]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("warning: checkpoint")
            && stderr.contains("epoch-0002 is unusable")
            && stderr.contains("CRC-32"),
        "{stderr}"
    );
    assert!(
        stdout.contains("resuming from the newest valid checkpoint")
            && stdout.contains("epoch-0001"),
        "{stdout}"
    );
    let reference = final_params(&uninterrupted(&config, dir.path()));
    assert_eq!(
        final_params(&run),
        reference,
        "resumed from epoch 1, the run ends as an uninterrupted one"
    );
}

/// SIGKILL inside checkpoint writes, caught deterministically: the test watches the
/// checkpoints directory and kills the moment a temporary checkpoint directory appears
/// (a network with a few hundred thousand parameters makes each write last long enough).
#[test]
fn sigkill_inside_checkpoint_writes_leaves_only_complete_checkpoints() {
    let data = synthetic_binary();
    let config = large_model_config(&data, 5);
    let dir = TempDir::new();
    let reference_run = uninterrupted(&config, dir.path());
    let run = dir.path().join("killed");
    let checkpoints = run.join("checkpoints");
    let mut inside_writes = 0;
    for _ in 0..12 {
        let mut child = spawn(&config, &run, resume_or_start_over(&checkpoints));
        // Let the first write of each process finish (so the run moves on), kill in the
        // second.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut caught, mut was_writing, mut writes_seen) = (false, false, 0);
        while Instant::now() < deadline {
            let writing = std::fs::read_dir(&checkpoints)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok())
                        .any(|e| e.file_name().to_string_lossy().contains(".tmp-"))
                })
                .unwrap_or(false);
            if writing && !was_writing {
                writes_seen += 1;
                if writes_seen == 2 {
                    signal(&child, libc::SIGKILL);
                    caught = true;
                    break;
                }
            }
            was_writing = writing;
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let (code, stdout, _) = finish(child);
        if !caught {
            assert_eq!(
                code, 0,
                "the run neither wrote a checkpoint nor finished:\n{stdout}"
            );
            break;
        }
        inside_writes += 1;
        for ckpt in checkpoint::list(&checkpoints) {
            Checkpoint::load(&ckpt).unwrap_or_else(|e| {
                panic!("a checkpoint cut short is taken for a complete one: {e:#}")
            });
        }
        if inside_writes == 5 {
            break;
        }
    }
    let (code, stdout, stderr) = finish(spawn(&config, &run, &["--resume", "latest"]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let leftovers: Vec<String> = std::fs::read_dir(&checkpoints)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "unfinished checkpoints left behind: {leftovers:?}"
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "measured: SIGKILL inside {inside_writes} checkpoint writes; only complete checkpoints listed; resumed run bit-exact"
    );
    assert!(
        inside_writes >= 3,
        "only {inside_writes} kills landed inside a checkpoint write"
    );
    assert_ends_as_uninterrupted(&run, &reference_run);
}

#[test]
fn divergence_stops_sgd_at_the_step_it_happens_naming_the_last_checkpoint() {
    let data = synthetic_binary();
    let mut config = config(&data, 3);
    let dir = TempDir::new();
    crate::common::sgd(&mut config).lr = 1e30;
    config.schedule.warmup_epochs = 0.0;
    let blown = crate::common::train(&config, &dir.path().join("blown"), None, None);
    let message = crate::common::assert_error(
        blown,
        &[
            "training diverged",
            "epoch 1 step",
            "global step",
            "last checkpoint is none",
            "optimizer.lr",
        ],
    );
    // Caught within one step: the first steps already blow up with lr 1e30.
    assert!(
        message.contains("step 1 ") || message.contains("step 2 "),
        "{message}"
    );
}

/// A write that fails part-way (the disk full, simulated by a file-size limit on the child:
/// writes past 1 MiB fail with EFBIG): a clear error naming the file, and the previous
/// checkpoint intact and still `latest`.
#[test]
fn a_failing_checkpoint_write_keeps_the_previous_checkpoint() {
    use std::os::unix::process::CommandExt;
    let data = synthetic_binary();
    // Every checkpoint file of parameters (about 1.3 MB) crosses the limit.
    let config = large_model_config(&data, 3);
    let dir = TempDir::new();
    let run = dir.path().join("run");
    crate::common::train(&config, &run, None, Some(1)).unwrap();
    let file = run.with_extension("toml");
    std::fs::write(&file, config.to_toml()).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_hftrain"));
    command.args([
        "train",
        "--config",
        file.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--resume",
        "latest",
    ]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            Ok(())
        });
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot write")
            && stderr.contains(".bin")
            && stderr.contains("File too large"),
        "{stderr}"
    );
    use std::io::Write;
    let message = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default()
        .replace(&dir.path().display().to_string(), "<tmp>");
    let _ = writeln!(
        std::io::stderr(),
        "measured: failing checkpoint write: {message}"
    );
    let checkpoints = run.join("checkpoints");
    let names: Vec<String> = std::fs::read_dir(&checkpoints)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "a half-written checkpoint was left: {names:?}"
    );
    let latest = checkpoint::resolve("latest", &checkpoints).unwrap();
    let kept = Checkpoint::load(&latest).unwrap();
    assert_eq!(
        kept.position.epoch, 1,
        "latest still points at the checkpoint before the failure"
    );
    assert!(
        !run.join(".lock").exists(),
        "the lock is released after the error"
    );
}

/// The run lock is an OS lock: a lock file naming a live but unrelated process (pids are
/// reused after a reboot) does not block a run, and of many processes started at once on a
/// stale lock exactly one gets it (threads here: each acquisition opens the file anew, so they
/// contend as processes do).
#[test]
fn the_run_lock_is_taken_by_exactly_one_and_ignores_reused_pids() {
    let dir = TempDir::new();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    // pid 1 always exists: the old lock took it for a live holder and refused forever.
    std::fs::write(run.join(".lock"), "1").unwrap();
    let lock =
        hftrain::support::lock::RunLock::acquire(&run).expect("a lock file nobody holds is taken");
    let refused = hftrain::support::lock::RunLock::acquire(&run);
    crate::common::assert_error(
        refused,
        &[
            "in use by another hftrain process",
            &format!("pid {}", std::process::id()),
        ],
    );
    drop(lock);
    assert!(
        !run.join(".lock").exists(),
        "the lock file is removed on release"
    );

    let contenders = 8;
    for round in 0..20 {
        std::fs::write(run.join(".lock"), "999999999").unwrap();
        let start = std::sync::Barrier::new(contenders);
        let attempted = std::sync::Barrier::new(contenders);
        let winners = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..contenders {
                scope.spawn(|| {
                    start.wait();
                    let lock = hftrain::support::lock::RunLock::acquire(&run);
                    if lock.is_ok() {
                        winners.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    // Every attempt is made while the winner still holds the lock.
                    attempted.wait();
                    drop(lock);
                });
            }
        });
        assert_eq!(
            winners.into_inner(),
            1,
            "round {round}: not exactly one holder"
        );
    }
}

/// `--stop-after-epoch N` counts the run's complete epochs: a run resumed with N of them done
/// trains nothing more (it used to train one more epoch).
#[test]
fn stop_after_epoch_on_resume_trains_no_epoch_more() {
    let config = crate::common::flex_config(100, 50, 3);
    let dir = TempDir::new();
    let run = dir.path().join("run");
    let first = crate::common::train(&config, &run, None, Some(1)).unwrap();
    assert_eq!(first.metrics.len(), 1);
    let again = crate::common::train(&config, &run, Some("latest"), Some(1)).unwrap();
    assert_eq!(
        (again.metrics.len(), again.position.epoch),
        (1, 1),
        "trained past epoch 1"
    );
    let more = crate::common::train(&config, &run, Some("latest"), Some(2)).unwrap();
    assert_eq!((more.metrics.len(), more.position.epoch), (2, 2));
}

/// `train.spectrum_batches` larger than the training split is refused before the first
/// epoch, naming the setting (it used to fail after a whole epoch, naming `spectrum`'s flags).
#[test]
fn spectrum_batches_beyond_the_training_split_are_refused_before_training() {
    let mut config = crate::common::flex_config(100, 50, 1);
    config.train.spectrum_every = 1;
    config.train.spectrum_batches = 1_000_000;
    config.validate().unwrap();
    let dir = TempDir::new();
    let run = dir.path().join("run");
    let error = crate::common::train(&config, &run, None, None).unwrap_err();
    let text = format!("{error:#}");
    assert!(
        text.contains("train.spectrum_batches = 1000000")
            && text.contains("100 images")
            && !text.contains("--batches"),
        "{text}"
    );
    assert!(!run.join("checkpoints").exists(), "trained before refusing");
}

/// A run stopped before its first checkpoint (killed while writing it) is not stuck between
/// "continue it with --resume latest" and "nothing to resume": both say to start it over
/// with --force, which does.
#[test]
fn a_run_stopped_before_its_first_checkpoint_is_started_over_with_force() {
    let config = crate::common::flex_config(100, 50, 1);
    let dir = TempDir::new();
    let run = dir.path().join("run");
    crate::common::train(&config, &run, None, None).unwrap();
    // What a kill during the first checkpoint leaves: the run's files, no checkpoint.
    std::fs::remove_dir_all(run.join("checkpoints")).unwrap();
    std::fs::create_dir(run.join("checkpoints")).unwrap();
    let resume = format!(
        "{:#}",
        crate::common::train(&config, &run, Some("latest"), None).unwrap_err()
    );
    assert!(
        resume.contains("stopped before its first checkpoint") && resume.contains("--force"),
        "{resume}"
    );
    let start = format!(
        "{:#}",
        crate::common::train(&config, &run, None, None).unwrap_err()
    );
    assert!(
        start.contains("stopped before its first checkpoint")
            && start.contains("--force")
            && !start.contains("--resume latest"),
        "{start}"
    );
    let over = hftrain::train::run(hftrain::train::TrainRequest {
        config: Some(config.clone()),
        out_dir: Some(run.clone()),
        force: true,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(over.metrics.len(), 1);
}

/// Resumed without --config, a run whose config.toml was edited by hand says which file wins
/// (the checkpoint's config) and keeps the edited file aside instead of overwriting it.
#[test]
fn a_hand_edited_run_config_is_named_and_kept_on_resume() {
    let config = crate::common::flex_config(100, 50, 2);
    let dir = TempDir::new();
    let run = dir.path().join("run");
    crate::common::train(&config, &run, None, Some(1)).unwrap();
    let path = run.join("config.toml");
    let edited = std::fs::read_to_string(&path)
        .unwrap()
        .replace("epochs = 2", "epochs = 5");
    assert!(edited.contains("epochs = 5"));
    std::fs::write(&path, &edited).unwrap();
    let (ok, output) = crate::common::resume_by_binary(&run);
    assert!(ok, "{output}");
    assert!(
        output.contains("config.toml differs from the checkpoint's config (train.epochs: 2 vs 5)")
            && output.contains("the checkpoint's config is used"),
        "{output}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("config.toml.edited")).unwrap(),
        edited
    );
    // The run went on with the checkpoint's settings: its 2 epochs.
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "{metrics}");
}

/// A `latest` that is a regular file (not the link hftrain writes) does not block a resume:
/// it is named and the newest epoch folder is resumed.
#[test]
fn a_latest_that_is_a_file_does_not_block_resume() {
    let config = crate::common::flex_config(100, 50, 2);
    let dir = TempDir::new();
    let run = dir.path().join("run");
    crate::common::train(&config, &run, None, Some(1)).unwrap();
    let latest = run.join("checkpoints/latest");
    std::fs::remove_file(&latest).unwrap();
    std::fs::write(&latest, "not a link").unwrap();
    let resumed = crate::common::train(&config, &run, Some("latest"), None).unwrap();
    assert_eq!(resumed.metrics.len(), 2);
}

/// When every checkpoint is damaged, the error says what to do next.
#[test]
fn every_checkpoint_damaged_says_how_to_go_on() {
    let config = crate::common::flex_config(100, 50, 3);
    let dir = TempDir::new();
    let run = dir.path().join("run");
    crate::common::train(&config, &run, None, Some(2)).unwrap();
    for checkpoint in checkpoint::list(&run.join("checkpoints")) {
        let params = checkpoint.join("params.bin");
        let bytes = std::fs::read(&params).unwrap();
        std::fs::write(&params, &bytes[..bytes.len() / 2]).unwrap();
    }
    let error = format!(
        "{:#}",
        crate::common::train(&config, &run, Some("latest"), None).unwrap_err()
    );
    assert!(
        error.contains("no checkpoint in")
            && error.contains("restore one from a copy, or start the run over with")
            && error.contains("--force"),
        "{error}"
    );
}

/// `--resume latest` while another process trains into the run (before its first checkpoint)
/// says the run is in use, not "nothing to resume".
#[test]
fn resume_while_another_process_trains_says_the_run_is_in_use() {
    let config = crate::common::flex_config(100, 50, 1);
    let dir = TempDir::new();
    let run = dir.path().join("run");
    crate::common::train(&config, &run, None, None).unwrap();
    std::fs::remove_dir_all(run.join("checkpoints")).unwrap();
    let _held = hftrain::support::lock::RunLock::acquire(&run).unwrap();
    let error = format!(
        "{:#}",
        crate::common::train(&config, &run, Some("latest"), None).unwrap_err()
    );
    assert!(
        error.contains("in use by another hftrain process") && !error.contains("nothing to resume"),
        "{error}"
    );
}

/// An output folder that cannot be written is found before the work, not after it.
#[test]
fn an_unwritable_output_folder_is_refused_before_the_evaluation() {
    let config = crate::common::flex_config(100, 50, 1);
    let dir = TempDir::new();
    let run = dir.path().join("run");
    crate::common::train(&config, &run, None, None).unwrap();
    let checkpoint = run.join("checkpoints/latest");
    // /proc refuses new files, whoever runs the test (root included).
    let out = Command::new(env!("CARGO_BIN_EXE_hftrain"))
        .args(["eval", "--checkpoint", checkpoint.to_str().unwrap()])
        .args(["--device", "flex", "--json", "/proc/hftrain-eval.json"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success());
    assert!(stderr.contains("cannot write into /proc"), "{stderr}");
    assert!(!stdout.contains("accuracy"), "evaluated first:\n{stdout}");
}

/// A logit scale far from 1 that makes the loss overflow is named by the divergence
/// message (which used to advise lowering the learning rate only).
#[test]
fn a_divergence_from_the_logit_scale_names_it() {
    let mut config = crate::common::flex_config(100, 50, 1);
    config.model.logit_scale = 1e38;
    config.validate().unwrap();
    let dir = TempDir::new();
    let error = format!(
        "{:#}",
        crate::common::train(&config, &dir.path().join("run"), None, None).unwrap_err()
    );
    assert!(
        error.contains("training diverged") && error.contains("model.logit_scale = 1e38"),
        "{error}"
    );
}
