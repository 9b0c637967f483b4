//! The apply: one short `BEGIN IMMEDIATE` transaction that turns the staged listing into the
//! live tables and finishes the run row. Readers see the previous state or the new one.
//!
//! Every write is conditional on a difference, so a resync with no upstream change writes no
//! row of rooms, labels, room_labels or room_groups.

use sqlx::sqlite::SqliteConnection;
use sqlx::Connection;

use super::runs::now_rfc3339;
use super::staging::Staging;

/// The room columns DingTalk supplies, besides the key: compared and copied by the apply.
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

pub struct ApplyRequest {
    pub run_id: i64,
    pub pages_fetched: u32,
    /// Distinct rooms in the complete listing (staged or not).
    pub rooms_seen: u64,
    pub max_removal_ratio: f64,
    pub allow_mass_removal: bool,
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
    let conn = staging.connection();
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let now = now_rfc3339();

    let active = count(
        &mut tx,
        "SELECT COUNT(*) FROM main.rooms WHERE removed_at IS NULL",
    )
    .await?;
    let would_remove = count(
        &mut tx,
        "SELECT COUNT(*) FROM main.rooms WHERE removed_at IS NULL
           AND room_id IN (SELECT room_id FROM temp.stage_removed)",
    )
    .await?;
    let limit = removal_limit(active, req.max_removal_ratio);
    if would_remove as f64 > limit && !req.allow_mass_removal {
        tx.rollback().await?;
        return Ok(ApplyOutcome::Guarded {
            would_remove,
            active,
            limit,
        });
    }

    classify_staged_rooms(&mut tx).await?;
    let seen = req.rooms_seen;
    let added = count(
        &mut tx,
        "SELECT COUNT(*) FROM temp.stage_rooms WHERE change IN ('added', 'restored')",
    )
    .await?;
    let updated = count(
        &mut tx,
        "SELECT COUNT(*) FROM temp.stage_rooms WHERE change = 'updated'",
    )
    .await?;

    // Groups and labels first: rooms and links refer to them.
    sqlx::query(
        "INSERT INTO main.room_groups (group_id, group_name, parent_id)
         SELECT group_id, group_name, parent_id FROM temp.stage_groups WHERE true
         ON CONFLICT (group_id) DO UPDATE SET group_name = excluded.group_name, parent_id = excluded.parent_id
         WHERE room_groups.group_name IS NOT excluded.group_name OR room_groups.parent_id IS NOT excluded.parent_id",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO main.labels (label_id, label_name)
         SELECT label_id, label_name FROM temp.stage_labels WHERE true
         ON CONFLICT (label_id) DO UPDATE SET label_name = excluded.label_name
         WHERE labels.label_name IS NOT excluded.label_name",
    )
    .execute(&mut *tx)
    .await?;

    let columns = SYNCED_ROOM_COLUMNS.join(", ");
    sqlx::query(&format!(
        "INSERT INTO main.rooms (room_id, {columns}, first_seen_at, updated_at, removed_at)
         SELECT room_id, {columns}, ?1, ?1, NULL FROM temp.stage_rooms WHERE change = 'added'"
    ))
    .bind(&now)
    .execute(&mut *tx)
    .await?;
    let assignments: Vec<String> = SYNCED_ROOM_COLUMNS
        .iter()
        .map(|c| format!("{c} = s.{c}"))
        .collect();
    sqlx::query(&format!(
        "UPDATE main.rooms AS r SET {}, updated_at = ?1, removed_at = NULL
         FROM temp.stage_rooms AS s
         WHERE s.room_id = r.room_id AND s.change IN ('updated', 'restored')",
        assignments.join(", ")
    ))
    .bind(&now)
    .execute(&mut *tx)
    .await?;

    // Label links: only the rooms that changed can have different links.
    sqlx::query(
        "DELETE FROM main.room_labels
         WHERE room_id IN (SELECT room_id FROM temp.stage_rooms WHERE change IN ('updated', 'restored'))
           AND NOT EXISTS (SELECT 1 FROM temp.stage_room_labels AS sl
                           WHERE sl.room_id = room_labels.room_id AND sl.label_id = room_labels.label_id)",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT OR IGNORE INTO main.room_labels (room_id, label_id)
         SELECT sl.room_id, sl.label_id FROM temp.stage_room_labels AS sl
         JOIN temp.stage_rooms AS s ON s.room_id = sl.room_id
         WHERE s.change IS NOT NULL",
    )
    .execute(&mut *tx)
    .await?;

    sqlx::query(
        "INSERT INTO main.roomsync_room_fingerprints (room_id, fingerprint)
         SELECT room_id, fingerprint FROM temp.stage_rooms WHERE true
         ON CONFLICT (room_id) DO UPDATE SET fingerprint = excluded.fingerprint
         WHERE roomsync_room_fingerprints.fingerprint IS NOT excluded.fingerprint",
    )
    .execute(&mut *tx)
    .await?;

    let removed = sqlx::query(
        "UPDATE main.rooms SET removed_at = ?1
         WHERE removed_at IS NULL AND room_id IN (SELECT room_id FROM temp.stage_removed)",
    )
    .bind(&now)
    .execute(&mut *tx)
    .await?
    .rows_affected();

    let counts = ApplyCounts {
        seen,
        added,
        updated,
        removed,
    };
    sqlx::query(
        "UPDATE main.sync_runs SET status = 'succeeded', finished_at = ?2, pages_fetched = ?3, rooms_seen = ?4,
             rooms_added = ?5, rooms_updated = ?6, rooms_removed = ?7, error = NULL
         WHERE run_id = ?1",
    )
    .bind(req.run_id)
    .bind(now_rfc3339())
    .bind(req.pages_fetched)
    .bind(seen as i64)
    .bind(added as i64)
    .bind(updated as i64)
    .bind(removed as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ApplyOutcome::Applied(counts))
}

/// Settles the `candidate` rooms of `stage_rooms` (active, fingerprint differs) as `updated`
/// when a field, the group or the label set differs, or NULL when nothing does. `added` and
/// `restored` come from the run's ledger.
async fn classify_staged_rooms(conn: &mut SqliteConnection) -> sqlx::Result<()> {
    let differs: Vec<String> = SYNCED_ROOM_COLUMNS
        .iter()
        .map(|c| format!("r.{c} IS NOT s.{c}"))
        .collect();
    let sql = format!(
        "UPDATE temp.stage_rooms AS s
            SET change = CASE WHEN {}
                    OR EXISTS (SELECT 1 FROM temp.stage_room_labels AS sl WHERE sl.room_id = s.room_id
                                 AND NOT EXISTS (SELECT 1 FROM main.room_labels AS rl
                                                 WHERE rl.room_id = sl.room_id AND rl.label_id = sl.label_id))
                    OR EXISTS (SELECT 1 FROM main.room_labels AS rl WHERE rl.room_id = s.room_id
                                 AND NOT EXISTS (SELECT 1 FROM temp.stage_room_labels AS sl
                                                 WHERE sl.room_id = rl.room_id AND sl.label_id = rl.label_id))
                THEN 'updated' END
           FROM main.rooms AS r
          WHERE r.room_id = s.room_id AND s.change = 'candidate'",
        differs.join("\n                    OR ")
    );
    sqlx::query(&sql).execute(conn).await?;
    Ok(())
}

async fn count(conn: &mut SqliteConnection, sql: &str) -> sqlx::Result<u64> {
    let n: i64 = sqlx::query_scalar(sql).fetch_one(conn).await?;
    Ok(n as u64)
}
