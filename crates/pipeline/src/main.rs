//! The `pipeline` binary: parse flags, run, map errors to the exit code 2 (printed once, on one line).

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc v3's `mi_option_purge_delay` (its `mimalloc.h` enum; libmimalloc-sys names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Its default value in mimalloc v3.
const MI_DEFAULT_PURGE_DELAY_MS: std::os::raw::c_long = 1000;

fn main() -> ExitCode {
    // Never hand freed memory back to the OS: a training step frees and reallocates the same
    // multi-MB activation buffers, and each purge makes the next use page-fault and zero them
    // again (~7% of a LoRA step). MIMALLOC_PURGE_DELAY still overrides this.
    // Only when the option holds mimalloc v3's default purge delay (1000 ms, its `options.c`): a
    // mimalloc whose option numbering differs is then left alone.
    // SAFETY: called before any other thread exists.
    unsafe {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() && libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == MI_DEFAULT_PURGE_DELAY_MS {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        }
    }
    let cli = slora_pipeline::cli::Cli::parse_env();
    match slora_pipeline::cli::run(cli) {
        Ok(slora_pipeline::cli::Outcome::Done) => ExitCode::SUCCESS,
        Ok(slora_pipeline::cli::Outcome::CheckFailed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {}", slora_pipeline::error::one_line(&e));
            ExitCode::from(2)
        }
    }
}
