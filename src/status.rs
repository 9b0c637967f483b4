//! `roomsync status`: the latest runs and the age of the last success, for people and for
//! monitoring, and the API budget ([`quota`]). Reads the database read-only; never blocks (or is
//! blocked by) a running sync.

pub mod quota;

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use sqlx::{Connection, FromRow};

use crate::store::open_read_only;

#[derive(Debug, FromRow)]
pub struct RunRow {
    pub run_id: i64,
    pub trigger: String,
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub pages_fetched: Option<i64>,
    pub rooms_seen: Option<i64>,
    pub rooms_added: Option<i64>,
    pub rooms_updated: Option<i64>,
    pub rooms_removed: Option<i64>,
    pub warnings: i64,
    pub error: Option<String>,
}

/// What `status` found.
#[derive(Debug)]
pub struct StatusReport {
    pub runs: Vec<RunRow>,
    pub last_success: Option<RunRow>,
    pub active_rooms: i64,
    /// None before a run has recorded the budget.
    pub budget: Option<quota::BudgetStatus>,
    /// The latest availability refresh, and the latest successful one.
    pub latest_refresh: Option<RefreshRow>,
    pub last_refresh_success: Option<RefreshRow>,
}

/// An availability refresh as `status` shows it.
#[derive(Debug, FromRow)]
pub struct RefreshRow {
    pub run_id: i64,
    pub status: String,
    pub finished_at: Option<String>,
    pub rooms_seen: Option<i64>,
    pub error: Option<String>,
    /// Rooms the refresh could not read (they kept their previous busy rows).
    pub failed_rooms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("no database at {0}: no sync has run yet")]
    NoDatabase(String),
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: sqlx::Error },
    #[error("cannot read {path}: {source} (members of the database's group, roomsync for the service, may read it)")]
    Access {
        path: String,
        source: std::io::Error,
    },
}

const RUN_COLUMNS: &str =
    "run_id, trigger, status, started_at, finished_at, pages_fetched, rooms_seen,
     rooms_added, rooms_updated, rooms_removed, warnings, error";

/// What an older schema lacks. `status` may run against a mirror the daemon has not migrated
/// yet (the package was upgraded, the service not yet restarted) or a replica of an older
/// primary: it reports what that schema holds instead of failing.
struct SchemaParts {
    /// `sync_runs.warnings` (migration 6).
    warnings: bool,
    /// `sync_runs.kind` and the budget tables (migration 7).
    budget: bool,
    /// `room_schedule_checks` (migration 8).
    availability: bool,
}

impl SchemaParts {
    async fn read(conn: &mut sqlx::SqliteConnection) -> sqlx::Result<SchemaParts> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT 'table:' || name FROM sqlite_master WHERE type = 'table'
             UNION ALL SELECT 'column:' || name FROM pragma_table_info('sync_runs')",
        )
        .fetch_all(conn)
        .await?;
        let has = |name: &str| names.iter().any(|n| n == name);
        Ok(SchemaParts {
            warnings: has("column:warnings"),
            budget: has("column:kind") && has("table:roomsync_budget") && has("table:api_calls"),
            availability: has("column:kind") && has("table:room_schedule_checks"),
        })
    }

    /// The run columns of [`RunRow`], with 0 warnings where the schema did not count them.
    fn run_columns(&self) -> String {
        if self.warnings {
            RUN_COLUMNS.to_string()
        } else {
            RUN_COLUMNS.replace("warnings,", "0 AS warnings,")
        }
    }

    /// The condition that picks room-list runs (every run, before availability refreshes).
    fn rooms_runs(&self) -> &'static str {
        if self.budget {
            "kind = 'rooms'"
        } else {
            "1 = 1"
        }
    }
}

/// Reads the latest `limit` runs and the last successful one.
pub async fn read(db: &Path, limit: u32) -> Result<StatusReport, StatusError> {
    // A database we may not see is not a missing one: say which.
    match std::fs::metadata(db) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StatusError::NoDatabase(db.display().to_string()))
        }
        Err(source) => {
            return Err(StatusError::Access {
                path: db.display().to_string(),
                source,
            })
        }
    }
    let read_err = |source| StatusError::Read {
        path: db.display().to_string(),
        source,
    };
    let mut conn = open_read_only(db).await.map_err(read_err)?;
    // One read transaction: the three answers agree with each other.
    let mut tx = conn.begin().await.map_err(read_err)?;
    let schema = SchemaParts::read(&mut tx).await.map_err(read_err)?;
    let (columns, rooms_runs) = (schema.run_columns(), schema.rooms_runs());
    // Built from constants only (the column list and the condition); the limit is bound.
    let runs = sqlx::query_as::<_, RunRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {columns} FROM sync_runs WHERE {rooms_runs} ORDER BY run_id DESC LIMIT ?1"
    )))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await
    .map_err(read_err)?;
    let last_success = sqlx::query_as::<_, RunRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {columns} FROM sync_runs WHERE {rooms_runs} AND status = 'succeeded'
         ORDER BY run_id DESC LIMIT 1"
    )))
    .fetch_optional(&mut *tx)
    .await
    .map_err(read_err)?;
    let active_rooms: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM rooms WHERE removed_at IS NULL")
            .fetch_one(&mut *tx)
            .await
            .map_err(read_err)?;
    let budget = if schema.budget {
        quota::read(&mut tx).await.map_err(read_err)?
    } else {
        None
    };
    let (latest_refresh, last_refresh_success) = if schema.availability {
        (
            read_refresh(&mut tx, "").await.map_err(read_err)?,
            read_refresh(&mut tx, "AND r.status = 'succeeded'")
                .await
                .map_err(read_err)?,
        )
    } else {
        (None, None)
    };
    tx.rollback().await.map_err(read_err)?;
    conn.close().await.map_err(read_err)?;
    Ok(StatusReport {
        runs,
        last_success,
        active_rooms,
        budget,
        latest_refresh,
        last_refresh_success,
    })
}

/// The latest availability refresh matching `condition` (an `AND ...` on `r`, a literal).
async fn read_refresh(
    conn: &mut sqlx::SqliteConnection,
    condition: &'static str,
) -> sqlx::Result<Option<RefreshRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT r.run_id, r.status, r.finished_at, r.rooms_seen, r.error,
                (SELECT COUNT(*) FROM room_schedule_checks AS c
                 WHERE c.run_id = r.run_id AND c.error IS NOT NULL) AS failed_rooms
         FROM sync_runs AS r WHERE r.kind = 'availability' {condition}
         ORDER BY r.run_id DESC LIMIT 1"
    )))
    .fetch_optional(conn)
    .await
}

/// Seconds between two stored timestamps, or from one to now.
fn seconds_between(from: &str, to: Option<&str>) -> Option<u64> {
    let from = humantime::parse_rfc3339(from).ok()?;
    let to = match to {
        Some(t) => humantime::parse_rfc3339(t).ok()?,
        None => SystemTime::now(),
    };
    Some(to.duration_since(from).unwrap_or_default().as_secs())
}

impl StatusReport {
    /// Age of the last successful run (from when it finished), if there is one.
    pub fn last_success_age(&self) -> Option<Duration> {
        let run = self.last_success.as_ref()?;
        seconds_between(run.finished_at.as_deref()?, None).map(Duration::from_secs)
    }

    /// Whether the mirror is fresh enough: a success younger than `max_age`.
    pub fn is_fresh(&self, max_age: Duration) -> bool {
        self.last_success_age().is_some_and(|age| age < max_age)
    }

    /// Age of the last successful availability refresh, if there is one.
    pub fn last_refresh_age(&self) -> Option<Duration> {
        let run = self.last_refresh_success.as_ref()?;
        seconds_between(run.finished_at.as_deref()?, None).map(Duration::from_secs)
    }

    /// Whether the availability is fresh enough: a successful refresh younger than `max_age`.
    pub fn availability_is_fresh(&self, max_age: Duration) -> bool {
        self.last_refresh_age().is_some_and(|age| age < max_age)
    }

    /// The line about availability refreshes, when there has been one.
    fn render_refresh(&self, out: &mut String, max_age: Option<Duration>) {
        let Some(latest) = &self.latest_refresh else {
            if let Some(max) = max_age {
                let _ = writeln!(
                    out,
                    "last availability refresh: none: STALE (max age {})",
                    humantime::format_duration(max)
                );
            }
            return;
        };
        let verdict = max_age.map(|max| {
            let fresh = self.availability_is_fresh(max);
            format!(
                ": {} (max age {})",
                if fresh { "fresh" } else { "STALE" },
                humantime::format_duration(max)
            )
        });
        let age = |row: &RefreshRow| {
            seconds_between(row.finished_at.as_deref().unwrap_or(""), None)
                .map(|s| {
                    format!(
                        ", {} ago",
                        humantime::format_duration(Duration::from_secs(s))
                    )
                })
                .unwrap_or_default()
        };
        match &self.last_refresh_success {
            Some(ok) => {
                let _ = writeln!(
                    out,
                    "last availability refresh: run {} finished {}{} ({} rooms, {} with errors){}",
                    ok.run_id,
                    ok.finished_at.as_deref().unwrap_or("?"),
                    age(ok),
                    ok.rooms_seen.unwrap_or(0),
                    ok.failed_rooms,
                    verdict.unwrap_or_default()
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "last availability refresh: none succeeded{}",
                    verdict.unwrap_or_default()
                );
            }
        }
        if latest.status != "succeeded" {
            let _ = writeln!(
                out,
                "latest availability refresh: run {} {}: {}",
                latest.run_id,
                latest.status,
                latest.error.as_deref().unwrap_or("")
            );
        }
    }

    /// The report for people; `availability_max_age` is `--availability-max-age`.
    pub fn render(
        &self,
        db: &Path,
        max_age: Duration,
        availability_max_age: Option<Duration>,
    ) -> String {
        let mut out = String::new();
        let max = humantime::format_duration(max_age);
        let _ = writeln!(out, "database: {}", db.display());
        let _ = writeln!(out, "active rooms: {}", self.active_rooms);
        match (&self.last_success, self.last_success_age()) {
            (Some(run), Some(age)) => {
                let verdict = if age < max_age { "fresh" } else { "STALE" };
                let _ = writeln!(
                    out,
                    "last success: run {} finished {}, {} ago: {verdict} (max age {max})",
                    run.run_id,
                    run.finished_at.as_deref().unwrap_or("?"),
                    humantime::format_duration(age),
                );
            }
            _ => {
                let _ = writeln!(out, "last success: none: STALE (max age {max})");
            }
        }
        self.render_refresh(&mut out, availability_max_age);
        if let Some(budget) = &self.budget {
            budget.render(&mut out, max_age);
        }
        if self.runs.is_empty() {
            let _ = writeln!(out, "no runs recorded");
            return out;
        }
        let _ = writeln!(
            out,
            "\n{:>6}  {:<8}  {:<11}  {:<20}  {:>8}  {:>5}  {:>6}  {:>5}  {:>7}  {:>7}  {:>8}  error",
            "run",
            "trigger",
            "status",
            "started",
            "duration",
            "pages",
            "seen",
            "added",
            "updated",
            "removed",
            "warnings"
        );
        let num = |n: Option<i64>| n.map_or("-".to_string(), |n| n.to_string());
        for r in &self.runs {
            let duration = seconds_between(&r.started_at, r.finished_at.as_deref())
                .map(|s| humantime::format_duration(Duration::from_secs(s)).to_string())
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "{:>6}  {:<8}  {:<11}  {:<20}  {:>8}  {:>5}  {:>6}  {:>5}  {:>7}  {:>7}  {:>8}  {}",
                r.run_id,
                r.trigger,
                r.status,
                r.started_at,
                duration,
                num(r.pages_fetched),
                num(r.rooms_seen),
                num(r.rooms_added),
                num(r.rooms_updated),
                num(r.rooms_removed),
                r.warnings,
                r.error.as_deref().unwrap_or("")
            );
        }
        out
    }
}
