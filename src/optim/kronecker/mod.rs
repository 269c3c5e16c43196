//! Kronecker-factored curvature: K-FAC's factors for linear layers (Martens and Grosse 2015),
//! KFC's for convolutions (Grosse and Martens 2016), a diagonal for the other parameters,
//! and their damped inverse as Hessian-free's CG preconditioner.

mod factors;
mod inverse;

pub use factors::{Block, FactorShapes, KroneckerFactors};
pub use inverse::{KroneckerEigen, KroneckerPreconditioner};
