//! The one integration-test binary (every test binary links all of Burn, so there is one).

mod common;

mod bench;
mod checkpoints;
mod cli;
mod config_errors;
mod curvature;
mod data_binary;
mod data_folder;
mod devices;
mod download;
mod fuzz;
mod hessian_free;
mod networks;
mod optimizer_runs;
mod optimizers;
mod precision;
mod predict;
mod reliability;
mod spectrum;
mod structure;
mod tensorboard;
mod training;
