//! Eigenvalues and eigenvectors of a small symmetric tridiagonal matrix, on the host in f64.
//!
//! Lanczos reduces the curvature to a tridiagonal matrix of a few dozen to a few hundred
//! rows; its eigenproblem is solved here by the implicit QL method with Wilkinson shifts.
//! Our own forty lines rather than a linear-algebra crate: the matrix is tiny, the method is
//! textbook, and a crate such as nalgebra turns on features of crates Burn depends on, which
//! would make `cargo build` and `cargo test` compile Burn twice (see `tests/integration/
//! common.rs` on `TempDir`). The tests hold it to an independent dense Jacobi solver.

/// The eigen-decomposition of a symmetric tridiagonal matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct TridiagonalEigen {
    /// Eigenvalues in increasing order.
    pub values: Vec<f64>,
    /// `vectors[k][i]`: component `k` of the unit eigenvector of `values[i]`.
    pub vectors: Vec<Vec<f64>>,
}

impl TridiagonalEigen {
    /// The last component of eigenvector `i` (Lanczos' residual estimate is
    /// `beta_m * |last(i)|`).
    pub fn last(&self, i: usize) -> f64 {
        self.vectors.last().map_or(0.0, |row| row[i])
    }

    /// The first component of eigenvector `i` (its square is the Gauss quadrature weight).
    pub fn first(&self, i: usize) -> f64 {
        self.vectors.first().map_or(0.0, |row| row[i])
    }
}

/// Solves the symmetric tridiagonal eigenproblem with diagonal `diagonal` (length n) and
/// off-diagonal `off` (length n - 1: `off[i]` couples rows i and i + 1).
///
/// Returns `None` if an eigenvalue does not converge in 60 QL sweeps (which needs non-finite
/// input in practice).
pub fn eigen(diagonal: &[f64], off: &[f64]) -> Option<TridiagonalEigen> {
    let n = diagonal.len();
    assert!(
        off.len() + 1 == n || (n == 0 && off.is_empty()),
        "a tridiagonal matrix of {n} rows has {} off-diagonal entries, not {}",
        n.saturating_sub(1),
        off.len()
    );
    let mut d = diagonal.to_vec();
    let mut e = off.to_vec();
    e.push(0.0);
    let mut z: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    for l in 0..n {
        let mut sweeps = 0;
        loop {
            // The first negligible off-diagonal entry at or after l splits the matrix.
            let mut m = l;
            while m + 1 < n {
                let scale = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * scale {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            sweeps += 1;
            if sweeps > 60 || !d[l].is_finite() || !e[l].is_finite() {
                return None;
            }
            // Wilkinson's shift from the leading 2x2 block, then one implicit QL sweep of
            // plane rotations from row m up to row l.
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[m] - d[l] + e[l] / (g + r.copysign(g));
            let (mut s, mut c, mut p) = (1.0f64, 1.0f64, 0.0f64);
            let mut underflow = false;
            let mut i = m;
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    // The rotation vanished: the matrix splits here; deflate and restart.
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    underflow = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
                for row in z.iter_mut() {
                    let f = row[i + 1];
                    row[i + 1] = s * row[i] + c * f;
                    row[i] = c * row[i] - s * f;
                }
            }
            if underflow {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| d[a].total_cmp(&d[b]));
    Some(TridiagonalEigen {
        values: order.iter().map(|&i| d[i]).collect(),
        vectors: z
            .iter()
            .map(|row| order.iter().map(|&i| row[i]).collect())
            .collect(),
    })
}
