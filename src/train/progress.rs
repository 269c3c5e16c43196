//! The epoch's progress bar and its line: hidden off a terminal or with `-q`, where the
//! same content is logged as lines instead. When an epoch's first steps took much longer
//! than the rest (kernel compilation and autotuning on a GPU), it says how much, apart.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    epoch: usize,
    epochs: usize,
    steps: usize,
    started: Instant,
    /// Steps done and seconds since `started` at the first line shown, and at the latest.
    first_shown: Cell<Option<(usize, f64)>>,
    last_shown: Cell<Option<(usize, f64)>>,
    first_step: usize,
}

/// Whether this process has finished an epoch yet: its first pays the start-up.
static EPOCH_FINISHED: AtomicBool = AtomicBool::new(false);

impl Progress {
    /// The bar of epoch `epoch` (0-based) of `steps` steps, `first` of them already done.
    pub fn start(epoch: usize, epochs: usize, steps: usize, first: usize) -> Self {
        let bar = if crate::support::logging::progress_bars() {
            let bar = ProgressBar::new(steps as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30.cyan/blue}] {pos}/{len} {elapsed_precise}<{eta_precise} {msg}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("epoch {}/{epochs}", epoch + 1));
            // The clock moves while a long step runs (a Hessian-free step on a CPU can take
            // minutes).
            bar.enable_steady_tick(std::time::Duration::from_millis(500));
            bar
        } else {
            ProgressBar::hidden()
        };
        bar.set_position(first as u64);
        Self {
            bar,
            epoch,
            epochs,
            steps,
            started: Instant::now(),
            first_shown: Cell::new(None),
            last_shown: Cell::new(None),
            first_step: first,
        }
    }

    /// After `done` steps: the running loss and accuracy, the optimizer's part, the speed.
    pub fn show(
        &self,
        done: usize,
        loss: f64,
        accuracy: f64,
        optimizer: &str,
        images_per_second: f64,
    ) {
        self.bar.set_position(done as u64);
        let now = (done - self.first_step, self.started.elapsed().as_secs_f64());
        if self.first_shown.get().is_none() {
            self.first_shown.set(Some(now));
        }
        self.last_shown.set(Some(now));
        let message = format!(
            "loss {loss:.4} acc {:.1}% {optimizer} {images_per_second:.1} img/s",
            100.0 * accuracy
        );
        if self.bar.is_hidden() {
            log::info!(
                "epoch {}/{} step {done}/{}  {message}",
                self.epoch + 1,
                self.epochs,
                self.steps
            );
        }
        self.bar.set_message(message);
    }

    /// Inside step `step` (0-based): `products` curvature products so far.
    pub fn inside_step(&self, step: usize, products: usize) {
        self.bar.set_message(format!(
            "step {}/{}: curvature product {products} (CG)",
            step + 1,
            self.steps
        ));
    }

    /// The bar stays on screen where the epoch was cut short (an error, an interruption).
    pub fn abandon(&self) {
        self.bar.abandon();
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
        let first_of_process = !EPOCH_FINISHED.swap(true, Ordering::Relaxed);
        let (Some(first), Some(last)) = (self.first_shown.get(), self.last_shown.get()) else {
            return;
        };
        let Some(extra) = start_up_seconds(first, last) else {
            return;
        };
        // The process's first epoch always says it (users wait for it); a later one only
        // where new shapes (a new batch size) cost a quarter of the epoch or more.
        if first_of_process || extra >= 0.25 * last.1 {
            log::info!(
                "epoch {}/{}: of its {:.1} s, about {extra:.1} s went to start-up (kernel \
                 compilation and autotuning on a GPU): the first {} step(s) took {:.2} s, the \
                 {} after them {:.3} s each",
                self.epoch + 1,
                self.epochs,
                last.1,
                first.0,
                first.1,
                last.0 - first.0,
                (last.1 - first.1) / (last.0 - first.0) as f64,
            );
        }
    }
}

/// The seconds the first shown stretch of an epoch (`first`: steps, seconds) took beyond
/// what the later steps' pace (up to `last`) gives for as many steps: compilation and
/// autotuning land there. None when no later steps were timed or the excess is under half a
/// second and a tenth of the epoch (noise, or a CPU backend with nothing to compile).
pub fn start_up_seconds(first: (usize, f64), last: (usize, f64)) -> Option<f64> {
    let (later_steps, later_seconds) = (last.0.checked_sub(first.0)?, last.1 - first.1);
    if later_steps == 0 || first.0 == 0 {
        return None;
    }
    let extra = first.1 - first.0 as f64 * later_seconds / later_steps as f64;
    (extra >= 0.5 && extra >= 0.1 * last.1).then_some(extra)
}
