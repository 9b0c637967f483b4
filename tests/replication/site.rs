//! The two machines, a primary and a reader, in one temporary directory: the recipe's
//! configuration as each uses it, the processes of the primary, and its progress.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use roomsync::standin::{OrgSpec, StandIn, APP_KEY, APP_SECRET, UNION_ID};
use roomsync::store::open_read_only;
use sqlx::Connection;
use tempfile::TempDir;

use crate::digest::{comparison, full_digest, TableDigest};
use crate::procs::{Proc, Tools};
use crate::{BIN, BUCKET, RECIPE_CONFIG, RECIPE_DB, RECIPE_REPLICA_DIR};

pub enum Replica {
    S3 { endpoint: String },
    Directory(PathBuf),
}

/// The recipe's Litestream configuration for the machine whose copy of the mirror is `db`.
/// For a directory replica, the switch its comment describes: the S3 replica commented out,
/// the file replica's lines uncommented, its directory substituted.
fn litestream_config(replica: &Replica, db: &Path) -> String {
    assert_eq!(RECIPE_CONFIG.matches(RECIPE_DB).count(), 1);
    let text = RECIPE_CONFIG.replace(RECIPE_DB, db.to_str().unwrap());
    let Replica::Directory(dir) = replica else {
        return text;
    };
    let (mut in_s3, mut in_file) = (false, false);
    let (mut commented, mut uncommented) = (0, 0);
    let mut out = Vec::new();
    for line in text.lines() {
        in_s3 = (in_s3 || line == "    replica:") && !line.trim().is_empty();
        in_file = line == "    # replica:" || (in_file && line.starts_with("    #   "));
        if in_s3 {
            out.push(format!("    # {}", &line[4..]));
            commented += 1;
        } else if in_file {
            out.push(format!("    {}", &line[6..]));
            uncommented += 1;
        } else {
            out.push(line.to_string());
        }
    }
    assert!(commented >= 5, "no S3 replica block found in the recipe");
    assert_eq!(uncommented, 3, "no file replica block found in the recipe");
    let text = out.join("\n") + "\n";
    assert_eq!(text.matches(RECIPE_REPLICA_DIR).count(), 1);
    text.replace(RECIPE_REPLICA_DIR, dir.to_str().unwrap())
}

/// A primary and a reader machine in one temporary directory.
pub struct Site {
    /// Which replica, in what the test prints.
    pub label: String,
    pub dir: TempDir,
    pub tools: Tools,
    replica: Replica,
    pub primary: PathBuf,
    pub reader: PathBuf,
    primary_litestream: PathBuf,
    pub reader_litestream: PathBuf,
    primary_roomsync: PathBuf,
    pub reader_roomsync: PathBuf,
}

impl Site {
    pub fn new(tools: Tools, dir: TempDir, replica: Replica, standin: &StandIn) -> Site {
        for d in ["primary", "reader", "restores"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let at = |p: &str| dir.path().join(p);
        let label = match &replica {
            Replica::S3 { endpoint } => format!("S3 replica (moto at {endpoint})"),
            Replica::Directory(_) => "directory replica".to_string(),
        };
        let site = Site {
            label,
            primary: at("primary/rooms.db"),
            reader: at("reader/rooms.db"),
            primary_litestream: at("primary/litestream.yml"),
            reader_litestream: at("reader/litestream.yml"),
            primary_roomsync: at("primary/roomsync.toml"),
            reader_roomsync: at("reader/roomsync.toml"),
            dir,
            tools,
            replica,
        };
        let write = |path: &Path, text: String| std::fs::write(path, text).unwrap();
        write(
            &site.primary_litestream,
            litestream_config(&site.replica, &site.primary),
        );
        write(
            &site.reader_litestream,
            litestream_config(&site.replica, &site.reader),
        );
        let url = standin.base_url();
        write(&site.primary_roomsync, roomsync_config(&url, &site.primary));
        write(&site.reader_roomsync, roomsync_config(&url, &site.reader));
        site
    }

    /// What the units read from /etc/roomsync/litestream.env.
    pub fn litestream_env(&self) -> Vec<(&'static str, String)> {
        let endpoint = match &self.replica {
            Replica::S3 { endpoint } => endpoint.clone(),
            Replica::Directory(_) => String::new(),
        };
        vec![
            ("ROOMSYNC_REPLICA_BUCKET", BUCKET.into()),
            ("ROOMSYNC_REPLICA_ENDPOINT", endpoint),
            ("ROOMSYNC_REPLICA_REGION", "us-east-1".into()),
            ("LITESTREAM_ACCESS_KEY_ID", "roomsync-test".into()),
            (
                "LITESTREAM_SECRET_ACCESS_KEY",
                "roomsync-test-secret".into(),
            ),
        ]
    }

    /// `litestream` with the units' environment.
    pub fn litestream(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.tools.litestream);
        // Litestream's S3 client fails on a CA bundle it cannot add to its transport.
        cmd.args(args)
            .env_remove("AWS_CA_BUNDLE")
            .envs(self.litestream_env());
        cmd
    }

    pub fn spawn_litestream_replicate(&self) -> Proc {
        let config = self.primary_litestream.to_str().unwrap();
        let cmd = self.litestream(&["replicate", "-config", config]);
        Proc::spawn("litestream replicate", cmd, self.log("litestream.log"))
    }

    pub fn spawn_daemon(&self, n: u32) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&self.primary_roomsync)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET");
        Proc::spawn("roomsync daemon", cmd, self.log(&format!("daemon-{n}.log")))
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `litestream restore -if-replica-exists -o OUT` of the reader's database; whether there
    /// was a replica to restore.
    fn restore_to(&self, out: &Path) -> bool {
        let config = self.reader_litestream.to_str().unwrap();
        let output = self
            .litestream(&[
                "restore",
                "-config",
                config,
                "-if-replica-exists",
                "-o",
                out.to_str().unwrap(),
                self.reader.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert_success("litestream restore", &output);
        out.exists()
    }
}

pub fn roomsync_config(base_url: &reqwest::Url, db: &Path) -> String {
    format!(
        "[dingtalk]\nbase_url = \"{base_url}\"\napp_key = \"{APP_KEY}\"\n\
         app_secret = \"{APP_SECRET}\"\nunion_id = \"{UNION_ID}\"\nretry_base_delay_ms = 1\n\
         requests_per_second = 1000\n\n[database]\npath = \"{}\"\n\n\
         [schedule]\ncron = \"*/2 * * * * *\"\nrun_on_start = true\n\n\
         # A run every two seconds would outrun a real budget's pace early in a month.\n\
         [budget]\nmonthly_calls = 0\n\n\
         # One refresh at each start (`run_on_start`), so the availability examples of\n\
         # docs/schema.md have data to answer from; the schedule itself never comes due here.\n\
         [availability]\nenabled = true\ncron = \"0 0 0 1 1 *\"\n",
        db.display()
    )
}

pub fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// The primary's progress

impl Site {
    /// Waits until the primary mirrors the organisation `org`: its rooms, each renamed by the
    /// revision (revision 0: none is).
    pub async fn wait_for_revision(&self, daemon: &mut Proc, org: OrgSpec) {
        assert_eq!(org.change_every, 1, "every room is renamed");
        let mark = format!("% (rev {})", org.revision);
        let marked = if org.revision == 0 { 0 } else { org.rooms };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            daemon.assert_running();
            if self.revision_counts(&mark).await == Some((org.rooms as i64, marked as i64)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the primary did not reach revision {}; daemon log:\n{}",
                org.revision,
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// (active rooms, active rooms whose name matches `mark`), once the mirror has a schema.
    async fn revision_counts(&self, mark: &str) -> Option<(i64, i64)> {
        if !self.primary.exists() {
            return None;
        }
        let mut conn = open_read_only(&self.primary).await.ok()?;
        let counts = sqlx::query_as(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE room_name LIKE ?1)
             FROM rooms WHERE removed_at IS NULL",
        )
        .bind(mark)
        .fetch_one(&mut conn)
        .await
        .ok();
        let _ = conn.close().await;
        counts
    }

    /// The largest run id of the primary and its status.
    async fn latest_run(&self) -> Option<(i64, String)> {
        let mut conn = open_read_only(&self.primary).await.ok()?;
        let run =
            sqlx::query_as("SELECT run_id, status FROM sync_runs ORDER BY run_id DESC LIMIT 1")
                .fetch_optional(&mut conn)
                .await
                .ok()
                .flatten();
        let _ = conn.close().await;
        run
    }

    /// SIGTERM while a run is under way (the next revision is being fetched or applied): the
    /// daemon exits 0, and the replica, with Litestream still running, catches up with every
    /// row the primary committed, the run's record included.
    pub async fn sigterm_mid_run(&self, daemon: &mut Proc, standin: &StandIn, next: OrgSpec) {
        let (before, _) = self.latest_run().await.expect("runs recorded");
        standin.set_org(next);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            daemon.assert_running();
            if let Some((run, status)) = self.latest_run().await {
                if run > before && status == "running" {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no run started; log:\n{}",
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(daemon.terminate(Duration::from_secs(10)).await, 0);
        let (run, status) = self.latest_run().await.unwrap();
        assert!(
            ["interrupted", "succeeded"].contains(&status.as_str()),
            "run {run} is {status} after SIGTERM"
        );
        let primary = full_digest(&self.primary).await;
        let restored = self.converge(&primary).await;
        println!(
            "{}: after SIGTERM of the daemon during run {run} (recorded {status}), Litestream \
             running, a restore against the primary:\n{}",
            self.label,
            comparison(&primary, &restored)
        );
    }

    /// Every run of the primary succeeded but the one SIGTERM interrupted, and none recorded an
    /// error (nor a warning but the stand-in's deliberate room errors): Litestream working beside roomsync (its locks, its checkpoints) never failed a run.
    pub async fn assert_runs_clean(&self) {
        let mut conn = open_read_only(&self.primary).await.unwrap();
        let statuses: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM sync_runs GROUP BY status ORDER BY 1")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        // The stand-in answers a few rooms' schedules with an `error` on purpose: those are
        // the only warnings expected, and no error at all.
        let errors: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sync_errors
             WHERE severity <> 'warning' OR error_code IS NOT 'availability.room_error'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        let count = |s: &str| {
            statuses
                .iter()
                .find(|(st, _)| st == s)
                .map_or(0, |(_, n)| *n)
        };
        let all: i64 = statuses.iter().map(|(_, n)| n).sum();
        assert!(
            count("interrupted") <= 1 && count("succeeded") + count("interrupted") == all,
            "runs: {statuses:?}"
        );
        assert_eq!(errors, 0, "errors were recorded");
    }

    /// Restores until a restore equals `primary` table by table (the replica has caught up);
    /// that restore's digests.
    async fn converge(&self, primary: &[TableDigest]) -> Vec<TableDigest> {
        let deadline = Instant::now() + Duration::from_secs(60);
        for n in 0.. {
            let out = self.dir.path().join(format!("restores/converge-{n}.db"));
            let restored = match self.restore_to(&out) {
                true => full_digest(&out).await,
                false => Vec::new(),
            };
            remove_database(&out);
            if restored == primary {
                return restored;
            }
            assert!(
                Instant::now() < deadline,
                "the replica did not catch up with the primary:\n{}",
                comparison(primary, &restored)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        unreachable!()
    }
}

pub fn remove_database(db: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}
