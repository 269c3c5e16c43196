//! Iterate averaging (`train.average`) and Hessian-free's decaying Newton step
//! (`optimizer.hessian_free.step_schedule`).

use burn::prelude::*;
use hftrain::config::{Config, HessianFreeConfig};
use hftrain::optim::Problem;
use hftrain::optim::averaging::{AverageConfig, IterateAverage};
use hftrain::optim::cg::LinearOperator;
use hftrain::optim::hessian_free::HessianFree;
use hftrain::params::to_host;
use hftrain::store::metrics;

use crate::common::{
    TempDir, assert_error, flex_f64, random_tensor, small_config, synthetic_binary,
};
use crate::training::{assert_resume_is_bit_exact, train};

fn host_f64(t: &Tensor<1>) -> Vec<f64> {
    t.to_data().iter::<f64>().collect()
}

/// After every step, the exponential moving average is `d^(T-1) x_1 + sum_{t=2..T} (1-d)
/// d^(T-t) x_t` and the tail average the plain mean of the iterates from its epoch on, to f64's
/// rounding.
#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_parameter_averages_equal_their_closed_forms() {
    let d = flex_f64();
    let decay = 0.8;
    let iterates: Vec<Tensor<1>> = (0..12).map(|i| random_tensor(40 + i, [30], &d)).collect();
    let hosts: Vec<Vec<f64>> = iterates.iter().map(host_f64).collect();
    let mut ema = IterateAverage::new(&AverageConfig::Ema { decay });
    // Tail from epoch 2: iterates 0-3 are epoch 1's (index 0), the rest epoch 2's and 3's.
    let mut tail = IterateAverage::new(&AverageConfig::Tail { start_epoch: 2 });
    let epoch_of = |t: usize| t / 4;
    let mut worst: f64 = 0.0;
    for (t, x) in iterates.iter().enumerate() {
        ema.update(x, epoch_of(t));
        tail.update(x, epoch_of(t));
        let expected_ema: Vec<f64> = (0..30)
            .map(|i| {
                let mut sum = decay.powi(t as i32) * hosts[0][i];
                for (s, host) in hosts.iter().enumerate().take(t + 1).skip(1) {
                    sum += (1.0 - decay) * decay.powi((t - s) as i32) * host[i];
                }
                sum
            })
            .collect();
        let got = host_f64(ema.value().unwrap());
        for (a, b) in got.iter().zip(&expected_ema) {
            worst = worst.max((a - b).abs() / b.abs().max(1.0));
        }
        assert_eq!(ema.steps(), t as u64 + 1);
        if t < 4 {
            assert!(
                tail.value().is_none(),
                "the tail average started before its epoch"
            );
            continue;
        }
        let expected_tail: Vec<f64> = (0..30)
            .map(|i| hosts[4..=t].iter().map(|h| h[i]).sum::<f64>() / (t - 3) as f64)
            .collect();
        for (a, b) in host_f64(tail.value().unwrap()).iter().zip(&expected_tail) {
            worst = worst.max((a - b).abs() / b.abs().max(1.0));
        }
        assert_eq!(tail.steps(), t as u64 - 3);
    }
    println!("measured: parameter averages vs closed forms (f64): {worst:.1e}");
    assert!(worst < 1e-13, "off by {worst}");
}

/// The small SGD run with an exponential moving average of its parameters.
fn averaging_config() -> Config {
    let data = synthetic_binary();
    let mut config = small_config(&data, "flex");
    config.data.train_limit = 200;
    config.data.test_limit = 100;
    config.train.average = Some(AverageConfig::Ema { decay: 0.6 });
    config.validate().unwrap();
    config
}

/// Every epoch's row has the averaged weights' test loss and accuracy (metrics.csv gains the
/// two columns), a resumed run ends with the same average and the same averaged rows to the
/// bit, and the averaged weights are evaluated with batch-norm statistics recomputed for
/// them: exactly those that `bn_statistics::recompute` gives over the last epoch's first
/// batches (SGD keeps no recomputation of its own), not the live weights'.
#[test]
fn averaged_weights_get_their_own_statistics_and_resume_bit_exact() {
    let config = averaging_config();
    let dir = TempDir::new();
    let (full, parted) = assert_resume_is_bit_exact(&config, dir.path());
    let resumed_rows = metrics::read(&parted.join("metrics.csv")).unwrap();
    let full_rows = metrics::read(&dir.path().join("full/metrics.csv")).unwrap();
    for (a, b) in full_rows.iter().zip(&resumed_rows) {
        assert!(a.averaged_test_accuracy.is_some(), "{a:?}");
        assert_eq!(
            (a.averaged_test_loss, a.averaged_test_accuracy),
            (b.averaged_test_loss, b.averaged_test_accuracy)
        );
    }
    let csv = std::fs::read_to_string(parted.join("metrics.csv")).unwrap();
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with(",hessian_trace,averaged_test_loss,averaged_test_accuracy"),
        "{csv}"
    );
    let latest =
        hftrain::store::checkpoint::Checkpoint::load(&parted.join("checkpoints/latest")).unwrap();
    let stored = latest.average.expect("the checkpoint keeps the average");
    let average = full.average.clone().unwrap();
    assert_eq!(stored.values, average, "the average differs after resume");
    assert_ne!(average, full.params, "the average is the live parameters");

    // The averaged weights' statistics, recomputed independently.
    let data = hftrain::session::load_training_data(&config.data).unwrap();
    let network = hftrain::model::Network::new(&config.model, data.train.classes.len()).unwrap();
    let device = Device::flex();
    let plan = hftrain::data::batcher::EpochPlan::new(
        config.seed,
        config.train.epochs - 1,
        data.train.len(),
        config.train.batch_size,
    );
    let transform = hftrain::data::batcher::Transform::eval(&config.data);
    let average = hftrain::params::from_host(average, &device);
    let live_buffers = hftrain::params::from_host(full.buffers.clone(), &device);
    let recomputed = hftrain::bn_statistics::recompute(
        &network,
        &average,
        live_buffers.clone(),
        &data.train,
        &plan,
        hftrain::train::AVERAGE_BN_BATCHES,
        &transform,
        &device,
    );
    let average_buffers = full.average_buffers.clone().unwrap();
    assert_eq!(to_host(&recomputed), average_buffers);
    assert_ne!(average_buffers, full.buffers, "no statistics of their own");
    let evaluate = |buffers: &Tensor<1>| {
        hftrain::evaluation::evaluate(
            &network,
            &average,
            buffers,
            &data.test,
            config.train.eval_batch_size,
            &transform,
            &device,
        )
        .loss
    };
    let last = full.metrics.last().unwrap();
    assert_eq!(Some(evaluate(&recomputed)), last.averaged_test_loss);
    assert_ne!(
        Some(evaluate(&live_buffers)),
        last.averaged_test_loss,
        "the live weights' statistics give the same loss: the test shows nothing"
    );
}

/// A run without an average writes the metrics file it always did; one with an average
/// writes two more columns and reads back whole; `compare` judges by the better accuracy.
#[test]
fn averaged_columns_only_where_a_run_averages() {
    let row = |averaged: Option<f64>| metrics::EpochMetrics {
        epoch: 1,
        step: 10,
        lr: 0.1,
        train_loss: 1.5,
        train_accuracy: 0.4,
        test_loss: 1.6,
        test_accuracy: 0.35,
        epoch_seconds: 2.0,
        images_per_second: 100.0,
        sharpness: None,
        hessian_trace: None,
        averaged_test_loss: averaged.map(|a| 2.0 - a),
        averaged_test_accuracy: averaged,
    };
    let plain = metrics::to_csv(&[row(None)]);
    assert_eq!(
        plain,
        "epoch,step,lr,train_loss,train_accuracy,test_loss,test_accuracy,epoch_seconds,\
         images_per_second,sharpness,hessian_trace\n\
         1,10,1.000000e-1,1.500000,0.400000,1.600000,0.350000,2.000,100.000,,\n"
    );
    let dir = TempDir::new();
    let path = dir.path().join("metrics.csv");
    let averaged = row(Some(0.375));
    metrics::write(&path, std::slice::from_ref(&averaged)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with(",,1.625000,0.375000\n"), "{text}");
    assert_eq!(metrics::read(&path).unwrap(), vec![averaged.clone()]);
    assert_eq!(averaged.best_test_accuracy(), 0.375);
    assert_eq!(row(Some(0.25)).best_test_accuracy(), 0.35);
    let scalars = metrics::epoch_scalars(&averaged);
    assert!(
        scalars.contains(&("accuracy/test_averaged", 0.375)),
        "{scalars:?}"
    );
}

// ---- Hessian-free's decaying Newton step ----

/// `f(x) = sum(a x^2) / 2 - b^T x` with a diagonal `a`.
struct Diagonal {
    a: Tensor<1>,
    b: Tensor<1>,
}

struct Scale(Tensor<1>);

impl LinearOperator for Scale {
    fn apply(&self, v: &Tensor<1>) -> Tensor<1> {
        v.clone() * self.0.clone()
    }
}

impl Diagonal {
    fn gradient(&self, x: &Tensor<1>) -> Tensor<1> {
        x.clone() * self.a.clone() - self.b.clone()
    }
}

impl Problem for Diagonal {
    fn value(&self, x: &Tensor<1>) -> f64 {
        (x.clone() * (x.clone() * self.a.clone()).mul_scalar(0.5) - x.clone() * self.b.clone())
            .sum()
            .into_scalar::<f64>()
    }

    fn curvature(&self, _params: &Tensor<1>) -> Box<dyn LinearOperator + '_> {
        Box::new(Scale(self.a.clone()))
    }
}

/// The same step from the same state, multiplied by 1 and by 0.25: the second moves the
/// parameters a quarter as far along the same direction, and reports that step length.
#[test]
fn step_multiplier_scales_the_accepted_hessian_free_step() {
    let d = Device::flex();
    let n = 16;
    let a = random_tensor(3, [n], &d).abs().add_scalar(0.5);
    let problem = Diagonal {
        a,
        b: random_tensor(4, [n], &d),
    };
    let x = random_tensor(5, [n], &d);
    let settings = HessianFreeConfig {
        initial_damping: 1e-2,
        ..HessianFreeConfig::default()
    };
    let step = |multiplier: f64| {
        HessianFree::new(&settings, n)
            .scaled_step_from(
                &problem,
                &x,
                problem.value(&x),
                &problem.gradient(&x),
                None,
                multiplier,
            )
            .unwrap()
    };
    let (whole, full_report) = step(1.0);
    let (quarter, quarter_report) = step(0.25);
    assert!(full_report.accepted && quarter_report.accepted);
    assert_eq!(quarter_report.multiplier, 0.25);
    assert!(
        (quarter_report.step_size - 0.25 * full_report.step_size).abs() < 1e-12,
        "{} vs {}",
        quarter_report.step_size,
        full_report.step_size
    );
    let moved = |to: &Tensor<1>| to.clone() - x.clone();
    let err = crate::common::relative_error(&moved(&quarter), &moved(&whole).mul_scalar(0.25));
    assert!(err < 1e-5, "the quarter step is off by {err}");
    assert!(quarter_report.summary().contains("scheduled"));
    assert!(!full_report.summary().contains("scheduled"));
}

/// In training, `step_schedule` hands the schedule's value to the step: a one-cycle schedule
/// without warm-up ends at 1/T of the peak on the run's last of T steps, and every step of
/// `steps.csv` is at most the schedule's value there (the line search's step is at most 1).
#[test]
fn step_schedule_decays_hessian_free_steps_in_a_run() {
    let data = synthetic_binary();
    let mut config = small_config(&data, "flex");
    config.data.train_limit = 100;
    config.data.test_limit = 50;
    config.train.epochs = 2;
    let hf = crate::common::use_hessian_free(&mut config);
    hf.curvature_batch_size = 20;
    hf.cg_max_iterations = 5;
    hf.step_schedule = true;
    config.schedule.kind = hftrain::config::ScheduleKind::OneCycle;
    config.schedule.warmup_epochs = 0.0;
    config.schedule.final_lr_fraction = 0.0;
    config.validate().unwrap();
    let dir = TempDir::new();
    let run = train(&config, dir.path(), None, None).unwrap();
    let total = run.position.global_step;
    let schedule = hftrain::optim::schedule::Schedule::new(
        1.0,
        &config.schedule,
        &[total / 2, total - total / 2],
    );
    let steps = std::fs::read_to_string(dir.path().join("steps.csv")).unwrap();
    let column = crate::common::hessian_free_step_column("step_size");
    let mut rows = 0;
    for line in steps.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let step: usize = fields[0].parse().unwrap();
        let size: f64 = fields[column].parse().unwrap();
        let most = schedule.lr(step - 1);
        assert!(
            size <= most + 1e-6,
            "step {step}: {size} above the schedule's {most}"
        );
        rows += 1;
    }
    assert_eq!(rows, total);
    assert!((schedule.lr(total - 1) - 1.0 / total as f64).abs() < 1e-12);
    let last = run.metrics.last().unwrap();
    assert!(last.lr <= 1.0 / total as f64 + 1e-9, "{}", last.lr);
}

fn load(text: &str) -> anyhow::Result<Config> {
    let mut config = Config::parse(text)?;
    config.name = "averaging".into();
    config.validate()?;
    Ok(config)
}

#[test]
fn averaging_and_step_schedule_settings_are_checked() {
    let ema = load("[train]\naverage = { kind = \"ema\", decay = 0.99 }\n").unwrap();
    assert_eq!(ema.train.average, Some(AverageConfig::Ema { decay: 0.99 }));
    // Written back and read again (config.toml, checkpoints).
    assert_eq!(Config::parse(&ema.to_toml()).unwrap(), ema);
    assert!(!Config::parse("").unwrap().to_toml().contains("average"));
    assert_error(
        load("[train]\naverage = { kind = \"ema\", decay = 1.0 }\n"),
        &["train.average.decay = 1", "expected a number in (0, 1)"],
    );
    assert_error(load("[train]\naverage = { kind = \"ema\" }\n"), &["decay"]);
    assert_error(
        load("[train]\naverage = { kind = \"swa\" }\n"),
        &["swa", "ema", "tail"],
    );
    assert_error(
        load("[train]\naverage = { kind = \"tail\", start_epoch = 3, decay = 0.9 }\n"),
        &["decay"],
    );
    assert_error(
        load("[train]\nepochs = 4\naverage = { kind = \"tail\", start_epoch = 5 }\n"),
        &["train.average.start_epoch = 5", "train.epochs = 4"],
    );
    assert_error(
        load("[train]\naverage = { kind = \"tail\", start_epoch = 0 }\n"),
        &["train.average.start_epoch = 0"],
    );
    let hf = "[optimizer]\nkind = \"hessian-free\"\n[schedule]\nkind = \"cosine\"\n";
    assert_error(
        load(hf),
        &["[schedule]", "optimizer.hessian_free.step_schedule = true"],
    );
    let scheduled = load(&format!(
        "{hf}[optimizer.hessian_free]\nstep_schedule = true\n"
    ))
    .unwrap();
    assert!(scheduled.optimizer.hessian_free().unwrap().step_schedule);
    assert_eq!(Config::parse(&scheduled.to_toml()).unwrap(), scheduled);
    assert!(
        !load("[optimizer]\nkind = \"hessian-free\"\n")
            .unwrap()
            .to_toml()
            .contains("step_schedule"),
        "off, the setting is not written (configs stay as they were)"
    );
    assert_error(
        load(
            "[optimizer]\nkind = \"hessian-free\"\n[optimizer.hessian_free]\nstep_schedule = \"yes\"\n",
        ),
        &["step_schedule"],
    );
    // SGD's schedule message does not mention Hessian-free's setting.
    assert!(load("[schedule]\nkind = \"cosine\"\n").is_ok());
}
