//! Ctrl-C during training: the first SIGINT asks the training loop to stop after the current
//! step and write a checkpoint (the loop polls `requested`); a second one exits at once.
//!
//! During a download there is no step to finish: Ctrl-C removes the partial download and exits
//! at once, also while a read is blocked on a stalled connection.
//!
//! A plain signal handler over `libc` (already in the dependency tree): it only touches
//! atomics and calls `unlink`, `write` and `_exit`, which are async-signal-safe.

use std::ffi::CString;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);
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
    let partial = DOWNLOADING.load(Ordering::SeqCst);
    if !partial.is_null() {
        let message: &[u8] =
            b"\ninterrupted by Ctrl-C during the download; nothing of it was kept\n";
        // SAFETY: unlink(2), write(2) and _exit(2) are async-signal-safe; `partial` is a
        // C string that is never freed.
        unsafe {
            libc::unlink(partial);
            libc::write(2, message.as_ptr().cast(), message.len());
            libc::_exit(130);
        }
    }
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
