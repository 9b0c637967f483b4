//! Room availability in the database: which rooms a refresh asks about, and the apply of a
//! refresh in one transaction (`room_busy`, `room_schedule_checks`, the run row), so readers
//! see the previous state or the new one. A refresh that finds the busy rows as stored writes
//! no row of `room_busy`.

use sqlx::{Connection, Executor, SqliteConnection, SqlitePool};

use super::budget::{record_calls, set_exhausted_until, RunCalls};
use super::runs::{insert_error, now_rfc3339};
use crate::dingtalk::schedule::BusyItem;
use crate::failure::Failure;

/// The active rooms to refresh, in order: every one, or those in `only_groups` and their
/// subgroups (a cycle in the group tree is harmless).
pub async fn rooms_in_scope(pool: &SqlitePool, only_groups: &[i64]) -> sqlx::Result<Vec<String>> {
    let groups = serde_json::to_string(only_groups).expect("ids serialize");
    sqlx::query_scalar(
        "WITH RECURSIVE scope (group_id) AS (
             SELECT value FROM json_each(?1)
             UNION
             SELECT g.group_id FROM room_groups AS g JOIN scope AS s ON g.parent_id = s.group_id
         )
         SELECT room_id FROM rooms
         WHERE removed_at IS NULL
           AND (json_array_length(?1) = 0 OR group_id IN (SELECT group_id FROM scope))
         ORDER BY room_id",
    )
    .bind(groups)
    .fetch_all(pool)
    .await
}

/// A room DingTalk answered without an error, with its readable items.
#[derive(Debug, Clone)]
pub struct AnsweredRoom {
    pub room_id: String,
    pub items: Vec<BusyItem>,
}

/// A room whose schedule could not be read this time: it keeps its busy rows.
#[derive(Debug, Clone)]
pub struct FailedRoom {
    pub room_id: String,
    pub error: String,
}

/// What a refresh applies.
pub struct RefreshApply<'a> {
    pub run_id: i64,
    /// RFC 3339 UTC, the window every request of the refresh asked for.
    pub window_start: &'a str,
    pub window_end: &'a str,
    pub answered: &'a [AnsweredRoom],
    pub failed: &'a [FailedRoom],
    /// Requests sent (the run row's `pages_fetched`).
    pub requests: u32,
    /// The first warnings, and how many there were.
    pub warnings: &'a [Failure],
    pub warning_count: u64,
    pub calls: &'a RunCalls,
}

/// Applies a refresh in one `BEGIN IMMEDIATE` transaction.
pub async fn apply_refresh(pool: &SqlitePool, req: &RefreshApply<'_>) -> sqlx::Result<()> {
    let mut conn = pool.acquire().await?;
    stage(&mut conn, req.answered).await?;
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    replace_busy_rows(&mut tx).await?;
    record_checks(&mut tx, req).await?;
    for warning in req.warnings {
        insert_error(&mut tx, req.run_id, warning).await?;
    }
    record_calls(&mut tx, req.run_id, req.calls).await?;
    // An answered refresh shows the quota is not spent (any more).
    set_exhausted_until(&mut tx, None).await?;
    sqlx::query(
        "UPDATE sync_runs SET status = 'succeeded', finished_at = ?2, pages_fetched = ?3,
             rooms_seen = ?4, warnings = ?5, error = NULL
         WHERE run_id = ?1",
    )
    .bind(req.run_id)
    .bind(now_rfc3339())
    .bind(req.requests)
    .bind((req.answered.len() + req.failed.len()) as i64)
    .bind(req.warning_count as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    sqlx::query("DROP TABLE temp.availability_stage")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The answered rooms' items in a TEMP table of this connection (outside the database file),
/// keyed so that the comparison with the stored rows is a lookup per row.
async fn stage(conn: &mut SqliteConnection, answered: &[AnsweredRoom]) -> sqlx::Result<()> {
    // Executor::execute of a multi-statement string (sqlx::raw_sql's future is not provably
    // Send in the daemon's spawned run).
    (&mut *conn)
        .execute(
            "DROP TABLE IF EXISTS temp.availability_stage;
         DROP TABLE IF EXISTS temp.availability_rooms;
         CREATE TEMP TABLE availability_stage (
             room_id TEXT NOT NULL, start_at TEXT NOT NULL, end_at TEXT NOT NULL,
             event_id TEXT, status TEXT, organizer_id TEXT, time_zone TEXT
         );
         CREATE INDEX temp.availability_stage_key ON availability_stage (room_id, start_at);
         CREATE TEMP TABLE availability_rooms (room_id TEXT PRIMARY KEY) WITHOUT ROWID;",
        )
        .await?;
    // One statement each, the rows as a JSON array: a round trip per row would cost more than
    // the whole apply at 10,000 rooms.
    // Only owned JSON text is held across the awaits: borrowed rows there trip the compiler's
    // proof that the daemon's spawned run is `Send` (rust-lang/rust#102211).
    let (rooms, items) = staged_json(answered);
    sqlx::query(
        "INSERT OR IGNORE INTO temp.availability_rooms (room_id) SELECT value FROM json_each(?1)",
    )
    .bind(rooms)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO temp.availability_stage
             (room_id, start_at, end_at, event_id, status, organizer_id, time_zone)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
                value ->> 6
         FROM json_each(?1)",
    )
    .bind(items)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The answered rooms' ids and items as JSON arrays.
fn staged_json(answered: &[AnsweredRoom]) -> (String, String) {
    let rooms: Vec<&str> = answered.iter().map(|r| r.room_id.as_str()).collect();
    let items: Vec<StagedItem<'_>> = answered
        .iter()
        .flat_map(|r| r.items.iter().map(move |item| StagedItem(&r.room_id, item)))
        .collect();
    (
        serde_json::to_string(&rooms).expect("ids serialize"),
        serde_json::to_string(&items).expect("items serialize"),
    )
}

/// A staged item as a JSON array: `[room_id, start_at, end_at, event_id, status, organizer_id,
/// time_zone]`.
struct StagedItem<'a>(&'a str, &'a BusyItem);

impl serde::Serialize for StagedItem<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let StagedItem(room_id, i) = self;
        (
            room_id,
            &i.start_at,
            &i.end_at,
            &i.event_id,
            &i.status,
            &i.organizer_id,
            &i.time_zone,
        )
            .serialize(s)
    }
}

/// Whether a stored row and a staged row are the same item.
const SAME_ITEM: &str = "s.room_id = b.room_id AND s.start_at = b.start_at AND s.end_at = b.end_at
     AND s.event_id IS b.event_id AND s.status IS b.status
     AND s.organizer_id IS b.organizer_id AND s.time_zone IS b.time_zone";

/// Every answered room's rows become its staged items: rows no longer answered go (those
/// that ended before the window among them), new ones come, identical ones stay untouched.
async fn replace_busy_rows(conn: &mut SqliteConnection) -> sqlx::Result<()> {
    // Both texts are constants joined with SAME_ITEM, a constant: no input reaches them.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM main.room_busy AS b
         WHERE b.room_id IN (SELECT room_id FROM temp.availability_rooms)
           AND NOT EXISTS (SELECT 1 FROM temp.availability_stage AS s WHERE {SAME_ITEM})"
    )))
    .execute(&mut *conn)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO main.room_busy
             (room_id, start_at, end_at, event_id, status, organizer_id, time_zone)
         SELECT DISTINCT s.room_id, s.start_at, s.end_at, s.event_id, s.status, s.organizer_id,
                s.time_zone
         FROM temp.availability_stage AS s
         WHERE NOT EXISTS (SELECT 1 FROM main.room_busy AS b WHERE {SAME_ITEM})"
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// `room_schedule_checks` of every room asked about: answered now, or marked with its error
/// (its last good answer's time kept).
async fn record_checks(conn: &mut SqliteConnection, req: &RefreshApply<'_>) -> sqlx::Result<()> {
    let rooms = checks_json(req);
    sqlx::query(
        "INSERT INTO main.room_schedule_checks
             (room_id, window_start_at, window_end_at, checked_at, error, run_id)
         SELECT value ->> 0, ?2, ?3, CASE WHEN value ->> 1 IS NULL THEN ?4 END, value ->> 1, ?5
         FROM json_each(?1) WHERE true
         ON CONFLICT (room_id) DO UPDATE SET window_start_at = excluded.window_start_at,
             window_end_at = excluded.window_end_at,
             checked_at = COALESCE(excluded.checked_at, room_schedule_checks.checked_at),
             error = excluded.error, run_id = excluded.run_id",
    )
    .bind(rooms)
    .bind(req.window_start)
    .bind(req.window_end)
    .bind(now_rfc3339())
    .bind(req.run_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Every room asked about, as a JSON array of `[room_id, error]` (error null when answered).
fn checks_json(req: &RefreshApply<'_>) -> String {
    let rooms: Vec<(&str, Option<&str>)> = req
        .answered
        .iter()
        .map(|r| (r.room_id.as_str(), None))
        .chain(
            req.failed
                .iter()
                .map(|r| (r.room_id.as_str(), Some(r.error.as_str()))),
        )
        .collect();
    serde_json::to_string(&rooms).expect("rooms serialize")
}
