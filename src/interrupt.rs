//! Ctrl-C during training: the first SIGINT asks the training loop to stop after the current
//! step and write a checkpoint (the loop polls `requested`); a second one exits at once.
//!
//! A plain signal handler over `libc` (already in the dependency tree): it only touches an
//! atomic counter and calls `write` and `_exit`, which are async-signal-safe.

use std::sync::atomic::{AtomicUsize, Ordering};

static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

/// Whether Ctrl-C was pressed since `install`.
pub fn requested() -> bool {
    INTERRUPTS.load(Ordering::SeqCst) > 0
}

/// Installs the SIGINT handler (a no-op where there are no Unix signals).
pub fn install() {
    #[cfg(unix)]
    {
        let handler = on_sigint as extern "C" fn(libc::c_int);
        // SAFETY: the handler only uses async-signal-safe operations.
        unsafe {
            libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        }
    }
}

#[cfg(unix)]
extern "C" fn on_sigint(_: libc::c_int) {
    let count = INTERRUPTS.fetch_add(1, Ordering::SeqCst) + 1;
    let message: &[u8] = if count == 1 {
        b"\ninterrupted: finishing this step and writing a checkpoint (Ctrl-C again quits at once)\n"
    } else {
        b"\ninterrupted twice: quitting without a checkpoint of this epoch\n"
    };
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer outlives the call.
    unsafe {
        libc::write(2, message.as_ptr().cast(), message.len());
        if count > 1 {
            libc::_exit(130);
        }
    }
}
