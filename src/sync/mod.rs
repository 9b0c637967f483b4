//! One sync run, the only sync path: `--sync-now`, the schedule and `--demo` all call
//! [`run_sync`].
//!
//! 1. record the run (`running`), committed at once;
//! 2. fetch the group list and every page of rooms, validating as they come; the run's
//!    [`ledger`] sets aside rooms identical to the mirror, and the rest go to TEMP staging
//!    tables (no live table is written, no write transaction is open across a network call);
//! 3. apply in one short transaction that also writes the change feed and finishes the run row.
//!
//! Every error is recorded in `sync_errors` as it happens. A failed or interrupted run changes
//! no data row.

mod fetch;
mod ledger;

pub use ledger::Change;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::SqlitePool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Settings;
use crate::dingtalk::Observer;
use crate::failure::{codes, Failure, Stage};
use crate::lock::SyncLock;
use crate::store::apply::ApplyCounts;
use crate::store::runs::{self, RunStatus, Trigger};
use crate::store::Store;

#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    pub trigger: Trigger,
    /// Lets this one run remove more rooms than `max_removal_ratio` allows.
    pub allow_mass_removal: bool,
}

/// What a run did, as recorded in its `sync_runs` row.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: i64,
    pub status: RunStatus,
    pub pages_fetched: u32,
    pub rooms_seen: Option<u64>,
    /// Set when the run applied.
    pub counts: Option<ApplyCounts>,
    pub duration: Duration,
    pub error: Option<String>,
}

/// The run could not even be recorded (the database refused the run row).
#[derive(Debug, thiserror::Error)]
#[error("cannot record the sync run in {path}: {source}")]
pub struct RecordError {
    path: String,
    source: sqlx::Error,
}

impl fmt::Display for RunReport {
    /// The one-line summary printed and logged at the end of every run.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.duration.as_secs_f64();
        match (&self.counts, &self.error) {
            (Some(c), _) => write!(
                f,
                "sync run {} {}: {} pages, rooms seen {}, added {}, updated {}, removed {} in {secs:.2}s",
                self.run_id,
                self.status.as_str(),
                self.pages_fetched,
                c.seen,
                c.added,
                c.updated,
                c.removed
            ),
            (None, error) => write!(
                f,
                "sync run {} {} after {secs:.2}s ({} pages, {} rooms fetched): {}",
                self.run_id,
                self.status.as_str(),
                self.pages_fetched,
                self.rooms_seen.unwrap_or(0),
                error.as_deref().unwrap_or("no error recorded")
            ),
        }
    }
}

/// Why a run ended without applying.
enum Stop {
    Failed(Failure),
    Interrupted,
}

/// Runs one sync. The caller holds the sync lock for the database (`_lock` is the proof).
/// `shutdown` interrupts the fetch; an apply under way is left to complete or roll back whole.
pub async fn run_sync(
    store: &Store,
    settings: &Settings,
    options: SyncOptions,
    _lock: &SyncLock,
    shutdown: CancellationToken,
) -> Result<RunReport, RecordError> {
    let started = Instant::now();
    let pool = store.pool();
    let record_err = |source| RecordError {
        path: store.path().display().to_string(),
        source,
    };
    let abandoned = runs::close_abandoned_runs(pool).await.map_err(record_err)?;
    if abandoned > 0 {
        tracing::warn!(
            runs = abandoned,
            "marked runs left 'running' by a stopped process as interrupted"
        );
    }
    let run_id = runs::start_run(pool, options.trigger)
        .await
        .map_err(record_err)?;
    let span = tracing::info_span!("sync_run", run_id, trigger = options.trigger.as_str());
    let report = execute(store, settings, options, run_id, started, shutdown)
        .instrument(span.clone())
        .await;
    span.in_scope(|| log_summary(&report));
    Ok(report)
}

async fn execute(
    store: &Store,
    settings: &Settings,
    options: SyncOptions,
    run_id: i64,
    started: Instant,
    shutdown: CancellationToken,
) -> RunReport {
    let pool = store.pool().clone();
    tracing::info!("sync run started");

    // Errors are recorded by a task of their own, each row committed as it comes.
    let (errors_tx, errors_rx) = mpsc::unbounded_channel::<Failure>();
    let recorder = tokio::spawn(record_errors(pool.clone(), run_id, errors_rx));
    let observer: Observer = Arc::new(move |f: Failure| {
        let _ = errors_tx.send(f);
    });

    let mut progress = Progress::default();
    let outcome = fetch::fetch_and_apply(
        &pool,
        settings,
        options,
        run_id,
        &observer,
        &mut progress,
        shutdown,
    )
    .await;
    drop(observer);
    if recorder.await.is_err() {
        tracing::error!("the error recorder stopped unexpectedly");
    }

    let (status, counts, error) = match outcome {
        Ok(counts) => (RunStatus::Succeeded, Some(counts), None),
        Err(Stop::Failed(f)) => (RunStatus::Failed, None, Some(f.to_string())),
        Err(Stop::Interrupted) => (
            RunStatus::Interrupted,
            None,
            Some(
                "interrupted by a shutdown signal before the apply; nothing was changed"
                    .to_string(),
            ),
        ),
    };
    if status != RunStatus::Succeeded {
        let error = error.as_deref().unwrap_or_default();
        if let Err(e) = runs::end_run_unapplied(
            &pool,
            run_id,
            status,
            progress.pages,
            progress.rooms_seen,
            error,
        )
        .await
        {
            tracing::error!(error = %e, "could not record the end of the run");
        }
    }
    RunReport {
        run_id,
        status,
        pages_fetched: progress.pages,
        rooms_seen: counts.map(|c| c.seen).or(progress.rooms_seen),
        counts,
        duration: started.elapsed(),
        error,
    }
}

/// How far the fetch got, for the run record of a run that did not apply.
#[derive(Default)]
struct Progress {
    pages: u32,
    rooms_seen: Option<u64>,
}

/// Hands a failure to the recorder and returns it.
fn report(observer: &Observer, failure: Failure) -> Failure {
    observer(failure.clone());
    failure
}

fn store_failure(observer: &Observer, doing: &str, e: sqlx::Error) -> Stop {
    Stop::Failed(report(
        observer,
        Failure::new(Stage::Store, codes::DATABASE, format!("{doing}: {e}")),
    ))
}

async fn record_errors(
    pool: SqlitePool,
    run_id: i64,
    mut errors: mpsc::UnboundedReceiver<Failure>,
) {
    while let Some(failure) = errors.recv().await {
        if let Err(e) = runs::record_error(&pool, run_id, &failure).await {
            tracing::error!(error = %e, failure = %failure, "could not record a sync error");
        }
    }
}

fn log_summary(report: &RunReport) {
    let c = report.counts.unwrap_or_default();
    let fields = (
        report.pages_fetched,
        report.rooms_seen.unwrap_or(0),
        report.duration.as_millis() as u64,
    );
    match report.status {
        RunStatus::Succeeded => tracing::info!(
            status = "succeeded",
            pages = fields.0,
            rooms_seen = fields.1,
            rooms_added = c.added,
            rooms_updated = c.updated,
            rooms_removed = c.removed,
            duration_ms = fields.2,
            "{report}"
        ),
        status => tracing::warn!(
            status = status.as_str(),
            pages = fields.0,
            rooms_seen = fields.1,
            duration_ms = fields.2,
            "{report}"
        ),
    }
}
