//! The mirror's room fingerprints (internal table `roomsync_room_fingerprints`): what the run's
//! ledger starts from, and the lookups it needs at the end.

use sqlx::SqlitePool;

fn decode(e: serde_json::Error) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

/// What a run starts from: the active rooms' fingerprints and the room counts.
pub struct MirrorSummary {
    /// The fingerprints of the active rooms that have one.
    pub fingerprints: Vec<i64>,
    /// All rooms, active or removed.
    pub rooms: i64,
    pub active_rooms: i64,
}

/// The fingerprints of the active rooms and the room counts. The fingerprints come as one JSON
/// array: a row per room through the driver costs several times more at 100k rooms.
///
/// The apply keeps fingerprint rows for active rooms only, so the table is read alone; should
/// it hold more rows than there are active rooms (a mirror edited by hand), the fingerprints
/// are read again through the rooms table, since one of a removed or deleted room would pass a
/// returning room for unchanged.
pub async fn load_mirror_summary(pool: &SqlitePool) -> sqlx::Result<MirrorSummary> {
    let (json, kept, rooms, active_rooms): (String, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT json_group_array(fingerprint) FROM roomsync_room_fingerprints),
                (SELECT COUNT(*) FROM roomsync_room_fingerprints),
                (SELECT COUNT(*) FROM rooms),
                (SELECT COUNT(*) FROM rooms WHERE removed_at IS NULL)",
    )
    .fetch_one(pool)
    .await?;
    let json = if kept > active_rooms {
        sqlx::query_scalar(
            "SELECT json_group_array(f.fingerprint)
             FROM rooms AS r JOIN roomsync_room_fingerprints AS f ON f.room_id = r.room_id
             WHERE r.removed_at IS NULL",
        )
        .fetch_one(pool)
        .await?
    } else {
        json
    };
    let fingerprints = serde_json::from_str(&json).map_err(decode)?;
    Ok(MirrorSummary {
        fingerprints,
        rooms,
        active_rooms,
    })
}

/// The active rooms with one of `fingerprints`, and those without a fingerprint (synced before
/// fingerprints were kept).
pub async fn active_rooms_with(
    pool: &SqlitePool,
    fingerprints: &[i64],
) -> sqlx::Result<Vec<String>> {
    let fingerprints = serde_json::to_string(fingerprints).map_err(decode)?;
    sqlx::query_scalar(
        "SELECT r.room_id FROM rooms AS r
         LEFT JOIN roomsync_room_fingerprints AS f ON f.room_id = r.room_id
         WHERE r.removed_at IS NULL
           AND (f.fingerprint IS NULL OR f.fingerprint IN (SELECT value FROM json_each(?1)))",
    )
    .bind(fingerprints)
    .fetch_all(pool)
    .await
}

/// The stored fingerprints of the rooms `room_ids` (those that have one).
pub async fn stored_fingerprints(pool: &SqlitePool, room_ids: &[&str]) -> sqlx::Result<Vec<i64>> {
    let ids = serde_json::to_string(room_ids).map_err(decode)?;
    sqlx::query_scalar(
        "SELECT fingerprint FROM roomsync_room_fingerprints WHERE room_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}
