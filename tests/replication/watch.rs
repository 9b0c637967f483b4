//! Watching the primary while it runs: every state it commits, when the daemon holds the WAL
//! write lock (an apply under way), and restores taken one after the other, each checked at the
//! end against the states the primary went through.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roomsync::store::open_read_only;
use sqlx::Connection;

use crate::digest::{data_state, empty_data, sync_runs_rows, DataState};
use crate::procs::Proc;
use crate::site::{assert_success, remove_database, Site};

/// A restore taken while the primary was running.
struct RestoreRecord {
    started: Instant,
    finished: Instant,
    /// None: there was no replica yet.
    state: Option<tokio::task::JoinHandle<RestoredState>>,
}

struct RestoredState {
    state: DataState,
    /// `sync_runs` rows up to the latest successful run.
    runs: Vec<String>,
}

/// The primary's committed states: latest successful run -> digest of the data tables.
type States = Arc<Mutex<BTreeMap<i64, u64>>>;

/// Three watchers over the primary while it runs:
/// - every state it commits, as (latest successful run -> data digest), read every 20 ms;
/// - when the daemon holds the WAL write lock (a write transaction is open), from /proc/locks
///   every 2 ms;
/// - restores, one after the other, each inspected on the side.
pub struct Watch {
    label: String,
    stop: Arc<AtomicBool>,
    daemon_pid: Arc<AtomicU32>,
    states: States,
    poller: Option<tokio::task::JoinHandle<()>>,
    sampler: Option<std::thread::JoinHandle<Vec<(Instant, Instant)>>>,
    restorer: Option<tokio::task::JoinHandle<Vec<RestoreRecord>>>,
    primary: PathBuf,
}

impl Watch {
    pub fn start(site: &Site, daemon: &Proc) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let daemon_pid = Arc::new(AtomicU32::new(daemon.pid()));
        let states = States::default();
        let poller = tokio::spawn(poll_states(
            site.primary.clone(),
            states.clone(),
            stop.clone(),
        ));
        let sampler = std::thread::spawn({
            let (shm, pid, stop) = (
                PathBuf::from(format!("{}-shm", site.primary.display())),
                daemon_pid.clone(),
                stop.clone(),
            );
            move || sample_write_lock(&shm, &pid, &stop)
        });
        let restorer = tokio::spawn(restore_all_along(site.restorer(), stop.clone()));
        Watch {
            label: site.label.clone(),
            stop,
            daemon_pid,
            states,
            poller: Some(poller),
            sampler: Some(sampler),
            restorer: Some(restorer),
            primary: site.primary.clone(),
        }
    }

    /// The daemon was restarted.
    pub fn follow(&self, daemon: &Proc) {
        self.daemon_pid.store(daemon.pid(), Ordering::SeqCst);
    }

    /// Stops watching and checks every restore: each one is a state the primary committed (its
    /// data and its run records), never a mix; some were taken while a sync was being applied.
    pub async fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.poller.take().unwrap().await.unwrap();
        let writes = self.sampler.take().unwrap().join().unwrap();
        let records = self.restorer.take().unwrap().await.unwrap();
        let states = self.states.lock().unwrap().clone();
        let primary_runs = sync_runs_rows(&self.primary, i64::MAX).await;
        // The applies: write transactions of the daemon that lasted a while (a run's own
        // records take milliseconds).
        let applies: Vec<(Instant, Instant)> = writes
            .into_iter()
            .filter(|(from, to)| *to - *from >= Duration::from_millis(50))
            .collect();
        let longest = *applies
            .iter()
            .max_by_key(|(from, to)| *to - *from)
            .expect("the daemon applied syncs");
        let (mut checked, mut during_apply, mut during_longest) = (0, 0, 0);
        let mut runs_seen = BTreeSet::new();
        for record in records {
            let Some(state) = record.state else { continue };
            let restored = state.await.unwrap();
            check_restore(&restored, &states, &primary_runs);
            checked += 1;
            runs_seen.insert(restored.state.last_success);
            let overlaps =
                |(from, to): &(Instant, Instant)| record.started < *to && *from < record.finished;
            during_apply += usize::from(applies.iter().any(overlaps));
            during_longest += usize::from(overlaps(&longest));
        }
        println!(
            "{}: {checked} restores taken while the primary ran, at {} different runs, each a \
             state the primary committed; {during_apply} taken while the daemon applied a sync \
             ({} applies seen), {during_longest} during the largest apply ({:.2} s)",
            self.label,
            runs_seen.len(),
            applies.len(),
            (longest.1 - longest.0).as_secs_f64()
        );
        assert!(runs_seen.len() >= 4, "restores saw only {runs_seen:?}");
        assert!(
            during_longest >= 1,
            "no restore was taken during the largest apply"
        );
    }
}

/// A restore is the state the primary committed with its latest successful run: the same data,
/// the same run records up to that run.
fn check_restore(
    restored: &RestoredState,
    states: &BTreeMap<i64, u64>,
    primary_runs: &BTreeMap<i64, String>,
) {
    let DataState { last_success, data } = restored.state;
    let expected = match last_success {
        0 => empty_data(),
        run => *states.get(&run).unwrap_or_else(|| {
            panic!("a restore is at run {run}, a state never seen on the primary")
        }),
    };
    assert_eq!(
        data, expected,
        "a restore at run {last_success} holds the data of another state: a mix"
    );
    let runs: Vec<&String> = primary_runs
        .range(..=last_success)
        .map(|(_, row)| row)
        .collect();
    assert_eq!(
        restored.runs.iter().collect::<Vec<_>>(),
        runs,
        "the run records of a restore at run {last_success}"
    );
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
        if let Some(task) = self.poller.take() {
            task.abort();
        }
        // An aborted restorer still stops its restore in flight: it sees `stop`.
        if let Some(task) = self.restorer.take() {
            task.abort();
        }
    }
}

/// Records the primary's committed states: (latest successful run -> data digest). A state
/// lasts at least until the next run, seconds later; it is read within milliseconds.
async fn poll_states(db: PathBuf, states: States, stop: Arc<AtomicBool>) {
    let mut conn = None;
    while !stop.load(Ordering::SeqCst) {
        if conn.is_none() && db.exists() {
            conn = open_read_only(&db).await.ok();
        }
        if let Some(conn) = conn.as_mut() {
            let known = states.lock().unwrap().clone();
            if let Ok(Some(state)) = data_state(conn, &known).await {
                states
                    .lock()
                    .unwrap()
                    .insert(state.last_success, state.data);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(conn) = conn {
        let _ = conn.close().await;
    }
}

/// The intervals during which the process `pid` held the WAL write lock of the database whose
/// shared-memory file is `shm`: SQLite's fcntl lock on byte 120 of the -shm file, as
/// /proc/locks shows it ("1: POSIX ADVISORY WRITE <pid> <maj>:<min>:<inode> 120 120").
fn sample_write_lock(shm: &Path, pid: &AtomicU32, stop: &AtomicBool) -> Vec<(Instant, Instant)> {
    use std::os::unix::fs::MetadataExt;
    let mut intervals = Vec::new();
    let mut held_since: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        let held = std::fs::metadata(shm).is_ok_and(|m| {
            let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
            let (pid, inode) = (pid.load(Ordering::SeqCst).to_string(), m.ino().to_string());
            locks.lines().any(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                f.len() == 8
                    && f[1..4] == ["POSIX", "ADVISORY", "WRITE"]
                    && f[4] == pid
                    && f[5].rsplit(':').next() == Some(inode.as_str())
                    && f[6..8] == ["120", "120"]
            })
        });
        match (held, held_since) {
            (true, None) => held_since = Some(Instant::now()),
            (false, Some(since)) => {
                intervals.push((since, Instant::now()));
                held_since = None;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    intervals
}

/// What the restorer needs of the site: `litestream restore` of the reader's database.
#[derive(Clone)]
struct Restorer {
    litestream: PathBuf,
    env: Vec<(&'static str, String)>,
    config: PathBuf,
    reader: PathBuf,
    dir: PathBuf,
}

impl Site {
    fn restorer(&self) -> Restorer {
        Restorer {
            litestream: self.tools.litestream.clone(),
            env: self.litestream_env(),
            config: self.reader_litestream.clone(),
            reader: self.reader.clone(),
            dir: self.dir.path().join("restores"),
        }
    }
}

impl Restorer {
    /// One restore to `out`; killed when `stop` is set before it ends.
    fn restore(&self, out: &Path, stop: &AtomicBool) -> Option<Output> {
        let mut child = Command::new(&self.litestream)
            .env_remove("AWS_CA_BUNDLE")
            .envs(self.env.iter().cloned())
            .arg("restore")
            .arg("-config")
            .arg(&self.config)
            .args(["-if-replica-exists", "-o"])
            .arg(out)
            .arg(&self.reader)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        while child.try_wait().unwrap().is_none() {
            if stop.load(Ordering::SeqCst) {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Some(child.wait_with_output().unwrap())
    }
}

/// Restores the replica again and again until stopped; each restore is inspected (and
/// deleted) on the side, so the next one starts at once.
async fn restore_all_along(r: Restorer, stop: Arc<AtomicBool>) -> Vec<RestoreRecord> {
    let mut records = Vec::new();
    for n in 0.. {
        let out = r.dir.join(format!("during-{n}.db"));
        let started = Instant::now();
        let output = tokio::task::spawn_blocking({
            let (r, out, stop) = (r.clone(), out.clone(), stop.clone());
            move || r.restore(&out, &stop)
        })
        .await
        .unwrap();
        let finished = Instant::now();
        let Some(output) = output else {
            remove_database(&out);
            break;
        };
        assert_success("litestream restore", &output);
        let state = out.exists().then(|| tokio::spawn(inspect_restore(out)));
        records.push(RestoreRecord {
            started,
            finished,
            state,
        });
    }
    records
}

/// A restore must be a sound database; its state, then it is deleted.
async fn inspect_restore(db: PathBuf) -> RestoredState {
    let mut conn = open_read_only(&db).await.unwrap();
    let check: String = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(check, "ok", "restore {}", db.display());
    let state = data_state(&mut conn, &BTreeMap::new())
        .await
        .unwrap()
        .expect("computed");
    conn.close().await.unwrap();
    let runs = sync_runs_rows(&db, state.last_success)
        .await
        .into_values()
        .collect();
    remove_database(&db);
    RestoredState { state, runs }
}
