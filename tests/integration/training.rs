//! Real training on a few hundred generated images (the binary batches and the image folder):
//! wgpu through the software Vulkan driver (or a GPU where there is one), and Burn's CPU
//! backend for the exact-resume checks.

use hftrain::config::Config;
use hftrain::train::{self, TrainOutcome, TrainRequest};

use crate::common::{
    TempDir, assert_error, assert_succeeded, flex_config, small_config, synthetic_binary,
    synthetic_folder,
};
use crate::tensorboard::Logged;

/// Other test modules train through `crate::training::train` too.
pub(crate) use crate::common::train;

fn max_abs_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn wgpu_training_lowers_the_loss_beats_chance_and_resumes() {
    let data = synthetic_folder();
    let mut config = small_config(&data, "wgpu");
    config.train.epochs = 3;
    let dir = TempDir::new();
    let full = train(&config, &dir.path().join("full"), None, None).unwrap();
    let m = &full.metrics;
    assert_eq!(m.len(), 3);
    assert!(
        m[2].train_loss < m[0].train_loss,
        "train loss did not fall: {m:?}"
    );
    assert!(
        m[2].test_accuracy > 0.2,
        "test accuracy {} does not beat chance (0.1) clearly",
        m[2].test_accuracy
    );
    let run = dir.path().join("full");
    for file in [
        "config.toml",
        "metrics.csv",
        "checkpoints/latest/manifest.json",
    ] {
        assert!(
            run.join(file).exists(),
            "{file} missing from the run directory"
        );
    }
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");

    // Interrupted after epoch 1, resumed: the same parameters within float noise.
    let parted = dir.path().join("parted");
    let first = train(&config, &parted, None, Some(1)).unwrap();
    assert_eq!(first.position.epoch, 1);
    let resumed = train(&config, &parted, Some("latest"), None).unwrap();
    assert_eq!(resumed.metrics.len(), 3);
    // wgpu is not bit-exact across a resume (fusion and autotune may choose other kernels,
    // lavapipe's rounding depends on the CPU); a few hundred f32 roundings per parameter,
    // grown over the steps after the resume, stay far below this. A resume that lost state
    // (momentum, schedule, data order) moves parameters by the size of a step, 1e-2 or more.
    let difference = max_abs_difference(&full.params, &resumed.params);
    let scale = full.params.iter().fold(1.0f32, |m, p| m.max(p.abs()));
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "measured: wgpu resume vs uninterrupted: max parameter difference {difference:.1e} \
         (largest parameter {scale:.2}); test accuracy {:.3} after 3 epochs",
        m[2].test_accuracy
    );
    assert!(
        difference < 1e-3 * scale,
        "resumed run differs from the uninterrupted one by {difference}"
    );
}

#[test]
fn flex_resume_is_bit_exact() {
    let config = flex_config(200, 100, 2);
    let dir = TempDir::new();
    assert_resume_is_bit_exact(&config, dir.path());
}

/// Trains `config` whole into `dir/full`, and again into `dir/parted` stopped after epoch 1:
/// the whole run, and the parted run's directory (to be resumed).
fn train_whole_and_parted(
    config: &Config,
    dir: &std::path::Path,
) -> (TrainOutcome, std::path::PathBuf) {
    let full = train(config, &dir.join("full"), None, None).unwrap();
    let parted = dir.join("parted");
    train(config, &parted, None, Some(1)).unwrap();
    (full, parted)
}

/// A resumed run ended with the uninterrupted run's parameters and batch-norm statistics, to
/// the bit.
fn assert_same_weights(full: &TrainOutcome, resumed: &TrainOutcome) {
    assert_eq!(
        full.params, resumed.params,
        "parameters differ after resume"
    );
    assert_eq!(
        full.buffers, resumed.buffers,
        "batch-norm statistics differ after resume"
    );
}

/// Trains `config` whole, and again stopped after epoch 1 and continued with `--resume
/// latest`, in `dir`: the two runs end alike to the bit (parameters, batch-norm statistics,
/// every epoch's row). Returns the whole run and the parted run's directory.
pub(crate) fn assert_resume_is_bit_exact(
    config: &Config,
    dir: &std::path::Path,
) -> (TrainOutcome, std::path::PathBuf) {
    let (full, parted) = train_whole_and_parted(config, dir);
    let resumed = train(config, &parted, Some("latest"), None).unwrap();
    assert_same_weights(&full, &resumed);
    assert_eq!(full.metrics.len(), resumed.metrics.len());
    for (a, b) in full.metrics.iter().zip(&resumed.metrics) {
        assert_eq!(
            (a.train_loss, a.test_accuracy, a.step, a.lr),
            (b.train_loss, b.test_accuracy, b.step, b.lr)
        );
    }
    (full, parted)
}

/// `train.batch_size_milestones`: each epoch takes the batch its milestone gives (its step
/// count shows it), the learning rate's decay ends at the run's last step, not where a run of
/// the first batch size would, and a run stopped where the batch changes resumes bit-exact.
#[test]
fn growing_batch_changes_the_steps_and_resumes_bit_exact() {
    let mut config = flex_config(200, 100, 3);
    config.train.batch_size_milestones = vec![[2, 100], [3, 200]];
    config.schedule.kind = hftrain::config::ScheduleKind::OneCycle;
    config.schedule.final_lr_fraction = 0.0;
    config.validate().unwrap();
    let dir = TempDir::new();
    let (full, parted) = assert_resume_is_bit_exact(&config, dir.path());
    let steps: Vec<usize> = full.metrics.iter().map(|m| m.step).collect();
    assert_eq!(
        steps,
        [4, 6, 7],
        "200 images in batches of 50, 100, then 200"
    );
    // Half an epoch of warm-up (2 steps), then a linear decay over the other 5 steps: the
    // last step (index 6) at 1/5 of the peak; counting three epochs of 4 steps would give 3/5.
    let last_lr = full.metrics.last().unwrap().lr;
    let peak = config.optimizer.lr().unwrap();
    assert!((last_lr - peak / 5.0).abs() < 1e-9 * peak, "{last_lr}");
    let report = std::fs::read_to_string(parted.join("report.md")).unwrap();
    assert!(
        report.contains("batch size 50 (100 from epoch 2, 200 from epoch 3)"),
        "{report}"
    );
}

/// SGD takes its gradient by our backprop on the CPU (`train.gradient = "auto"`) and by
/// Burn's autodiff where asked: the two runs train alike, batch norm's running statistics
/// included, up to f32 rounding (the two sum in different orders).
#[test]
fn sgd_by_our_backprop_trains_as_sgd_by_burn_autodiff() {
    use hftrain::config::GradientRoute;
    let mut config = flex_config(200, 100, 1);
    let dir = TempDir::new();
    let mut runs = Vec::new();
    for route in [GradientRoute::Autodiff, GradientRoute::Backprop] {
        config.train.gradient = route;
        runs.push(train(&config, &dir.path().join(format!("{route:?}")), None, None).unwrap());
    }
    let (autodiff, backprop) = (&runs[0], &runs[1]);
    let params = max_abs_difference(&autodiff.params, &backprop.params);
    let buffers = max_abs_difference(&autodiff.buffers, &backprop.buffers);
    let scale = autodiff.params.iter().fold(0f32, |m, p| m.max(p.abs()));
    println!(
        "measured: autodiff vs backprop SGD: params {params:.1e} (largest {scale:.2}), statistics {buffers:.1e}"
    );
    // Bit-identical parameters would mean both runs took one route.
    assert_ne!(
        autodiff.params, backprop.params,
        "train.gradient made no difference"
    );
    assert!(
        params < 1e-5 * scale.max(1.0),
        "parameters differ by {params}"
    );
    assert!(buffers < 1e-5, "running statistics differ by {buffers}");
    assert!(
        GradientRoute::Auto.uses_backprop(&burn::prelude::Device::flex()),
        "auto takes our backprop on the CPU"
    );
    assert_eq!(autodiff.metrics.len(), backprop.metrics.len());
    let losses = |run: &TrainOutcome| run.metrics.iter().map(|m| m.train_loss).collect::<Vec<_>>();
    for (a, b) in losses(autodiff).iter().zip(losses(backprop)) {
        assert!(
            (a - b).abs() < 1e-5 * a.abs().max(1.0),
            "train loss {a} against {b}"
        );
    }
}

#[test]
fn sgd_in_half_precision_trains_as_sgd_in_f32() {
    use hftrain::config::{GradientRoute, Precision};
    let mut config = flex_config(200, 100, 2);
    let dir = TempDir::new();
    // Both routes of the gradient: our backprop (the CPU's) and Burn's autodiff (wgpu's).
    for route in [GradientRoute::Backprop, GradientRoute::Autodiff] {
        config.train.gradient = route;
        let mut runs = Vec::new();
        for precision in [Precision::F32, Precision::Bf16, Precision::F16] {
            config.train.precision = precision;
            let out = dir.path().join(format!("{route}-{precision}"));
            runs.push((precision, train(&config, &out, None, None).unwrap()));
        }
        let f32_run = &runs[0].1;
        let scale = f32_run.params.iter().fold(0f32, |m, p| m.max(p.abs()));
        for (precision, run) in &runs[1..] {
            let params = max_abs_difference(&f32_run.params, &run.params);
            let losses: Vec<(f64, f64)> = f32_run
                .metrics
                .iter()
                .zip(&run.metrics)
                .map(|(a, b)| (a.train_loss, b.train_loss))
                .collect();
            println!(
                "measured: SGD by {route} in {precision} against f32: params {params:.1e} (largest {scale:.2}), train losses {losses:?}"
            );
            assert_ne!(
                f32_run.params, run.params,
                "{route} {precision}: no difference"
            );
            // f16's loss scale is in TensorBoard at every step; bf16 has none.
            let out = dir.path().join(format!("{route}-{precision}"));
            let scales: Vec<f32> = crate::tensorboard::curves(&out)
                .iter()
                .flat_map(|(_, scalars)| scalars.iter())
                .filter(|(tag, _)| tag == "precision/loss_scale")
                .map(|(_, value)| value.0)
                .collect();
            match precision {
                Precision::F16 => {
                    let steps = run.metrics.last().unwrap().step;
                    assert_eq!(scales.len(), steps, "{route}: one loss scale a step");
                    assert!(scales.iter().all(|s| *s >= 1.0 && s.log2().fract() == 0.0));
                }
                _ => assert!(scales.is_empty(), "{route} {precision}: {scales:?}"),
            }
            // Two epochs of 200 images: the rounding of a half-precision gradient (a few parts
            // in a thousand) moves the weights by that much of each step, not by the step.
            assert!(
                params < 0.05 * scale,
                "{route} {precision}: parameters differ by {params}"
            );
            for (a, b) in losses {
                assert!(
                    b.is_finite() && (a - b).abs() < 0.05 * a,
                    "{route} {precision}: train loss {b} against {a}"
                );
            }
        }
    }
}

#[test]
fn run_directory_is_protected_and_resume_refuses_a_changed_config() {
    let config = flex_config(100, 50, 2);
    let dir = TempDir::new();
    let run = dir.path().join("run");
    train(&config, &run, None, Some(1)).unwrap();
    let metrics_before = std::fs::read(run.join("metrics.csv")).unwrap();

    // A fresh start in the same directory is refused and changes nothing.
    assert_error(
        train(&config, &run, None, None),
        &["already holds a run", "--resume latest", "--force"],
    );
    assert_eq!(
        std::fs::read(run.join("metrics.csv")).unwrap(),
        metrics_before
    );

    let mut changed = config.clone();
    crate::common::sgd(&mut changed).lr = 0.5;
    changed.train.batch_size = 25;
    changed.data.dir = "moved/elsewhere/is/fine".into();
    let message = assert_error(
        train(&changed, &run, Some("latest"), None),
        &["optimizer.lr: 0.05 vs 0.5", "train.batch_size: 50 vs 25"],
    );
    assert!(!message.contains("data.dir"), "{message}");

    // Without --config, the checkpoint's own config is used.
    let resumed = train::run(TrainRequest {
        out_dir: Some(run.clone()),
        resume: Some("latest".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(resumed.metrics.len(), 2);

    // --force starts over.
    let fresh = train::run(TrainRequest {
        config: Some(config.clone()),
        out_dir: Some(run.clone()),
        force: true,
        stop_after_epoch: Some(1),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(fresh.metrics.len(), 1);
}

#[test]
fn eval_command_reports_accuracy_and_confusion_matrix() {
    let data = synthetic_folder();
    let mut config = small_config(&data, "flex");
    config.data.train_limit = 100;
    config.data.test_limit = 50;
    config.train.epochs = 1;
    let dir = TempDir::new();
    let run = dir.path().join("run");
    let outcome = train(&config, &run, None, None).unwrap();
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    let final_line = format!(
        "final test accuracy: {:.2}% (epoch 1)",
        100.0 * outcome.metrics[0].test_accuracy
    );
    for needle in [
        "# Run `test`",
        "- device: flex",
        "- optimizer: sgd (peak lr",
        &final_line,
        "best test accuracy",
        "| 1 | ",
        "metrics.csv",
    ] {
        assert!(
            report.contains(needle),
            "report.md lacks {needle:?}:\n{report}"
        );
    }
    let json = dir.path().join("eval.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hftrain"))
        .args([
            "eval",
            "--checkpoint",
            run.join("checkpoints/latest").to_str().unwrap(),
            "--limit",
            "50",
            "--json",
            json.to_str().unwrap(),
            "--device",
            "flex",
            "--show-mistakes",
            "5",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("confusion matrix") && stdout.contains("airplane"),
        "{stdout}"
    );
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let confusion = result["confusion"].as_array().unwrap();
    let total: u64 = confusion
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 50);
    // The same test images as the training run's final evaluation give the same accuracy.
    let accuracy = result["accuracy"].as_f64().unwrap();
    assert!(
        (accuracy - outcome.metrics[0].test_accuracy).abs() < 1e-9,
        "{accuracy} vs {:?}",
        outcome.metrics[0]
    );
    // Test-time augmentation and the most confident mistakes.
    let tta = result["tta_accuracy"].as_f64().unwrap();
    assert!(
        (0.0..=1.0).contains(&tta) && stdout.contains("with horizontal-flip TTA"),
        "{stdout}"
    );
    let mistakes = result["mistakes"].as_array().unwrap();
    assert_eq!(mistakes.len(), 5);
    let confidences: Vec<f64> = mistakes
        .iter()
        .map(|m| m["confidence"].as_f64().unwrap())
        .collect();
    assert!(
        confidences.windows(2).all(|w| w[0] >= w[1]),
        "most confident first: {confidences:?}"
    );
    assert!(mistakes.iter().all(|m| m["truth"] != m["predicted"]));
    let matrix = image::open(dir.path().join("eval-confusion.png"))
        .unwrap()
        .into_rgb8();
    assert!(
        matrix.width() > 10 * 44 && matrix.height() > 10 * 44,
        "{}x{}",
        matrix.width(),
        matrix.height()
    );
    assert!(
        matrix.pixels().any(|p| p.0[2] > p.0[0] + 40),
        "no shaded cell in the confusion picture"
    );
    let grid = image::open(dir.path().join("eval-mistakes.png"))
        .unwrap()
        .into_rgb8();
    assert!(
        grid.width() >= 5 * 96 && grid.height() >= 96,
        "{}x{}",
        grid.width(),
        grid.height()
    );
    let first = grid.get_pixel(0, 0);
    assert!(
        grid.pixels().filter(|p| *p != first).count() > grid.pixels().count() / 4,
        "the grid is blank"
    );
}

/// The small config trained by Hessian-free, without augmentation (each step's objective is
/// then a fixed function of the batch, so the loss must fall).
pub(crate) fn hessian_free_config(data: &std::path::Path, device: &str) -> Config {
    let mut config = small_config(data, device);
    config.data.train_limit = 100;
    config.data.test_limit = 100;
    config.data.crop_padding = 0;
    config.data.flip = false;
    config.train.batch_size = 50;
    config.train.epochs = 3;
    crate::common::use_hessian_free(&mut config);
    crate::common::hessian_free(&mut config).curvature_batch_size = 25;
    crate::common::hessian_free(&mut config).cg_max_iterations = 10;
    config.validate().unwrap();
    config
}

#[test]
fn wgpu_hessian_free_training_lowers_the_loss() {
    let data = synthetic_folder();
    let config = hessian_free_config(&data, "wgpu");
    let dir = TempDir::new();
    let out = train(&config, dir.path(), None, None).unwrap();
    let m = &out.metrics;
    assert!(
        m[2].train_loss < m[0].train_loss,
        "train loss did not fall: {m:?}"
    );
    let log = std::fs::read_to_string(dir.path().join("steps.csv")).unwrap();
    let rows: Vec<&str> = log.lines().skip(1).collect();
    assert_eq!(rows.len(), 6, "one row per step:\n{log}");
    // Early in training a step changes the loss by 1e-2 or more, far above f32's noise in
    // it (about 1e-6), so accepting is not a matter of rounding; most steps must be taken.
    let accepted_at = crate::common::hessian_free_step_column("accepted");
    let accepted = rows
        .iter()
        .filter(|r| r.split(',').nth(accepted_at) == Some("true"))
        .count();
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "measured: wgpu Hessian-free: {accepted} of 6 steps accepted; train loss {:.4} -> {:.4}",
        m[0].train_loss,
        m[2].train_loss
    );
    assert!(accepted >= 4, "only {accepted} of 6 steps accepted:\n{log}");
}

#[test]
fn flex_hessian_free_resume_is_bit_exact_and_continues_the_step_log() {
    let data = synthetic_binary();
    let mut config = hessian_free_config(&data, "flex");
    config.train.epochs = 2;
    // The exact Hessian this time (the wgpu test covers Gauss-Newton).
    crate::common::hessian_free(&mut config).curvature = hftrain::config::CurvatureKind::Hessian;
    // Its sharpness measured too: resumed runs measure it the same, and every plot is drawn.
    config.train.spectrum_every = 1;
    let dir = TempDir::new();
    let (full, parted) = train_whole_and_parted(&config, dir.path());
    let ckpt =
        hftrain::store::checkpoint::Checkpoint::load(&parted.join("checkpoints/latest")).unwrap();
    assert_eq!(ckpt.optimizer.kind, "hessian-free");
    let damping: f64 = ckpt.optimizer.scalars["damping"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(damping > 0.0);
    assert!(
        ckpt.optimizer.vectors.contains_key("previous_solution"),
        "the warm start is saved"
    );
    let resumed = train(&config, &parted, Some("latest"), None).unwrap();
    assert_same_weights(&full, &resumed);
    // The step logs without their wall-time columns, which differ between equal runs.
    let log = |run: &std::path::Path| -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(run.join("steps.csv")).unwrap();
        use hftrain::optim::OptimizerSettings;
        let own = hftrain::config::HessianFreeSettings::STEP_COLUMNS;
        let columns = hftrain::store::metrics::step_columns(own);
        let times = hftrain::store::metrics::step_time_columns(own);
        text.lines()
            .map(|line| {
                line.split(',')
                    .zip(&columns)
                    .filter(|(_, c)| !times.contains(c))
                    .map(|(v, _)| v.to_string())
                    .collect()
            })
            .collect()
    };
    assert_eq!(
        log(&dir.path().join("full")),
        log(&parted),
        "step logs differ"
    );
    let curves = crate::tensorboard::curves(&dir.path().join("full"));
    assert_eq!(
        curves,
        crate::tensorboard::curves(&parted),
        "TensorBoard curves differ after resume"
    );
    // Every epoch's metrics and every step's damping are in the event file.
    for row in &full.metrics {
        let at_step: Vec<_> = curves
            .iter()
            .filter(|(step, _)| *step == row.step as u64)
            .flat_map(|(_, s)| s.clone())
            .collect();
        assert!(
            at_step.contains(&(
                "accuracy/test".to_string(),
                Logged(row.test_accuracy as f32)
            )),
            "epoch {}: {at_step:?}",
            row.epoch
        );
        assert!(
            at_step.contains(&("loss/train".to_string(), Logged(row.train_loss as f32))),
            "epoch {}: {at_step:?}",
            row.epoch
        );
    }
    let damping_steps = curves
        .iter()
        .filter(|(_, s)| s.iter().any(|(tag, _)| tag == "hessian_free/damping"))
        .count();
    assert_eq!(
        damping_steps, full.position.global_step,
        "one hessian_free event per step"
    );

    // The plots of the run, drawn after every epoch and again by `hftrain plot`.
    let run = dir.path().join("full");
    let check_plots = || {
        // Every picture `--force` knows to remove (`run_dir::PLOTS`) is one a Hessian-free
        // run measuring its sharpness draws, and nothing else is in plots/.
        let drawn: Vec<String> = std::fs::read_dir(run.join("plots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            drawn.len(),
            hftrain::store::run_dir::PLOTS.len(),
            "{drawn:?}"
        );
        for file in hftrain::store::run_dir::PLOTS {
            let name = file.trim_end_matches(".png");
            let image = image::open(run.join(format!("plots/{name}.png")))
                .unwrap()
                .into_rgb8();
            assert_eq!((image.width(), image.height()), (640, 400), "{name}.png");
            let coloured = image
                .pixels()
                .filter(|p| p.0 != [255, 255, 255] && (p.0[0] != p.0[1] || p.0[1] != p.0[2]))
                .count();
            assert!(
                coloured > 200,
                "{name}.png has {coloured} coloured pixels: no line drawn"
            );
        }
    };
    check_plots();
    std::fs::remove_dir_all(run.join("plots")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hftrain"))
        .args(["plot", run.to_str().unwrap()])
        .output()
        .unwrap();
    assert_succeeded(&out);
    check_plots();
}
