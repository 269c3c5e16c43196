//! `train.batch_growth`: Byrd et al.'s norm test against its closed form, and runs whose batch
//! grows by it (and resume bit-exact).

use burn::prelude::*;
use hftrain::batch_growth::{grown_batch_size, variance_test};
use hftrain::config::BatchGrowthConfig;
use hftrain::curvature::{Batch, NetworkObjective};

use crate::common::{TempDir, assert_error, flex_config, flex_f64};
use crate::curvature::problem;
use crate::training::assert_resume_is_bit_exact;

/// With two chunks the sample variance of their gradients is `|g1 - g2|^2 / 2`, so the
/// per-example variance the test reads is `c |g1 - g2|^2 / 2` for chunks of c images, and
/// the gradient is their mean; a batch of one chunk twice over has no variance at all.
#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_variance_test_equals_its_closed_form() {
    let d = flex_f64();
    let model = crate::curvature::networks().swap_remove(3).1;
    let p = problem(&model, 9, 12, &d);
    let objective = NetworkObjective::new(&p.network, 0.0, 5e-4, &d);
    let half = |range: std::ops::Range<usize>| Batch {
        images: p.batch.images.clone().slice(range.clone()),
        labels: p.batch.labels.clone().slice(range),
    };
    let g1 = objective.gradient(&p.params, &half(0..6), false).gradient;
    let g2 = objective.gradient(&p.params, &half(6..12), false).gradient;
    let difference = (g1.clone() - g2.clone())
        .powi_scalar(2)
        .sum()
        .into_scalar::<f64>();
    let mean = (g1 + g2).div_scalar(2.0);
    let mean_norm_sq = mean.powi_scalar(2).sum().into_scalar::<f64>();
    let theta = 0.5;
    let test = variance_test(&objective, &p.params, &p.batch, 2, theta);
    let variance = 6.0 * difference / 2.0;
    println!(
        "measured: variance test (f64, two chunks of 6): variance {:.6e} against {variance:.6e}, \
         ratio {:.3}, passing batch {}",
        test.variance,
        test.ratio(),
        test.passing_batch_size
    );
    assert!((test.variance - variance).abs() <= 1e-12 * variance);
    assert!((test.gradient_norm_sq - mean_norm_sq).abs() <= 1e-12 * mean_norm_sq);
    let passing = (variance / (theta * theta * mean_norm_sq)).ceil() as usize;
    assert_eq!(test.passing_batch_size, passing);
    assert_eq!(test.passes(), passing <= 12);
    let grown = grown_batch_size(&test, 12, 1000);
    assert_eq!(grown, if passing <= 12 { 12 } else { passing.min(1000) });

    let twice = Batch {
        images: Tensor::cat(vec![half(0..6).images, half(0..6).images], 0),
        labels: Tensor::cat(vec![half(0..6).labels, half(0..6).labels], 0),
    };
    let same = variance_test(&objective, &p.params, &twice, 2, theta);
    assert!(same.variance <= 1e-20, "{}", same.variance);
    assert!(same.passes());
}

fn growth_config() -> hftrain::config::Config {
    let mut config = flex_config(200, 100, 3);
    config.train.batch_size = 25;
    // A theta this small fails on any noisy gradient: the batch grows after epoch 1.
    config.train.batch_growth = Some(BatchGrowthConfig {
        theta: 0.05,
        max_batch_size: 100,
        chunks: 5,
    });
    config.validate().unwrap();
    config
}

/// A failed test grows the next epoch's batch (its step count shows it), up to
/// `max_batch_size`, and the grown batch survives a resume, to the bit.
#[test]
fn a_failed_variance_test_grows_the_batch_and_resumes_bit_exact() {
    let config = growth_config();
    let dir = TempDir::new();
    let (full, parted) = assert_resume_is_bit_exact(&config, dir.path());
    let steps: Vec<usize> = full.metrics.iter().map(|m| m.step).collect();
    assert_eq!(
        steps,
        [8, 10, 12],
        "200 images in batches of 25, then of 100"
    );
    let ckpt =
        hftrain::store::checkpoint::Checkpoint::load(&parted.join("checkpoints/latest")).unwrap();
    assert_eq!(ckpt.grown_batch_sizes, vec![[2, 100]]);
}

fn load(text: &str) -> anyhow::Result<hftrain::config::Config> {
    let mut config = hftrain::config::Config::parse(text)?;
    config.name = "growth".into();
    config.validate()?;
    Ok(config)
}

#[test]
fn batch_growth_settings_are_checked() {
    let read =
        load("[train]\nbatch_size = 100\nbatch_growth = { theta = 0.9, max_batch_size = 800 }\n")
            .unwrap();
    let growth = read.train.batch_growth.unwrap();
    assert_eq!(
        (growth.theta, growth.max_batch_size, growth.chunks),
        (0.9, 800, 8)
    );
    assert_eq!(
        hftrain::config::Config::parse(&read.to_toml()).unwrap(),
        read
    );
    assert_eq!(read.train.largest_batch_size(), 800);
    let with = |fields: &str| {
        load(&format!(
            "[train]\nbatch_size = 100\nbatch_growth = {{ {fields} }}\n"
        ))
    };
    assert_error(
        with("theta = 0.0, max_batch_size = 800"),
        &["train.batch_growth.theta = 0", "positive"],
    );
    assert_error(
        with("theta = 0.9, max_batch_size = 50"),
        &[
            "train.batch_growth.max_batch_size = 50",
            "train.batch_size (100)",
        ],
    );
    assert_error(
        with("theta = 0.9, max_batch_size = 800, chunks = 1"),
        &["train.batch_growth.chunks = 1"],
    );
    assert_error(with("theta = 0.9"), &["max_batch_size"]);
    assert_error(
        load(
            "[train]\nbatch_size = 100\nbatch_size_milestones = [[2, 200]]\n\
             batch_growth = { theta = 0.9, max_batch_size = 800 }\n",
        ),
        &[
            "train.batch_growth with train.batch_size_milestones",
            "not both",
        ],
    );
}
