//! The reader machine: the refresh script of the recipe makes its copy of the mirror, which
//! must equal the primary and serve `roomsync status` and the documented example queries.

use std::path::Path;
use std::process::Command;

use roomsync::standin::StandIn;
use roomsync::store::open_read_only;
use sqlx::{Connection, Row};

use crate::digest::{comparison, full_digest};
use crate::site::{assert_success, roomsync_config, Site};
use crate::{BIN, REFRESH_SCRIPT, SCHEMA_DOC};

impl Site {
    /// The reader's refresh script, run as its unit runs it.
    fn refresh(&self) -> String {
        let output = Command::new("sh")
            .arg(REFRESH_SCRIPT)
            .arg(&self.reader)
            .env_remove("AWS_CA_BUNDLE")
            .envs(self.litestream_env())
            .env("LITESTREAM_CONFIG", &self.reader_litestream)
            .env("LITESTREAM", &self.tools.litestream)
            .output()
            .unwrap();
        assert_success("roomsync-replica-refresh", &output);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The reader's copy, made by the refresh script after the primary stopped: equal to the
    /// primary table by table, a rollback-journal file, refreshed again without a download;
    /// `roomsync status` and the documented example queries work on it.
    pub async fn check_the_reader(&self, rooms: usize) {
        let said = self.refresh();
        assert!(said.contains("restored to replica transaction"), "{said}");
        let primary = full_digest(&self.primary).await;
        let reader = full_digest(&self.reader).await;
        println!(
            "{}: Litestream {}, the reader's copy (roomsync-replica-refresh) against the \
             primary:\n{}",
            self.label,
            self.tools.version,
            comparison(&primary, &reader)
        );
        assert_eq!(reader, primary);
        let mut conn = open_read_only(&self.reader).await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(mode, "delete");
        let litestream_tables: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('_litestream_seq', '_litestream_lock')",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(
            litestream_tables, 2,
            "Litestream's tables come along, as docs/schema.md says"
        );
        conn.close().await.unwrap();

        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(&self.reader).unwrap().ino();
        let said = self.refresh();
        assert!(said.contains("is up to date"), "{said}");
        assert_eq!(std::fs::metadata(&self.reader).unwrap().ino(), inode);

        self.check_status_on_reader(rooms).await;
        self.check_examples_on_reader().await;
    }

    async fn check_status_on_reader(&self, rooms: usize) {
        let output = Command::new(BIN)
            .args(["status", "--max-age", "1h", "--config"])
            .arg(&self.reader_roomsync)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert_success("roomsync status on the reader's copy", &output);
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains(&format!("active rooms: {rooms}")), "{text}");
        assert!(text.contains(": fresh (max age 1h)"), "{text}");
    }

    /// Every example query of docs/schema.md gives the same answer on the reader's copy as on
    /// the primary.
    async fn check_examples_on_reader(&self) {
        let names: Vec<&str> = SCHEMA_DOC
            .lines()
            .filter_map(|l| l.strip_prefix("-- example: "))
            .collect();
        assert!(names.len() >= 5, "{names:?}");
        // A building with a room the projector example looks for.
        let building = query_rows(
            &self.primary,
            "SELECT t.path FROM room_group_tree AS t
             WHERE t.depth = 1 AND EXISTS (
                 SELECT 1 FROM active_rooms AS r
                 WHERE r.room_status = 0 AND r.room_capacity >= 10
                   AND EXISTS (SELECT 1 FROM json_each(r.label_ids) WHERE value = 3)
                   AND r.group_path LIKE t.path || ' / %')
             ORDER BY t.path LIMIT 1",
            &[],
        )
        .await;
        assert_eq!(building.len(), 1);
        let free_building = self.a_building_with_a_free_projector_room().await;
        // A room with a booking still to come.
        let booked_room = query_rows(
            &self.primary,
            "SELECT room_id FROM room_busy
             WHERE end_at > strftime('%Y-%m-%dT%H:%M:%SZ', 'now') ORDER BY room_id LIMIT 1",
            &[],
        )
        .await;
        assert_eq!(booked_room.len(), 1, "the primary has bookings");
        for name in names {
            let sql = example(name);
            let params: Vec<String> = match name {
                "projector-rooms-in-building" => building.clone(),
                "free-projector-rooms-next-hour" => vec![free_building.clone()],
                "next-bookings" => booked_room.clone(),
                "changes-since" => vec!["0".into()],
                _ => vec![],
            };
            let on_reader = query_rows(&self.reader, &sql, &params).await;
            let on_primary = query_rows(&self.primary, &sql, &params).await;
            assert!(!on_reader.is_empty(), "example {name} found nothing");
            assert_eq!(on_reader, on_primary, "example {name}");
        }
    }

    /// The first building (top-level group) for which the primary answers the example
    /// `free-projector-rooms-next-hour`.
    async fn a_building_with_a_free_projector_room(&self) -> String {
        let sql = example("free-projector-rooms-next-hour");
        let buildings = query_rows(
            &self.primary,
            "SELECT path FROM room_group_tree WHERE depth = 1 ORDER BY path",
            &[],
        )
        .await;
        for building in buildings {
            let param = [building.clone()];
            if !query_rows(&self.primary, &sql, &param).await.is_empty() {
                return building;
            }
        }
        panic!("no building of the primary has a projector room free for the next hour");
    }

    /// The reader's copy, restored by Litestream, taken as the mirror of a new primary:
    /// roomsync accepts it and syncs into it.
    pub async fn check_a_restored_mirror_syncs_as_a_primary(&self, standin: &StandIn) {
        let db = self.dir.path().join("new-primary.db");
        std::fs::copy(&self.reader, &db).unwrap();
        let config = self.dir.path().join("new-primary.toml");
        std::fs::write(&config, roomsync_config(&standin.base_url(), &db)).unwrap();
        let output = Command::new(BIN)
            .args(["--sync-now", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert_success("roomsync --sync-now on a restored mirror", &output);
    }
}

/// The SQL of the example named `name` in docs/schema.md.
fn example(name: &str) -> String {
    let start = format!("```sql\n-- example: {name}\n");
    let from = SCHEMA_DOC.find(&start).expect("example exists");
    let body = &SCHEMA_DOC[from + start.len()..];
    body[..body.find("```").unwrap()].to_string()
}

/// Rows of a query on `db` (read-only), each as `col|col|...`.
async fn query_rows(db: &Path, sql: &str, params: &[String]) -> Vec<String> {
    let mut conn = open_read_only(db).await.unwrap();
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for p in params {
        query = query.bind(p);
    }
    let rows = query.fetch_all(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    row.try_get::<Option<i64>, _>(i)
                        .map(|v| v.map_or("NULL".into(), |v| v.to_string()))
                        .or_else(|_| {
                            row.try_get::<Option<String>, _>(i)
                                .map(|v| v.unwrap_or_else(|| "NULL".into()))
                        })
                        .unwrap()
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}
