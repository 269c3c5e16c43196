//! The commands, one module each: its clap arguments and `execute`, a thin layer over the
//! core that prints what the core returns. No command imports another (a test holds them
//! to it): what two commands share belongs to the core.

pub mod bench;
pub mod compare;
pub mod curvature;
pub mod data;
pub mod eval;
pub mod export;
pub mod plot;
pub mod predict;
pub mod spectrum;
pub mod train;
