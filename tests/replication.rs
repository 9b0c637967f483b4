//! Readers on other machines replicate the mirror with Litestream (docs/replication.md). What
//! Litestream does to the mirror must not change how roomsync treats it.

mod common;

use roomsync::store::{Store, StoreError};

/// Litestream adds `_litestream_seq` and `_litestream_lock` to the database it replicates,
/// possibly before roomsync's first migration: they never make roomsync take the mirror for
/// another application's database. Another application's table still does.
#[tokio::test]
async fn litestreams_tables_do_not_make_a_mirror_foreign() {
    // Litestream 0.5.17's own statements (db.go, DB.init and ensureWALExists).
    const LITESTREAM_DDL: &str = "PRAGMA journal_mode = wal;
        CREATE TABLE IF NOT EXISTS _litestream_seq (id INTEGER PRIMARY KEY, seq INTEGER);
        CREATE TABLE IF NOT EXISTS _litestream_lock (id INTEGER);
        INSERT INTO _litestream_seq (id, seq) VALUES (1, 1)
            ON CONFLICT (id) DO UPDATE SET seq = seq + 1;";
    let dir = tempfile::tempdir().unwrap();

    // Litestream got to a new, empty file first: roomsync migrates it.
    let fresh = dir.path().join("fresh.db");
    common::write_sql(&fresh, LITESTREAM_DDL).await;
    let store = Store::open(&fresh).await.expect("accepted");
    let version: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(version, roomsync::store::known_schema_version());
    store.close().await;
    // A migrated mirror Litestream has touched opens again.
    common::write_sql(&fresh, LITESTREAM_DDL).await;
    Store::open(&fresh).await.expect("accepted").close().await;

    // Litestream's tables beside another application's are still another application's file.
    let foreign = dir.path().join("foreign.db");
    common::write_sql(&foreign, LITESTREAM_DDL).await;
    common::write_sql(
        &foreign,
        "CREATE TABLE invoices (id INTEGER PRIMARY KEY); PRAGMA wal_checkpoint(TRUNCATE);",
    )
    .await;
    let before = std::fs::read(&foreign).unwrap();
    assert!(matches!(
        Store::open(&foreign).await,
        Err(StoreError::Foreign { .. })
    ));
    assert_eq!(std::fs::read(&foreign).unwrap(), before);
}
