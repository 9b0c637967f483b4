//! Readers on other machines (docs/replication.md), end to end: the roomsync daemon (the real
//! binary) syncs a changing organisation from the stand-in while `litestream replicate` streams
//! the mirror, with the recipe's own configuration (contrib/litestream/litestream.yml), to an S3
//! replica (moto's server on loopback) or to a directory replica. All along, restores are taken
//! and each must be a state the primary committed, never a mix; a SIGTERM of the daemon loses
//! nothing; at the end the reader's refresh script (contrib/litestream/roomsync-replica-refresh)
//! makes a copy that equals the primary table by table, on which `roomsync status` and the
//! example queries of docs/schema.md work.
//!
//! These are system tests: they need `litestream` 0.5, `moto_server` and `sqlite3` on PATH, so
//! a plain `cargo test` lists them as ignored. `.ci/run` installs the tools and runs
//! `cargo test --test replication -- --ignored`; there a missing tool fails the test.
//!
//! The tests without external tools (Litestream's tables in a mirror) run with `cargo test`.

#[path = "../common/mod.rs"]
mod common;
mod digest;
mod procs;
mod reader;
mod site;
mod watch;

use std::time::{Duration, Instant};

use roomsync::standin::{OrgSpec, StandIn, StandInConfig};
use roomsync::store::{Store, StoreError};

use procs::{Moto, Tools};
use site::{Replica, Site};
use watch::Watch;

const BIN: &str = env!("CARGO_BIN_EXE_roomsync");
/// The recipe's Litestream configuration, used as shipped but for the substitutions below.
const RECIPE_CONFIG: &str = include_str!("../../contrib/litestream/litestream.yml");
/// Where the recipe names the database. Each machine's copy of the configuration has it
/// replaced by that machine's path (docs/replication.md, "How the recipe is tested").
const RECIPE_DB: &str = "/var/lib/roomsync/rooms.db";
/// The directory of the recipe's commented-out file replica.
const RECIPE_REPLICA_DIR: &str = "/srv/roomsync-replica";
const REFRESH_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/litestream/roomsync-replica-refresh"
);
const SCHEMA_DOC: &str = include_str!("../../docs/schema.md");
const BUCKET: &str = "roomsync-replica";
/// Rooms in the organisation. Every revision renames all of them, so each revision's apply is
/// one write transaction of a few MB, the case that would show a torn restore.
const ROOMS: usize = 6_000;
/// Rooms after the last revision's growth.
const LARGE_ROOMS: usize = 24_000;
/// The tables a restore is compared on first, in this order; every other table of roomsync's
/// (not Litestream's) follows.
const NAMED_TABLES: [&str; 6] = [
    "rooms",
    "room_labels",
    "labels",
    "room_groups",
    "room_changes",
    "sync_runs",
];
/// The tables that hold the mirrored data: each committed state has one digest of them.
const DATA_TABLES: [&str; 6] = [
    "rooms",
    "room_labels",
    "labels",
    "room_groups",
    "room_changes",
    "roomsync_room_fingerprints",
];

// ---------------------------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "system test: needs litestream 0.5, moto_server and sqlite3; .ci/run runs it"]
async fn s3_replica_end_to_end() {
    end_to_end(Kind::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "system test: needs litestream 0.5 and sqlite3; .ci/run runs it"]
async fn directory_replica_end_to_end() {
    end_to_end(Kind::Directory).await;
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    S3,
    Directory,
}

async fn end_to_end(kind: Kind) {
    let started = Instant::now();
    let tools = Tools::find(kind);
    let dir = tempfile::tempdir().unwrap();
    let moto = match kind {
        Kind::S3 => Some(Moto::start(&tools, dir.path()).await),
        Kind::Directory => None,
    };
    let replica = match &moto {
        Some(moto) => Replica::S3 {
            endpoint: moto.endpoint.clone(),
        },
        None => Replica::Directory(dir.path().join("replica")),
    };
    let org = OrgSpec {
        change_every: 1,
        ..OrgSpec::new(77, ROOMS)
    };
    let standin = StandIn::start(StandInConfig::new(org)).await.unwrap();
    let site = Site::new(tools, dir, replica, &standin);

    // The primary, in the order of the units: Litestream first (it waits for the database),
    // then roomsync.
    let mut litestream = site.spawn_litestream_replicate();
    let mut daemon = site.spawn_daemon(1);
    let watch = Watch::start(&site, &daemon);
    // Revisions rename every room; the third removes a tenth of them, the fourth brings them
    // back.
    for (revision, rooms) in [(0, ROOMS), (1, ROOMS), (2, ROOMS * 9 / 10), (3, ROOMS)] {
        let next = OrgSpec {
            revision,
            rooms,
            ..org
        };
        standin.set_org(next);
        site.wait_for_revision(&mut daemon, next).await;
    }
    litestream.assert_running();

    // A primary restart while Litestream runs: SIGTERM in the middle of a run, then a start
    // on the database Litestream has touched.
    let next = OrgSpec { revision: 4, ..org };
    site.sigterm_mid_run(&mut daemon, &standin, next).await;
    let mut daemon = site.spawn_daemon(2);
    watch.follow(&daemon);
    site.wait_for_revision(&mut daemon, next).await;

    // The organisation grows fourfold: an apply larger than its page cache (8 MiB), so SQLite
    // writes pages of the open transaction to the WAL before the commit.
    let large = OrgSpec {
        revision: 5,
        rooms: LARGE_ROOMS,
        ..org
    };
    standin.set_org(large);
    site.wait_for_revision(&mut daemon, large).await;
    assert_eq!(daemon.terminate(Duration::from_secs(10)).await, 0);
    assert!(
        !daemon.log().contains("skipping this tick: API budget"),
        "the budget held ticks back:\n{}",
        daemon.log()
    );
    site.assert_runs_clean().await;
    watch.finish().await;
    litestream.assert_running();
    // SIGTERM: Litestream ships what is left, then exits.
    assert_eq!(litestream.terminate(Duration::from_secs(60)).await, 0);
    let log = litestream.log();
    let trouble: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("level=ERROR") || l.contains("level=WARN"))
        .collect();
    assert!(
        trouble.is_empty(),
        "Litestream complained:\n{}",
        trouble.join("\n")
    );

    site.check_the_reader(LARGE_ROOMS).await;
    site.check_a_restored_mirror_syncs_as_a_primary(&standin)
        .await;
    println!(
        "{}: end to end in {:.1} s",
        site.label,
        started.elapsed().as_secs_f64()
    );
    drop(moto);
}
