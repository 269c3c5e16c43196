use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = hftrain::cli::Cli::parse();
    match hftrain::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
