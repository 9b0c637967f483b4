//! Staging: the fetched listing is collected in TEMP tables of the sync's own connection, page
//! by page, so the live tables are untouched until the apply and memory stays flat however
//! many rooms there are. TEMP tables live outside the database file: staging takes no lock
//! that readers or other writers could notice.

use std::collections::HashMap;

use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, Executor, QueryBuilder, Sqlite};

use crate::dingtalk::{Group, Room};

/// Rows per INSERT statement: well under SQLite's 32766 bound parameters.
const ROWS_PER_STATEMENT: usize = 500;

async fn stage_groups(conn: &mut SqliteConnection, groups: &[&Group]) -> sqlx::Result<()> {
    for groups in groups.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT OR REPLACE INTO temp.stage_groups (group_id, group_name, parent_id) ",
        );
        q.push_values(groups, |mut b, g| {
            b.push_bind(g.group_id)
                .push_bind(g.group_name.as_deref())
                .push_bind(g.parent_id);
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// A sync run's private connection holding the staged listing.
pub struct Staging {
    conn: SqliteConnection,
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
             CREATE TEMP TABLE stage_rooms (
                 room_id TEXT PRIMARY KEY, corp_id TEXT, room_staff_id TEXT, room_name TEXT,
                 room_status INTEGER, room_capacity INTEGER, location_title TEXT, location_desc TEXT,
                 room_picture TEXT, isv_room_id TEXT, group_id INTEGER,
                 change TEXT -- set by the apply: added | restored | updated
             );
             CREATE TEMP TABLE stage_room_labels (
                 room_id TEXT NOT NULL, label_id INTEGER NOT NULL, PRIMARY KEY (room_id, label_id)
             ) WITHOUT ROWID;
             CREATE TEMP TABLE stage_labels (label_id INTEGER PRIMARY KEY, label_name TEXT);
             CREATE TEMP TABLE stage_groups (group_id INTEGER PRIMARY KEY, group_name TEXT, parent_id INTEGER);",
        )
        .await?;
        Ok(Staging { conn })
    }

    pub fn connection(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }

    /// Adds one page. A room already staged (from an earlier page, or earlier on this page) is
    /// replaced whole: the later record wins, labels included.
    pub async fn add_rooms(&mut self, rooms: &[Room]) -> sqlx::Result<()> {
        // Keep only the last record of each room on this page.
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(rooms.len());
        for (i, r) in rooms.iter().enumerate() {
            last.insert(&r.room_id, i);
        }
        let rooms: Vec<&Room> = rooms
            .iter()
            .enumerate()
            .filter(|(i, r)| last[r.room_id.as_str()] == *i)
            .map(|(_, r)| r)
            .collect();
        if rooms.is_empty() {
            return Ok(());
        }
        let mut tx = self.conn.begin().await?;
        for chunk in rooms.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "DELETE FROM temp.stage_room_labels WHERE room_id IN (",
            );
            let mut ids = q.separated(", ");
            for r in chunk {
                ids.push_bind(r.room_id.as_str());
            }
            q.push(")").build().execute(&mut *tx).await?;

            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT OR REPLACE INTO temp.stage_rooms (room_id, corp_id, room_staff_id, room_name, room_status,
                 room_capacity, location_title, location_desc, room_picture, isv_room_id, group_id) ",
            );
            q.push_values(chunk, |mut b, r| {
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
                    .push_bind(r.group.as_ref().map(|g| g.group_id));
            });
            q.build().execute(&mut *tx).await?;

            let links: Vec<(&str, i64)> = chunk
                .iter()
                .flat_map(|r| r.labels.iter().map(|l| (r.room_id.as_str(), l.label_id)))
                .collect();
            for links in links.chunks(ROWS_PER_STATEMENT) {
                let mut q = QueryBuilder::<Sqlite>::new(
                    "INSERT OR IGNORE INTO temp.stage_room_labels (room_id, label_id) ",
                );
                q.push_values(links, |mut b, (room, label)| {
                    b.push_bind(*room).push_bind(*label);
                });
                q.build().execute(&mut *tx).await?;
            }

            let labels: Vec<_> = chunk.iter().flat_map(|r| r.labels.iter()).collect();
            for labels in labels.chunks(ROWS_PER_STATEMENT) {
                let mut q = QueryBuilder::<Sqlite>::new(
                    "INSERT OR REPLACE INTO temp.stage_labels (label_id, label_name) ",
                );
                q.push_values(labels, |mut b, l| {
                    b.push_bind(l.label_id).push_bind(l.label_name.as_deref());
                });
                q.build().execute(&mut *tx).await?;
            }

            let groups: Vec<&Group> = chunk.iter().filter_map(|r| r.group.as_ref()).collect();
            stage_groups(&mut tx, &groups).await?;
        }
        tx.commit().await
    }

    /// Adds groups; a group seen again replaces the earlier record (the later one wins).
    pub async fn add_groups(&mut self, groups: &[&Group]) -> sqlx::Result<()> {
        let mut tx = self.conn.begin().await?;
        stage_groups(&mut tx, groups).await?;
        tx.commit().await
    }

    /// Distinct rooms staged so far.
    pub async fn room_count(&mut self) -> sqlx::Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM temp.stage_rooms")
            .fetch_one(&mut self.conn)
            .await?;
        Ok(n as u64)
    }

    /// Drops the staging tables and closes the connection.
    pub async fn close(mut self) -> sqlx::Result<()> {
        (&mut self.conn)
            .execute(
            "DROP TABLE IF EXISTS temp.stage_rooms; DROP TABLE IF EXISTS temp.stage_room_labels;
             DROP TABLE IF EXISTS temp.stage_labels; DROP TABLE IF EXISTS temp.stage_groups;",
            )
            .await?;
        self.conn.close().await
    }
}
