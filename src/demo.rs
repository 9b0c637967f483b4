//! `roomsync --demo`: a sync from the built-in stand-in into `./roomsync-demo.db`, with no
//! config file and no DingTalk credentials. It uses the normal sync path end to end.

use std::path::PathBuf;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::lock::SyncLock;
use crate::standin::{settings_for, OrgSpec, StandIn, StandInConfig};
use crate::store::runs::{RunStatus, Trigger};
use crate::store::Store;
use crate::sync::{run_sync, RunReport, SyncOptions};

/// Where the demo writes, relative to the current directory.
pub const DEMO_DATABASE: &str = "roomsync-demo.db";
/// Rooms in the demo organisation.
pub const DEMO_ROOMS: usize = 3_000;
const DEMO_SEED: u64 = 2026;

/// Runs the demo; the report says how the sync went.
pub async fn run(shutdown: CancellationToken) -> anyhow::Result<RunReport> {
    let standin = StandIn::start(StandInConfig::new(OrgSpec::new(DEMO_SEED, DEMO_ROOMS)))
        .await
        .context("starting the stand-in DingTalk API")?;
    let db = PathBuf::from(DEMO_DATABASE);
    let settings = settings_for(&standin, db.clone());
    let lock = SyncLock::try_acquire(&db)
        .context("taking the sync lock")?
        .context("another roomsync --demo is running in this directory")?;
    let store = Store::open(&db).await?;
    let options = SyncOptions {
        trigger: Trigger::Manual,
        allow_mass_removal: false,
    };
    let report = run_sync(&store, &settings, options, &lock, shutdown).await?;
    store.close().await;
    standin.stop().await;
    Ok(report)
}

/// What to try next, printed after a successful demo.
pub fn next_steps(report: &RunReport) -> String {
    let db = DEMO_DATABASE;
    let status = if report.status == RunStatus::Succeeded {
        ""
    } else {
        " (the sync did not succeed)"
    };
    format!(
        r#"{report}{status}

The mirror is in ./{db}. Try:

  # The ten largest active rooms with their group
  sqlite3 -readonly -box {db} "SELECT r.room_name, r.room_capacity, g.group_name FROM rooms r LEFT JOIN room_groups g USING (group_id) WHERE r.removed_at IS NULL ORDER BY r.room_capacity DESC, r.room_name LIMIT 10"

  # Rooms with a projector (label 3) for at least 10 people
  sqlite3 -readonly -box {db} "SELECT r.room_id, r.room_name, r.room_capacity FROM rooms r JOIN room_labels rl ON rl.room_id = r.room_id AND rl.label_id = 3 WHERE r.removed_at IS NULL AND r.room_capacity >= 10 ORDER BY r.room_capacity DESC LIMIT 10"

  # The sync runs so far
  sqlite3 -readonly -box {db} "SELECT run_id, trigger, status, started_at, pages_fetched, rooms_seen, rooms_added, rooms_updated, rooms_removed FROM sync_runs ORDER BY run_id DESC LIMIT 5"
"#
    )
}
