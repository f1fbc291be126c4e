//! Fault injection for tests: a disk that fills up after N bytes.
//!
//! When the environment variable [`ENOSPC_AFTER_ENV`] (`SLORA_FAULT_ENOSPC_AFTER_BYTES`) holds a
//! number N, writes through [`create`] / [`write_file`] share one process-wide budget of N bytes: the
//! write that crosses it stores the bytes that still fit and then fails with `ENOSPC` ("No space left
//! on device"), exactly as a full disk does mid-file. Unset (always, outside tests) the writers are
//! plain files. Every writer of the workspace writes through it (this crate's [`crate::write_atomic`]
//! family, the data crate's shards), which is how the reliability tests prove that a full disk leaves
//! no partial artifact behind. [`with_budget`] arms a budget for the calling thread only, so unit
//! tests can fill the disk of one writer without touching the others.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::cell::Cell;

/// The environment variable that arms the simulated full disk (bytes the process may still write).
pub const ENOSPC_AFTER_ENV: &str = "SLORA_FAULT_ENOSPC_AFTER_BYTES";

static WRITTEN: AtomicU64 = AtomicU64::new(0);

fn budget() -> Option<u64> {
    static BUDGET: OnceLock<Option<u64>> = OnceLock::new();
    *BUDGET.get_or_init(|| std::env::var(ENOSPC_AFTER_ENV).ok().and_then(|v| v.trim().parse().ok()))
}

/// A file whose writes count against the simulated disk budget (see the module docs).
#[derive(Debug)]
pub struct BudgetedFile {
    file: File,
}

thread_local! {
    /// (limit, written so far) of [`with_budget`] on this thread.
    static THREAD_BUDGET: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
}

/// Runs `f` with a disk that holds `bytes` more bytes for writes made on this thread (the process
/// budget, if any, is not used meanwhile). For tests of one writer.
pub fn with_budget<T>(bytes: u64, f: impl FnOnce() -> T) -> T {
    let previous = THREAD_BUDGET.with(|b| b.replace(Some((bytes, 0))));
    let out = f();
    THREAD_BUDGET.with(|b| b.set(previous));
    out
}

/// Bytes written before this write, and the limit, if a budget applies.
fn charge(len: u64) -> Option<(u64, u64)> {
    if let Some((limit, written)) = THREAD_BUDGET.with(Cell::get) {
        THREAD_BUDGET.with(|b| b.set(Some((limit, written + len))));
        return Some((limit, written));
    }
    let limit = budget()?;
    Some((limit, WRITTEN.fetch_add(len, Ordering::SeqCst)))
}

impl Write for BudgetedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some((limit, before)) = charge(buf.len() as u64) else { return self.file.write(buf) };
        let room = limit.saturating_sub(before) as usize;
        if room >= buf.len() {
            return self.file.write(buf);
        }
        if room > 0 {
            // What still fits lands on disk, like a real full disk mid-file.
            self.file.write_all(&buf[..room])?;
        }
        Err(io::Error::from_raw_os_error(28)) // ENOSPC
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BudgetedFile {
    /// `File::sync_all` of the underlying file.
    pub fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

/// Creates (truncating) `path` for writing through the budget.
pub fn create(path: &Path) -> io::Result<BudgetedFile> {
    Ok(BudgetedFile { file: File::create(path)? })
}

/// Writes `bytes` to `path` (created or truncated) through the budget.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = create(path)?;
    f.write_all(bytes)?;
    f.flush()
}
