//! The apply: one short `BEGIN IMMEDIATE` transaction that turns the staged listing into the
//! live tables, writes the change feed and finishes the run row. Readers see the previous
//! state or the new one, never a mix.
//!
//! Every write is conditional on a difference, so a resync with no upstream change writes no
//! row of rooms, labels, room_labels or room_groups.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use sqlx::sqlite::SqliteConnection;
use sqlx::Connection;

use super::budget::{record_calls, set_exhausted_until, RunCalls};
use super::runs::{insert_error, now_rfc3339};
use super::staging::{StagedChange, Staging};
use crate::failure::Failure;

/// The room columns DingTalk supplies, besides the key: compared and copied by the apply, and
/// named in `room_changes.changed_fields`.
pub const SYNCED_ROOM_COLUMNS: [&str; 10] = [
    "corp_id",
    "room_staff_id",
    "room_name",
    "room_status",
    "room_capacity",
    "location_title",
    "location_desc",
    "room_picture",
    "isv_room_id",
    "group_id",
];

/// The name `changed_fields` uses for a change of a room's label set.
pub const LABELS_FIELD: &str = "labels";

/// What the apply needs besides the staged rows.
pub struct ApplyRequest<'a> {
    pub run_id: i64,
    pub pages_fetched: u32,
    /// Distinct rooms in the complete listing (staged or not).
    pub rooms_seen: u64,
    pub max_removal_ratio: f64,
    pub allow_mass_removal: bool,
    /// Change feed entries older than this many days are pruned; 0 keeps them forever.
    pub keep_changes_days: u32,
    /// The run's warnings to record (the first ones), written with the data.
    pub warnings: &'a [Failure],
    /// How many warnings the run had in all.
    pub warning_count: u64,
    /// The requests the run sent to DingTalk, recorded with it.
    pub calls: &'a RunCalls,
}

/// What an applied run changed, as recorded in its `sync_runs` row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyCounts {
    /// Distinct rooms in the listing.
    pub seen: u64,
    /// New and reappearing rooms.
    pub added: u64,
    pub updated: u64,
    pub removed: u64,
    /// Of `added`, the rooms that had been removed and came back.
    pub restored: u64,
}

/// How an apply ended; an error rolls everything back instead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ApplyOutcome {
    /// Committed: the data, the change feed and the run row.
    Applied(ApplyCounts),
    /// Nothing was changed: the listing would have removed more rooms than the guard allows.
    Guarded {
        would_remove: u64,
        active: u64,
        limit: f64,
    },
}

/// The most rooms one run may remove: max(5, ratio x active rooms).
pub fn removal_limit(active: u64, ratio: f64) -> f64 {
    (ratio * active as f64).max(5.0)
}

/// Applies the staged listing in one `BEGIN IMMEDIATE` transaction, step by step.
pub async fn apply(staging: &mut Staging, req: &ApplyRequest<'_>) -> sqlx::Result<ApplyOutcome> {
    let conn = staging.connection();
    prepare_connection(conn).await?;
    let mut steps = Steps::default();
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let now = now_rfc3339();
    if let Some(guarded) = steps.time("guard", removal_guard(&mut tx, req)).await? {
        tx.rollback().await?;
        return Ok(guarded);
    }
    let settled = steps.time("settle", settle_changes(&mut tx)).await?;
    steps.time("groups", write_groups(&mut tx, &now)).await?;
    steps.time("labels", write_labels(&mut tx)).await?;
    steps.time("rooms", write_rooms(&mut tx, &now)).await?;
    steps
        .time("label links", write_label_links(&mut tx))
        .await?;
    steps
        .time("changes", record_changes(&mut tx, req, &now))
        .await?;
    let removed = steps.time("removals", mark_removed(&mut tx, &now)).await?;
    steps
        .time("fingerprints", keep_fingerprints(&mut tx))
        .await?;
    let counts = ApplyCounts {
        seen: req.rooms_seen,
        added: settled.added,
        updated: settled.updated,
        removed,
        restored: settled.restored,
    };
    steps
        .time("run row", finish_run(&mut tx, req, &counts))
        .await?;
    steps.time("commit", tx.commit()).await?;
    steps.log();
    Ok(ApplyOutcome::Applied(counts))
}

/// Settings for the apply alone (the staging connection closes after the run).
async fn prepare_connection(conn: &mut SqliteConnection) -> sqlx::Result<()> {
    // A larger page cache than SQLite's 2 MB default, so that a large apply keeps the indexes
    // it writes in memory instead of re-reading spilled pages.
    execute(conn, "PRAGMA main.cache_size = -8192", &[]).await?;
    // No foreign-key enforcement. Every reference the apply writes points at a row that it
    // keeps or writes in the same transaction: each staged room's group and labels are staged
    // too, links are written only for rooms that are written, and nothing is ever deleted from
    // rooms, labels or room_groups. SQLite's lookups per row would only cost time, a quarter of
    // an initial 100k-room apply. The tests run `PRAGMA foreign_key_check` after every sync.
    execute(conn, "PRAGMA foreign_keys = OFF", &[]).await?;
    Ok(())
}

/// The mass-removal guard: `Some(Guarded)` when the listing would remove more active rooms
/// than `max(5, ratio x active)`, or every active room (an empty listing), and the run may not.
async fn removal_guard(
    conn: &mut SqliteConnection,
    req: &ApplyRequest<'_>,
) -> sqlx::Result<Option<ApplyOutcome>> {
    let would_remove = count(
        conn,
        "SELECT COUNT(*) FROM main.rooms
         WHERE removed_at IS NULL AND room_id IN (SELECT room_id FROM temp.stage_removed)",
    )
    .await?;
    if req.allow_mass_removal || would_remove == 0 {
        return Ok(None);
    }
    // An empty listing never wipes a mirror, however small: it is what a misconfigured app
    // or a broken upstream sends.
    if req.rooms_seen == 0 {
        return Ok(Some(ApplyOutcome::Guarded {
            would_remove,
            active: would_remove,
            limit: 0.0,
        }));
    }
    // The limit is never below 5 rooms: only a larger removal needs the count of active rooms
    // (a scan of the rooms table).
    if would_remove as f64 <= removal_limit(0, req.max_removal_ratio) {
        return Ok(None);
    }
    let active = count(
        conn,
        "SELECT COUNT(*) FROM main.rooms WHERE removed_at IS NULL",
    )
    .await?;
    let limit = removal_limit(active, req.max_removal_ratio);
    Ok(
        (would_remove as f64 > limit).then_some(ApplyOutcome::Guarded {
            would_remove,
            active,
            limit,
        }),
    )
}

/// Rooms added (new or back), of them restored, and updated, once the staged changes are
/// settled.
struct Settled {
    added: u64,
    restored: u64,
    updated: u64,
}

/// Settles every staged room's change (see [`settle_candidates`]) and counts the results.
async fn settle_changes(conn: &mut SqliteConnection) -> sqlx::Result<Settled> {
    settle_candidates(conn).await?;
    let (added, restored, updated): (i64, i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(change IN (?1, ?2)), 0), COALESCE(SUM(change = ?2), 0),
                COALESCE(SUM(change = ?3), 0)
         FROM temp.stage_rooms",
    )
    .bind(StagedChange::Added.as_str())
    .bind(StagedChange::Restored.as_str())
    .bind(StagedChange::Updated.as_str())
    .fetch_one(&mut *conn)
    .await?;
    Ok(Settled {
        added: added as u64,
        restored: restored as u64,
        updated: updated as u64,
    })
}

/// Settles `stage_rooms.change`. The ledger staged rooms as `added` (the mirror was empty) or
/// `differs`; a differing room is `added` (not in the mirror), `restored` (removed), or a
/// `candidate`: an active room whose fingerprint differs, then `updated` with the names of the
/// differing columns (and `labels` when the label set differs), or NULL when nothing differs.
async fn settle_candidates(conn: &mut SqliteConnection) -> sqlx::Result<()> {
    use StagedChange::{Added, Candidate, Differs, Restored, Updated};
    // Nothing staged as differing (a sync into an empty mirror stages every room as added).
    let differs: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM temp.stage_rooms WHERE change = ?1)")
            .bind(Differs.as_str())
            .fetch_one(&mut *conn)
            .await?;
    if !differs {
        return Ok(());
    }
    sqlx::query(
        "UPDATE temp.stage_rooms AS s
            SET change = CASE WHEN r.removed_at IS NULL THEN ?2 ELSE ?3 END
           FROM main.rooms AS r
          WHERE r.room_id = s.room_id AND s.change = ?1",
    )
    .bind(Differs.as_str())
    .bind(Candidate.as_str())
    .bind(Restored.as_str())
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE temp.stage_rooms SET change = ?2 WHERE change = ?1")
        .bind(Differs.as_str())
        .bind(Added.as_str())
        .execute(&mut *conn)
        .await?;
    // Built from the constant column list only (no input reaches the text).
    sqlx::query(sqlx::AssertSqlSafe(changed_fields_sql()))
        .bind(Candidate.as_str())
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE temp.stage_rooms SET change = CASE WHEN changed_fields <> '[]' THEN ?2 END
         WHERE change = ?1",
    )
    .bind(Candidate.as_str())
    .bind(Updated.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The statement that sets `changed_fields` of every candidate (`?1`): a JSON array of the
/// columns that differ from the active row, plus `labels` when the label set differs.
fn changed_fields_sql() -> String {
    let mut checks: Vec<String> = SYNCED_ROOM_COLUMNS
        .iter()
        .map(|c| format!("SELECT '{c}' AS field WHERE r.{c} IS NOT s.{c}"))
        .collect();
    checks.push(format!(
        "SELECT '{LABELS_FIELD}' WHERE
            EXISTS (SELECT 1 FROM temp.stage_room_labels AS sl WHERE sl.room_id = s.room_id
                      AND NOT EXISTS (SELECT 1 FROM main.room_labels AS rl
                                      WHERE rl.room_id = sl.room_id AND rl.label_id = sl.label_id))
         OR EXISTS (SELECT 1 FROM main.room_labels AS rl WHERE rl.room_id = s.room_id
                      AND NOT EXISTS (SELECT 1 FROM temp.stage_room_labels AS sl
                                      WHERE sl.room_id = rl.room_id AND sl.label_id = rl.label_id))"
    ));
    format!(
        "UPDATE temp.stage_rooms AS s
            SET changed_fields = (SELECT json_group_array(field) FROM ({}))
           FROM main.rooms AS r
          WHERE r.room_id = s.room_id AND s.change = ?1",
        checks.join(" UNION ALL ")
    )
}

/// Every staged group is present upstream: upserted, and restored if it was removed. Groups
/// the listing no longer has are marked removed.
async fn write_groups(conn: &mut SqliteConnection, now: &str) -> sqlx::Result<()> {
    execute(
        conn,
        "INSERT INTO main.room_groups (group_id, group_name, parent_id)
         SELECT group_id, group_name, parent_id FROM temp.stage_groups WHERE true
         ON CONFLICT (group_id) DO UPDATE SET group_name = excluded.group_name,
             parent_id = excluded.parent_id, removed_at = NULL
         WHERE room_groups.group_name IS NOT excluded.group_name
            OR room_groups.parent_id IS NOT excluded.parent_id
            OR room_groups.removed_at IS NOT NULL",
        &[],
    )
    .await?;
    execute(
        conn,
        "UPDATE main.room_groups SET removed_at = ?1
         WHERE removed_at IS NULL AND group_id NOT IN (SELECT group_id FROM temp.stage_groups)",
        &[now],
    )
    .await?;
    Ok(())
}

/// Labels: every label the listing names, with its latest name. A label the listing mentions
/// only without a name keeps the name it has.
async fn write_labels(conn: &mut SqliteConnection) -> sqlx::Result<()> {
    execute(
        conn,
        "INSERT INTO main.labels (label_id, label_name)
         SELECT label_id, label_name FROM temp.stage_labels WHERE true
         ON CONFLICT (label_id) DO UPDATE SET label_name = excluded.label_name
         WHERE excluded.label_name IS NOT NULL AND labels.label_name IS NOT excluded.label_name",
        &[],
    )
    .await?;
    Ok(())
}

/// New rooms, and changed and reappearing rooms.
async fn write_rooms(conn: &mut SqliteConnection, now: &str) -> sqlx::Result<()> {
    let columns = SYNCED_ROOM_COLUMNS.join(", ");
    // Both texts are built from the constant column list only.
    execute(
        conn,
        sqlx::AssertSqlSafe(format!(
            "INSERT INTO main.rooms (room_id, {columns}, first_seen_at, updated_at, removed_at)
             SELECT room_id, {columns}, ?1, ?1, NULL FROM temp.stage_rooms WHERE change = 'added'"
        )),
        &[now],
    )
    .await?;
    let assignments: Vec<String> = SYNCED_ROOM_COLUMNS
        .iter()
        .map(|c| format!("{c} = s.{c}"))
        .collect();
    execute(
        conn,
        sqlx::AssertSqlSafe(format!(
            "UPDATE main.rooms AS r SET {}, updated_at = ?1, removed_at = NULL
             FROM temp.stage_rooms AS s
             WHERE s.room_id = r.room_id AND s.change IN ('updated', 'restored')",
            assignments.join(", ")
        )),
        &[now],
    )
    .await?;
    Ok(())
}

/// The label links of every written room: links it no longer has go, new ones come.
async fn write_label_links(conn: &mut SqliteConnection) -> sqlx::Result<()> {
    // Only rooms that were already in the mirror can have links to drop.
    execute(
        conn,
        "DELETE FROM main.room_labels
         WHERE room_id IN (SELECT room_id FROM temp.stage_rooms WHERE change IN ('updated', 'restored'))
           AND NOT EXISTS (SELECT 1 FROM temp.stage_room_labels AS sl
                           WHERE sl.room_id = room_labels.room_id AND sl.label_id = room_labels.label_id)",
        &[],
    )
    .await?;
    // Links of rooms that turned out unchanged are left out; the few such rooms make a small
    // list, cheaper to consult than a join of every link with its staged room.
    execute(
        conn,
        "INSERT OR IGNORE INTO main.room_labels (room_id, label_id)
         SELECT room_id, label_id FROM temp.stage_room_labels
         WHERE room_id NOT IN (SELECT room_id FROM temp.stage_rooms WHERE change IS NULL)",
        &[],
    )
    .await?;
    Ok(())
}

/// The change feed entries of this run (before the removals are applied), and the pruning of
/// entries older than `keep_changes_days`.
async fn record_changes(
    conn: &mut SqliteConnection,
    req: &ApplyRequest<'_>,
    now: &str,
) -> sqlx::Result<()> {
    let run_id = req.run_id.to_string();
    execute(
        conn,
        "INSERT INTO main.room_changes (run_id, room_id, change, changed_at, changed_fields)
         SELECT ?1, room_id, change, ?2, CASE WHEN change = 'updated' THEN changed_fields END
         FROM temp.stage_rooms WHERE change IS NOT NULL ORDER BY room_id",
        &[&run_id, now],
    )
    .await?;
    execute(
        conn,
        "INSERT INTO main.room_changes (run_id, room_id, change, changed_at, changed_fields)
         SELECT ?1, r.room_id, 'removed', ?2, NULL FROM main.rooms AS r
         WHERE r.removed_at IS NULL AND r.room_id IN (SELECT room_id FROM temp.stage_removed)
         ORDER BY r.room_id",
        &[&run_id, now],
    )
    .await?;
    if req.keep_changes_days > 0 {
        let keep = Duration::from_secs(u64::from(req.keep_changes_days) * 86_400);
        let cutoff = SystemTime::now()
            .checked_sub(keep)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let cutoff = humantime::format_rfc3339_seconds(cutoff).to_string();
        // change_id grows with changed_at: everything before the first entry young enough goes.
        // The scan stops there, so it reads only what it deletes.
        execute(
            conn,
            "DELETE FROM main.room_changes WHERE change_id < COALESCE(
                 (SELECT change_id FROM main.room_changes WHERE changed_at >= ?1 ORDER BY change_id LIMIT 1),
                 (SELECT MAX(change_id) + 1 FROM main.room_changes))",
            &[&cutoff],
        )
        .await?;
    }
    Ok(())
}

/// Marks the active rooms the listing no longer has as removed; returns how many.
async fn mark_removed(conn: &mut SqliteConnection, now: &str) -> sqlx::Result<u64> {
    execute(
        conn,
        "UPDATE main.rooms SET removed_at = ?1
         WHERE removed_at IS NULL AND room_id IN (SELECT room_id FROM temp.stage_removed)",
        &[now],
    )
    .await
}

/// Fingerprints are kept for active rooms only: a removed room's row goes, every staged room's
/// row is written (a restored room gets its row back).
async fn keep_fingerprints(conn: &mut SqliteConnection) -> sqlx::Result<()> {
    execute(
        conn,
        "DELETE FROM main.roomsync_room_fingerprints
         WHERE room_id IN (SELECT room_id FROM temp.stage_removed)",
        &[],
    )
    .await?;
    execute(
        conn,
        "INSERT INTO main.roomsync_room_fingerprints (room_id, fingerprint)
         SELECT room_id, fingerprint FROM temp.stage_rooms WHERE true
         ON CONFLICT (room_id) DO UPDATE SET fingerprint = excluded.fingerprint
         WHERE roomsync_room_fingerprints.fingerprint IS NOT excluded.fingerprint",
        &[],
    )
    .await?;
    Ok(())
}

/// The run row: `succeeded`, with its counts, and its warning rows, in the same transaction
/// as the data.
async fn finish_run(
    conn: &mut SqliteConnection,
    req: &ApplyRequest<'_>,
    counts: &ApplyCounts,
) -> sqlx::Result<()> {
    for warning in req.warnings {
        insert_error(conn, req.run_id, warning).await?;
    }
    record_calls(conn, req.run_id, req.calls).await?;
    // DingTalk answered: whatever quota was spent is back.
    set_exhausted_until(conn, None).await?;
    sqlx::query(
        "UPDATE main.sync_runs SET status = 'succeeded', finished_at = ?2, pages_fetched = ?3,
             rooms_seen = ?4, rooms_added = ?5, rooms_updated = ?6, rooms_removed = ?7, error = NULL,
             warnings = ?8
         WHERE run_id = ?1",
    )
    .bind(req.run_id)
    .bind(now_rfc3339())
    .bind(req.pages_fetched)
    .bind(counts.seen as i64)
    .bind(counts.added as i64)
    .bind(counts.updated as i64)
    .bind(counts.removed as i64)
    .bind(req.warning_count as i64)
    .execute(conn)
    .await?;
    Ok(())
}

/// Runs one statement with text parameters; returns the rows it changed. The values go through
/// `params`, never into the text: `sql` is a literal or an `AssertSqlSafe` of constants.
async fn execute(
    conn: &mut SqliteConnection,
    sql: impl sqlx::SqlSafeStr,
    params: &[&str],
) -> sqlx::Result<u64> {
    let mut query = sqlx::query(sql);
    for p in params {
        query = query.bind(*p);
    }
    Ok(query.execute(conn).await?.rows_affected())
}

async fn count(conn: &mut SqliteConnection, sql: &'static str) -> sqlx::Result<u64> {
    let n: i64 = sqlx::query_scalar(sql).fetch_one(conn).await?;
    Ok(n as u64)
}

/// Milliseconds per step of the apply, logged at debug level: where a large apply spends its
/// time.
#[derive(Default)]
struct Steps {
    done: Vec<StepTime>,
}

struct StepTime {
    step: &'static str,
    ms: u128,
}

impl Steps {
    /// Runs one step and notes how long it took.
    async fn time<T>(
        &mut self,
        step: &'static str,
        work: impl Future<Output = sqlx::Result<T>>,
    ) -> sqlx::Result<T> {
        let started = Instant::now();
        let result = work.await;
        self.done.push(StepTime {
            step,
            ms: started.elapsed().as_millis(),
        });
        result
    }

    fn log(&self) {
        let steps: Vec<String> = self
            .done
            .iter()
            .map(|t| format!("{} {}", t.step, t.ms))
            .collect();
        tracing::debug!(steps = %steps.join(", "), "apply steps (ms)");
    }
}
