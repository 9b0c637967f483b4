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
/// document, straight into the map: a row per room through the driver costs several times
/// more at 100,000 rooms.
pub async fn load_known_rooms(pool: &SqlitePool) -> sqlx::Result<HashMap<String, KnownRoom>> {
    let json: String = sqlx::query_scalar(
        "SELECT json_group_array(json_array(r.room_id, f.fingerprint, r.removed_at IS NULL))
         FROM rooms AS r LEFT JOIN roomsync_room_fingerprints AS f ON f.room_id = r.room_id",
    )
    .fetch_one(pool)
    .await?;
    let known: KnownRooms =
        serde_json::from_str(&json).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(known.0)
}

/// `[[room_id, fingerprint, active], ...]` deserialized without an intermediate list.
struct KnownRooms(HashMap<String, KnownRoom>);

impl<'de> serde::Deserialize<'de> for KnownRooms {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Rows;
        impl<'de> serde::de::Visitor<'de> for Rows {
            type Value = KnownRooms;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of [room_id, fingerprint, active]")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<KnownRooms, A::Error> {
                let mut map = HashMap::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some((id, fingerprint, active)) =
                    seq.next_element::<(String, Option<i64>, u8)>()?
                {
                    map.insert(
                        id,
                        KnownRoom {
                            fingerprint,
                            active: active != 0,
                        },
                    );
                }
                Ok(KnownRooms(map))
            }
        }
        deserializer.deserialize_seq(Rows)
    }
}
