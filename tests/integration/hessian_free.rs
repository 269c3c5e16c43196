//! Truncated CG on known systems, and Hessian-free on a convex problem of generated images
//! (f64, in the process `curvature::f64_tests_pass_in_their_own_process` starts).

use burn::prelude::*;
use hftrain::config::{HessianFreeConfig, ModelConfig, StageConfig};
use hftrain::curvature::{
    Batch, BatchObjective, CurvatureKind, CurvatureSampling, NetworkObjective,
};
use hftrain::data::batcher::{HostBatch, Transform};
use hftrain::data::{Source, Split};
use hftrain::model::Network;
use hftrain::optim::cg::{self, CgSettings, CgStop, LinearOperator};
use hftrain::optim::hessian_free::{self, HessianFree, damping};
use hftrain::optim::{Optimizer, Problem};
use hftrain::params::from_host;

use crate::common::{flex_f64, random_tensor, relative_error, synthetic_binary};

/// A dense symmetric matrix as a curvature operator.
struct Dense(Tensor<2>);

impl LinearOperator for Dense {
    fn apply(&self, v: &Tensor<1>) -> Tensor<1> {
        let n = v.dims()[0];
        self.0
            .clone()
            .matmul(v.clone().reshape([n, 1]))
            .reshape([n])
    }
}

/// `Q diag(eigenvalues) Q^T` for a random orthogonal Q (Householder reflection of a random
/// vector, so the spectrum is exactly the one given).
pub(crate) fn matrix_with_spectrum(eigenvalues: &[f64], seed: u64, d: &Device) -> Tensor<2> {
    let n = eigenvalues.len();
    let u = random_tensor(seed, [n], d);
    let u = u
        .clone()
        .div_scalar(u.clone().powi_scalar(2).sum().into_scalar::<f64>().sqrt());
    let q = Tensor::<2>::eye(n, d)
        - u.clone()
            .reshape([n, 1])
            .matmul(u.reshape([1, n]))
            .mul_scalar(2.0);
    let diag = from_host(eigenvalues.iter().map(|&e| e as f32).collect(), d);
    q.clone().mul(diag.reshape([1, n])).matmul(q.transpose())
}

fn tight() -> CgSettings {
    CgSettings {
        max_iterations: 200,
        tolerance: 1e-30,
        residual_tolerance: 1e-12,
        ..CgSettings::default()
    }
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
        println!(
            "measured: CG SPD with {distinct} distinct eigenvalues: {} iterations ({}), residual {residual:.1e}",
            result.iterations,
            result.stop.label()
        );
        assert_eq!(result.stop, CgStop::Converged);
        assert_eq!(
            result.iterations, distinct,
            "CG needs one iteration per distinct eigenvalue"
        );
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
    let result = cg::solve(
        &Dense(a.clone()),
        damping,
        &b,
        None,
        Some(&cg::Diagonal(m.clone())),
        &tight(),
    );
    let expected = b.clone() / m.clone();
    let err = relative_error(&result.solution, &expected);
    println!(
        "measured: PCG, exact diagonal preconditioner: {} iteration(s), error {err:.1e}",
        result.iterations
    );
    assert_eq!(result.iterations, 1);
    assert!(err < 1e-12);
    // Without it, many more.
    let plain = cg::solve(&Dense(a.clone()), damping, &b, None, None, &tight());
    assert!(
        plain.iterations > 5,
        "plain CG took {} iterations",
        plain.iterations
    );
    assert!(relative_error(&plain.solution, &expected) < 1e-9);
    // Warm-started at the solution: nothing left to do, and the model value is the minimum
    // -b^T x / 2.
    let warm = cg::solve(
        &Dense(a),
        damping,
        &b,
        Some(expected.clone()),
        None,
        &tight(),
    );
    let minimum = -0.5 * (b * expected).sum().into_scalar::<f64>();
    assert_eq!(warm.iterations, 0, "warm start at the solution");
    assert!((warm.model_value - minimum).abs() < 1e-12 * minimum.abs());
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_cg_stops_on_negative_curvature_with_the_last_safe_iterate() {
    let d = flex_f64();
    let eigenvalues: Vec<f64> = (0..20)
        .map(|i| if i == 7 { -2.0 } else { 1.0 + i as f64 })
        .collect();
    let a = matrix_with_spectrum(&eigenvalues, 8, &d);
    let b = random_tensor(9, [20], &d);
    let result = cg::solve(&Dense(a), 0.0, &b, None, None, &tight());
    println!(
        "measured: CG on an indefinite system: stopped after {} iterations ({})",
        result.iterations,
        result.stop.label()
    );
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
    let eigenvalues: Vec<f64> = (0..n)
        .map(|i| 10f64.powf(4.0 * i as f64 / n as f64))
        .collect();
    let a = matrix_with_spectrum(&eigenvalues, 10, &d);
    let b = random_tensor(11, [n], &d);
    let settings = CgSettings {
        max_iterations: 250,
        tolerance: 5e-4,
        ..CgSettings::default()
    };
    let result = cg::solve(&Dense(a), 0.0, &b, None, None, &settings);
    let phi = &result.model_values;
    let holds = |i: usize| {
        let k = 10usize.max(i / 10);
        i > k && phi[i] < 0.0 && (phi[i] - phi[i - k]) / phi[i] < k as f64 * 5e-4
    };
    println!(
        "measured: Martens' rule stopped CG at iteration {} of at most 250",
        result.iterations
    );
    assert_eq!(result.stop, CgStop::Progress);
    assert!(holds(result.iterations));
    assert!(
        (1..result.iterations).all(|i| !holds(i)),
        "the rule held earlier"
    );
    // Kept iterates for backtracking: increasing, geometrically spaced, ending at the solution.
    let kept: Vec<usize> = result.iterates.iter().map(|it| it.iteration).collect();
    assert!(kept.windows(2).all(|w| w[1] > w[0]), "{kept:?}");
    assert!(kept.len() < result.iterations / 2 + 3, "{kept:?}");
    assert_eq!(*kept.last().unwrap(), result.iterations);
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_hessian_free_solves_l2_softmax_regression_on_generated_images() {
    let d = flex_f64();
    let dir = synthetic_binary();
    let source = Source::detect(&dir).unwrap();
    let train = source.load(Split::Train, 300).unwrap();
    let config = hftrain::config::DataConfig::default();
    let indices: Vec<usize> = (0..train.len()).collect();
    let host = HostBatch::assemble(&train, &indices, &Transform::eval(&config), None);
    let (images, labels) = host.to_device(&d);
    let batch = Batch { images, labels };

    let model = ModelConfig {
        stages: vec![StageConfig::new(&["flatten"])],
        logit_scale: 1.0,
    };
    let network = Network::new(&model, 10).unwrap();
    let (mut params, buffers) = network.init(0, &d);
    let objective = NetworkObjective::new(&network, 0.0, 1e-2, &d);
    let settings = HessianFreeConfig {
        cg_max_iterations: 100,
        ..HessianFreeConfig::default()
    };
    let mut hf = HessianFree::new(&settings, network.params.total());
    let sampling = CurvatureSampling {
        kind: CurvatureKind::GaussNewton,
        curvature_batch_size: usize::MAX,
        backtracking_batch_size: 0,
    };
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
        // Through the interface the training loop uses: the optimizer asks the batch's
        // objective for its gradient and curvature products.
        let on_batch = BatchObjective::new(&objective, &buffers, batch.clone(), sampling);
        let step = hf.step(&on_batch, &params, 0.0).unwrap();
        let report = step
            .info
            .details::<hftrain::optim::StepReport>()
            .expect("Hessian-free reports every step")
            .clone();
        let next = step.params;
        println!(
            "measured: HF step {:>2}: f {:.8} -> {:.8}, |g|/|g0| {ratio:.2e}, lambda {:.2e}, cg {} ({}), rho {:.3}",
            steps + 1,
            report.value_before,
            report.value_after,
            report.damping_used,
            report.cg_iterations,
            report.cg_stop.label(),
            report.rho
        );
        assert!(
            report.value_after <= report.value_before,
            "a step raised the objective"
        );
        params = next;
        steps += 1;
    }
    println!(
        "measured: HF on L2 softmax regression (300 images): |g| fell to {ratio:.1e} of its start in {steps} steps"
    );
    assert!(
        ratio < 1e-4,
        "after {steps} steps the gradient norm is still {ratio:.2e} of its start"
    );
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_preconditioner_diagonal_is_the_mean_squared_per_example_gradient_for_linear_layers() {
    let d = flex_f64();
    let model = ModelConfig {
        stages: vec![StageConfig::new(&["flatten"])],
        logit_scale: 1.0,
    };
    let network = Network::new(&model, 10).unwrap();
    let (params, _) = network.init(4, &d);
    let n = 5;
    let images = random_tensor(8, [n, 3, 32, 32], &d);
    let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![3i64, 1, 4, 1, 5], [n]), &d);
    let batch = Batch {
        images: images.clone(),
        labels: labels.clone(),
    };
    let objective = NetworkObjective::new(&network, 0.0, 0.0, &d);
    let squared = objective
        .gradient(&params, &batch, true)
        .squared_gradients
        .unwrap();
    let mut expected = params.zeros_like();
    for i in 0..n {
        let one = Batch {
            images: images.clone().slice(i..i + 1),
            labels: labels.clone().slice(i..i + 1),
        };
        expected = expected
            + objective
                .gradient(&params, &one, false)
                .gradient
                .powi_scalar(2);
    }
    let err = relative_error(&squared, &expected.div_scalar(n as f64));
    println!(
        "measured: preconditioner diagonal vs per-example squared gradients (softmax regression): {err:.1e}"
    );
    assert!(err < 1e-12, "off by {err}");
}

// ---- the optimizer on problems without a network (f32, Burn's CPU backend) ----

/// `f(x) = x^T A x / 2 - b^T x`, or NaN everywhere but at the start when `poisoned`.
struct Quadratic {
    a: Tensor<2>,
    b: Tensor<1>,
    poisoned: bool,
}

impl Quadratic {
    fn value_at(&self, x: &Tensor<1>) -> f64 {
        let ax = Dense(self.a.clone()).apply(x);
        (x.clone() * (ax.mul_scalar(0.5) - self.b.clone()))
            .sum()
            .into_scalar::<f64>()
    }

    fn gradient(&self, x: &Tensor<1>) -> Tensor<1> {
        Dense(self.a.clone()).apply(x) - self.b.clone()
    }
}

impl Problem for Quadratic {
    fn value(&self, params: &Tensor<1>) -> f64 {
        if self.poisoned {
            f64::NAN
        } else {
            self.value_at(params)
        }
    }

    fn curvature(&self, _params: &Tensor<1>) -> Box<dyn LinearOperator + '_> {
        Box::new(Dense(self.a.clone()))
    }
}

#[test]
fn hessian_free_minimises_a_quadratic_with_rho_near_one() {
    let d = Device::flex();
    let n = 12;
    let eigenvalues: Vec<f64> = (0..n).map(|i| 0.5 + i as f64).collect();
    let problem = Quadratic {
        a: matrix_with_spectrum(&eigenvalues, 1, &d),
        b: random_tensor(2, [n], &d),
        poisoned: false,
    };
    let settings = HessianFreeConfig {
        initial_damping: 1e-3,
        ..HessianFreeConfig::default()
    };
    let mut hf = HessianFree::new(&settings, n);
    let mut x = Tensor::<1>::zeros([n], &d);
    let g0 = problem
        .gradient(&x)
        .powi_scalar(2)
        .sum()
        .into_scalar::<f64>()
        .sqrt();
    for step in 0..3 {
        let (next, report) = hf
            .step_from(
                &problem,
                &x,
                problem.value_at(&x),
                &problem.gradient(&x),
                None,
            )
            .unwrap();
        if step == 0 {
            // On an exact quadratic the actual change is the undamped model's; the damped
            // model predicts a little less: rho is just above 1.
            assert!(report.accepted, "step {step}: {report:?}");
            assert!((1.0..1.01).contains(&report.rho), "rho {}", report.rho);
            assert!(
                report.damping < 1e-3,
                "rho > 3/4 lowers lambda: {}",
                report.damping
            );
        } else if !report.accepted {
            // Once the first step has solved the system to f32 precision, what is left to
            // gain is below what f32 resolves in f: a step that does not lower f is then
            // rightly rejected. Anything the arithmetic can resolve must be taken.
            let resolution = f32_resolution_of_value(&problem, &x);
            assert!(
                report.predicted.abs() <= resolution,
                "step {step} rejected with a resolvable predicted change {:.2e} (f32 resolves {resolution:.2e}): {report:?}",
                report.predicted
            );
        }
        x = next;
    }
    let g = problem
        .gradient(&x)
        .powi_scalar(2)
        .sum()
        .into_scalar::<f64>()
        .sqrt();
    assert!(g < 1e-4 * g0, "gradient norm {g} of {g0} after 3 steps");
}

/// How finely f32 arithmetic resolves `f(x) = x^T A x / 2 - b^T x`: its rounding error, a few
/// units of f32's epsilon per term of the sums (n terms, the matrix product's n each) times
/// the terms' magnitude. Derived from the precision and the problem's scale, so it holds on
/// every CPU whatever order its SIMD path adds in.
fn f32_resolution_of_value(problem: &Quadratic, x: &Tensor<1>) -> f64 {
    let n = x.dims()[0] as f64;
    let abs_ax = Dense(problem.a.clone().abs()).apply(&x.clone().abs());
    let magnitude = (x.clone().abs() * (abs_ax.mul_scalar(0.5) + problem.b.clone().abs()))
        .sum()
        .into_scalar::<f64>();
    4.0 * 2.0 * n * f32::EPSILON as f64 * magnitude
}

#[test]
fn hessian_free_rejects_non_finite_steps_raises_damping_and_then_stops() {
    let d = Device::flex();
    let n = 6;
    let eigenvalues: Vec<f64> = (0..n).map(|i| 1.0 + i as f64).collect();
    let problem = Quadratic {
        a: matrix_with_spectrum(&eigenvalues, 3, &d),
        b: random_tensor(4, [n], &d),
        poisoned: true,
    };
    let settings = HessianFreeConfig {
        initial_damping: 1.0,
        max_rejected_steps: 3,
        ..HessianFreeConfig::default()
    };
    let mut hf = HessianFree::new(&settings, n);
    let x = random_tensor(5, [n], &d);
    let (value, gradient) = (problem.value_at(&x), problem.gradient(&x));
    for k in 1..=2 {
        let (next, report) = hf.step_from(&problem, &x, value, &gradient, None).unwrap();
        assert!(!report.accepted);
        assert_eq!(
            hftrain::params::to_host(&next),
            hftrain::params::to_host(&x),
            "a rejected step leaves the parameters"
        );
        let expected = 1.5f64.powi(k);
        assert!(
            (report.damping - expected).abs() < 1e-12,
            "lambda {} after {k} rejections",
            report.damping
        );
    }
    let error = format!(
        "{:#}",
        hf.step_from(&problem, &x, value, &gradient, None)
            .unwrap_err()
    );
    assert!(error.contains("rejected 3 steps in a row"), "{error}");
    // The objective itself not finite: a clear error at once.
    let error = format!(
        "{:#}",
        HessianFree::new(&settings, n)
            .step_from(&problem, &x, f64::NAN, &gradient, None)
            .unwrap_err()
    );
    assert!(error.contains("not finite"), "{error}");
}

/// A quadratic whose backtracking subset is another quadratic (its own linear term), counting
/// how often each objective is taken.
struct WithSubset {
    whole: Quadratic,
    subset: Quadratic,
    whole_calls: std::cell::Cell<usize>,
    subset_calls: std::cell::Cell<usize>,
}

impl Problem for WithSubset {
    fn value(&self, params: &Tensor<1>) -> f64 {
        self.whole_calls.set(self.whole_calls.get() + 1);
        self.whole.value_at(params)
    }

    fn backtracking_value(&self, params: &Tensor<1>) -> Option<f64> {
        self.subset_calls.set(self.subset_calls.get() + 1);
        Some(self.subset.value_at(params))
    }

    fn curvature(&self, _params: &Tensor<1>) -> Box<dyn LinearOperator + '_> {
        Box::new(Dense(self.whole.a.clone()))
    }
}

/// `judge_on_backtracking_batch`: rho and the line search read the change of the subset's
/// objective across the step, and the whole batch's objective is never taken during a step;
/// without it the chosen iterate's whole-batch objective decides, as before.
#[test]
fn a_step_judged_on_the_backtracking_batch_reads_only_the_subset_objective() {
    let d = Device::flex();
    let n = 8;
    let eigenvalues: Vec<f64> = (0..n).map(|i| 1.0 + i as f64).collect();
    let a = matrix_with_spectrum(&eigenvalues, 6, &d);
    let b = random_tensor(7, [n], &d);
    let problem = || WithSubset {
        whole: Quadratic {
            a: a.clone(),
            b: b.clone(),
            poisoned: false,
        },
        subset: Quadratic {
            a: a.clone(),
            b: b.clone() + random_tensor(8, [n], &d).mul_scalar(0.3),
            poisoned: false,
        },
        whole_calls: Default::default(),
        subset_calls: Default::default(),
    };
    let x = random_tensor(9, [n], &d);
    for judge_on_subset in [true, false] {
        let problem = problem();
        let settings = HessianFreeConfig {
            judge_on_backtracking_batch: judge_on_subset,
            ..HessianFreeConfig::default()
        };
        let value = problem.whole.value_at(&x);
        let gradient = problem.whole.gradient(&x);
        let (next, report) = HessianFree::new(&settings, n)
            .step_from(&problem, &x, value, &gradient, None)
            .unwrap();
        assert!(report.accepted, "{report:?}");
        assert_eq!(report.step_size, 1.0, "{report:?}");
        let judged = match judge_on_subset {
            true => &problem.subset,
            false => &problem.whole,
        };
        let change = judged.value_at(&next) - judged.value_at(&x);
        println!(
            "measured: judged on subset {judge_on_subset}: actual {:.6e}, judged objective's change {change:.6e}, whole-batch values taken {}",
            report.actual,
            problem.whole_calls.get()
        );
        assert!(
            (report.actual - change).abs() <= 1e-5 * change.abs(),
            "rho's actual change {} is not the judged objective's {change}",
            report.actual
        );
        assert!((report.rho - report.actual / report.predicted).abs() < 1e-12);
        let estimate = report.value_before + report.actual;
        assert!(
            (report.value_after - estimate).abs() <= 1e-12 * estimate.abs(),
            "objective after {} against {estimate}",
            report.value_after
        );
        if judge_on_subset {
            assert_eq!(
                problem.whole_calls.get(),
                0,
                "the whole batch was evaluated"
            );
        } else {
            assert!(problem.whole_calls.get() >= 1);
        }
        assert!(problem.subset_calls.get() >= 1);
    }
}

// ---- Hessian-free's parts, each alone ----

#[test]
fn levenberg_marquardt_raises_on_poor_rho_lowers_on_good_and_stays_in_bounds() {
    use damping::Verdict;
    let c = HessianFreeConfig::default();
    assert_eq!(damping::verdict(0.1, false, &c), Verdict::Raise);
    assert_eq!(damping::verdict(f64::NAN, false, &c), Verdict::Raise);
    assert_eq!(damping::verdict(0.5, false, &c), Verdict::Keep);
    assert_eq!(damping::verdict(0.9, false, &c), Verdict::Lower);
    // Too small a step for f32 to judge: lowered whatever rho says.
    assert_eq!(damping::verdict(f64::NAN, true, &c), Verdict::Lower);
    assert_eq!(damping::apply(2.0, Verdict::Raise, &c), 3.0);
    assert_eq!(
        damping::apply(3.0, Verdict::Lower, &c),
        3.0 * c.damping_lower
    );
    assert_eq!(damping::apply(2.0, Verdict::Keep, &c), 2.0);
    assert_eq!(
        damping::apply(c.max_damping, Verdict::Raise, &c),
        c.max_damping
    );
    assert_eq!(
        damping::apply(c.min_damping, Verdict::Lower, &c),
        c.min_damping
    );
}

#[test]
fn backtracking_walks_back_from_the_last_iterate_while_values_fall() {
    let d = Device::flex();
    let iterate = |iteration: usize| cg::Iterate {
        iteration,
        x: Tensor::<1>::from_floats([iteration as f32], &d),
        model_value: -(iteration as f64),
    };
    let iterates: Vec<cg::Iterate> = (0..5).map(iterate).collect();
    // Values by iteration: the starting point is never compared; from the last (4) back,
    // 3 is lower, 2 lower still, 1 is not: 2 is chosen.
    let values = [0.0, 5.0, 1.0, 2.0, 3.0];
    let mut asked = Vec::new();
    let (chosen, value) = hessian_free::backtrack(&iterates, |it| {
        asked.push(it.iteration);
        values[it.iteration]
    })
    .unwrap();
    assert_eq!((chosen.iteration, value), (2, 1.0));
    assert_eq!(asked, [4, 3, 2, 1], "stops at the first rise");
    // The last iterate the lowest: no walk back beyond one comparison.
    let mut asked = 0;
    let (chosen, _) = hessian_free::backtrack(&iterates, |it| {
        asked += 1;
        -(it.iteration as f64)
    })
    .unwrap();
    assert_eq!((chosen.iteration, asked), (4, 2));
    // Only the starting point: nothing to choose.
    assert!(hessian_free::backtrack(&iterates[..1], |_| 0.0).is_none());
}

#[test]
fn armijo_takes_the_first_length_with_sufficient_decrease() {
    // f(alpha) = (alpha - 0.3)^2 along a direction with slope -0.6 at 0 (f0 = 0.09): alpha
    // = 1 gives 0.49 (no decrease), 0.5 gives 0.04 <= 0.09 - 0.1 * 0.5 * 0.6 = 0.06.
    let f = |alpha: f64| (alpha - 0.3) * (alpha - 0.3);
    let mut tried = Vec::new();
    let accepted = hessian_free::armijo(f(0.0), -0.6, f(1.0), 0.1, 0.5, 10, |alpha| {
        tried.push(alpha);
        f(alpha)
    });
    assert_eq!(accepted, Some((0.5, f(0.5))));
    assert_eq!(tried, [0.5]);
    // Not a descent direction, or never enough decrease: None.
    assert_eq!(
        hessian_free::armijo(0.0, 0.1, 0.0, 0.1, 0.5, 10, |_| 0.0),
        None
    );
    assert_eq!(
        hessian_free::armijo(0.0, -1.0, 1.0, 0.1, 0.5, 3, |_| 1.0),
        None
    );
}
