//! The epoch's progress bar and its line: hidden off a terminal or with `-q`, where the
//! same content is logged as lines instead.

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    epoch: usize,
    epochs: usize,
    steps: usize,
}

impl Progress {
    /// The bar of epoch `epoch` (0-based) of `steps` steps, `first` of them already done.
    pub fn start(epoch: usize, epochs: usize, steps: usize, first: usize) -> Self {
        let bar = if crate::logging::progress_bars() {
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
    }
}
