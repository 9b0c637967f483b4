//! What the mirror holds of each room, in brief: loaded at the start of a run for the ledger.

use std::collections::HashMap;

use sqlx::SqlitePool;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownRoom {
    /// None for a room synced before fingerprints were kept: it is staged once.
    pub fingerprint: Option<i64>,
    pub active: bool,
}

/// Every room of the mirror with its fingerprint and whether it is active. Read as one JSON
/// document: a row per room through the driver costs several times more at 100,000 rooms.
pub async fn load_known_rooms(pool: &SqlitePool) -> sqlx::Result<HashMap<String, KnownRoom>> {
    let json: String = sqlx::query_scalar(
        "SELECT json_group_array(json_array(r.room_id, f.fingerprint, r.removed_at IS NULL))
         FROM rooms AS r LEFT JOIN roomsync_room_fingerprints AS f ON f.room_id = r.room_id",
    )
    .fetch_one(pool)
    .await?;
    let rows: Vec<(String, Option<i64>, i64)> =
        serde_json::from_str(&json).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(rows
        .into_iter()
        .map(|(id, fingerprint, active)| {
            let known = KnownRoom {
                fingerprint,
                active: active != 0,
            };
            (id, known)
        })
        .collect())
}
