//! The sync against the built-in stand-in DingTalk API: larger organisations, revisions and
//! scripted faults, and `roomsync --demo`.

mod common;

use std::path::Path;
use std::process::Command;

use roomsync::standin::{settings_for, Fault, FaultKind, OrgSpec, StandIn, StandInConfig};
use roomsync::store::runs::Trigger;
use roomsync::sync::{run_once, RunReport, SyncOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tokio_util::sync::CancellationToken;

async fn sync(standin: &StandIn, db: &Path) -> RunReport {
    let mut settings = settings_for(standin, db.to_path_buf());
    settings.dingtalk.retry_base_delay = std::time::Duration::from_millis(1);
    let options = SyncOptions {
        trigger: Trigger::Manual,
        allow_mass_removal: false,
    };
    let report = run_once(&settings, options, CancellationToken::new())
        .await
        .unwrap();
    common::assert_foreign_keys_hold(db).await;
    report
}

async fn query(db: &Path, sql: &str) -> Vec<String> {
    let pool = SqlitePoolOptions::new()
        .connect_with(SqliteConnectOptions::new().filename(db).read_only(true))
        .await
        .unwrap();
    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows
}

async fn snapshot(db: &Path) -> Vec<String> {
    query(
        db,
        "SELECT room_id || '|' || IFNULL(room_name, '') || '|' || IFNULL(room_capacity, '') || '|' || updated_at
                || '|' || IFNULL(removed_at, '') FROM rooms
         UNION ALL SELECT room_id || '/' || label_id FROM room_labels
         ORDER BY 1",
    )
    .await
}

#[tokio::test]
async fn a_generated_organisation_syncs_and_a_revision_updates_one_room_in_twenty() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rooms.db");
    let standin = StandIn::start(StandInConfig::new(OrgSpec::new(11, 2_450)))
        .await
        .unwrap();

    let report = sync(&standin, &db).await;
    let c = report.counts.unwrap();
    assert_eq!(
        (report.pages_fetched, c.seen, c.added, c.updated, c.removed),
        (25, 2_450, 2_450, 0, 0),
        "{report}"
    );
    assert_eq!(standin.requests().tokens, 1);
    // Non-ASCII text and quotes arrive intact.
    assert!(!query(
        &db,
        "SELECT room_name FROM rooms WHERE room_name LIKE '%«Étoile»%'"
    )
    .await
    .is_empty());
    assert!(!query(
        &db,
        "SELECT room_name FROM rooms WHERE room_name LIKE '%\"Den\"%'"
    )
    .await
    .is_empty());
    assert_eq!(
        query(&db, "SELECT label_name FROM labels WHERE label_id = 103").await,
        vec!["Wheelchair \"accessible\""]
    );
    // Optional fields are sometimes absent.
    let nulls = query(
        &db,
        "SELECT COUNT(*) || '' FROM rooms WHERE room_picture IS NULL",
    )
    .await;
    assert!(nulls[0] != "0" && nulls[0] != "2450", "{nulls:?}");

    standin.set_org(OrgSpec {
        revision: 1,
        ..standin.org()
    });
    let report = sync(&standin, &db).await;
    let c = report.counts.unwrap();
    // Revision 1 changes room i when (i + 1) % 20 == 0: rooms 19, 39, ..., 2439.
    assert_eq!(
        (c.seen, c.added, c.updated, c.removed),
        (2_450, 0, 122, 0),
        "{report}"
    );

    let before = snapshot(&db).await;
    let report = sync(&standin, &db).await;
    assert_eq!(report.counts.unwrap().updated, 0);
    assert_eq!(snapshot(&db).await, before);

    // The organisation shrinks by 100 rooms (well within the removal guard).
    standin.set_org(OrgSpec {
        rooms: 2_350,
        ..standin.org()
    });
    let report = sync(&standin, &db).await;
    assert_eq!(report.counts.unwrap().removed, 100, "{report}");
}

#[tokio::test]
async fn scripted_faults_are_retried_or_fail_the_run_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rooms.db");
    let mut config = StandInConfig::new(OrgSpec::new(5, 950));
    config.faults = vec![
        Fault {
            page: Some(3),
            times: 2,
            kind: FaultKind::Status {
                status: 500,
                code: "system.error".into(),
            },
        },
        Fault {
            page: Some(1),
            times: 1,
            kind: FaultKind::HtmlThrottle,
        },
        Fault {
            page: Some(5),
            times: 1,
            kind: FaultKind::Status {
                status: 403,
                code: "Forbidden.AccessDenied.QpsLimitForApi".into(),
            },
        },
    ];
    config.expire_token_after = Some(4);
    let standin = StandIn::start(config).await.unwrap();
    let report = sync(&standin, &db).await;
    assert_eq!(report.status.as_str(), "succeeded", "{report}");
    assert_eq!(report.counts.unwrap().seen, 950);
    // 10 pages + 4 faulty answers = 14 listing requests with valid tokens; each token serves
    // four, so the fifth request of each meets an expired token: 3 renewals, 4 tokens.
    assert_eq!(standin.requests().tokens, 4);
    let errors = query(
        &db,
        "SELECT stage || '|' || page || '|' || http_status || '|' || error_code || '|' || retried FROM sync_errors ORDER BY error_id",
    )
    .await;
    assert_eq!(
        errors.iter().filter(|e| e.contains("system.error")).count(),
        2,
        "{errors:?}"
    );
    assert!(
        errors.contains(&"fetch|1|200|ip.throttled|1".to_string()),
        "{errors:?}"
    );
    assert!(
        errors.contains(&"fetch|5|403|Forbidden.AccessDenied.QpsLimitForApi|1".to_string()),
        "{errors:?}"
    );
    assert_eq!(
        errors
            .iter()
            .filter(|e| e.contains("InvalidAuthentication"))
            .count(),
        3,
        "{errors:?}"
    );

    // A truncated body and a refused request fail the run and change nothing.
    let before = snapshot(&db).await;
    standin.set_org(OrgSpec {
        revision: 3,
        ..standin.org()
    });
    standin.add_fault(Fault {
        page: Some(7),
        times: 1,
        kind: FaultKind::TruncatedBody,
    });
    let report = sync(&standin, &db).await;
    assert_eq!(report.status.as_str(), "failed", "{report}");
    assert!(
        report
            .error
            .as_deref()
            .unwrap()
            .contains("validate (page 7)"),
        "{report}"
    );
    standin.add_fault(Fault {
        page: Some(2),
        times: 1,
        kind: FaultKind::Status {
            status: 400,
            code: "param.error".into(),
        },
    });
    let report = sync(&standin, &db).await;
    assert_eq!(report.status.as_str(), "failed", "{report}");
    assert!(
        report.error.as_deref().unwrap().contains("param.error"),
        "{report}"
    );
    assert_eq!(snapshot(&db).await, before);
}

#[test]
fn the_demo_needs_nothing_but_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_roomsync"))
            .arg("--demo")
            .current_dir(dir.path())
            .env_remove("ROOMSYNC_CONFIG")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("sync run 1 succeeded: 30 pages, rooms seen 3000, added 3000"),
        "{stdout}"
    );
    let refresh = stdout.lines().nth(1).unwrap_or_default();
    assert!(
        refresh.starts_with("availability refresh 2 succeeded: 150 requests, 3000 rooms"),
        "{stdout}"
    );
    assert!(stdout.contains("FROM room_availability WHERE busy_now = 0"));
    assert_eq!(stdout.matches("sqlite3 -readonly").count(), 4, "{stdout}");
    assert!(dir.path().join("roomsync-demo.db").exists());
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("sync run 3 succeeded: 30 pages, rooms seen 3000, added 0, updated 0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("availability refresh 4 succeeded"),
        "{stdout}"
    );
}
