//! The worker threads of a run (rayon's global pool), set once per process before any work.

/// Sets the compute threads before any compute: `RAYON_NUM_THREADS` (read by candle) and rayon's
/// global pool (used by tokenizers, faer, gemm).
pub fn set_threads(threads: usize) {
    // Single-threaded here: called before any worker thread exists.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    if rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().is_err() {
        tracing::debug!("rayon global pool already built; keeping it");
    }
}
