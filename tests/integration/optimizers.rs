//! The update rules against hand computation, on a tiny vector (f32 on Burn's CPU backend).

use burn::prelude::*;
use hftrain::config::{AdamConfig, OptimizerConfig, ScheduleConfig, ScheduleKind, SgdConfig};
use hftrain::optim::Optimizer;
use hftrain::optim::adam::Adam;
use hftrain::optim::schedule::Schedule;
use hftrain::optim::sgd::Sgd;
use hftrain::params::{from_host, to_host};

fn device() -> Device {
    Device::flex()
}

fn close(a: &[f32], b: &[f64]) {
    for (x, y) in a.iter().zip(b) {
        assert!(
            (*x as f64 - y).abs() < 1e-6 * (1.0 + y.abs()),
            "{a:?} vs {b:?}"
        );
    }
}

#[test]
fn sgd_nesterov_with_decay_matches_pytorch_rule() {
    let d = device();
    let config = SgdConfig {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 0.1,
        ..Default::default()
    };
    let mask = from_host(vec![1.0, 0.0], &d);
    let mut opt = Sgd::new(&config, mask, 2);
    let (mut theta, g) = ([1.0f64, 2.0], [0.5f64, -1.0]);
    let mut velocity = [0.0f64; 2];
    let mut params = from_host(theta.map(|x| x as f32).to_vec(), &d);
    for step in 0..3 {
        params = opt.update(params, from_host(g.map(|x| x as f32).to_vec(), &d), 0.1);
        for i in 0..2 {
            let gi = g[i] + if i == 0 { 0.1 * theta[i] } else { 0.0 };
            velocity[i] = if step == 0 {
                gi
            } else {
                0.9 * velocity[i] + gi
            };
            theta[i] -= 0.1 * (gi + 0.9 * velocity[i]);
        }
        close(&to_host(&params), &theta);
    }
    // The state round-trips through its plain-data form.
    let state = opt.state();
    let mut fresh = Sgd::new(&config, from_host(vec![1.0, 0.0], &d), 2);
    fresh.load_state(&state, &d).unwrap();
    let a = to_host(&opt.update(params.clone(), from_host(vec![0.1, 0.2], &d), 0.1));
    let b = to_host(&fresh.update(params, from_host(vec![0.1, 0.2], &d), 0.1));
    assert_eq!(a, b);
}

#[test]
fn adam_and_adamw_match_their_rules() {
    let d = device();
    for decoupled in [false, true] {
        let config = AdamConfig {
            weight_decay: 0.01,
            ..Default::default()
        };
        let mut opt = Adam::new(&config, from_host(vec![1.0], &d), 1, decoupled);
        let mut params = from_host(vec![1.0], &d);
        let (mut theta, mut m, mut v) = (1.0f64, 0.0f64, 0.0f64);
        let lr = 0.01;
        for t in 1..=3 {
            let g0 = 0.3 * t as f64;
            params = opt.update(params, from_host(vec![g0 as f32], &d), lr);
            let mut g = g0;
            if decoupled {
                theta -= lr * 0.01 * theta
            } else {
                g += 0.01 * theta
            }
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            let mh = m / (1.0 - 0.9f64.powi(t));
            let vh = v / (1.0 - 0.999f64.powi(t));
            theta -= lr * mh / (vh.sqrt() + 1e-8);
            close(&to_host(&params), &[theta]);
        }
    }
}

#[test]
fn loading_another_optimizers_state_is_refused() {
    let d = device();
    let sgd = OptimizerConfig::default().build(from_host(vec![1.0], &d), 1);
    let mut adam = OptimizerConfig::new(AdamConfig::default()).build(from_host(vec![1.0], &d), 1);
    let message = format!("{:#}", adam.load_state(&sgd.state(), &d).unwrap_err());
    assert!(
        message.contains("`sgd`") && message.contains("`adam`"),
        "{message}"
    );
}

#[test]
fn schedule_warms_up_then_decays_to_the_final_fraction() {
    let config = ScheduleConfig {
        kind: ScheduleKind::Cosine,
        warmup_epochs: 1.0,
        initial_lr_fraction: 0.1,
        final_lr_fraction: 0.0,
    };
    let s = Schedule::new(1.0, &config, &[10; 5]);
    assert!((s.lr(0) - (0.1 + 0.9 * 0.1)).abs() < 1e-12);
    assert!(
        (s.lr(9) - 1.0).abs() < 1e-12,
        "the peak is reached at the end of the warm-up"
    );
    assert!((s.lr(30) - 0.5 * (1.0 + (std::f64::consts::PI * 0.5).cos())).abs() < 1e-12);
    assert!(s.lr(49) < 0.01 && s.lr(49) >= 0.0);
    let one_cycle = Schedule::new(
        2.0,
        &ScheduleConfig {
            kind: ScheduleKind::OneCycle,
            ..config.clone()
        },
        &[10; 5],
    );
    assert!(
        (one_cycle.lr(30) - 1.0).abs() < 1e-12,
        "linear decay halfway"
    );
    let constant = Schedule::new(
        2.0,
        &ScheduleConfig {
            kind: ScheduleKind::Constant,
            ..config
        },
        &[10; 5],
    );
    assert_eq!(constant.lr(45), 2.0);
}

/// Where `train.batch_size_milestones` gives later epochs fewer steps, the warm-up still lasts
/// its epochs and the decay ends at the run's last step.
#[test]
fn schedule_over_epochs_of_different_lengths() {
    let config = ScheduleConfig {
        kind: ScheduleKind::OneCycle,
        warmup_epochs: 1.5,
        initial_lr_fraction: 0.0,
        final_lr_fraction: 0.0,
    };
    // 10 steps, then 4, 4 and 2: the warm-up is 10 + 2 steps, the decay the other 8.
    let s = Schedule::new(1.0, &config, &[10, 4, 4, 2]);
    assert!((s.lr(10) - 11.0 / 12.0).abs() < 1e-12, "{}", s.lr(10));
    assert!((s.lr(11) - 1.0).abs() < 1e-12, "{}", s.lr(11));
    assert!((s.lr(12) - 1.0).abs() < 1e-12, "{}", s.lr(12));
    assert!((s.lr(16) - 0.5).abs() < 1e-12, "{}", s.lr(16));
    assert!((s.lr(19) - 1.0 / 8.0).abs() < 1e-12, "{}", s.lr(19));
    // A warm-up longer than the run ends with it.
    let long = Schedule::new(
        1.0,
        &ScheduleConfig {
            warmup_epochs: 9.0,
            ..config
        },
        &[10, 4],
    );
    assert!((long.lr(13) - 1.0).abs() < 1e-12);
}
