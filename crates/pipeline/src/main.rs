//! The `pipeline` binary: parse flags, run, map errors to the exit code 2 (printed once, on one line).

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = slora_pipeline::cli::Cli::parse_env();
    match slora_pipeline::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&anyhow::Error::from(e)));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line: a cause already quoted by the message before it (an I/O
/// error shown next to its path) is not repeated, and line breaks inside library messages are folded.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !msg.contains(&text) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&text);
        }
    }
    msg.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}
