use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // `hftrain ... | head` ends quietly, as Unix tools do, instead of panicking on the
    // closed pipe.
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
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
