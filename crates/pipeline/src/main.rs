//! The `pipeline` binary: parse flags, run, map errors to the exit code (printed once with `{:#}`).

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = slora_pipeline::cli::Cli::parse_env();
    match slora_pipeline::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            ExitCode::from(2)
        }
    }
}
