//! A stop request from outside the run (the Python API turns Ctrl-C into one). The local loop checks
//! it after every training step and ends the stage with [`FederationError::Interrupted`]: the round
//! open at that moment is dropped, every completed round stays checkpointed, so the next run resumes
//! after the last of them and computes what the uninterrupted run would have.
//!
//! Process-wide, as a signal is.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::FederationError;

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks every running local round to stop after its current step.
pub fn request_stop() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Withdraws the request (before the next run starts).
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}

/// Whether a stop was requested and not cleared.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// `Err(Interrupted)` when a stop was requested: the check after a step.
pub fn check(round: u32, client: usize, step: usize) -> Result<(), FederationError> {
    if requested() {
        return Err(FederationError::Interrupted { round, client, step });
    }
    Ok(())
}
