//! A run's API calls reach the database while it runs, not only at its end: a process killed
//! mid-run (kill -9, a power cut) has still counted most of what it spent against the month.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::SqlitePool;

use super::Runner;
use crate::dingtalk::CallTally;
use crate::store::budget::{record_calls, RunCalls};

/// How often the calls made so far are written, at most.
const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// Writes a run's calls as it goes. Its flushes are awaited by the run's own task, between
/// requests, so they never race the run's final write of what is left.
pub(super) struct CallFlusher<'a> {
    runner: &'a Runner,
    pool: SqlitePool,
    run_id: i64,
    tally: CallTally,
    last: Mutex<Instant>,
}

impl<'a> CallFlusher<'a> {
    pub(super) fn new(runner: &'a Runner, pool: SqlitePool, run_id: i64, tally: CallTally) -> Self {
        CallFlusher {
            runner,
            pool,
            run_id,
            tally,
            last: Mutex::new(Instant::now()),
        }
    }

    /// Writes the calls not yet recorded when the last write is [`FLUSH_EVERY`] ago. A failed
    /// write is left to the run's end, which writes whatever is still unrecorded.
    pub(super) async fn flush_if_due(&self) {
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() < FLUSH_EVERY {
                return;
            }
            *last = Instant::now();
        }
        let calls = self.runner.pending_calls(&self.tally);
        if calls.by_endpoint.is_empty() {
            return;
        }
        match write(&self.pool, self.run_id, &calls).await {
            Ok(()) => self.tally.mark_recorded(&calls.by_endpoint),
            Err(e) => tracing::debug!(error = %e, "the calls so far could not be written yet"),
        }
    }
}

async fn write(pool: &SqlitePool, run_id: i64, calls: &RunCalls) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    record_calls(&mut tx, run_id, calls).await?;
    tx.commit().await
}
