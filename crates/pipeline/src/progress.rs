//! Progress bars (indicatif) with one look across stages, and where they and the log lines go.
//!
//! By default both go to the process's stderr: bars only when it is a terminal, and never after
//! [`set_hidden`] (`pipeline` calls it for `--json`). A caller that shows text itself, as the Python
//! API does through `sys.stderr` so that a notebook shows it, installs a [`Sink`]: every log line,
//! and every redraw of a bar as one `\r`-led line (what tqdm writes), goes to it instead.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

static HIDDEN: AtomicBool = AtomicBool::new(false);

/// Receives text to show, as written (line ends included).
pub type Sink = Arc<dyn Fn(&str) + Send + Sync>;

static SINK: RwLock<Option<Sink>> = RwLock::new(None);
/// A bar's line was written without its line end (the next redraw starts with `\r`): a log line
/// then starts on a fresh line.
static BAR_LINE_OPEN: AtomicBool = AtomicBool::new(false);

/// Hides every bar created afterwards.
pub fn set_hidden(hidden: bool) {
    HIDDEN.store(hidden, Ordering::Relaxed);
}

/// Sends bars and log lines to `sink` from now on (`None`: back to stderr).
pub fn set_sink(sink: Option<Sink>) {
    *SINK.write().unwrap_or_else(|e| e.into_inner()) = sink;
    BAR_LINE_OPEN.store(false, Ordering::Relaxed);
}

fn sink() -> Option<Sink> {
    SINK.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Whether a sink is installed (log lines then carry no terminal colours).
pub fn has_sink() -> bool {
    sink().is_some()
}

/// A bar over `len` items labelled `message` (e.g. "tokenize train").
pub fn progress_bar(len: u64, message: impl Into<String>) -> ProgressBar {
    let target = if HIDDEN.load(Ordering::Relaxed) {
        ProgressDrawTarget::hidden()
    } else if let Some(sink) = sink() {
        ProgressDrawTarget::term_like_with_hz(Box::new(SinkTerm { sink, width: 100 }), 2)
    } else {
        ProgressDrawTarget::stderr()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    bar.set_style(
        ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(message.into());
    bar
}

/// A one-line "terminal" over a [`Sink`]: a redraw is `\r` and the new line, padded over the old
/// one; cursor moves are ignored (one bar at a time draws here).
struct SinkTerm {
    sink: Sink,
    width: u16,
}

impl std::fmt::Debug for SinkTerm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkTerm").field("width", &self.width).finish()
    }
}

impl TermLike for SinkTerm {
    fn width(&self) -> u16 {
        self.width
    }
    fn move_cursor_up(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> io::Result<()> {
        BAR_LINE_OPEN.store(false, Ordering::Relaxed);
        (self.sink)(&format!("{s}\n"));
        Ok(())
    }
    fn write_str(&self, s: &str) -> io::Result<()> {
        if !s.is_empty() {
            BAR_LINE_OPEN.store(true, Ordering::Relaxed);
            (self.sink)(s);
        }
        Ok(())
    }
    fn clear_line(&self) -> io::Result<()> {
        if BAR_LINE_OPEN.load(Ordering::Relaxed) {
            (self.sink)(&format!("\r{:w$}\r", "", w = self.width as usize));
        }
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

/// The log's writer: the installed [`Sink`], else stderr (see [`crate::cli::init_logging`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogTarget;

/// One log record's text, handed on when the record is written whole.
#[derive(Debug, Default)]
pub struct LogLine(Vec<u8>);

impl io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.0);
        match sink() {
            Some(sink) => {
                if BAR_LINE_OPEN.swap(false, Ordering::Relaxed) {
                    sink("\n");
                }
                sink(&text)
            }
            None => {
                use io::Write;
                let _ = io::stderr().write_all(text.as_bytes());
            }
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogTarget {
    type Writer = LogLine;
    fn make_writer(&'a self) -> LogLine {
        LogLine::default()
    }
}
