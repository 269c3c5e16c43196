//! Kronecker-factored curvature: K-FAC's factors for linear layers (Martens and Grosse 2015),
//! KFC's for convolutions (Grosse and Martens 2016), a diagonal for the other parameters,
//! and their damped inverse: Hessian-free's CG preconditioner, and the K-FAC optimizer's.

mod factors;
mod inverse;

use anyhow::{Context, Result};
use burn::prelude::*;

pub use factors::{Block, FactorShapes, KroneckerFactors};
pub use inverse::{KroneckerEigen, KroneckerPreconditioner};

use super::{OptimizerState, Problem};

/// The names of the factors' vector, and of their shapes among the scalars, in an
/// optimizer's checkpointed state.
const FACTORS: &str = "kronecker_factors";
const SHAPES: &str = "kronecker";

/// The Kronecker factors an optimizer keeps from step to step, and their eigendecompositions
/// (made from them on the host, so that a resumed run computes the same).
pub struct KroneckerEstimate {
    pub factors: KroneckerFactors,
    pub eigen: KroneckerEigen,
}

impl KroneckerEstimate {
    pub fn of(factors: KroneckerFactors) -> Self {
        let eigen = KroneckerEigen::of(&factors);
        Self { factors, eigen }
    }

    /// The estimate for step `step` (0-based): new factors from `problem` every
    /// `refresh_steps` steps and where there are none yet, blended with the previous ones as
    /// `decay * previous + (1 - decay) * new`; the previous estimate otherwise (and where the
    /// problem has no factors to give).
    pub fn refreshed(
        previous: Option<Self>,
        problem: &dyn Problem,
        params: &Tensor<1>,
        step: u64,
        refresh_steps: usize,
        decay: f64,
    ) -> Option<Self> {
        let due = previous.is_none() || step.is_multiple_of(refresh_steps as u64);
        if !due {
            return previous;
        }
        let Some(fresh) = problem.kronecker_factors(params) else {
            return previous;
        };
        let factors = fresh.blended(previous.as_ref().map(|p| &p.factors), decay);
        Some(Self::of(factors))
    }

    /// Puts the factors into `state`: their values as a vector, their shapes beside the
    /// optimizer's own scalars (under `kronecker`).
    pub fn save(estimate: Option<&Self>, state: &mut OptimizerState) {
        let Some(estimate) = estimate else {
            return;
        };
        let (shapes, values) = estimate.factors.flatten();
        state.put_vector(FACTORS, &Some(values));
        if let Some(scalars) = state.scalars.as_object_mut() {
            let shapes = serde_json::to_value(shapes).expect("factor shapes serialise");
            scalars.insert(SHAPES.into(), shapes);
        }
    }

    /// The estimate `save` put into `state` (None: there was none), for a model of
    /// `parameters` values.
    pub fn load(
        state: &OptimizerState,
        parameters: usize,
        device: &Device,
    ) -> Result<Option<Self>> {
        let Some(shapes) = state.scalars.get(SHAPES) else {
            return Ok(None);
        };
        let shapes: FactorShapes = serde_json::from_value(shapes.clone())
            .context("the checkpoint's Kronecker factor shapes are not valid")?;
        let values = state.take_any_vector(FACTORS, device)?;
        let factors = KroneckerFactors::unflatten(&shapes, values, parameters)?;
        Ok(Some(Self::of(factors)))
    }
}
