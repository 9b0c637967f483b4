//! Staging: what the apply will write, collected in TEMP tables of the sync's own connection,
//! outside the database file. Staging takes no lock that readers or other writers could notice,
//! and memory stays flat however many rooms there are.
//!
//! Rooms and their label links go in as multi-row inserts; labels, groups and id lists travel
//! as one JSON array unpacked by SQLite's `json_each`.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, Executor, QueryBuilder, Sqlite};

use crate::dingtalk::{Group, Room};

/// The values of `temp.stage_rooms.change`: what the sync stages a room as, then what the
/// apply settles it to. A settled NULL means the room turned out unchanged. `added`,
/// `restored` and `updated` are spelled as in `room_changes.change`, which copies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StagedChange {
    /// Staged (and settled): new. Staged so only when the mirror holds no room at all.
    Added,
    /// Staged: differs from every active row, so new, changed or back; the apply settles which.
    Differs,
    /// Settling: an active room with this id exists; its columns are compared next.
    Candidate,
    /// Settled: a removed room that is listed again.
    Restored,
    /// Settled: an active room whose columns, group or label set differ.
    Updated,
}

impl StagedChange {
    /// The value stored in `stage_rooms.change`.
    pub fn as_str(self) -> &'static str {
        match self {
            StagedChange::Added => "added",
            StagedChange::Differs => "differs",
            StagedChange::Candidate => "candidate",
            StagedChange::Restored => "restored",
            StagedChange::Updated => "updated",
        }
    }
}

/// A room to stage: the record, its fingerprint and what the ledger knows of it.
#[derive(Debug, Clone)]
pub struct StagedRoom {
    pub room: Room,
    pub fingerprint: i64,
    pub change: StagedChange,
}

/// A sync run's private connection holding the staged rows.
pub struct Staging {
    conn: SqliteConnection,
}

/// Rows per INSERT statement. Every full chunk is the same statement, prepared once and cached;
/// the last, shorter chunk of a batch is prepared for one use, so the cache holds no large
/// one-off statements. 100 rooms bind 1,300 values, 500 links 1,000: far below SQLite's limit
/// of 32,766 values per statement.
const ROOMS_PER_STATEMENT: usize = 100;
const LINKS_PER_STATEMENT: usize = 500;

/// A label as staged: one JSON object of the array `set_labels` binds.
#[derive(Serialize)]
struct StagedLabel<'a> {
    label_id: i64,
    label_name: Option<&'a str>,
}

/// A group as staged: one JSON object of the array `set_groups` binds.
#[derive(Serialize)]
struct StagedGroup<'a> {
    group_id: i64,
    group_name: Option<&'a str>,
    parent_id: Option<i64>,
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("staging rows serialize")
}

impl Staging {
    /// Takes a connection of its own (TEMP tables belong to one connection) and creates
    /// empty staging tables.
    pub async fn new(mut conn: SqliteConnection) -> sqlx::Result<Staging> {
        (&mut conn)
            .execute(
                "DROP TABLE IF EXISTS temp.stage_rooms;
                 DROP TABLE IF EXISTS temp.stage_room_labels;
                 DROP TABLE IF EXISTS temp.stage_labels;
                 DROP TABLE IF EXISTS temp.stage_groups;
                 DROP TABLE IF EXISTS temp.stage_removed;
                 CREATE TEMP TABLE stage_rooms (
                     room_id TEXT PRIMARY KEY, corp_id TEXT, room_staff_id TEXT, room_name TEXT,
                     room_status INTEGER, room_capacity INTEGER, location_title TEXT,
                     location_desc TEXT, room_picture TEXT, isv_room_id TEXT, group_id INTEGER,
                     fingerprint INTEGER NOT NULL,
                     -- StagedChange: added | differs (staged), then added | restored | updated | NULL
                     -- (settled by the apply; NULL = unchanged)
                     change TEXT,
                     changed_fields TEXT -- JSON array, for updated
                 );
                 CREATE TEMP TABLE stage_room_labels (
                     room_id TEXT NOT NULL, label_id INTEGER NOT NULL, PRIMARY KEY (room_id, label_id)
                 ) WITHOUT ROWID;
                 CREATE TEMP TABLE stage_labels (label_id INTEGER PRIMARY KEY, label_name TEXT);
                 CREATE TEMP TABLE stage_groups (
                     group_id INTEGER PRIMARY KEY, group_name TEXT, parent_id INTEGER
                 );
                 CREATE TEMP TABLE stage_removed (room_id TEXT PRIMARY KEY) WITHOUT ROWID;",
            )
            .await?;
        Ok(Staging { conn })
    }

    /// The staging connection, on which the apply runs its transaction.
    pub fn connection(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }

    /// Stages rooms. A room staged before (`again`, from an earlier batch) is replaced whole,
    /// labels included: the later record wins. Within `rooms`, too, the last record wins.
    pub async fn add_rooms(&mut self, rooms: &[StagedRoom], again: &[String]) -> sqlx::Result<()> {
        // Only the last record of each room in this batch.
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(rooms.len());
        for (i, staged) in rooms.iter().enumerate() {
            last.insert(&staged.room.room_id, i);
        }
        let staged: Vec<&StagedRoom> = rooms
            .iter()
            .enumerate()
            .filter(|(i, staged)| last[staged.room.room_id.as_str()] == *i)
            .map(|(_, staged)| staged)
            .collect();
        if staged.is_empty() {
            return Ok(());
        }
        let mut tx = self.conn.begin().await?;
        if !again.is_empty() {
            sqlx::query("DELETE FROM temp.stage_room_labels WHERE room_id IN (SELECT value FROM json_each(?1))")
                .bind(to_json(&again))
                .execute(&mut *tx)
                .await?;
        }
        for chunk in staged.chunks(ROOMS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT OR REPLACE INTO temp.stage_rooms (room_id, corp_id, room_staff_id, room_name,
                     room_status, room_capacity, location_title, location_desc, room_picture,
                     isv_room_id, group_id, fingerprint, change) ",
            );
            q.push_values(chunk, |mut b, staged| {
                let r = &staged.room;
                b.push_bind(r.room_id.as_str())
                    .push_bind(r.corp_id.as_deref())
                    .push_bind(r.room_staff_id.as_deref())
                    .push_bind(r.room_name.as_deref())
                    .push_bind(r.room_status)
                    .push_bind(r.room_capacity)
                    .push_bind(r.location_title.as_deref())
                    .push_bind(r.location_desc.as_deref())
                    .push_bind(r.room_picture.as_deref())
                    .push_bind(r.isv_room_id.as_deref())
                    .push_bind(r.group.as_ref().map(|g| g.group_id))
                    .push_bind(staged.fingerprint)
                    .push_bind(staged.change.as_str());
            });
            let full = chunk.len() == ROOMS_PER_STATEMENT;
            q.build().persistent(full).execute(&mut *tx).await?;
        }
        let links: Vec<(&str, i64)> = staged
            .iter()
            .flat_map(|staged| {
                let r = &staged.room;
                r.labels
                    .iter()
                    .map(move |l| (r.room_id.as_str(), l.label_id))
            })
            .collect();
        for chunk in links.chunks(LINKS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT OR IGNORE INTO temp.stage_room_labels (room_id, label_id) ",
            );
            q.push_values(chunk, |mut b, (room, label)| {
                b.push_bind(*room).push_bind(*label);
            });
            let full = chunk.len() == LINKS_PER_STATEMENT;
            q.build().persistent(full).execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// Takes rooms out of staging (a later record of the room turned out unchanged).
    pub async fn remove_rooms(&mut self, room_ids: &[String]) -> sqlx::Result<()> {
        let ids = to_json(&room_ids);
        let mut tx = self.conn.begin().await?;
        for table in ["stage_rooms", "stage_room_labels"] {
            // `table` is one of the two names above; the ids are bound.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM temp.{table} WHERE room_id IN (SELECT value FROM json_each(?1))"
            )))
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Stages every label seen in the listing (label id -> its latest name).
    pub async fn set_labels(&mut self, labels: &BTreeMap<i64, Option<String>>) -> sqlx::Result<()> {
        let rows: Vec<StagedLabel> = labels
            .iter()
            .map(|(id, name)| StagedLabel {
                label_id: *id,
                label_name: name.as_deref(),
            })
            .collect();
        sqlx::query(
            "INSERT OR REPLACE INTO temp.stage_labels (label_id, label_name)
             SELECT value ->> 'label_id', value ->> 'label_name' FROM json_each(?1) ORDER BY key",
        )
        .bind(to_json(&rows))
        .execute(&mut self.conn)
        .await?;
        Ok(())
    }

    /// Stages groups; a group given twice keeps its later record.
    pub async fn set_groups(&mut self, groups: &[&Group]) -> sqlx::Result<()> {
        let rows: Vec<StagedGroup> = groups
            .iter()
            .map(|g| StagedGroup {
                group_id: g.group_id,
                group_name: g.group_name.as_deref(),
                parent_id: g.parent_id,
            })
            .collect();
        sqlx::query(
            "INSERT OR REPLACE INTO temp.stage_groups (group_id, group_name, parent_id)
             SELECT value ->> 'group_id', value ->> 'group_name', value ->> 'parent_id'
             FROM json_each(?1) ORDER BY key",
        )
        .bind(to_json(&rows))
        .execute(&mut self.conn)
        .await?;
        Ok(())
    }

    /// Stages the active rooms the complete listing no longer has.
    pub async fn set_removed(&mut self, room_ids: &[&str]) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT OR IGNORE INTO temp.stage_removed (room_id) SELECT value FROM json_each(?1)",
        )
        .bind(to_json(&room_ids))
        .execute(&mut self.conn)
        .await?;
        Ok(())
    }

    /// Closes the connection; its TEMP tables go with it (dropping them first would only
    /// free their pages one by one).
    pub async fn close(self) -> sqlx::Result<()> {
        self.conn.close().await
    }
}
