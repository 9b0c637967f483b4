//! `roomsync --demo`: a sync from the built-in stand-in into `./roomsync-demo.db`, then one
//! availability refresh, with no config file and no DingTalk credentials. It uses the normal
//! sync path end to end.

use std::path::PathBuf;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::standin::{settings_for, OrgSpec, StandIn, StandInConfig};
use crate::store::runs::{RunStatus, Trigger};
use crate::sync::{RunError, RunReport, Runner, SyncOptions};

/// Where the demo writes, relative to the current directory.
pub const DEMO_DATABASE: &str = "roomsync-demo.db";
/// Rooms in the demo organisation.
pub const DEMO_ROOMS: usize = 3_000;
const DEMO_SEED: u64 = 2026;

/// The demo's two runs: the room list, then the rooms' availability.
pub struct DemoReports {
    pub sync: RunReport,
    pub refresh: Option<RunReport>,
}

impl DemoReports {
    /// Whether both runs succeeded.
    pub fn succeeded(&self) -> bool {
        self.sync.status == RunStatus::Succeeded
            && self
                .refresh
                .as_ref()
                .is_some_and(|r| r.status == RunStatus::Succeeded)
    }
}

/// Runs the demo: the room list and one availability refresh; the reports say how they went.
pub async fn run(shutdown: CancellationToken) -> anyhow::Result<DemoReports> {
    let standin = StandIn::start(StandInConfig::new(OrgSpec::new(DEMO_SEED, DEMO_ROOMS)))
        .await
        .context("starting the stand-in DingTalk API")?;
    let db = PathBuf::from(DEMO_DATABASE);
    let mut settings = settings_for(&standin, db);
    settings.availability.enabled = true;
    let runner = Runner::new(settings, Metrics::new())?;
    let options = SyncOptions {
        trigger: Trigger::Manual,
        allow_mass_removal: false,
    };
    let sync = match runner.run_once(options, shutdown.clone()).await {
        Err(RunError::Locked { .. }) => {
            anyhow::bail!("another roomsync --demo is running in this directory")
        }
        Err(RunError::Lock { source, .. }) => Err(source).context("taking the sync lock")?,
        report => report?,
    };
    let refresh = if sync.status == RunStatus::Succeeded {
        Some(runner.refresh_once(Trigger::Manual, shutdown).await?)
    } else {
        None
    };
    standin.stop().await;
    Ok(DemoReports { sync, refresh })
}

/// What to try next, printed after a successful demo.
pub fn next_steps(reports: &DemoReports) -> String {
    let db = DEMO_DATABASE;
    let sync = &reports.sync;
    let refresh = reports
        .refresh
        .as_ref()
        .map(|r| format!("\n{r}"))
        .unwrap_or_default();
    format!(
        r#"{sync}{refresh}

The mirror is in ./{db}. Try (the schema is described in docs/schema.md):

  # The ten largest rooms, with their group's place in the hierarchy
  sqlite3 -readonly -box {db} "SELECT room_name, room_capacity, group_path FROM active_rooms ORDER BY room_capacity DESC, room_name LIMIT 10"

  # Rooms open to everyone with a projector (label 3) for at least 10 people
  sqlite3 -readonly -box {db} "SELECT room_id, room_name, room_capacity, label_names FROM active_rooms WHERE room_status = 0 AND room_capacity >= 10 AND EXISTS (SELECT 1 FROM json_each(label_ids) WHERE value = 3) ORDER BY room_capacity DESC LIMIT 10"

  # Rooms free now, and until when
  sqlite3 -readonly -box {db} "SELECT room_name, group_path, free_until FROM room_availability WHERE busy_now = 0 ORDER BY free_until DESC, room_name LIMIT 10"

  # The sync runs so far, and the latest changes
  sqlite3 -readonly -box {db} "SELECT run_id, kind, trigger, status, started_at, rooms_seen, rooms_added, rooms_updated, rooms_removed FROM sync_runs ORDER BY run_id DESC LIMIT 5; SELECT change_id, room_id, change, changed_fields FROM room_changes ORDER BY change_id DESC LIMIT 5"
"#
    )
}
