//! Upgrading a mirror written by an earlier release: every row survives every migration.

mod common;

use std::path::Path;

use common::*;
use roomsync::store::Store;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::ConnectOptions;

const SCHEMA_5: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/mirror-schema-5.db"
);

/// The rows of `table` as `quote(col)|...` over the columns `columns`, in key order.
async fn rows_of(db: &Path, table: &str, columns: &str) -> Vec<String> {
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let expr = columns
        .split(", ")
        .map(|c| format!("quote({c})"))
        .collect::<Vec<_>>()
        .join(" || '|' || ");
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {expr} FROM {table} ORDER BY {columns}"
    )))
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

/// Every table of schema 5 with its columns then.
const TABLES_5: &[(&str, &str)] = &[
    ("rooms", "room_id, corp_id, room_staff_id, room_name, room_status, room_capacity, location_title, location_desc, room_picture, isv_room_id, group_id, first_seen_at, updated_at, removed_at"),
    ("labels", "label_id, label_name"),
    ("room_labels", "room_id, label_id"),
    ("room_groups", "group_id, group_name, parent_id, removed_at"),
    ("room_changes", "change_id, run_id, room_id, change, changed_at, changed_fields"),
    ("sync_runs", "run_id, trigger, started_at, finished_at, status, pages_fetched, rooms_seen, rooms_added, rooms_updated, rooms_removed, error"),
    ("sync_errors", "error_id, run_id, occurred_at, stage, page, http_status, error_code, message, request_id, retried"),
    ("roomsync_room_fingerprints", "room_id, fingerprint"),
];

#[tokio::test]
async fn a_schema_5_mirror_upgrades_with_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rooms.db");
    std::fs::copy(SCHEMA_5, &db).unwrap();
    let mut before = Vec::new();
    for (table, columns) in TABLES_5 {
        before.push(rows_of(&db, table, columns).await);
    }
    assert!(
        before.iter().all(|rows| !rows.is_empty()),
        "the fixture fills every table"
    );

    Store::open(&db).await.expect("migrates").close().await;
    for ((table, columns), rows) in TABLES_5.iter().zip(&before) {
        assert_eq!(&rows_of(&db, table, columns).await, rows, "{table}");
    }
    let pool = open_pool(&db).await;
    let scalar = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(sql)
                .fetch_all(&pool)
                .await
                .unwrap()
        }
    };
    // New columns with their defaults.
    assert!(scalar("SELECT DISTINCT CAST(warnings AS TEXT) FROM sync_runs").await == ["0"]);
    assert!(scalar("SELECT DISTINCT severity FROM sync_errors").await == ["error"]);
    // Foreign keys name their columns, for tools that read them.
    let keys = scalar(
        "SELECT m.name || '.' || k.\"from\" || ' -> ' || k.\"table\" || '.' || IFNULL(k.\"to\", '?')
         FROM sqlite_master AS m, pragma_foreign_key_list(m.name) AS k
         WHERE m.type = 'table' ORDER BY 1",
    )
    .await;
    assert_eq!(
        keys,
        [
            "room_busy.room_id -> rooms.room_id",
            "room_changes.run_id -> sync_runs.run_id",
            "room_labels.label_id -> labels.label_id",
            "room_labels.room_id -> rooms.room_id",
            "room_schedule_checks.room_id -> rooms.room_id",
            "room_schedule_checks.run_id -> sync_runs.run_id",
            "rooms.group_id -> room_groups.group_id",
            "sync_errors.run_id -> sync_runs.run_id",
        ]
    );
    // Migration 7's defaults: every earlier run is of the room list, its calls uncounted.
    assert!(scalar("SELECT DISTINCT kind || '|' || api_calls FROM sync_runs").await == ["rooms|0"]);
    assert!(scalar("SELECT CAST(COUNT(*) AS TEXT) FROM api_calls").await == ["0"]);
    assert!(scalar("SELECT \"table\" FROM pragma_foreign_key_check")
        .await
        .is_empty());
    // The change feed's sequence survives the rebuild: ids are never reused.
    assert_eq!(
        scalar("SELECT CAST(seq AS TEXT) FROM sqlite_sequence WHERE name = 'room_changes'").await,
        ["10"]
    );
    assert_eq!(
        scalar("SELECT room_id || '|' || room_status || '|' || room_status_name FROM active_rooms ORDER BY room_id").await,
        [
            "r1|0|visible to all members",
            "r2|0|visible to all members",
            "r3|0|visible to all members",
            "r4|0|visible to all members",
            "r6|0|visible to all members",
        ]
    );
    assert_eq!(
        scalar("SELECT room_status || '=' || name FROM room_status_names ORDER BY 1").await,
        [
            "0=visible to all members",
            "1=visible to admins only",
            "2=visible to selected users"
        ]
    );
    pool.close().await;
}

#[tokio::test]
async fn the_next_change_after_the_upgrade_gets_a_new_id() {
    let env = TestEnv::with("page_size = 3", "").await;
    std::fs::copy(SCHEMA_5, &env.db).unwrap();
    env.reset_upstream(&[vec![room("r1", "Renamed after the upgrade", &[1], Some(2))]])
        .await;
    let report = env.sync_with(true).await;
    assert_eq!(report.status.as_str(), "succeeded", "{report}");
    assert_eq!(
        env.rows("SELECT change_id || '|' || room_id || '|' || change FROM room_changes WHERE run_id = 4 ORDER BY change_id")
            .await
            .first()
            .map(String::as_str),
        Some("11|r1|updated"),
        "change ids go on from the sequence, not from the largest id left"
    );
}

/// `roomsync status` on a mirror the daemon has not migrated yet (the package upgraded, the
/// service not yet restarted) or a replica of an older primary: what that schema holds, no
/// error, and the file left as it was.
#[tokio::test]
async fn status_reads_a_mirror_of_schema_5_without_migrating_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rooms.db");
    std::fs::copy(SCHEMA_5, &db).unwrap();
    let before = std::fs::read(&db).unwrap();

    let report = roomsync::status::read(&db, 10)
        .await
        .expect("status reads schema 5");
    let runs: Vec<String> = report
        .runs
        .iter()
        .map(|r| format!("{}|{}|{}", r.run_id, r.status, r.warnings))
        .collect();
    assert_eq!(runs, ["3|failed|0", "2|succeeded|0", "1|succeeded|0"]);
    assert_eq!(report.last_success.as_ref().map(|r| r.run_id), Some(2));
    assert_eq!(report.active_rooms, 5);
    assert!(report.budget.is_none() && report.latest_refresh.is_none());
    let text = report.render(
        &db,
        std::time::Duration::from_secs(3600 * 24 * 365 * 10),
        None,
    );
    assert!(text.contains("active rooms: 5"), "{text}");
    assert!(text.contains("last success: run 2 finished"), "{text}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "status never writes");
}
