//! `hftrain spectrum` and the estimators under it, checked where the truth is known: on a
//! network small enough (127 parameters) that the whole Hessian and Gauss-Newton matrix can
//! be built column by column from products (f64 on flex, in the f64 process of
//! `curvature::f64_tests_pass_in_their_own_process`) and solved by a dense Jacobi
//! eigen-solver written here, independent of the library's tridiagonal QL.

use std::sync::OnceLock;

use burn::prelude::*;

use hftrain::config::{ModelConfig, StageConfig};
use hftrain::curvature::{Batch, CurvatureKind, NetworkObjective};
use hftrain::model::Network;
use hftrain::optim::cg::LinearOperator;
use hftrain::params::{from_host, to_host};
use hftrain::spectrum::{
    Average, DenseOperator, Restricted, SharpnessSettings, SlqSettings, TopSettings,
    batch_operators, hutchinson, layer_blocks, rademacher, sharpness, slq, top_eigenpairs,
    tridiagonal,
};

use crate::common::{TempDir, flex_f64, random_tensor};

// ---- a dense symmetric eigen-solver of our own (cyclic Jacobi), for reference ----

/// Eigenvalues (increasing) of the symmetric `n x n` matrix `a` (row-major) by cyclic
/// Jacobi rotations: slow, simple, and accurate to rounding.
fn jacobi_eigenvalues(a: &[f64], n: usize) -> Vec<f64> {
    let mut a: Vec<f64> = (0..n * n)
        .map(|k| 0.5 * (a[k] + a[(k % n) * n + k / n]))
        .collect();
    let frobenius = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|p| (p + 1..n).map(move |q| (p, q)))
            .map(|(p, q)| a[p * n + q].powi(2))
            .sum();
        if off.sqrt() <= 1e-16 * frobenius {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    let mut values: Vec<f64> = (0..n).map(|i| a[i * n + i]).collect();
    values.sort_by(f64::total_cmp);
    values
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
}

// ---- the small network ----

/// conv (81, no bias) -> batch norm (6) -> GELU -> max-pool -> global average pool -> linear
/// (40): 127 parameters; GELU makes the Hessian differ from the Gauss-Newton matrix.
fn tiny_model() -> ModelConfig {
    ModelConfig {
        stages: vec![
            StageConfig::new(&["conv 3", "batch-norm", "gelu", "max-pool"]),
            StageConfig::new(&["global-avg-pool"]),
        ],
        logit_scale: 1.0,
    }
}

struct Problem {
    network: Network,
    params: Tensor<1>,
    batches: Vec<Batch>,
}

/// The network at seeded weights and two batches of four random images.
fn problem(d: &Device) -> Problem {
    let network = Network::new(&tiny_model(), 10).unwrap();
    let (params, _) = network.init(3, d);
    let batches = (0..2u64)
        .map(|b| {
            let n = 4;
            let labels: Vec<i64> = (0..n)
                .map(|i| ((i * 3 + b as usize * 5) % 10) as i64)
                .collect();
            Batch {
                images: random_tensor(40 + b, [n, 3, 32, 32], d),
                labels: Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), d),
            }
        })
        .collect();
    Problem {
        network,
        params,
        batches,
    }
}

fn kinds() -> [(CurvatureKind, &'static str); 2] {
    [
        (CurvatureKind::Hessian, "Hessian"),
        (CurvatureKind::GaussNewton, "Gauss-Newton"),
    ]
}

/// The operator's matrix, column j its product with the j-th unit vector (row-major; the
/// products are symmetric, so rows and columns are interchangeable up to the asymmetry the
/// first test measures).
fn dense_from_products(op: &dyn LinearOperator, n: usize, d: &Device) -> Vec<f64> {
    let mut columns = vec![0.0; n * n];
    for j in 0..n {
        let mut e = vec![0f32; n];
        e[j] = 1.0;
        let column: Vec<f64> = op.apply(&from_host(e, d)).to_data().iter::<f64>().collect();
        for i in 0..n {
            columns[i * n + j] = column[i];
        }
    }
    columns
}

/// The dense matrix of `kind`, averaged over the problem's batches, built once.
fn dense(kind: CurvatureKind, d: &Device) -> &'static Vec<f64> {
    static HESSIAN: OnceLock<Vec<f64>> = OnceLock::new();
    static GAUSS_NEWTON: OnceLock<Vec<f64>> = OnceLock::new();
    let cell = match kind {
        CurvatureKind::Hessian => &HESSIAN,
        CurvatureKind::GaussNewton => &GAUSS_NEWTON,
    };
    cell.get_or_init(|| {
        let p = problem(d);
        let objective = NetworkObjective::new(&p.network, 0.0, 0.0, d);
        let average = Average {
            parts: batch_operators(&objective, kind, &p.params, &p.batches),
        };
        dense_from_products(&average, p.network.params.total(), d)
    })
}

/// Runs `check` on each matrix of the small problem: its kind and name, its dense matrix
/// (`n x n`, row-major), and the operator of its products averaged over the batches.
fn for_each_matrix(d: &Device, mut check: impl FnMut(CurvatureKind, &str, &[f64], &Average)) {
    let p = problem(d);
    let objective = NetworkObjective::new(&p.network, 0.0, 0.0, d);
    for (kind, name) in kinds() {
        let average = Average {
            parts: batch_operators(&objective, kind, &p.params, &p.batches),
        };
        check(kind, name, dense(kind, d), &average);
    }
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_spectrum_dense_matrices_from_products_are_symmetric() {
    let d = flex_f64();
    let n = problem(&d).network.params.total();
    assert_eq!(n, 127, "the tiny network's parameter count");
    for (kind, name) in kinds() {
        let a = dense(kind, &d);
        let scale = a.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let asymmetry = (0..n)
            .flat_map(|i| (0..n).map(move |j| (i, j)))
            .map(|(i, j)| (a[i * n + j] - a[j * n + i]).abs())
            .fold(0.0, f64::max)
            / scale;
        let values = jacobi_eigenvalues(a, n);
        println!(
            "measured: spectrum dense {name:<12} ({n} products per batch): max |A - A^T| / max |A| \
             {asymmetry:.1e}; eigenvalues {:.4e} .. {:.4e}",
            values[0],
            values[n - 1]
        );
        assert!(asymmetry < 1e-12, "{name}: asymmetry {asymmetry}");
        if kind == CurvatureKind::GaussNewton {
            assert!(
                values[0] >= -1e-12 * values[n - 1],
                "Gauss-Newton has a negative eigenvalue {}",
                values[0]
            );
        } else {
            assert!(
                values[0] < 0.0,
                "this Hessian (GELU, random weights) is expected to be indefinite"
            );
        }
    }
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_spectrum_tridiagonal_ql_and_lanczos_on_a_plain_matrix() {
    let d = flex_f64();
    // A random symmetric tridiagonal matrix: QL against Jacobi on the same matrix dense.
    let n = 40;
    let mut rng = hftrain::support::rng::Rng::new(5);
    let diag: Vec<f64> = (0..n).map(|_| rng.next_f64() * 4.0 - 2.0).collect();
    let off: Vec<f64> = (0..n - 1).map(|_| rng.next_f64() * 2.0 - 1.0).collect();
    let mut full = vec![0.0; n * n];
    for i in 0..n {
        full[i * n + i] = diag[i];
        if i + 1 < n {
            full[i * n + i + 1] = off[i];
            full[(i + 1) * n + i] = off[i];
        }
    }
    let eig = tridiagonal::eigen(&diag, &off).unwrap();
    let reference = jacobi_eigenvalues(&full, n);
    let worst = eig
        .values
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    // The eigenvectors: T z = lambda z and unit length.
    let mut worst_vector = 0f64;
    for i in 0..n {
        for r in 0..n {
            let tz: f64 = (0..n).map(|c| full[r * n + c] * eig.vectors[c][i]).sum();
            worst_vector = worst_vector.max((tz - eig.values[i] * eig.vectors[r][i]).abs());
        }
    }
    println!(
        "measured: spectrum tridiagonal QL vs Jacobi (40 x 40): max eigenvalue gap {worst:.1e}, \
         max |Tz - lambda z| {worst_vector:.1e}"
    );
    assert!(worst < 1e-12 && worst_vector < 1e-12);

    // Lanczos on a dense matrix with a known spectrum: Q diag(lambda) Q^T with Q from the
    // Gram-Schmidt of random columns; clustered small eigenvalues, a few large ones.
    let n = 60;
    let lambdas: Vec<f64> = (0..n)
        .map(|i| {
            if i < 4 {
                50.0 - 7.0 * i as f64
            } else {
                (i as f64).sin()
            }
        })
        .collect();
    let mut q: Vec<Vec<f64>> = Vec::new();
    while q.len() < n {
        let mut v: Vec<f64> = (0..n).map(|_| rng.next_f64() - 0.5).collect();
        for _ in 0..2 {
            for u in &q {
                let c: f64 = u.iter().zip(&v).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(u).for_each(|(x, y)| *x -= c * y);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        q.push(v.into_iter().map(|x| x / norm).collect());
    }
    let matrix: Vec<f64> = (0..n * n)
        .map(|k| (0..n).map(|l| q[l][k / n] * lambdas[l] * q[l][k % n]).sum())
        .collect();
    let op = DenseOperator::new(matrix, n, &d);
    let top = top_eigenpairs(
        &op,
        &rademacher(n, 1, &[1], &d),
        n,
        &TopSettings {
            count: 4,
            max_steps: n,
            tolerance: 1e-10,
            explicit_residuals: true,
        },
    );
    let want = [50.0, 43.0, 36.0, 29.0];
    for (pair, want) in top.pairs.iter().zip(want) {
        let err = relative(pair.value, want);
        println!(
            "measured: spectrum Lanczos on a 60 x 60 matrix: {:.12} vs {want} (relative {err:.1e}), \
             residual {:.1e}, estimated {:.1e}, {} steps",
            pair.value, pair.residual, pair.estimated_residual, top.steps
        );
        assert!(err < 1e-10, "{} vs {want}", pair.value);
        assert!(pair.residual < 1e-8 * 50.0, "residual {}", pair.residual);
    }
    assert_eq!(top.pairs.len(), 4);
    assert!(
        top.steps < n,
        "converged before the dimension ({} steps)",
        top.steps
    );
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_spectrum_lanczos_top_k_equals_the_dense_eigenvalues() {
    let d = flex_f64();
    let n = problem(&d).network.params.total();
    for_each_matrix(&d, |kind, name, a, average| {
        let reference = jacobi_eigenvalues(a, n);
        let settings = TopSettings {
            count: 5,
            max_steps: n,
            tolerance: 1e-9,
            explicit_residuals: true,
        };
        let top = top_eigenpairs(average, &rademacher(n, 2, &[0], &d), n, &settings);
        assert_eq!(top.pairs.len(), 5);
        let scale = reference[n - 1].abs().max(reference[0].abs());
        let mut worst = 0f64;
        for (k, pair) in top.pairs.iter().enumerate() {
            let want = reference[n - 1 - k];
            let err = relative(pair.value, want);
            worst = worst.max(err);
            assert!(
                err < 1e-8,
                "{name} eigenvalue {k}: {} vs dense {want} ({err:.1e})",
                pair.value
            );
            // The residual is measured (one more product) and below the stated tolerance
            // (with room for the rounding of that product).
            assert!(
                pair.residual <= 2.0 * settings.tolerance * scale,
                "{name} eigenvalue {k}: residual {} above the tolerance",
                pair.residual
            );
        }
        println!(
            "measured: spectrum Lanczos top 5 of the {name:<12} vs dense Jacobi: worst relative \
             error {worst:.1e} after {} steps (of {n}), stop {}; residuals {:.1e} .. {:.1e}",
            top.steps,
            top.stop.label(),
            top.pairs
                .iter()
                .map(|p| p.residual)
                .fold(f64::INFINITY, f64::min),
            top.pairs.iter().map(|p| p.residual).fold(0.0, f64::max),
        );
        if kind == CurvatureKind::GaussNewton {
            assert!(top.pairs.iter().all(|p| p.value >= 0.0));
        }
    });
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_spectrum_hutchinson_lies_within_four_standard_errors() {
    let d = flex_f64();
    let n = problem(&d).network.params.total();
    for_each_matrix(&d, |_, name, a, average| {
        let exact: f64 = (0..n).map(|i| a[i * n + i]).sum();
        let samples = 40;
        let trace = hutchinson(average, samples, |i| rademacher(n, 9, &[i as u64], &d));
        let z = (trace.estimate - exact) / trace.standard_error;
        println!(
            "measured: spectrum Hutchinson {name:<12} {samples} samples: {:.5e} +- {:.2e} vs exact \
             trace {exact:.5e} ({z:+.2} standard errors)",
            trace.estimate, trace.standard_error
        );
        assert_eq!(trace.samples.len(), samples);
        assert!(trace.standard_error > 0.0);
        assert!(z.abs() < 4.0, "{name}: {z} standard errors off");
    });
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_spectrum_slq_density_integrates_to_one_and_matches_the_moments() {
    let d = flex_f64();
    let n = problem(&d).network.params.total();
    for_each_matrix(&d, |_, name, a, average| {
        let trace: f64 = (0..n).map(|i| a[i * n + i]).sum();
        let trace_of_square: f64 = a.iter().map(|x| x * x).sum();
        let runs = 30;
        let density = slq(
            average,
            n,
            &SlqSettings {
                runs,
                steps: 20,
                broadening: 0.01,
                grid_points: 2000,
            },
            |run| rademacher(n, 13, &[run as u64], &d),
        );
        use hftrain::spectrum::hutchinson::mean_and_standard_error;
        use hftrain::spectrum::slq::integrate;
        let mass = integrate(&density.grid, &density.density, |_| 1.0);
        let weights_sum = density
            .runs
            .iter()
            .map(|r| r.weights.iter().sum::<f64>())
            .fold(0.0f64, |m, s| m.max((s - 1.0).abs()));
        // The moments of the quadrature, run by run (exact for v^T C v and |C v|^2 of each
        // start vector), against trace(C)/n and trace(C^2)/n.
        let first: Vec<f64> = density.runs.iter().map(|r| r.integrate(|t| t)).collect();
        let second: Vec<f64> = density
            .runs
            .iter()
            .map(|r| r.integrate(|t| t * t))
            .collect();
        let (m1, se1) = mean_and_standard_error(&first);
        let (m2, se2) = mean_and_standard_error(&second);
        // Gauss quadrature of M >= 2 points is exact for t and t^2: each run's moments are
        // v^T C v / n and |C v|^2 / n of its start vector (|v|^2 = n), to rounding.
        let mut quadrature_gap = 0f64;
        for (run, (f, s)) in first.iter().zip(&second).enumerate() {
            let v: Vec<f64> = to_host(&rademacher(n, 13, &[run as u64], &d))
                .into_iter()
                .map(f64::from)
                .collect();
            let av: Vec<f64> = (0..n)
                .map(|i| (0..n).map(|j| a[i * n + j] * v[j]).sum())
                .collect();
            let vav = v.iter().zip(&av).map(|(x, y)| x * y).sum::<f64>() / n as f64;
            let avav = av.iter().map(|y| y * y).sum::<f64>() / n as f64;
            quadrature_gap = quadrature_gap
                .max((f - vav).abs() / avav.sqrt())
                .max(relative(*s, avav));
        }
        let z1 = (m1 - trace / n as f64) / se1;
        let z2 = (m2 - trace_of_square / n as f64) / se2;
        // The broadened density's own moments on the grid: the quadrature's, plus sigma^2
        // for the second.
        let grid_m1 = integrate(&density.grid, &density.density, |t| t);
        let grid_m2 = integrate(&density.grid, &density.density, |t| t * t);
        let sigma = density.sigma;
        println!(
            "measured: spectrum SLQ {name:<12} {runs} runs x 20 steps: mass {mass:.9}; first moment \
             {m1:.5e} vs trace/n {:.5e} ({z1:+.2} s.e.); second {m2:.5e} vs trace(C^2)/n {:.5e} \
             ({z2:+.2} s.e.); quadrature vs v'Cv/n, |Cv|^2/n {quadrature_gap:.1e}; grid moments \
             off by {:.1e}, {:.1e}",
            trace / n as f64,
            trace_of_square / n as f64,
            relative(grid_m1, m1),
            relative(grid_m2 - sigma * sigma, m2)
        );
        assert!(
            weights_sum < 1e-12,
            "quadrature weights sum to 1 (off by {weights_sum})"
        );
        assert!(
            (mass - 1.0).abs() < 1e-6,
            "{name}: the density integrates to {mass}"
        );
        assert!(
            quadrature_gap < 1e-10,
            "{name}: quadrature moments off by {quadrature_gap}"
        );
        assert!(
            z1.abs() < 4.0,
            "{name}: first moment {z1} standard errors off"
        );
        assert!(
            z2.abs() < 4.0,
            "{name}: second moment {z2} standard errors off"
        );
        assert!(relative(grid_m1, m1) < 1e-6 || (grid_m1 - m1).abs() < 1e-9 * sigma);
        assert!(relative(grid_m2 - sigma * sigma, m2) < 1e-5);
        assert_eq!(density.grid.len(), density.density.len());
        assert!(density.density.iter().all(|x| x.is_finite() && *x >= 0.0));
    });
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_spectrum_per_layer_blocks_equal_the_dense_diagonal_blocks() {
    let d = flex_f64();
    let p = problem(&d);
    let n = p.network.params.total();
    let blocks = layer_blocks(&p.network.params);
    let names: Vec<&str> = blocks.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(blocks.len(), 3, "conv, batch norm, classifier: {names:?}");
    assert_eq!(blocks.iter().map(|b| b.len()).sum::<usize>(), n);
    for_each_matrix(&d, |_, name, a, average| {
        for (index, block) in blocks.iter().enumerate() {
            let indices: Vec<usize> = block.ranges.iter().flat_map(|r| r.clone()).collect();
            let m = indices.len();
            let sub: Vec<f64> = indices
                .iter()
                .flat_map(|&i| indices.iter().map(move |&j| a[i * n + j]))
                .collect();
            let reference = jacobi_eigenvalues(&sub, m);
            let mask = block.mask(n, &d);
            let restricted = Restricted {
                inner: average,
                mask: mask.clone(),
            };
            let count = 3.min(m);
            let top = top_eigenpairs(
                &restricted,
                &(rademacher(n, 4, &[index as u64], &d) * mask.clone()),
                m,
                &TopSettings {
                    count,
                    max_steps: m,
                    tolerance: 1e-9,
                    explicit_residuals: true,
                },
            );
            assert_eq!(top.pairs.len(), count);
            let mut worst = 0f64;
            for (k, pair) in top.pairs.iter().enumerate() {
                let err = relative(pair.value, reference[m - 1 - k]);
                worst = worst.max(err);
                assert!(
                    err < 1e-8,
                    "{name} block {}: eigenvalue {k} {} vs dense {}",
                    block.name,
                    pair.value,
                    reference[m - 1 - k]
                );
                // The eigenvector stays inside the block.
                let outside = to_host(&(pair.vector.clone() * mask.clone().neg().add_scalar(1.0)))
                    .iter()
                    .fold(0f32, |w, x| w.max(x.abs()));
                assert!(
                    outside == 0.0,
                    "eigenvector leaks out of the block by {outside}"
                );
            }
            let exact_trace: f64 = (0..m).map(|i| sub[i * m + i]).sum();
            let trace = hutchinson(&restricted, 20, |i| {
                rademacher(n, 5, &[index as u64, i as u64], &d) * mask.clone()
            });
            let z = (trace.estimate - exact_trace) / trace.standard_error.max(f64::MIN_POSITIVE);
            println!(
                "measured: spectrum per layer {name:<12} {:<24} ({m:>3} parameters): top {count} \
                 vs dense block worst relative error {worst:.1e} ({} steps); trace {:.4e} vs \
                 {exact_trace:.4e} ({z:+.2} s.e.)",
                block.name, top.steps, trace.estimate
            );
            assert!(
                z.abs() < 4.0 || (trace.estimate - exact_trace).abs() < 1e-10 * exact_trace.abs(),
                "{name} block {}: trace {z} standard errors off",
                block.name
            );
        }
    });
}

#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_spectrum_sharpness_for_the_training_loop() {
    let d = flex_f64();
    let p = problem(&d);
    let n = p.network.params.total();
    let objective = NetworkObjective::new(&p.network, 0.0, 0.0, &d);
    let reference = jacobi_eigenvalues(dense(CurvatureKind::Hessian, &d), n);
    let a = dense(CurvatureKind::Hessian, &d);
    let exact_trace: f64 = (0..n).map(|i| a[i * n + i]).sum();
    let s = sharpness(
        &objective,
        CurvatureKind::Hessian,
        &p.params,
        &p.batches,
        &SharpnessSettings {
            max_steps: 60,
            tolerance: 1e-6,
            trace_samples: 30,
            seed: 1,
        },
    );
    let err = relative(s.top_eigenvalue, reference[n - 1]);
    let trace = s.trace.as_ref().unwrap();
    let z = (trace.estimate - exact_trace) / trace.standard_error;
    println!(
        "measured: spectrum sharpness(): top eigenvalue {:.6e} vs dense {:.6e} (relative {err:.1e}, \
         {} steps), trace {z:+.2} s.e. off, {} per-batch products",
        s.top_eigenvalue,
        reference[n - 1],
        s.lanczos_steps,
        s.products
    );
    assert!(err < 1e-8, "sharpness off by {err}");
    assert!(z.abs() < 4.0);
    assert_eq!(s.products, (s.lanczos_steps + 30) * 2);
}

/// The same estimates on wgpu in f32 (the software adapter, slow: one batch, few products)
/// as on flex in f64, from the same start and probe vectors.
#[test]
#[ignore = "run in an f64 process of its own by f64_tests_pass_in_their_own_process"]
fn f64_spectrum_on_wgpu_in_f32_matches_f64() {
    let d = flex_f64();
    let wgpu = hftrain::device::select(hftrain::device::DeviceChoice::WgpuCpu)
        .expect("the wgpu software adapter (lavapipe, package mesa-vulkan-drivers) is installed")
        .device;
    let p = problem(&d);
    let n = p.network.params.total();
    let to_wgpu = |t: &Tensor<1>| from_host(to_host(t), &wgpu);
    let batch64 = p.batches[..1].to_vec();
    let images = &batch64[0].images;
    let dims = images.dims();
    let batch32 = vec![Batch {
        images: to_wgpu(&images.clone().reshape([dims.iter().product::<usize>()])).reshape(dims),
        labels: Tensor::<1, Int>::from_data(batch64[0].labels.to_data(), &wgpu),
    }];
    let params32 = to_wgpu(&p.params);
    let objective32 = NetworkObjective::new(&p.network, 0.0, 0.0, &wgpu);
    let objective64 = NetworkObjective::new(&p.network, 0.0, 0.0, &d);
    let settings = TopSettings {
        count: 2,
        max_steps: 40,
        tolerance: 1e-4,
        explicit_residuals: false,
    };
    for (kind, name) in kinds() {
        let estimates = |objective: &NetworkObjective, params: &Tensor<1>, batches: &[Batch]| {
            let device = params.device();
            let average = Average {
                parts: batch_operators(objective, kind, params, batches),
            };
            let top = top_eigenpairs(&average, &rademacher(n, 2, &[0], &device), n, &settings);
            let trace = hutchinson(&average, 4, |i| rademacher(n, 9, &[i as u64], &device));
            let values: Vec<f64> = top.pairs.iter().map(|p| p.value).collect();
            (values, trace.estimate, top.steps)
        };
        let (values64, trace64, _) = estimates(&objective64, &p.params, &batch64);
        let (values32, trace32, steps32) = estimates(&objective32, &params32, &batch32);
        assert_eq!(values32.len(), 2);
        let worst = values32
            .iter()
            .zip(&values64)
            .map(|(a, b)| relative(*a, *b))
            .fold(0.0, f64::max);
        let trace_gap = relative(trace32, trace64);
        println!(
            "measured: spectrum wgpu f32 {name:<12}: top 2 vs flex f64 worst relative error \
             {worst:.1e} ({steps32} steps); Hutchinson with the same 4 vectors {trace_gap:.1e}"
        );
        assert!(worst < 1e-4, "{name}: wgpu f32 eigenvalues off by {worst}");
        assert!(
            trace_gap < 1e-4,
            "{name}: wgpu f32 trace off by {trace_gap}"
        );
    }
}

// ---- the command ----

fn hftrain(args: &[&str], dir: &std::path::Path) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hftrain"))
        .args(args)
        .env_remove("HFTRAIN_DATA")
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One epoch of the small test network on the generated data (flex, f32); its checkpoint.
fn trained_checkpoint(dir: &std::path::Path) -> std::path::PathBuf {
    let run = dir.join("run");
    let (ok, text) = crate::common::train_command(&crate::common::tiny_config_file(dir), &run, &[]);
    assert!(ok, "{text}");
    run.join("checkpoints/latest")
}

#[test]
fn spectrum_command_writes_json_and_a_plot_and_names_bad_options() {
    let dir = TempDir::new();
    let checkpoint = trained_checkpoint(dir.path());
    let data = crate::common::synthetic_binary();
    let json = dir.path().join("out/spectrum.json");
    // The folder of an output must exist (`store::output`).
    std::fs::create_dir_all(json.parent().unwrap()).unwrap();
    let plot = dir.path().join("density.png");
    let base = |extra: &[&str]| -> Vec<String> {
        [
            "spectrum",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--device",
            "flex",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    };
    let run = |extra: &[&str]| {
        let args = base(extra);
        hftrain(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            dir.path(),
        )
    };
    let (ok, stdout, stderr) = run(&[
        "--batches",
        "2",
        "--batch-size",
        "8",
        "--top",
        "2",
        "--max-steps",
        "20",
        "--trace-samples",
        "4",
        "--density-runs",
        "1",
        "--lanczos-steps",
        "10",
        "--per-layer",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}{stderr}");
    for needle in [
        "top eigenvalues (Lanczos",
        "||Cv - lambda v||",
        "top eigenvalue of each batch alone",
        "trace (Hutchinson, 4 Rademacher vectors)",
        "density (SLQ, 1 runs x 10 steps)",
        "per layer",
        "batch norm: training mode",
        "products:",
        // Off a terminal, each phase is a line instead of a progress bar.
        "spectrum: top eigenvalues (products so far 0",
        "spectrum: layer classifier",
    ] {
        assert!(
            stdout.contains(needle),
            "the table lacks {needle:?}:\n{stdout}"
        );
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["format"], "hftrain spectrum v1");
    assert_eq!(report["matrix"], "hessian");
    assert_eq!(report["batches"], 2);
    assert_eq!(report["batch_size"], 8);
    assert!(
        report["batch_norm"]
            .as_str()
            .unwrap()
            .contains("training mode")
    );
    let top = report["top"]["eigenvalues"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    for e in top {
        assert!(e["value"].as_f64().unwrap().is_finite());
        assert!(e["residual"].as_f64().unwrap() >= 0.0);
    }
    assert!(
        top[0]["value"].as_f64() >= top[1]["value"].as_f64(),
        "largest first"
    );
    assert_eq!(
        report["per_batch_top"]["values"].as_array().unwrap().len(),
        2
    );
    assert!(report["per_batch_top"]["std"].as_f64().unwrap() >= 0.0);
    assert_eq!(report["trace"]["samples"].as_array().unwrap().len(), 4);
    let grid: Vec<f64> = serde_json::from_value(report["density"]["grid"].clone()).unwrap();
    let density: Vec<f64> = serde_json::from_value(report["density"]["density"].clone()).unwrap();
    assert_eq!(grid.len(), density.len());
    let mass = hftrain::spectrum::slq::integrate(&grid, &density, |_| 1.0);
    assert!(
        (mass - 1.0).abs() < 1e-3,
        "the density integrates to {mass}"
    );
    let layers = report["per_layer"].as_array().unwrap();
    let parameters = report["parameters"].as_u64().unwrap();
    assert!(layers.len() >= 3, "{layers:?}");
    assert_eq!(
        layers
            .iter()
            .map(|l| l["parameters"].as_u64().unwrap())
            .sum::<u64>(),
        parameters,
        "the blocks cover every parameter once"
    );
    assert!(
        layers
            .iter()
            .all(|l| l["top"]["eigenvalues"].as_array().unwrap().len() == 2)
    );
    assert!(report["products"].as_u64().unwrap() > 0);
    assert_eq!(&std::fs::read(&plot).unwrap()[..4], b"\x89PNG");

    // Gauss-Newton: positive semi-definite, so its top eigenvalue is not negative.
    let (ok, stdout, stderr) = run(&[
        "--batches",
        "1",
        "--batch-size",
        "8",
        "--matrix",
        "gauss-newton",
        "--trace-samples",
        "2",
        "--json",
        json.to_str().unwrap(),
        // Replacing the first run's results.
        "--force",
    ]);
    assert!(ok, "{stdout}{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["matrix"], "gauss-newton");
    assert!(report["top"]["eigenvalues"][0]["value"].as_f64().unwrap() >= 0.0);
    assert!(report["trace"]["estimate"].as_f64().unwrap() >= 0.0);
    assert!(
        report["per_batch_top"].is_null(),
        "no spread over a single batch"
    );

    // Bad input, named.
    let cases: [(&[&str], &[&str]); 7] = [
        (&["--batches", "0"], &["--batches 0"]),
        (&["--batch-size", "0"], &["--batch-size 0"]),
        (&["--top", "1000000"], &["--top 1000000", "parameters"]),
        (
            &["--batches", "1000", "--batch-size", "64"],
            &["--batches 1000", "training split"],
        ),
        (&["--plot", "x.png"], &["--plot", "--density-runs"]),
        (&["--tolerance", "0"], &["--tolerance 0"]),
        (&["--matrix", "fisher"], &["--matrix"]),
    ];
    for (extra, needles) in cases {
        let (ok, stdout, stderr) = run(extra);
        assert!(!ok, "{extra:?} was accepted:\n{stdout}");
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{extra:?}: the error lacks {needle:?}:\n{stderr}"
            );
        }
    }
    let missing = dir.path().join("no-such-checkpoint");
    let (ok, _, stderr) = hftrain(
        &["spectrum", "--checkpoint", missing.to_str().unwrap()],
        dir.path(),
    );
    assert!(!ok && stderr.contains("no-such-checkpoint"), "{stderr}");
    assert!(
        !dir.path().join("x.png").exists(),
        "nothing written on an error"
    );
}

/// Per layer without a trace (`--trace-samples 0`): what was not estimated is a dash, not
/// "NaN".
#[test]
fn per_layer_without_a_trace_shows_dashes_not_nan() {
    let dir = TempDir::new();
    let checkpoint = trained_checkpoint(dir.path());
    let data = crate::common::synthetic_binary();
    let (ok, stdout, stderr) = hftrain(
        &[
            "spectrum",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--device",
            "flex",
            "--batches",
            "1",
            "--batch-size",
            "8",
            "--top",
            "1",
            "--max-steps",
            "5",
            "--trace-samples",
            "0",
            "--density-runs",
            "0",
            "--per-layer",
        ],
        dir.path(),
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("per layer"), "{stdout}");
    assert!(!stdout.contains("NaN"), "{stdout}");
}
