//! `steps.csv` on resume: a damaged line is named and the file as it was is kept, and no
//! readable row is dropped, wherever the damage is (issue: one bad line used to delete the
//! rows after it without a word).

use std::path::PathBuf;

use hftrain::config::Config;

use crate::common::{TempDir, resume_by_binary, synthetic_binary};
use crate::training::{hessian_free_config, train};

/// The training tests' Hessian-free run of `epochs` on flex, trained into `dir/run` until
/// `stop` (None: to its end): its config and run directory.
fn hessian_free_run(dir: &TempDir, epochs: usize, stop: Option<usize>) -> (Config, PathBuf) {
    let mut config = hessian_free_config(&synthetic_binary(), "flex");
    config.train.epochs = epochs;
    let run = dir.path().join("run");
    train(&config, &run, None, stop).unwrap();
    (config, run)
}

#[test]
fn a_damaged_step_log_is_named_kept_aside_and_its_readable_rows_kept() {
    let dir = TempDir::new();
    let (config, run) = hessian_free_run(&dir, 2, Some(1));
    let steps = run.join("steps.csv");
    let original = std::fs::read_to_string(&steps).unwrap();
    let mut lines: Vec<&str> = original.lines().collect();
    assert_eq!(lines.len(), 3, "a header and one row per step:\n{original}");
    // Damage in the middle and an undecodable line at the end.
    lines.insert(2, "garbage,in,the,middle");
    let mut damaged = lines.join("\n").into_bytes();
    damaged.extend_from_slice(b"\n\xff\xfe\n");
    std::fs::write(&steps, &damaged).unwrap();

    train(&config, &run, Some("latest"), None).unwrap();
    let after = std::fs::read_to_string(&steps).unwrap();
    let rows: Vec<&str> = after.lines().skip(1).collect();
    assert_eq!(
        rows.len(),
        4,
        "the two old rows kept, two new ones:\n{after}"
    );
    assert_eq!(rows[..2], original.lines().skip(1).collect::<Vec<_>>()[..]);
    assert!(
        rows[0].starts_with("1,") && rows[3].starts_with("4,"),
        "{after}"
    );
    // The file as it was, damage included, is kept beside the log.
    let kept = std::fs::read(run.join("steps.csv.damaged")).unwrap();
    assert_eq!(kept, damaged);
}

#[test]
fn a_step_log_damage_is_named_by_line_on_the_command_line() {
    let dir = TempDir::new();
    let (_, run) = hessian_free_run(&dir, 2, Some(1));
    let steps = run.join("steps.csv");
    let mut text = std::fs::read(&steps).unwrap();
    text.extend_from_slice(b"\xff\xfe\n");
    std::fs::write(&steps, text).unwrap();
    let (ok, output) = resume_by_binary(&run);
    assert!(ok, "{output}");
    assert!(
        output.contains("steps.csv: line 4 is not a row of this run's step log")
            && output.contains("steps.csv.damaged"),
        "{output}"
    );
}

/// `hftrain plot` on a step log with an undecodable line: the line is named, the plots are
/// drawn from the rows that are readable, and a per-step plot with no row left to draw is
/// removed rather than left stale.
#[test]
fn plot_names_a_damaged_step_log_and_leaves_no_stale_plot() {
    let dir = TempDir::new();
    let (_, run) = hessian_free_run(&dir, 1, None);
    let steps = run.join("steps.csv");
    let damping = run.join("plots/damping.png");
    assert!(damping.is_file());
    let original = std::fs::read(&steps).unwrap();
    let mut damaged = original.clone();
    damaged.extend_from_slice(b"\xff\xfe\n");
    std::fs::write(&steps, &damaged).unwrap();
    let (ok, output) = crate::common::hftrain(&["plot", run.to_str().unwrap()]);
    assert!(ok, "{output}");
    assert!(
        output.contains("steps.csv: line 4 is not a row of this run's step log; the plots show its 2 readable rows"),
        "{output}"
    );
    assert!(damping.is_file(), "{output}");
    // Read, not rewritten: the file stays as the user left it.
    assert_eq!(std::fs::read(&steps).unwrap(), damaged);

    let header = original.split(|&b| b == b'\n').next().unwrap().to_vec();
    std::fs::write(&steps, [header, b"\n\xff\xfe\n".to_vec()].concat()).unwrap();
    let (ok, output) = crate::common::hftrain(&["plot", run.to_str().unwrap()]);
    assert!(ok, "{output}");
    assert!(!damping.exists(), "a stale plot is left:\n{output}");
}

/// `hftrain plot` on a run whose config.toml is gone: the epoch plots are drawn, the
/// per-step ones left out with a warning (the config names the step log's columns).
#[test]
fn plot_without_the_runs_config_draws_the_epoch_plots() {
    let dir = TempDir::new();
    let (_, run) = hessian_free_run(&dir, 1, None);
    std::fs::remove_file(run.join("config.toml")).unwrap();
    std::fs::remove_dir_all(run.join("plots")).unwrap();
    let (ok, output) = crate::common::hftrain(&["plot", run.to_str().unwrap()]);
    assert!(ok, "{output}");
    assert!(
        output.contains("config.toml") && output.contains("steps.csv's charts are left out"),
        "{output}"
    );
    assert!(run.join("plots/loss.png").is_file(), "{output}");
    assert!(!run.join("plots/damping.png").exists(), "{output}");
}
