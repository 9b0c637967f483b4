//! DingTalk's monthly quota in the database: every call counted in `api_calls`, and the budget
//! as the latest run knew it (internal table `roomsync_budget`), for readers that have no
//! configuration (`roomsync status`, the `sync_status` view).

use std::collections::BTreeMap;

use sqlx::SqliteConnection;

/// The calls of one run, to be added to its quota month.
#[derive(Debug, Clone, Default)]
pub struct RunCalls {
    /// `YYYY-MM` in the budget's time zone.
    pub month: String,
    /// Requests by endpoint path.
    pub by_endpoint: BTreeMap<&'static str, u64>,
}

impl RunCalls {
    /// Requests of every endpoint together.
    pub fn total(&self) -> u64 {
        self.by_endpoint.values().sum()
    }
}

/// The budget as recorded by the latest run.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetRecord {
    /// 0: no limit.
    pub monthly_calls: i64,
    pub time_zone: String,
    pub utc_offset_seconds: i64,
    pub schedule_cron: String,
    /// RFC 3339 UTC: until when DingTalk said the organisation's quota is spent.
    pub exhausted_until: Option<String>,
}

/// Calls of one endpoint in a month.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EndpointCalls {
    pub endpoint: String,
    pub calls: i64,
}

/// Adds calls of a run (those not recorded yet) to their month and to the run's row, in the
/// caller's transaction.
pub async fn record_calls(
    conn: &mut SqliteConnection,
    run_id: i64,
    calls: &RunCalls,
) -> sqlx::Result<()> {
    if calls.by_endpoint.is_empty() {
        return Ok(());
    }
    for (endpoint, n) in &calls.by_endpoint {
        sqlx::query(
            "INSERT INTO api_calls (month, endpoint, calls) VALUES (?1, ?2, ?3)
             ON CONFLICT (month, endpoint) DO UPDATE SET calls = calls + excluded.calls",
        )
        .bind(&calls.month)
        .bind(endpoint)
        .bind(*n as i64)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("UPDATE sync_runs SET api_calls = api_calls + ?2 WHERE run_id = ?1")
        .bind(run_id)
        .bind(calls.total() as i64)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records the budget a run works with (not touching `exhausted_until`).
pub async fn write_budget(conn: &mut SqliteConnection, budget: &BudgetRecord) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO roomsync_budget (id, monthly_calls, time_zone, utc_offset_seconds, schedule_cron)
         VALUES (1, ?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET monthly_calls = excluded.monthly_calls,
             time_zone = excluded.time_zone, utc_offset_seconds = excluded.utc_offset_seconds,
             schedule_cron = excluded.schedule_cron
         WHERE monthly_calls IS NOT excluded.monthly_calls OR time_zone IS NOT excluded.time_zone
            OR utc_offset_seconds IS NOT excluded.utc_offset_seconds
            OR schedule_cron IS NOT excluded.schedule_cron",
    )
    .bind(budget.monthly_calls)
    .bind(&budget.time_zone)
    .bind(budget.utc_offset_seconds)
    .bind(&budget.schedule_cron)
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets (or clears) until when the organisation's quota is spent.
pub async fn set_exhausted_until(
    conn: &mut SqliteConnection,
    until: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE roomsync_budget SET exhausted_until = ?1 WHERE exhausted_until IS NOT ?1")
        .bind(until)
        .execute(conn)
        .await?;
    Ok(())
}

/// The budget as the latest run recorded it, if a run has.
pub async fn read_budget(conn: &mut SqliteConnection) -> sqlx::Result<Option<BudgetRecord>> {
    let row: Option<(i64, String, i64, String, Option<String>)> = sqlx::query_as(
        "SELECT monthly_calls, time_zone, utc_offset_seconds, schedule_cron, exhausted_until
         FROM roomsync_budget WHERE id = 1",
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(
        |(monthly_calls, time_zone, utc_offset_seconds, schedule_cron, exhausted_until)| {
            BudgetRecord {
                monthly_calls,
                time_zone,
                utc_offset_seconds,
                schedule_cron,
                exhausted_until,
            }
        },
    ))
}

/// The calls of `month`, by endpoint.
pub async fn month_calls(
    conn: &mut SqliteConnection,
    month: &str,
) -> sqlx::Result<Vec<EndpointCalls>> {
    sqlx::query_as("SELECT endpoint, calls FROM api_calls WHERE month = ?1 ORDER BY endpoint")
        .bind(month)
        .fetch_all(conn)
        .await
}

/// The calls of the latest finished run of `kind`: the cost the next one is estimated at.
pub async fn last_run_cost(conn: &mut SqliteConnection, kind: &str) -> sqlx::Result<Option<u64>> {
    let cost: Option<i64> = sqlx::query_scalar(
        "SELECT api_calls FROM sync_runs WHERE kind = ?1 AND status <> 'running'
         ORDER BY run_id DESC LIMIT 1",
    )
    .bind(kind)
    .fetch_optional(conn)
    .await?;
    Ok(cost.map(|c| c.max(0) as u64))
}
