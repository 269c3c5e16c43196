//! Ctrl-C during training: the first SIGINT asks the training loop to stop after the current
//! step and write a checkpoint (the loop polls `requested`); a second one exits at once.
//! SIGTERM (`kill`, a job scheduler, a container stopping) and SIGHUP (the terminal closed)
//! are treated the same way: a run's work is kept whichever way it is asked to stop.
//!
//! During a download there is no step to finish: Ctrl-C removes the partial download and exits
//! at once, also while a read is blocked on a stalled connection.
//!
//! A plain signal handler over `libc` (already in the dependency tree): it only touches
//! atomics and calls `unlink`, `write` and `_exit`, which are async-signal-safe.

use std::ffi::CString;
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicUsize, Ordering};

static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);
/// The first stopping signal received (0: none).
static FIRST_SIGNAL: AtomicI32 = AtomicI32::new(0);
/// The partial download's path while one runs (a C string never freed), else null.
static DOWNLOADING: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());

/// While alive, Ctrl-C removes `partial` and exits at once (status 130).
pub struct DownloadGuard(());

impl DownloadGuard {
    pub fn new(partial: &Path) -> DownloadGuard {
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            if let Ok(path) = CString::new(partial.as_os_str().as_bytes()) {
                // Leaked on purpose: the handler may read it at any moment, so it is never
                // freed (one short string per download).
                DOWNLOADING.store(path.into_raw(), Ordering::SeqCst);
            }
        }
        #[cfg(not(unix))]
        let _ = partial;
        DownloadGuard(())
    }
}

impl Drop for DownloadGuard {
    fn drop(&mut self) {
        DOWNLOADING.store(std::ptr::null_mut(), Ordering::SeqCst);
    }
}

/// Whether Ctrl-C was pressed since `install`.
pub fn requested() -> bool {
    INTERRUPTS.load(Ordering::SeqCst) > 0
}

/// The exit status of a process stopped by the first signal received, as shells report a
/// program that signal ended: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP.
pub fn exit_status() -> u8 {
    match FIRST_SIGNAL.load(Ordering::SeqCst) {
        0 => 130,
        signal => 128u8.saturating_add(signal as u8),
    }
}

/// Installs the handler of SIGINT, SIGTERM and SIGHUP (a no-op where there are no Unix
/// signals).
pub fn install() {
    #[cfg(unix)]
    {
        let handler = on_signal as extern "C" fn(libc::c_int);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: the handler only uses async-signal-safe operations.
            unsafe {
                libc::signal(signal, handler as libc::sighandler_t);
            }
        }
    }
}

#[cfg(unix)]
extern "C" fn on_signal(signal: libc::c_int) {
    let _ = FIRST_SIGNAL.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
    let status = 128 + FIRST_SIGNAL.load(Ordering::SeqCst);
    let partial = DOWNLOADING.load(Ordering::SeqCst);
    if !partial.is_null() {
        let message: &[u8] =
            b"\ninterrupted by Ctrl-C during the download; nothing of it was kept\n";
        // SAFETY: unlink(2), write(2) and _exit(2) are async-signal-safe; `partial` is a
        // C string that is never freed.
        unsafe {
            libc::unlink(partial);
            libc::write(2, message.as_ptr().cast(), message.len());
            libc::_exit(status);
        }
    }
    let count = INTERRUPTS.fetch_add(1, Ordering::SeqCst) + 1;
    let message: &[u8] = if count == 1 {
        match signal {
            libc::SIGTERM => {
                b"\nterminated (SIGTERM): finishing this step and writing a checkpoint (a second signal quits at once)\n"
            }
            libc::SIGHUP => {
                b"\nhung up (SIGHUP): finishing this step and writing a checkpoint (a second signal quits at once)\n"
            }
            _ => {
                b"\ninterrupted: finishing this step and writing a checkpoint (Ctrl-C again quits at once)\n"
            }
        }
    } else {
        b"\ninterrupted twice: quitting without a checkpoint of this epoch\n"
    };
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer outlives the call.
    unsafe {
        libc::write(2, message.as_ptr().cast(), message.len());
        if count > 1 {
            libc::_exit(status);
        }
    }
}
