//! Kronecker-factored curvature (K-FAC for linear layers, KFC for convolutions): the factors
//! against the dense Gauss-Newton matrix, their damped inverse as CG's preconditioner, and
//! Hessian-free with it in a run that resumes bit-exact.

use burn::prelude::*;
use hftrain::config::{ModelConfig, Preconditioning, StageConfig};
use hftrain::curvature::NetworkObjective;
use hftrain::optim::cg::{self, CgSettings, LinearOperator, Preconditioner};
use hftrain::optim::kronecker::{Block, KroneckerEigen, KroneckerFactors};
use hftrain::params::from_host;

use crate::common::{TempDir, assert_error, flex_f64, random_tensor, relative_error};
use crate::curvature::problem;
use crate::hessian_free::matrix_with_spectrum;
use crate::training::assert_resume_is_bit_exact;

/// A network whose every weight layer sees one output position: three average pools take
/// the image to 4x4, a 4x4 convolution without padding to 1x1, then two linear layers.
fn one_position_network() -> ModelConfig {
    ModelConfig {
        stages: vec![StageConfig::new(&[
            "avg-pool",
            "avg-pool",
            "avg-pool",
            "conv 3 kernel=4 padding=none",
            "relu",
            "flatten",
            "linear 5",
            "relu",
        ])],
        logit_scale: 1.0,
    }
}

/// The dense Gauss-Newton matrix (row-major), one product per column.
fn dense_gauss_newton(
    objective: &NetworkObjective,
    params: &Tensor<1>,
    batch: &hftrain::curvature::Batch,
    d: &Device,
) -> (Vec<f64>, usize) {
    let n = params.dims()[0];
    let operator = objective.gauss_newton(params, batch);
    let mut dense = vec![0.0; n * n];
    for j in 0..n {
        let mut e = vec![0f32; n];
        e[j] = 1.0;
        let column: Vec<f64> = operator
            .product(&from_host(e, d))
            .to_data()
            .iter::<f64>()
            .collect();
        for (i, value) in column.into_iter().enumerate() {
            dense[i * n + j] = value;
        }
    }
    (dense, n)
}

fn host(t: &Tensor<2>) -> (Vec<f64>, usize) {
    (t.to_data().iter::<f64>().collect(), t.dims()[1])
}

/// For one example, K-FAC's and KFC's `inputs ⊗ outputs` is the layer's block of the
/// Gauss-Newton matrix exactly (the expectation over examples and positions has one term),
/// and the diagonal is the matrix's diagonal for every parameter.
#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_kronecker_factors_are_the_gauss_newton_blocks_for_one_example() {
    let d = flex_f64();
    let p = problem(&one_position_network(), 3, 1, &d);
    let objective = NetworkObjective::new(&p.network, 0.0, 0.0, &d);
    let factors = objective.kronecker_factors(&p.params, &p.batch);
    assert_eq!(factors.blocks.len(), 3, "conv, hidden linear, classifier");
    let (dense, n) = dense_gauss_newton(&objective, &p.params, &p.batch, &d);
    let mut worst = 0f64;
    let mut largest = 0f64;
    for block in &factors.blocks {
        let [out, inputs] = block.weight_dims();
        let (a, a_side) = host(&block.inputs);
        let (g, _) = host(&block.outputs);
        assert_eq!(a_side, inputs + block.bias.is_some() as usize);
        // The flat index of entry (o, i) of the layer's [out, in (+1)] matrix.
        let index = |o: usize, i: usize| match i < inputs {
            true => block.weight.start + o * inputs + i,
            false => block.bias.as_ref().unwrap().start + o,
        };
        for (o, i, o2, i2) in (0..out).flat_map(|o| {
            (0..a_side).flat_map(move |i| {
                (0..out).flat_map(move |o2| (0..a_side).map(move |i2| (o, i, o2, i2)))
            })
        }) {
            let expected = dense[index(o, i) * n + index(o2, i2)];
            let kronecker = g[o * out + o2] * a[i * a_side + i2];
            worst = worst.max((expected - kronecker).abs());
            largest = largest.max(expected.abs());
        }
    }
    let diagonal: Vec<f64> = factors.diagonal.to_data().iter::<f64>().collect();
    let diagonal_error = (0..n)
        .map(|i| (diagonal[i] - dense[i * n + i]).abs())
        .fold(0.0, f64::max);
    println!(
        "measured: Kronecker factors vs the dense Gauss-Newton blocks (one example, f64): \
         {worst:.1e} of {largest:.1e}; diagonal {diagonal_error:.1e}"
    );
    assert!(largest > 1e-3, "a block of zeros proves nothing: {largest}");
    assert!(worst <= 1e-12 * largest, "off by {worst} of {largest}");
    assert!(
        diagonal_error <= 1e-12 * largest,
        "diagonal off by {diagonal_error}"
    );
}

/// `inputs ⊗ outputs` on one block and a diagonal elsewhere, applied exactly.
struct KroneckerOperator<'a>(&'a KroneckerFactors);

impl LinearOperator for KroneckerOperator<'_> {
    fn apply(&self, v: &Tensor<1>) -> Tensor<1> {
        let factors = self.0;
        let block = &factors.blocks[0];
        let [out, inputs] = block.weight_dims();
        let weight = v.clone().slice(block.weight.clone()).reshape([out, inputs]);
        let bias = v
            .clone()
            .slice(block.bias.clone().unwrap())
            .reshape([out, 1]);
        let product = block
            .outputs
            .clone()
            .matmul(Tensor::cat(vec![weight, bias], 1))
            .matmul(block.inputs.clone());
        let rest_start = block.bias.as_ref().unwrap().end;
        let total = v.dims()[0];
        let rest =
            v.clone().slice(rest_start..total) * factors.diagonal.clone().slice(rest_start..total);
        Tensor::cat(
            vec![
                product
                    .clone()
                    .slice([0..out, 0..inputs])
                    .reshape([out * inputs]),
                product.slice([0..out, inputs..inputs + 1]).reshape([out]),
                rest,
            ],
            0,
        )
    }
}

/// An ill-conditioned system whose curvature is Kronecker-factored (condition number about
/// 1e6 with the damping) with a known solution: CG preconditioned by the factors' damped
/// inverse needs one iteration where plain CG needs dozens, and both find the solution.
#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_kronecker_preconditioned_cg_needs_fewer_iterations_on_an_ill_conditioned_system() {
    let d = flex_f64();
    let (out, inputs, rest) = (6, 8, 5);
    let spread = |n: usize, low: f64| -> Vec<f64> {
        (0..n)
            .map(|i| low.powf(1.0 - i as f64 / (n - 1) as f64))
            .collect()
    };
    let block = Block {
        weight: 0..out * inputs,
        bias: Some(out * inputs..out * inputs + out),
        inputs: matrix_with_spectrum(&spread(inputs + 1, 1e-3), 1, &d),
        outputs: matrix_with_spectrum(&spread(out, 1e-3), 2, &d),
    };
    let total = out * (inputs + 1) + rest;
    let mut diagonal = vec![0f32; total];
    for (k, value) in spread(rest, 1e-4).into_iter().enumerate() {
        diagonal[out * (inputs + 1) + k] = value as f32;
    }
    let factors = KroneckerFactors {
        blocks: vec![block],
        diagonal: from_host(diagonal, &d),
    };
    let damping = 1e-6;
    let operator = KroneckerOperator(&factors);
    let solution = random_tensor(7, [total], &d);
    let b = operator.apply(&solution) + solution.clone().mul_scalar(damping);
    let settings = CgSettings {
        max_iterations: 500,
        tolerance: 1e-30,
        residual_tolerance: 1e-10,
        ..CgSettings::default()
    };
    let plain = cg::solve(&operator, damping, &b, None, None, &settings);
    let eigen = KroneckerEigen::of(&factors);
    let preconditioner = eigen.preconditioner(damping);
    let preconditioned = cg::solve(
        &operator,
        damping,
        &b,
        None,
        Some(&preconditioner as &dyn Preconditioner),
        &settings,
    );
    let (plain_error, preconditioned_error) = (
        relative_error(&plain.solution, &solution),
        relative_error(&preconditioned.solution, &solution),
    );
    println!(
        "measured: Kronecker-preconditioned CG {} iteration(s) (error {preconditioned_error:.1e}) \
         against plain CG {} ({plain_error:.1e}) on a system of condition ~1e6",
        preconditioned.iterations, plain.iterations
    );
    assert!(
        preconditioned.iterations <= 2,
        "{}",
        preconditioned.iterations
    );
    assert!(
        plain.iterations >= 10 * preconditioned.iterations,
        "{}",
        plain.iterations
    );
    assert!(preconditioned_error < 1e-6, "{preconditioned_error}");
    // Applied to the operator's product, the preconditioner gives the vector back.
    let round_trip = preconditioner.apply(&b);
    assert!(relative_error(&round_trip, &solution) < 1e-8);
}

/// On a real network's Gauss-Newton matrix, where the factors only approximate it, the
/// preconditioner gets CG to 99% of the quadratic model's decrease in fewer iterations: what
/// truncated CG (Hessian-free stops it after tens of iterations) gains. (To a residual of
/// 1e-6 it may take more: the residual is then measured in the preconditioner's norm, and
/// the last digits of the solution are not what a truncated solve is after.)
#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_kronecker_preconditioner_shortens_cg_on_a_network() {
    let d = flex_f64();
    let model = crate::curvature::networks().swap_remove(3).1;
    let p = problem(&model, 5, 16, &d);
    let objective = NetworkObjective::new(&p.network, 0.0, 5e-4, &d);
    let operator = objective.gauss_newton(&p.params, &p.batch);
    let gradient = objective.gradient(&p.params, &p.batch, false).gradient;
    let damping = 1e-3;
    let settings = CgSettings {
        max_iterations: 400,
        tolerance: 1e-30,
        residual_tolerance: 1e-8,
        ..CgSettings::default()
    };
    let plain = cg::solve(&operator, damping, &gradient, None, None, &settings);
    let eigen = KroneckerEigen::of(&objective.kronecker_factors(&p.params, &p.batch));
    let preconditioner = eigen.preconditioner(damping + 5e-4);
    let preconditioned = cg::solve(
        &operator,
        damping,
        &gradient,
        None,
        Some(&preconditioner as &dyn Preconditioner),
        &settings,
    );
    // The model's minimum, as far as either solve got.
    let optimum = plain.model_value.min(preconditioned.model_value);
    let to_99_percent = |values: &[f64]| values.iter().position(|&phi| phi <= 0.99 * optimum);
    let (plain_k, preconditioned_k) = (
        to_99_percent(&plain.model_values),
        to_99_percent(&preconditioned.model_values),
    );
    println!(
        "measured: CG to 99% of the quadratic model's decrease on a small CNN's Gauss-Newton \
         matrix (16 examples, damping 1e-3): {plain_k:?} iterations plain, \
         {preconditioned_k:?} with the Kronecker preconditioner (model after 2 iterations: \
         {:.3} / {:.3} of the optimum)",
        plain.model_values[2] / optimum,
        preconditioned.model_values[2] / optimum
    );
    let (plain_k, preconditioned_k) = (plain_k.unwrap(), preconditioned_k.unwrap());
    assert!(
        preconditioned_k < plain_k,
        "{preconditioned_k} >= {plain_k}"
    );
}

/// Hessian-free with the Kronecker preconditioner, refreshed every 3 steps of the 4 an epoch
/// (so the resumed run must take the factors from the checkpoint), blended: trains, and
/// resumes bit-exact.
#[test]
fn kronecker_preconditioned_hessian_free_trains_and_resumes_bit_exact() {
    let data = crate::common::synthetic_binary();
    let mut config = crate::training::hessian_free_config(&data, "flex");
    config.train.epochs = 2;
    config.data.train_limit = 200;
    let hf = crate::common::hessian_free(&mut config);
    hf.preconditioner = Preconditioning::Kronecker;
    hf.kronecker_refresh_steps = 3;
    hf.kronecker_decay = 0.5;
    config.validate().unwrap();
    let dir = TempDir::new();
    let (full, parted) = assert_resume_is_bit_exact(&config, dir.path());
    let ckpt =
        hftrain::store::checkpoint::Checkpoint::load(&parted.join("checkpoints/latest")).unwrap();
    let factors = &ckpt.optimizer.vectors["kronecker_factors"];
    assert!(factors.iter().all(|v| v.is_finite()) && factors.iter().any(|&v| v != 0.0));
    assert!(ckpt.optimizer.scalars["kronecker"].is_object());
    let m = &full.metrics;
    assert!(m[1].train_loss < m[0].train_loss, "{m:?}");
}

fn load(text: &str) -> anyhow::Result<hftrain::config::Config> {
    let mut config = hftrain::config::Config::parse(text)?;
    config.name = "kronecker".into();
    config.validate()?;
    Ok(config)
}

#[test]
fn preconditioner_settings_are_checked_and_old_configs_still_read() {
    let hf = "[optimizer]\nkind = \"hessian-free\"\n[optimizer.hessian_free]\n";
    let read = |line: &str| {
        load(&format!("{hf}{line}\n"))
            .unwrap()
            .optimizer
            .hessian_free()
            .unwrap()
            .preconditioner
    };
    assert_eq!(read("preconditioner = false"), Preconditioning::None);
    assert_eq!(read("preconditioner = true"), Preconditioning::Diagonal);
    assert_eq!(
        read("preconditioner = \"kronecker\""),
        Preconditioning::Kronecker
    );
    let kronecker = load(&format!("{hf}preconditioner = \"kronecker\"\n")).unwrap();
    assert_eq!(
        hftrain::config::Config::parse(&kronecker.to_toml()).unwrap(),
        kronecker
    );
    assert_error(
        load(&format!("{hf}preconditioner = \"kfac\"\n")),
        &["kfac", "\"none\", \"diagonal\" or \"kronecker\""],
    );
    assert_error(
        load(&format!("{hf}kronecker_refresh_steps = 0\n")),
        &[
            "optimizer.hessian_free.kronecker_refresh_steps = 0",
            "at least 1",
        ],
    );
    assert_error(
        load(&format!("{hf}kronecker_decay = 1.0\n")),
        &["optimizer.hessian_free.kronecker_decay = 1", "[0, 1)"],
    );
}

/// K-FAC as an optimizer of its own, through the registry like any other: it lowers the
/// loss, and resumes bit-exact with its factors refreshed every 3 steps of the 4 an epoch.
#[test]
fn kfac_optimizer_trains_and_resumes_bit_exact() {
    let mut config = crate::common::flex_config(200, 100, 2);
    config.train.batch_size = 50;
    config.optimizer = hftrain::config::OptimizerConfig::new(hftrain::optim::kfac::KfacConfig {
        lr: 0.05,
        damping: 1e-3,
        curvature_batch_size: 25,
        refresh_steps: 3,
        ..Default::default()
    });
    config.validate().unwrap();
    let dir = TempDir::new();
    let (full, parted) = assert_resume_is_bit_exact(&config, dir.path());
    let m = &full.metrics;
    assert!(m[1].train_loss < m[0].train_loss, "{m:?}");
    let ckpt =
        hftrain::store::checkpoint::Checkpoint::load(&parted.join("checkpoints/latest")).unwrap();
    assert_eq!(ckpt.optimizer.kind, "kfac");
    assert!(ckpt.optimizer.vectors.contains_key("kronecker_factors"));
    assert!(ckpt.optimizer.vectors.contains_key("velocity"));
    assert_error(
        load(
            "[optimizer]\nkind = \"kfac\"\ndamping = 0.0\nrefresh_steps = 0\nfactor_decay = 1.0\n",
        ),
        &[
            "optimizer.damping = 0",
            "optimizer.refresh_steps = 0",
            "optimizer.factor_decay = 1",
        ],
    );
}
