//! Truncated CG on known systems, and Hessian-free on a convex problem of real images
//! (f64, in the process `curvature::f64_tests_pass_in_their_own_process` starts).

use burn::prelude::*;
use hftrain::config::{HeadKind, HessianFreeConfig, ModelConfig};
use hftrain::curvature::{Batch, BatchProblem, CurvatureKind, Objective};
use hftrain::data::batcher::{HostBatch, Transform};
use hftrain::data::{Source, Split};
use hftrain::model::Network;
use hftrain::optim::cg::{self, CgSettings, CgStop, LinearOperator};
use hftrain::optim::hessian_free::HessianFree;
use hftrain::params::from_host;

use crate::common::{cifar10_folder, flex_f64, random_tensor, relative_error};

/// A dense symmetric matrix as a curvature operator.
struct Dense(Tensor<2>);

impl LinearOperator for Dense {
    fn apply(&self, v: &Tensor<1>) -> Tensor<1> {
        let n = v.dims()[0];
        self.0.clone().matmul(v.clone().reshape([n, 1])).reshape([n])
    }
}

/// `Q diag(eigenvalues) Q^T` for a random orthogonal Q (Householder reflection of a random
/// vector, so the spectrum is exactly the one given).
fn matrix_with_spectrum(eigenvalues: &[f64], seed: u64, d: &Device) -> Tensor<2> {
    let n = eigenvalues.len();
    let u = random_tensor(seed, [n], d);
    let u = u.clone().div_scalar(u.clone().powi_scalar(2).sum().into_scalar::<f64>().sqrt());
    let q = Tensor::<2>::eye(n, d) - u.clone().reshape([n, 1]).matmul(u.reshape([1, n])).mul_scalar(2.0);
    let diag = from_host(eigenvalues.iter().map(|&e| e as f32).collect(), d);
    q.clone().mul(diag.reshape([1, n])).matmul(q.transpose())
}

fn tight() -> CgSettings {
    CgSettings { max_iterations: 200, tolerance: 1e-30, residual_tolerance: 1e-12, ..CgSettings::default() }
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_cg_solves_spd_systems_in_as_many_iterations_as_distinct_eigenvalues() {
    let d = flex_f64();
    for distinct in [1usize, 3, 5] {
        let eigenvalues: Vec<f64> = (0..40).map(|i| 1.0 + (i % distinct) as f64 * 2.5).collect();
        let a = matrix_with_spectrum(&eigenvalues, 3, &d);
        let b = random_tensor(4, [40], &d);
        let result = cg::solve(&Dense(a.clone()), 0.0, &b, None, None, &tight());
        let residual = relative_error(&Dense(a).apply(&result.solution), &b);
        println!("measured: CG SPD with {distinct} distinct eigenvalues: {} iterations ({}), residual {residual:.1e}", result.iterations, result.stop.label());
        assert_eq!(result.stop, CgStop::Converged);
        assert_eq!(result.iterations, distinct, "CG needs one iteration per distinct eigenvalue");
        assert!(residual < 1e-10);
    }
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_cg_with_damping_preconditioner_and_warm_start() {
    let d = flex_f64();
    let n = 30;
    let eigenvalues: Vec<f64> = (0..n).map(|i| 0.01 * 1.5f64.powi(i as i32)).collect();
    let diagonal = from_host(eigenvalues.iter().map(|&e| e as f32).collect(), &d);
    let a = Tensor::<2>::eye(n, &d).mul(diagonal.clone().reshape([1, n]));
    let b = random_tensor(5, [n], &d);
    let damping = 0.5;
    // (A + lambda I) x = b with the exact diagonal as preconditioner: one iteration.
    let m = diagonal.clone().add_scalar(damping);
    let result = cg::solve(&Dense(a.clone()), damping, &b, None, Some(&m), &tight());
    let expected = b.clone() / m.clone();
    let err = relative_error(&result.solution, &expected);
    println!("measured: PCG, exact diagonal preconditioner: {} iteration(s), error {err:.1e}", result.iterations);
    assert_eq!(result.iterations, 1);
    assert!(err < 1e-12);
    // Without it, many more.
    let plain = cg::solve(&Dense(a.clone()), damping, &b, None, None, &tight());
    assert!(plain.iterations > 5, "plain CG took {} iterations", plain.iterations);
    assert!(relative_error(&plain.solution, &expected) < 1e-9);
    // Warm-started at the solution: nothing left to do, and the model value is the minimum
    // -b^T x / 2.
    let warm = cg::solve(&Dense(a), damping, &b, Some(expected.clone()), None, &tight());
    let minimum = -0.5 * (b * expected).sum().into_scalar::<f64>();
    assert_eq!(warm.iterations, 0, "warm start at the solution");
    assert!((warm.model_value - minimum).abs() < 1e-12 * minimum.abs());
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_cg_stops_on_negative_curvature_with_the_last_safe_iterate() {
    let d = flex_f64();
    let eigenvalues: Vec<f64> = (0..20).map(|i| if i == 7 { -2.0 } else { 1.0 + i as f64 }).collect();
    let a = matrix_with_spectrum(&eigenvalues, 8, &d);
    let b = random_tensor(9, [20], &d);
    let result = cg::solve(&Dense(a), 0.0, &b, None, None, &tight());
    println!("measured: CG on an indefinite system: stopped after {} iterations ({})", result.iterations, result.stop.label());
    assert_eq!(result.stop, CgStop::NegativeCurvature);
    assert!(result.iterations < 20);
    // The kept solution is the last iterate before the bad direction: finite, and the model
    // decreased monotonically up to it.
    assert!(result.model_value.is_finite() && result.model_value < 0.0);
    for pair in result.model_values.windows(2) {
        assert!(pair[1] < pair[0], "model values {:?}", result.model_values);
    }
    assert_eq!(result.iterates.last().unwrap().iteration, result.iterations);
    // Damping that lifts the spectrum above zero removes the stop.
    let a = matrix_with_spectrum(&eigenvalues, 8, &d);
    let damped = cg::solve(&Dense(a), 2.5, &b, None, None, &tight());
    assert_eq!(damped.stop, CgStop::Converged);
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_cg_stops_on_martens_rule_at_the_first_iteration_it_holds() {
    let d = flex_f64();
    let n = 300;
    let eigenvalues: Vec<f64> = (0..n).map(|i| 10f64.powf(4.0 * i as f64 / n as f64)).collect();
    let a = matrix_with_spectrum(&eigenvalues, 10, &d);
    let b = random_tensor(11, [n], &d);
    let settings = CgSettings { max_iterations: 250, tolerance: 5e-4, ..CgSettings::default() };
    let result = cg::solve(&Dense(a), 0.0, &b, None, None, &settings);
    let phi = &result.model_values;
    let holds = |i: usize| {
        let k = 10usize.max(i / 10);
        i > k && phi[i] < 0.0 && (phi[i] - phi[i - k]) / phi[i] < k as f64 * 5e-4
    };
    println!("measured: Martens' rule stopped CG at iteration {} of at most 250", result.iterations);
    assert_eq!(result.stop, CgStop::Progress);
    assert!(holds(result.iterations));
    assert!((1..result.iterations).all(|i| !holds(i)), "the rule held earlier");
    // Kept iterates for backtracking: increasing, geometrically spaced, ending at the solution.
    let kept: Vec<usize> = result.iterates.iter().map(|it| it.iteration).collect();
    assert!(kept.windows(2).all(|w| w[1] > w[0]), "{kept:?}");
    assert!(kept.len() < result.iterations / 2 + 3, "{kept:?}");
    assert_eq!(*kept.last().unwrap(), result.iterations);
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_hessian_free_solves_l2_softmax_regression_on_real_images() {
    let d = flex_f64();
    let Some(dir) = cifar10_folder() else { return };
    let source = Source::detect(&dir).unwrap();
    let train = source.load(Split::Train, 300).unwrap();
    let config = hftrain::config::DataConfig::default();
    let indices: Vec<usize> = (0..train.len()).collect();
    let host = HostBatch::assemble(&train, &indices, &Transform::eval(&config), None);
    let (images, labels) = host.to_device(&d);
    let batch = Batch { images, labels };

    let model = ModelConfig { blocks: vec![], batch_norm: false, head: HeadKind::Flatten, logit_scale: 1.0 };
    let network = Network::new(&model, 10);
    let (mut params, _) = network.init(0, &d);
    let objective = Objective::new(&network, 0.0, 1e-2, &d);
    let settings = HessianFreeConfig { cg_max_iterations: 100, ..HessianFreeConfig::default() };
    let mut hf = HessianFree::new(&settings, network.params.total());
    let problem = BatchProblem { objective: &objective, batch: &batch, curvature_batch: batch.clone(), kind: CurvatureKind::GaussNewton };
    let norm = |g: &Tensor<1>| g.clone().powi_scalar(2).sum().into_scalar::<f64>().sqrt();
    let start = objective.gradient(&params, &batch, false);
    let g0 = norm(&start.gradient);
    let mut steps = 0;
    let mut ratio = 1.0;
    while steps < 40 {
        let out = objective.gradient(&params, &batch, false);
        ratio = norm(&out.gradient) / g0;
        if ratio < 1e-4 {
            break;
        }
        let value = out.value.into_scalar::<f64>();
        let (next, report) = hf.step(&problem, &params, value, &out.gradient, None).unwrap();
        println!(
            "measured: HF step {:>2}: f {:.8} -> {:.8}, |g|/|g0| {ratio:.2e}, lambda {:.2e}, cg {} ({}), rho {:.3}",
            steps + 1, report.value_before, report.value_after, report.damping_used, report.cg_iterations, report.cg_stop.label(), report.rho
        );
        assert!(report.value_after <= report.value_before, "a step raised the objective");
        params = next;
        steps += 1;
    }
    println!("measured: HF on L2 softmax regression (300 images): |g| fell to {ratio:.1e} of its start in {steps} steps");
    assert!(ratio < 1e-4, "after {steps} steps the gradient norm is still {ratio:.2e} of its start");
}
