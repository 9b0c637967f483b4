//! The apply: one short `BEGIN IMMEDIATE` transaction that turns the staged listing into the
//! live tables, writes the change feed and finishes the run row. Readers see the previous
//! state or the new one, never a mix.
//!
//! Every write is conditional on a difference, so a resync with no upstream change writes no
//! row of rooms, labels, room_labels or room_groups.

use std::time::{Duration, Instant, SystemTime};

use sqlx::sqlite::SqliteConnection;
use sqlx::Connection;

use super::runs::now_rfc3339;
use super::staging::Staging;

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

pub struct ApplyRequest {
    pub run_id: i64,
    pub pages_fetched: u32,
    /// Distinct rooms in the complete listing (staged or not).
    pub rooms_seen: u64,
    pub max_removal_ratio: f64,
    pub allow_mass_removal: bool,
    /// Change feed entries older than this many days are pruned; 0 keeps them forever.
    pub keep_changes_days: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyCounts {
    pub seen: u64,
    pub added: u64,
    pub updated: u64,
    pub removed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ApplyOutcome {
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

pub async fn apply(staging: &mut Staging, req: &ApplyRequest) -> sqlx::Result<ApplyOutcome> {
    // Settings for the apply alone (the staging connection closes after the run):
    // - a larger page cache than SQLite's 2 MB default, so that a large apply keeps the indexes
    //   it writes in memory instead of re-reading spilled pages;
    // - no foreign-key enforcement. Every reference the apply writes points at a row that it
    //   keeps or writes in the same transaction: each staged room's group and labels are staged
    //   too, links are written only for rooms that are written, and nothing is ever deleted
    //   from rooms, labels or room_groups. SQLite's lookups per row would only cost time, a
    //   quarter of an initial 100k-room apply. The tests run `PRAGMA foreign_key_check` after
    //   every sync.
    let conn = staging.connection();
    sqlx::query("PRAGMA main.cache_size = -8192")
        .execute(&mut *conn)
        .await?;
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(&mut *conn)
        .await?;
    let mut steps = Steps::start();
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let now = now_rfc3339();

    let would_remove = count(
        &mut tx,
        "SELECT COUNT(*) FROM main.rooms
         WHERE removed_at IS NULL AND room_id IN (SELECT room_id FROM temp.stage_removed)",
    )
    .await?;
    // The limit is never below 5 rooms: only a larger removal needs the count of active rooms
    // (a scan of the rooms table).
    if would_remove as f64 > removal_limit(0, req.max_removal_ratio) && !req.allow_mass_removal {
        let active = count(
            &mut tx,
            "SELECT COUNT(*) FROM main.rooms WHERE removed_at IS NULL",
        )
        .await?;
        let limit = removal_limit(active, req.max_removal_ratio);
        if would_remove as f64 > limit {
            tx.rollback().await?;
            return Ok(ApplyOutcome::Guarded {
                would_remove,
                active,
                limit,
            });
        }
    }

    steps.mark("guard");
    settle_candidates(&mut tx).await?;
    steps.mark("settle");
    let (added, updated): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(change IN ('added', 'restored')), 0),
                COALESCE(SUM(change = 'updated'), 0)
         FROM temp.stage_rooms",
    )
    .fetch_one(&mut *tx)
    .await?;
    let (added, updated) = (added as u64, updated as u64);

    // Groups and labels first: rooms and links refer to them.
    write_groups(&mut tx, &now).await?;
    steps.mark("groups");
    execute(
        &mut tx,
        "INSERT INTO main.labels (label_id, label_name)
         SELECT label_id, label_name FROM temp.stage_labels WHERE true
         ON CONFLICT (label_id) DO UPDATE SET label_name = excluded.label_name
         WHERE labels.label_name IS NOT excluded.label_name",
        &[],
    )
    .await?;
    write_rooms(&mut tx, &now, &mut steps).await?;
    record_changes(&mut tx, req, &now).await?;
    steps.mark("changes");
    let removed = execute(
        &mut tx,
        "UPDATE main.rooms SET removed_at = ?1
         WHERE removed_at IS NULL AND room_id IN (SELECT room_id FROM temp.stage_removed)",
        &[&now],
    )
    .await?;
    // Fingerprints are kept for active rooms only (a restored room gets its row back below).
    execute(
        &mut tx,
        "DELETE FROM main.roomsync_room_fingerprints
         WHERE room_id IN (SELECT room_id FROM temp.stage_removed)",
        &[],
    )
    .await?;
    execute(
        &mut tx,
        "INSERT INTO main.roomsync_room_fingerprints (room_id, fingerprint)
         SELECT room_id, fingerprint FROM temp.stage_rooms WHERE true
         ON CONFLICT (room_id) DO UPDATE SET fingerprint = excluded.fingerprint
         WHERE roomsync_room_fingerprints.fingerprint IS NOT excluded.fingerprint",
        &[],
    )
    .await?;

    let counts = ApplyCounts {
        seen: req.rooms_seen,
        added,
        updated,
        removed,
    };
    sqlx::query(
        "UPDATE main.sync_runs SET status = 'succeeded', finished_at = ?2, pages_fetched = ?3,
             rooms_seen = ?4, rooms_added = ?5, rooms_updated = ?6, rooms_removed = ?7, error = NULL
         WHERE run_id = ?1",
    )
    .bind(req.run_id)
    .bind(now_rfc3339())
    .bind(req.pages_fetched)
    .bind(counts.seen as i64)
    .bind(added as i64)
    .bind(updated as i64)
    .bind(removed as i64)
    .execute(&mut *tx)
    .await?;
    steps.mark("removals, fingerprints");
    tx.commit().await?;
    steps.mark("commit");
    steps.log();
    Ok(ApplyOutcome::Applied(counts))
}

/// Settles `stage_rooms.change`. The ledger staged rooms as `added` (the mirror was empty) or
/// `unknown`; an unknown room is `added` (not in the mirror), `restored` (removed), or an active
/// room whose fingerprint differs: `updated` with the names of the differing columns (and
/// `labels` when the label set differs), or NULL when nothing differs.
async fn settle_candidates(conn: &mut SqliteConnection) -> sqlx::Result<()> {
    // Nothing staged as unknown (a sync into an empty mirror stages every room as added).
    let unknown: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM temp.stage_rooms WHERE change = 'unknown')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !unknown {
        return Ok(());
    }
    sqlx::query(
        "UPDATE temp.stage_rooms AS s
            SET change = CASE WHEN r.removed_at IS NULL THEN 'candidate' ELSE 'restored' END
           FROM main.rooms AS r
          WHERE r.room_id = s.room_id AND s.change = 'unknown'",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE temp.stage_rooms SET change = 'added' WHERE change = 'unknown'")
        .execute(&mut *conn)
        .await?;
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
    let sql = format!(
        "UPDATE temp.stage_rooms AS s
            SET changed_fields = (SELECT json_group_array(field) FROM ({}))
           FROM main.rooms AS r
          WHERE r.room_id = s.room_id AND s.change = 'candidate'",
        checks.join(" UNION ALL ")
    );
    sqlx::query(&sql).execute(&mut *conn).await?;
    sqlx::query(
        "UPDATE temp.stage_rooms SET change = CASE WHEN changed_fields <> '[]' THEN 'updated' END
         WHERE change = 'candidate'",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
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

/// New rooms, changed and reappearing rooms, and the label links of all of them.
async fn write_rooms(
    conn: &mut SqliteConnection,
    now: &str,
    steps: &mut Steps,
) -> sqlx::Result<()> {
    let columns = SYNCED_ROOM_COLUMNS.join(", ");
    execute(
        conn,
        &format!(
            "INSERT INTO main.rooms (room_id, {columns}, first_seen_at, updated_at, removed_at)
             SELECT room_id, {columns}, ?1, ?1, NULL FROM temp.stage_rooms WHERE change = 'added'"
        ),
        &[now],
    )
    .await?;
    steps.mark("rooms added");
    let assignments: Vec<String> = SYNCED_ROOM_COLUMNS
        .iter()
        .map(|c| format!("{c} = s.{c}"))
        .collect();
    execute(
        conn,
        &format!(
            "UPDATE main.rooms AS r SET {}, updated_at = ?1, removed_at = NULL
             FROM temp.stage_rooms AS s
             WHERE s.room_id = r.room_id AND s.change IN ('updated', 'restored')",
            assignments.join(", ")
        ),
        &[now],
    )
    .await?;
    steps.mark("rooms updated");
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
    steps.mark("label links");
    Ok(())
}

/// The change feed entries of this run (before the removals are applied), and the pruning of
/// entries older than `keep_changes_days`.
async fn record_changes(
    conn: &mut SqliteConnection,
    req: &ApplyRequest,
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

/// Runs one statement with text parameters; returns the rows it changed.
async fn execute(conn: &mut SqliteConnection, sql: &str, params: &[&str]) -> sqlx::Result<u64> {
    let mut query = sqlx::query(sql);
    for p in params {
        query = query.bind(*p);
    }
    Ok(query.execute(conn).await?.rows_affected())
}

async fn count(conn: &mut SqliteConnection, sql: &str) -> sqlx::Result<u64> {
    let n: i64 = sqlx::query_scalar(sql).fetch_one(conn).await?;
    Ok(n as u64)
}

/// Milliseconds per step of the apply, logged at debug level: where a large apply spends its
/// time.
struct Steps {
    last: Instant,
    done: Vec<(&'static str, u128)>,
}

impl Steps {
    fn start() -> Steps {
        Steps {
            last: Instant::now(),
            done: Vec::new(),
        }
    }

    fn mark(&mut self, step: &'static str) {
        let now = Instant::now();
        self.done.push((step, (now - self.last).as_millis()));
        self.last = now;
    }

    fn log(&self) {
        let steps: Vec<String> = self
            .done
            .iter()
            .map(|(s, ms)| format!("{s} {ms}"))
            .collect();
        tracing::debug!(steps = %steps.join(", "), "apply steps (ms)");
    }
}
