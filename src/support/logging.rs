//! What `hftrain` prints while it works goes through the `log` crate, at three verbosities:
//! `-q` (warnings and errors only, no progress bars), the default (status lines and progress
//! bars), `-v` (also debug lines: every Hessian-free step, warnings of the libraries below).
//! Progress bars are drawn only on a terminal; elsewhere (a log file, CI) the training loop
//! writes their content as plain lines instead.
//!
//! Our own twenty-line logger rather than env_logger: that crate turns on `log/std`, which
//! wgpu and Burn also depend on, so adding it would recompile the whole GPU stack.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU8, Ordering};

use log::{Level, LevelFilter, Metadata, Record};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet = 0,
    Normal = 1,
    Verbose = 2,
}

static VERBOSITY: AtomicU8 = AtomicU8::new(Verbosity::Normal as u8);

pub fn verbosity() -> Verbosity {
    match VERBOSITY.load(Ordering::Relaxed) {
        0 => Verbosity::Quiet,
        1 => Verbosity::Normal,
        _ => Verbosity::Verbose,
    }
}

/// Whether to draw progress bars: on a terminal, unless `-q`.
pub fn progress_bars() -> bool {
    verbosity() != Verbosity::Quiet && std::io::stderr().is_terminal()
}

struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        let ours = metadata.target().starts_with("hftrain");
        let limit = match (verbosity(), ours) {
            (Verbosity::Quiet, _) => Level::Warn,
            (Verbosity::Normal, true) => Level::Info,
            (Verbosity::Verbose, true) => Level::Debug,
            (Verbosity::Normal, false) => Level::Error,
            (Verbosity::Verbose, false) => Level::Warn,
        };
        metadata.level() <= limit
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        match record.level() {
            Level::Error => eprintln!("error: {}", record.args()),
            Level::Warn => eprintln!("warning: {}", record.args()),
            Level::Info => println!("{}", record.args()),
            Level::Debug | Level::Trace => println!("[{}] {}", record.target(), record.args()),
        }
    }

    fn flush(&self) {}
}

/// Sets the verbosity and installs the logger (once per process; later calls only change
/// the verbosity).
pub fn init(verbosity: Verbosity) {
    VERBOSITY.store(verbosity as u8, Ordering::Relaxed);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(LevelFilter::Debug);
    }
}
