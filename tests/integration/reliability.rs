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
