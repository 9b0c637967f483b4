//! `sync_runs` and `sync_errors`: every run and every error, each committed on its own so the
//! record survives whatever happens to the run afterwards.

use sqlx::{SqliteConnection, SqlitePool};

use super::budget::{record_calls, set_exhausted_until, RunCalls};
use crate::failure::Failure;
use crate::metrics::MirrorGauges;

/// What started a run (`sync_runs.trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Manual,
    Schedule,
    Startup,
}

impl Trigger {
    /// The value stored in `sync_runs.trigger`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Schedule => "schedule",
            Trigger::Startup => "startup",
        }
    }
}

/// What a run does (`sync_runs.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// The room list.
    Rooms,
    /// A refresh of the rooms' free/busy.
    Availability,
}

impl RunKind {
    /// The value stored in `sync_runs.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Rooms => "rooms",
            RunKind::Availability => "availability",
        }
    }
}

/// How a run ended (`sync_runs.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
}

impl RunStatus {
    /// The value stored in `sync_runs.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// The current time as stored: RFC 3339 UTC to the second, e.g. `2026-11-25T16:31:04Z`.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Marks runs left `running` by a process that died as `interrupted`. Call only while holding
/// the sync lock, so that no live run is among them.
pub async fn close_abandoned_runs(pool: &SqlitePool) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE sync_runs SET status = 'interrupted', finished_at = ?1,
             error = COALESCE(error, 'the process running it stopped before it finished')
         WHERE status = 'running'",
    )
    .bind(now_rfc3339())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Records the start of a run (status `running`); its id, once the row is committed. (Not with
/// `RETURNING`: its row comes back before the statement's commit, whose failure, on a full
/// disk, would then go unnoticed and the id would name a run that does not exist.)
///
/// First a PASSIVE checkpoint, the kind SQLite runs by itself after a commit (never TRUNCATE or
/// RESTART, which Litestream forbids): a reader may have held back the one after the last
/// apply. Once the WAL is copied back whole, this insert restarts it from the beginning and
/// SQLite trims the file to `journal_size_limit` ([`super::WAL_SIZE_LIMIT`]). A checkpoint that
/// cannot finish (a reader, Litestream's read lock) leaves the WAL as it is; that is no error.
pub async fn start_run(pool: &SqlitePool, kind: RunKind, trigger: Trigger) -> sqlx::Result<i64> {
    let mut conn = pool.acquire().await?;
    if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .execute(&mut *conn)
        .await
    {
        tracing::debug!(error = %e, "checkpoint before the run failed");
    }
    let done = sqlx::query(
        "INSERT INTO sync_runs (kind, trigger, started_at, status) VALUES (?1, ?2, ?3, 'running')",
    )
    .bind(kind.as_str())
    .bind(trigger.as_str())
    .bind(now_rfc3339())
    .execute(&mut *conn)
    .await?;
    Ok(done.last_insert_rowid())
}

/// How a run that did not apply ended, and how far it got.
#[derive(Clone, Copy)]
pub struct UnappliedEnd<'a> {
    /// `failed` or `interrupted`.
    pub status: RunStatus,
    pub pages_fetched: u32,
    pub rooms_seen: Option<u64>,
    pub error: &'a str,
    /// The requests the run sent to DingTalk.
    pub calls: &'a RunCalls,
    /// Set when DingTalk said the organisation's monthly quota is spent: until when.
    pub exhausted_until: Option<&'a str>,
}

/// Ends a run that did not apply: `failed` or `interrupted`, with what was fetched so far,
/// together with the run's error rows that could not be written as they came (`unrecorded`),
/// in one transaction.
///
/// On a full disk the first try can fail where a second succeeds: a PASSIVE checkpoint (the
/// kind SQLite runs by itself, allowed beside Litestream) lets the next write restart the WAL
/// from its beginning, in space the file already has.
pub async fn end_run_unapplied(
    pool: &SqlitePool,
    run_id: i64,
    end: &UnappliedEnd<'_>,
    unrecorded: &[Failure],
) -> sqlx::Result<()> {
    let Err(first) = write_end(pool, run_id, end, unrecorded).await else {
        return Ok(());
    };
    tracing::warn!(error = %first, "could not record the end of the run; checkpointing and trying again");
    let _ = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .execute(pool)
        .await;
    if write_end(pool, run_id, end, unrecorded).await.is_ok() {
        return Ok(());
    }
    // The run row alone, one page: its error text says what the rows would have.
    let row_only = UnappliedEnd {
        calls: &RunCalls::default(),
        exhausted_until: None,
        ..*end
    };
    write_end(pool, run_id, &row_only, &[]).await
}

async fn write_end(
    pool: &SqlitePool,
    run_id: i64,
    end: &UnappliedEnd<'_>,
    unrecorded: &[Failure],
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    for failure in unrecorded {
        insert_error(&mut tx, run_id, failure).await?;
    }
    record_calls(&mut tx, run_id, end.calls).await?;
    if let Some(until) = end.exhausted_until {
        set_exhausted_until(&mut tx, Some(until)).await?;
    }
    sqlx::query(
        "UPDATE sync_runs SET status = ?2, finished_at = ?3, pages_fetched = ?4, rooms_seen = ?5, error = ?6
         WHERE run_id = ?1",
    )
    .bind(run_id)
    .bind(end.status.as_str())
    .bind(now_rfc3339())
    .bind(end.pages_fetched)
    .bind(end.rooms_seen.map(|n| n as i64))
    .bind(end.error)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Records one error of a run in `sync_errors`, committed on its own.
pub async fn record_error(pool: &SqlitePool, run_id: i64, f: &Failure) -> sqlx::Result<()> {
    let mut conn = pool.acquire().await?;
    insert_error(&mut conn, run_id, f).await
}

/// Inserts one row of `sync_errors`, an error or a warning, in the caller's transaction.
pub async fn insert_error(
    conn: &mut SqliteConnection,
    run_id: i64,
    f: &Failure,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO sync_errors
             (run_id, occurred_at, stage, page, http_status, error_code, message, request_id, retried,
              severity)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .bind(run_id)
    .bind(now_rfc3339())
    .bind(f.stage.as_str())
    .bind(f.page)
    .bind(f.http_status)
    .bind(f.code.as_deref())
    .bind(&f.message)
    .bind(f.request_id.as_deref())
    .bind(f.retried)
    .bind(f.severity.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// What the metrics show of the mirror: the last run's and the last success's finish, and the
/// rooms, active and removed.
pub async fn mirror_gauges(pool: &SqlitePool) -> sqlx::Result<MirrorGauges> {
    type Row = (Option<String>, Option<String>, Option<String>, i64, i64);
    let (last_run, last_success, last_availability, active, removed): Row = sqlx::query_as(
        "SELECT (SELECT finished_at FROM sync_runs WHERE kind = 'rooms' AND finished_at IS NOT NULL
                 ORDER BY run_id DESC LIMIT 1),
                (SELECT finished_at FROM sync_runs WHERE kind = 'rooms' AND status = 'succeeded'
                 ORDER BY run_id DESC LIMIT 1),
                (SELECT finished_at FROM sync_runs WHERE kind = 'availability'
                 AND status = 'succeeded' ORDER BY run_id DESC LIMIT 1),
                (SELECT COUNT(*) FROM rooms WHERE removed_at IS NULL),
                (SELECT COUNT(*) FROM rooms WHERE removed_at IS NOT NULL)",
    )
    .fetch_one(pool)
    .await?;
    let time = |t: Option<String>| t.and_then(|t| humantime::parse_rfc3339(&t).ok());
    Ok(MirrorGauges {
        last_run: time(last_run),
        last_success: time(last_success),
        last_availability: time(last_availability),
        active_rooms: active,
        removed_rooms: removed,
    })
}

/// A run as recorded, for its webhook: when it started and finished, its range in the change
/// feed.
#[derive(Debug, Default)]
pub struct RunFacts {
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub first_change_id: Option<i64>,
    pub last_change_id: Option<i64>,
}

/// Reads [`RunFacts`] of run `run_id`.
pub async fn run_facts(pool: &SqlitePool, run_id: i64) -> sqlx::Result<RunFacts> {
    let (started_at, finished_at, first, last): (
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<i64>,
    ) = sqlx::query_as(
        "SELECT (SELECT started_at FROM sync_runs WHERE run_id = ?1),
                    (SELECT finished_at FROM sync_runs WHERE run_id = ?1),
                    (SELECT MIN(change_id) FROM room_changes WHERE run_id = ?1),
                    (SELECT MAX(change_id) FROM room_changes WHERE run_id = ?1)",
    )
    .bind(run_id)
    .fetch_one(pool)
    .await?;
    Ok(RunFacts {
        started_at,
        finished_at,
        first_change_id: first,
        last_change_id: last,
    })
}
