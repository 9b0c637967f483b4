//! The daemon as users run it: the real binary, a schedule, signals and systemd notifications.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{succeeded_runs, until, Daemon};
use common::scrape::{free_port, scrape};
use common::*;
use roomsync::lock::SyncLock;

const BIN: &str = env!("CARGO_BIN_EXE_roomsync");

#[tokio::test]
async fn a_one_second_schedule_runs_repeatedly_without_overlap() {
    let port = free_port();
    let env = TestEnv::with(
        "",
        &format!(
            "[schedule]\ncron = \"* * * * * *\"\nrun_on_start = false\n\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\""
        ),
    )
    .await;
    env.mount_token(None).await;
    // Each run takes about 1.2 s: two pages of 600 ms, so some ticks find a run in progress.
    let pages = rooms_in_pages(4);
    page_request(0)
        .respond_with(page(&pages[0], Some(101)).set_delay(Duration::from_millis(600)))
        .mount(&env.server)
        .await;
    page_request(1)
        .respond_with(page(&pages[1], None).set_delay(Duration::from_millis(600)))
        .mount(&env.server)
        .await;

    let mut daemon = Daemon::start(&env, &[]);
    until(&daemon, Duration::from_secs(20), "three runs", || async {
        succeeded_runs(&env).await >= 3
    })
    .await;
    let scrape = scrape(port).await;
    daemon.signal("-TERM");
    assert_eq!(daemon.wait(Duration::from_secs(5)).await, 0);

    let runs = env
        .rows("SELECT trigger || '|' || status || '|' || started_at || '|' || IFNULL(finished_at, '') FROM sync_runs ORDER BY run_id")
        .await;
    let mut previous_finish = String::new();
    for run in &runs {
        let f: Vec<&str> = run.split('|').collect();
        assert_eq!(f[0], "schedule", "{runs:?}");
        assert!(f[1] == "succeeded" || f[1] == "interrupted", "{runs:?}");
        assert!(
            f[2] >= previous_finish.as_str(),
            "a run started before the previous one finished: {runs:?}"
        );
        previous_finish = f[3].to_string();
    }
    let log = daemon.log();
    assert!(
        log.contains("skipping this tick: the previous run is still in progress"),
        "{log}"
    );
    assert!(
        !log.contains("another process holds the sync lock"),
        "{log}"
    );
    assert!(scrape.value("roomsync_ticks_skipped_total", &[("reason", "busy")]) >= 1.0);
    assert_eq!(
        scrape.value("roomsync_ticks_skipped_total", &[("reason", "locked")]),
        0.0
    );
    // Never two requests in flight: every page request of a run comes after the previous
    // run's last one, which the run records prove; the lock and the busy flag are the cause.
    assert_eq!(env.scalar("SELECT COUNT(*) FROM sync_errors").await, 0);
}

#[tokio::test]
async fn sigterm_during_a_slow_fetch_exits_0_promptly_with_the_run_interrupted() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    env.sync().await;
    let before = env.data_snapshot().await;
    env.hang_on_page_one().await;

    let mut daemon = Daemon::start(&env, &[("WATCHDOG_USEC", "2000000")]);
    until(&daemon, Duration::from_secs(10), "page 1 requested", || {
        env.page_one_requested()
    })
    .await;
    // The watchdog is pinged by the scheduler every WATCHDOG_USEC / 2, also during a run.
    let mut notes = Vec::new();
    until(&daemon, Duration::from_secs(5), "a watchdog ping", || {
        notes.extend(daemon.notifications());
        let pinged = notes.iter().any(|n| n.contains("WATCHDOG=1"));
        async move { pinged }
    })
    .await;
    let signalled = Instant::now();
    daemon.signal("-TERM");
    assert_eq!(daemon.wait(Duration::from_secs(5)).await, 0);
    assert!(signalled.elapsed() < Duration::from_secs(5));

    assert_eq!(env.data_snapshot().await, before);
    assert_eq!(
        env.rows("SELECT trigger || ':' || status FROM sync_runs ORDER BY run_id")
            .await,
        vec!["manual:succeeded", "startup:interrupted"]
    );
    notes.extend(daemon.notifications());
    let notes = notes.join("\n");
    assert!(notes.contains("READY=1"), "{notes}");
    assert!(notes.contains("STOPPING=1"), "{notes}");
    assert!(
        notes.contains("STATUS=last run: sync run 2 interrupted"),
        "{notes}"
    );
}

#[tokio::test]
async fn a_tick_while_another_process_holds_the_lock_is_skipped() {
    let port = free_port();
    let env = TestEnv::with(
        "",
        &format!("[schedule]\ncron = \"* * * * * *\"\n\n[metrics]\nlisten = \"127.0.0.1:{port}\""),
    )
    .await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    let held = SyncLock::try_acquire(&env.db).unwrap().unwrap();
    let mut daemon = Daemon::start(&env, &[]);
    until(
        &daemon,
        Duration::from_secs(10),
        "two skipped ticks",
        || async {
            daemon
                .log()
                .matches("skipping this tick: another process holds the sync lock")
                .count()
                >= 2
        },
    )
    .await;
    assert_eq!(
        env.scalar("SELECT COUNT(*) FROM sync_runs").await,
        0,
        "a skipped tick is not recorded"
    );
    assert!(
        scrape(port)
            .await
            .value("roomsync_ticks_skipped_total", &[("reason", "locked")])
            >= 2.0
    );
    drop(held);
    until(
        &daemon,
        Duration::from_secs(10),
        "a run once the lock is free",
        || async { succeeded_runs(&env).await >= 1 },
    )
    .await;
    daemon.signal("-INT");
    assert_eq!(daemon.wait(Duration::from_secs(5)).await, 0);
    assert_eq!(
        env.scalar("SELECT COUNT(*) FROM sync_runs WHERE status = 'failed'")
            .await,
        0
    );
}

#[tokio::test]
async fn an_unusable_database_stops_the_daemon_before_it_reports_ready() {
    let env = TestEnv::new().await;
    std::fs::write(&env.db, b"not a database at all, just text").unwrap();
    let mut daemon = Daemon::start(&env, &[]);
    assert_eq!(daemon.wait(Duration::from_secs(5)).await, 1);
    assert!(
        daemon.log().contains("not an SQLite database"),
        "{}",
        daemon.log()
    );
    assert!(!daemon.notifications().iter().any(|n| n.contains("READY=1")));
}

fn status(env: &TestEnv, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["status", "--config", env.config.to_str().unwrap()])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn status_exit_codes_follow_the_age_of_the_last_success() {
    let env = TestEnv::new().await;
    // No database yet.
    let (code, out) = status(&env, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no sync has run yet"), "{out}");
    assert!(!env.db.exists(), "status never creates the database");

    // A database with only a failed run.
    env.mount_token(None).await;
    env.sync().await;
    let (code, out) = status(&env, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("last success: none"), "{out}");

    // Fresh.
    env.reset_upstream(&rooms_in_pages(3)).await;
    env.sync().await;
    let (code, out) = status(&env, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("fresh"), "{out}");
    assert!(out.contains("active rooms: 3"), "{out}");
    assert!(out.contains("manual    succeeded"), "{out}");
    assert!(out.contains("manual    failed"), "{out}");

    // Stale: the success finished three hours ago.
    let three_hours_ago = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() - Duration::from_secs(3 * 3600),
    );
    write_sql(
        &env.db,
        &format!(
            "UPDATE sync_runs SET finished_at = '{three_hours_ago}' WHERE status = 'succeeded'"
        ),
    )
    .await;
    let (code, out) = status(&env, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("STALE"), "{out}");
    assert_eq!(status(&env, &["--max-age", "4h"]).0, 0);
    assert_eq!(status(&env, &["--max-age", "200m"]).0, 0);
    assert_eq!(status(&env, &["--max-age", "90m"]).0, 1);
    assert_eq!(status(&env, &["--max-age", "soon"]).0, 2);

    // Config errors in what status reads ([database]); the rest of the file is not its concern.
    env.write_config("page_size = 0", "");
    assert_eq!(status(&env, &["--max-age", "4h"]).0, 0);
    std::fs::write(&env.config, "[database]\npath = \"\"\n").unwrap();
    assert_eq!(status(&env, &[]).0, 2);
}

#[tokio::test]
async fn status_does_not_wait_for_a_running_sync() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    env.sync().await;
    // A writer holding the database's write lock, as an apply does.
    use sqlx::{ConnectOptions, Connection};
    let mut writer = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&env.db)
        .connect()
        .await
        .unwrap();
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query("UPDATE rooms SET room_name = 'uncommitted'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let started = Instant::now();
    let (code, out) = tokio::task::spawn_blocking({
        let config = env.config.clone();
        move || {
            let out = Command::new(BIN)
                .args(["status", "--config", config.to_str().unwrap()])
                .output()
                .unwrap();
            (
                out.status.code().unwrap(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "status waited for the writer"
    );
    tx.rollback().await.unwrap();
}
