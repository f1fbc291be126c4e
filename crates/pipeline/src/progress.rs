//! Progress bars (indicatif) with one look across stages. Bars draw on stderr and are hidden when
//! stderr is not a terminal, or when [`set_hidden`] was called (`pipeline` does so for `--json`).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::atomic::{AtomicBool, Ordering};

static HIDDEN: AtomicBool = AtomicBool::new(false);

/// Hides every bar created afterwards.
pub fn set_hidden(hidden: bool) {
    HIDDEN.store(hidden, Ordering::Relaxed);
}

/// A bar over `len` items labelled `message` (e.g. "tokenize train").
pub fn progress_bar(len: u64, message: impl Into<String>) -> ProgressBar {
    let bar = if HIDDEN.load(Ordering::Relaxed) {
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden())
    } else {
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(message.into());
    bar
}
