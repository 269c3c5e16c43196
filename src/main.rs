use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    hftrain::support::allocator::set_up_from_environment();
    // `hftrain ... | head` ends quietly, as Unix tools do, instead of panicking on the
    // closed pipe.
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    for name in hftrain::cli::ENVIRONMENT {
        if std::env::var_os(name).is_some_and(|value| value.is_empty()) {
            // SAFETY: no other thread exists yet to read the environment.
            unsafe { std::env::remove_var(name) };
        }
    }
    let cli = hftrain::cli::Cli::parse();
    match hftrain::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
