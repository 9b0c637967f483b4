//! One sync run, the only sync path: `--sync-now`, the schedule and `--demo` all start it
//! through [`run_once`] or [`Runner::run_on`].
//!
//! 1. record the run (`running`), committed at once;
//! 2. fetch the group list and every page of rooms, validating as they come; the run's
//!    ledger (`sync/ledger.rs`) sets aside rooms identical to the mirror, and the rest go to
//!    TEMP staging tables (no live table is written, no write transaction is open across a
//!    network call);
//! 3. apply in one short transaction that also writes the change feed and finishes the run row.
//!
//! Every error is recorded in `sync_errors` as it happens. A failed or interrupted run changes
//! no data row.

mod availability;
mod calls;
mod fetch;
mod ledger;
mod queue;
mod runner;

pub use runner::{run_once, HeldBack, Runner};

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use sqlx::SqlitePool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::dingtalk::model::SkippedPart;
use crate::dingtalk::{CallTally, DingTalkClient, Observer};
use crate::failure::{codes, Failure, Redactor, Severity, Stage};
use crate::lock::SyncLock;
use crate::metrics::Metrics;
use crate::store::apply::ApplyCounts;
use crate::store::budget::RunCalls;
use crate::store::runs::{self, RunKind, RunStatus, Trigger};
use crate::store::{Store, StoreError};

/// How a run was asked for.
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
    pub kind: RunKind,
    pub trigger: Trigger,
    pub status: RunStatus,
    pub pages_fetched: u32,
    pub rooms_seen: Option<u64>,
    /// Set when the run applied.
    pub counts: Option<ApplyCounts>,
    pub duration: Duration,
    pub error: Option<String>,
    /// Parts of records left out (recorded only when the run applied).
    pub warnings: u64,
    /// An availability refresh that applied: the rooms it asked about, and how many of them
    /// could not be read.
    pub checked: Option<CheckedRooms>,
    /// Why the end of the run could not be recorded (it stays `running` until the next run
    /// marks it interrupted), when it could not: a full disk, say.
    pub end_not_recorded: Option<String>,
}

/// The rooms an availability refresh asked about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckedRooms {
    pub rooms: u64,
    /// Of them, those answered with an error (or in a request that failed): they keep their
    /// previous busy rows.
    pub failed: u64,
}

impl RunReport {
    /// A run that ended before it applied anything.
    fn unapplied(record: &RunRecord, status: RunStatus, error: String) -> RunReport {
        RunReport {
            run_id: record.run_id,
            kind: record.kind,
            trigger: record.trigger,
            status,
            pages_fetched: 0,
            rooms_seen: None,
            counts: None,
            duration: record.started.elapsed(),
            error: Some(error),
            warnings: 0,
            checked: None,
            end_not_recorded: None,
        }
    }
}

/// Why a run did not take place, or could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Another sync of the same database holds the lock; nothing was done.
    #[error("another sync of {} is running (lock {} is held); nothing was done", .database.display(), .lock.display())]
    Locked { database: PathBuf, lock: PathBuf },
    #[error("cannot take the sync lock {}: {source}", .lock.display())]
    Lock {
        lock: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Open(#[from] StoreError),
    /// The HTTP client could not be set up (its TLS backend, say; no CA certificate on the
    /// system): reqwest's error and its causes, which say what was wrong.
    #[error("cannot set up the HTTP client: {0}")]
    Http(String),
    /// The run could not even be recorded (the database refused the run row); no run id
    /// was given out.
    #[error("run not recorded: the database {path} refused the run record: {source}")]
    Record { path: String, source: sqlx::Error },
}

impl From<reqwest::Error> for RunError {
    /// reqwest's own message ("builder error") says nothing without its causes.
    fn from(e: reqwest::Error) -> Self {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        RunError::Http(message)
    }
}

impl fmt::Display for RunReport {
    /// The one-line summary printed and logged at the end of every run.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.duration.as_secs_f64();
        if self.kind == RunKind::Availability {
            self.fmt_refresh(f)?;
            return self.fmt_end_not_recorded(f);
        }
        match (&self.counts, &self.error) {
            (Some(c), _) => write!(
                f,
                "sync run {} {}: {} pages, rooms seen {}, added {}, updated {}, removed {}{} in {secs:.2}s",
                self.run_id,
                self.status.as_str(),
                self.pages_fetched,
                c.seen,
                c.added,
                c.updated,
                c.removed,
                warnings_text(self.warnings)
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
        }?;
        self.fmt_end_not_recorded(f)
    }
}

fn warnings_text(warnings: u64) -> String {
    match warnings {
        0 => String::new(),
        1 => ", 1 warning".to_string(),
        n => format!(", {n} warnings"),
    }
}

impl RunReport {
    /// `availability refresh 13 succeeded: 13 requests, 250 rooms, 3 with errors in 0.81s`.
    fn fmt_refresh(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.duration.as_secs_f64();
        match (&self.checked, &self.error) {
            (Some(c), _) => write!(
                f,
                "availability refresh {} {}: {} requests, {} rooms, {} with errors{} in {secs:.2}s",
                self.run_id,
                self.status.as_str(),
                self.pages_fetched,
                c.rooms,
                c.failed,
                warnings_text(self.warnings)
            ),
            (None, error) => write!(
                f,
                "availability refresh {} {} after {secs:.2}s ({} requests): {}",
                self.run_id,
                self.status.as_str(),
                self.pages_fetched,
                error.as_deref().unwrap_or("no error recorded")
            ),
        }
    }

    fn fmt_end_not_recorded(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(why) = &self.end_not_recorded {
            write!(
                f,
                " (the end of the run could not be recorded: {why}; it shows as running until \
                 the next run marks it interrupted)"
            )?;
        }
        Ok(())
    }
}

/// Why a run ended without applying.
enum NotApplied {
    Failed(Failure),
    Interrupted,
}

/// Runs one sync. The caller holds the sync lock for the database (`_lock` is the proof).
/// `shutdown` interrupts the fetch; an apply under way is left to complete or roll back whole.
async fn run_sync(
    runner: &Runner,
    store: &Store,
    _lock: &SyncLock,
    options: SyncOptions,
    shutdown: CancellationToken,
) -> Result<RunReport, RunError> {
    let start = start_recorded(runner, store, RunKind::Rooms, options.trigger).await?;
    let run = Run {
        pool: store.pool().clone(),
        runner,
        client: runner
            .api()
            .client(start.failures.observer(), start.record.calls.clone()),
        calls: start.record.calls.clone(),
        options,
        run_id: start.run_id,
        shutdown,
        failures: start.failures,
    };
    let body = run.execute(start.recorder, start.started);
    Ok(guarded(runner, store, &start.record, body).await)
}

/// A run recorded as started, with what its body needs.
struct Started {
    run_id: i64,
    started: Instant,
    failures: FailureLog,
    /// The task writing the run's failures as they come.
    recorder: JoinHandle<Vec<Failure>>,
    record: RunRecord,
}

/// What identifies a run in its records and logs.
#[derive(Clone)]
struct RunRecord {
    run_id: i64,
    kind: RunKind,
    trigger: Trigger,
    started: Instant,
    span: tracing::Span,
    /// The run's requests: its client counts them, its end (or the panic net) records them.
    calls: CallTally,
}

/// Marks runs a killed process left `running` as interrupted, records the new run, and starts
/// its failure log, in the run's span.
async fn start_recorded(
    runner: &Runner,
    store: &Store,
    kind: RunKind,
    trigger: Trigger,
) -> Result<Started, RunError> {
    let started = Instant::now();
    let pool = store.pool();
    let record_err = |source| RunError::Record {
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
    let run_id = runs::start_run(pool, kind, trigger)
        .await
        .map_err(record_err)?;
    let span = run_span(kind, run_id, trigger);
    // The recorder task carries the run's span, as every task of the run does.
    let redactor = runner.api().redactor().clone();
    let metrics = runner.metrics().clone();
    let (failures, recorder) =
        span.in_scope(|| FailureLog::start(pool.clone(), run_id, redactor, metrics));
    Ok(Started {
        run_id,
        started,
        failures,
        recorder,
        record: RunRecord {
            run_id,
            kind,
            trigger,
            started,
            span,
            calls: CallTally::default(),
        },
    })
}

/// The span every log line of a run carries, from its start to its webhook.
pub(crate) fn run_span(kind: RunKind, run_id: i64, trigger: Trigger) -> tracing::Span {
    match kind {
        RunKind::Rooms => tracing::info_span!("sync_run", run_id, trigger = trigger.as_str()),
        RunKind::Availability => {
            tracing::info_span!("availability_refresh", run_id, trigger = trigger.as_str())
        }
    }
}

/// Runs a run's `body` in its span. A panic is a bug, but it must not take the process (or
/// the daemon's schedule) with it: the run is recorded failed and the caller goes on. Release
/// builds keep unwinding for this.
async fn guarded(
    runner: &Runner,
    store: &Store,
    record: &RunRecord,
    body: impl std::future::Future<Output = RunReport>,
) -> RunReport {
    let span = record.span.clone();
    let execution = AssertUnwindSafe(body)
        .catch_unwind()
        .instrument(span.clone())
        .await;
    let report = match execution {
        Ok(report) => report,
        Err(panic) => {
            let failure = runner.api().redactor().failure(Failure::new(
                Stage::Internal,
                codes::PANIC,
                format!(
                    "the run panicked: {}; this is a bug in roomsync, nothing was changed",
                    panic_message(panic.as_ref())
                ),
            ));
            runner.metrics().sync_error(codes::PANIC);
            let calls = runner.pending_calls(&record.calls);
            let report = record_panic(store.pool(), record, failure, &calls);
            report.instrument(span.clone()).await
        }
    };
    span.in_scope(|| log_summary(&report));
    report
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

/// Records a run that panicked as failed, with its `internal.panic` error and the calls it
/// made that are not recorded yet.
async fn record_panic(
    pool: &SqlitePool,
    record: &RunRecord,
    failure: Failure,
    calls: &RunCalls,
) -> RunReport {
    tracing::error!(error = %failure, "a sync run panicked");
    let error = failure.to_string();
    let end = runs::UnappliedEnd {
        status: RunStatus::Failed,
        pages_fetched: 0,
        rooms_seen: None,
        error: &error,
        calls,
        exhausted_until: None,
    };
    let recorded = runs::end_run_unapplied(pool, record.run_id, &end, &[failure]).await;
    if let Err(e) = &recorded {
        tracing::error!(error = %e, "could not record the end of the run");
    }
    RunReport {
        end_not_recorded: recorded.err().map(|e| e.to_string()),
        ..RunReport::unapplied(record, RunStatus::Failed, error)
    }
}

/// One recorded run: what its fetch and apply work with.
struct Run<'a> {
    pool: SqlitePool,
    runner: &'a Runner,
    /// The run's view of the DingTalk API: its failed attempts go to `failures`.
    client: DingTalkClient,
    /// What `client` counts.
    calls: CallTally,
    options: SyncOptions,
    run_id: i64,
    shutdown: CancellationToken,
    failures: FailureLog,
}

impl Run<'_> {
    /// Fetches and applies, records how the run ended, and reports it. `recorder` is the task
    /// writing the run's failures; it ends once every copy of `failures` is gone.
    async fn execute(self, recorder: JoinHandle<Vec<Failure>>, started: Instant) -> RunReport {
        tracing::info!("sync run started");
        let mut progress = FetchProgress::default();
        let outcome = fetch::fetch_and_apply(&self, &mut progress).await;
        let Run {
            pool,
            run_id,
            failures,
            options,
            client,
            runner,
            calls,
            ..
        } = self;
        let calls = runner.pending_calls(&calls);
        drop((client, failures));
        let unrecorded = recorder.await.unwrap_or_else(|_| {
            tracing::error!("the error recorder stopped unexpectedly");
            Vec::new()
        });
        let ending = Ending::of(outcome);
        let end_not_recorded = match ending.status {
            RunStatus::Succeeded => {
                // Retried attempts of a run that then succeeded: best effort, as they came.
                for failure in &unrecorded {
                    let _ = runs::record_error(&pool, run_id, failure).await;
                }
                None
            }
            status => {
                let spent_until = runner.note_quota();
                let end = runs::UnappliedEnd {
                    status,
                    pages_fetched: progress.pages,
                    rooms_seen: progress.rooms_seen,
                    error: ending.error.as_deref().unwrap_or_default(),
                    calls: &calls,
                    exhausted_until: spent_until.as_deref(),
                };
                let recorded = runs::end_run_unapplied(&pool, run_id, &end, &unrecorded).await;
                recorded.err().map(|e| {
                    tracing::error!(error = %e, "could not record the end of the run");
                    e.to_string()
                })
            }
        };
        RunReport {
            run_id,
            kind: RunKind::Rooms,
            trigger: options.trigger,
            checked: None,
            status: ending.status,
            pages_fetched: progress.pages,
            rooms_seen: ending.counts.map(|c| c.seen).or(progress.rooms_seen),
            counts: ending.counts,
            duration: started.elapsed(),
            error: ending.error,
            warnings: ending.counts.map_or(0, |_| progress.warnings.count),
            end_not_recorded,
        }
    }
}

/// How the fetch and apply ended, as the run row will say.
struct Ending {
    status: RunStatus,
    counts: Option<ApplyCounts>,
    error: Option<String>,
}

impl Ending {
    fn of(outcome: Result<ApplyCounts, NotApplied>) -> Ending {
        let (status, counts, error) = match outcome {
            Ok(counts) => (RunStatus::Succeeded, Some(counts), None),
            Err(NotApplied::Failed(f)) => (RunStatus::Failed, None, Some(f.to_string())),
            Err(NotApplied::Interrupted) => (
                RunStatus::Interrupted,
                None,
                Some(
                    "interrupted by a shutdown signal before the apply; nothing was changed"
                        .to_string(),
                ),
            ),
        };
        Ending {
            status,
            counts,
            error,
        }
    }
}

/// How far the fetch got, for the run record of a run that did not apply, and the warnings
/// to record with the apply of one that does.
#[derive(Default)]
struct FetchProgress {
    pages: u32,
    rooms_seen: Option<u64>,
    warnings: Warnings,
}

/// The first warning rows a run records; its count of warnings stays exact beyond them, so a
/// systematically odd listing cannot flood `sync_errors`.
const MAX_WARNING_ROWS: usize = 100;

/// A run's warnings: parts of records left out, the run going on.
#[derive(Default)]
struct Warnings {
    /// The first [`MAX_WARNING_ROWS`], to be written with the apply.
    rows: Vec<Failure>,
    count: u64,
}

impl Warnings {
    fn add(&mut self, warning: Failure) {
        self.count += 1;
        if self.rows.len() < MAX_WARNING_ROWS {
            tracing::warn!(page = warning.page, "{}", warning.message);
            self.rows.push(warning);
        }
    }
}

/// Where a run's failures go: each one is recorded in `sync_errors` as it happens, by a task
/// of its own. The client reports its failed attempts here too.
#[derive(Clone)]
struct FailureLog {
    record: Observer,
    redactor: Redactor,
}

/// How many of each error code a run recorded, for the metrics.
fn count_error(metrics: &Metrics, failure: &Failure) {
    if failure.severity == Severity::Error {
        metrics.sync_error(failure.code.as_deref().unwrap_or("none"));
    }
}

impl FailureLog {
    /// Starts the recorder task of run `run_id`, in the current span. Every failure is
    /// redacted before it is recorded; the task hands back those it could not write.
    fn start(
        pool: SqlitePool,
        run_id: i64,
        redactor: Redactor,
        metrics: Metrics,
    ) -> (FailureLog, JoinHandle<Vec<Failure>>) {
        let (errors_tx, errors_rx) = mpsc::unbounded_channel::<Failure>();
        let recorder = tokio::spawn(record_errors(pool, run_id, errors_rx).in_current_span());
        let scrub = redactor.clone();
        let record: Observer = Arc::new(move |f: Failure| {
            count_error(&metrics, &f);
            let _ = errors_tx.send(scrub.failure(f));
        });
        let log = FailureLog { record, redactor };
        (log, recorder)
    }

    /// Records `failure` and ends the run with it.
    fn fail(&self, failure: Failure) -> NotApplied {
        let failure = self.redactor.failure(failure);
        (self.record)(failure.clone());
        NotApplied::Failed(failure)
    }

    /// Records a database error of the run (what it was `doing`) and ends the run with it.
    fn store_failed(&self, doing: &str, e: sqlx::Error) -> NotApplied {
        self.fail(Failure::new(
            Stage::Store,
            codes::DATABASE,
            format!("{doing}: {e}"),
        ))
    }

    /// A warning about `part`, redacted like every upstream text; it is recorded with the apply.
    fn warning(&self, page: Option<u32>, part: &SkippedPart) -> Failure {
        self.redactor
            .failure(Failure::warning(page, part.to_string()))
    }

    /// The same log, as the client's observer of failed attempts.
    fn observer(&self) -> Observer {
        self.record.clone()
    }
}

/// Writes each failure of run `run_id` as it comes, each row committed on its own; returns
/// those it could not write (a full disk), for the end of the run to try again.
async fn record_errors(
    pool: SqlitePool,
    run_id: i64,
    mut errors: mpsc::UnboundedReceiver<Failure>,
) -> Vec<Failure> {
    let mut unrecorded = Vec::new();
    while let Some(failure) = errors.recv().await {
        if let Err(e) = runs::record_error(&pool, run_id, &failure).await {
            tracing::error!(error = %e, failure = %failure, "could not record a sync error");
            unrecorded.push(failure);
        }
    }
    unrecorded
}

/// The run's one summary line, with its counts as fields.
fn log_summary(report: &RunReport) {
    let pages = report.pages_fetched;
    let rooms_seen = report.rooms_seen.unwrap_or(0);
    let duration_ms = report.duration.as_millis() as u64;
    match report.status {
        RunStatus::Succeeded => {
            let c = report.counts.unwrap_or_default();
            tracing::info!(
                status = "succeeded",
                pages,
                rooms_seen,
                rooms_added = c.added,
                rooms_updated = c.updated,
                rooms_removed = c.removed,
                warnings = report.warnings,
                duration_ms,
                "{report}"
            )
        }
        status => tracing::warn!(
            status = status.as_str(),
            pages,
            rooms_seen,
            duration_ms,
            "{report}"
        ),
    }
}
