//! The mirror's `-wal` file does not stay at its high-water mark. A sync's apply goes through
//! the WAL whole, and a reader holding an old snapshot keeps SQLite from checkpointing it, so
//! large syncs leave a large file; once that reader has gone, the next resync brings the file
//! back to `store::WAL_SIZE_LIMIT` (4 MiB) plus the resync's own few pages, under 8 MiB.
//! roomsync runs alone here, as without Litestream, with real files and the store kept open as
//! the daemon keeps it (closing the last connection would delete the file and prove nothing).

use std::path::Path;

use roomsync::config::Settings;
use roomsync::metrics::Metrics;
use roomsync::standin::{settings_for, OrgSpec, StandIn, StandInConfig};
use roomsync::store::runs::Trigger;
use roomsync::store::{open_read_only, Store};
use roomsync::sync::{Runner, SyncOptions};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

async fn sync(store: &Store, settings: &Settings) -> roomsync::sync::RunReport {
    let options = SyncOptions {
        trigger: Trigger::Manual,
        allow_mass_removal: false,
    };
    let runner = Runner::new(settings.clone(), Metrics::new()).unwrap();
    let report = runner
        .run_on(store, options, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.status.as_str(), "succeeded", "{report}");
    report
}

/// Rooms in the organisation: every revision rewrites all of them, about 5 MB of pages.
const ROOMS: usize = 10_000;

fn wal_size(db: &Path) -> u64 {
    std::fs::metadata(format!("{}-wal", db.display()))
        .map(|m| m.len())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_resync_after_a_large_sync_and_a_long_reader_shrinks_the_wal_again() {
    // Every room changes in every revision: each revision is a write transaction about as
    // large as the initial sync.
    let org = OrgSpec {
        change_every: 1,
        ..OrgSpec::new(16, ROOMS)
    };
    let standin = StandIn::start(StandInConfig::new(org)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rooms.db");
    let settings = settings_for(&standin, db.clone());
    let store = Store::open(&db).await.unwrap();
    sync(&store, &settings).await;

    // A long reader: its read transaction, opened before the next syncs, keeps the snapshot
    // it started with, so no checkpoint can go past it and each sync adds to the WAL.
    let mut reader = open_read_only(&db).await.unwrap();
    let mut snapshot = reader.begin().await.unwrap();
    let rooms: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rooms")
        .fetch_one(&mut *snapshot)
        .await
        .unwrap();
    assert_eq!(rooms, ROOMS as i64);
    for revision in 1..=3 {
        standin.set_org(OrgSpec { revision, ..org });
        let report = sync(&store, &settings).await;
        assert_eq!(report.counts.unwrap().updated, ROOMS as u64, "{report}");
    }
    let high_water = wal_size(&db);
    assert!(
        high_water > 10 * 1024 * 1024,
        "the syncs left a WAL of {high_water} bytes: too small to show anything"
    );
    snapshot.commit().await.unwrap();
    reader.close().await.unwrap();
    assert_eq!(
        wal_size(&db),
        high_water,
        "nothing shrinks the file by itself"
    );

    // The reader has gone; nothing changed upstream: the resync writes its run records only.
    let report = sync(&store, &settings).await;
    assert_eq!(report.counts.unwrap().updated, 0, "{report}");
    let after = wal_size(&db);
    assert!(
        after < 8 * 1024 * 1024,
        "after the resync the WAL is {after} bytes (high-water mark {high_water}), not under 8 MiB"
    );
    println!("-wal file: {high_water} bytes after the large sync, {after} after the resync");
    store.close().await;
}
