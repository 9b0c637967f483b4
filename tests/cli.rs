//! The real binary: exit codes, messages, locking, signals, refusing foreign files, secrets.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use roomsync::lock::SyncLock;
use serde_json::json;
use wiremock::ResponseTemplate;

const BIN: &str = env!("CARGO_BIN_EXE_roomsync");

#[tokio::test]
async fn a_successful_sync_exits_0_with_a_one_line_summary() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    let out = sync_now(&env, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with(
            "sync run 1 succeeded: 2 pages, rooms seen 3, added 3, updated 0, removed 0 in "
        ),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_failed_sync_exits_1_naming_dingtalks_code() {
    let env = TestEnv::new().await;
    env.mount_token(None).await;
    page_request(0)
        .respond_with(
            ResponseTemplate::new(400).set_body_json(
                json!({"code": "user.not.employee", "message": "User Not Employee"}),
            ),
        )
        .mount(&env.server)
        .await;
    let out = sync_now(&env, &[("RUST_LOG", "off")]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("roomsync: sync run 1 failed"),
        "{stderr}"
    );
    assert!(stderr.contains("user.not.employee"), "{stderr}");
    assert_eq!(
        env.rows("SELECT status FROM sync_runs").await,
        vec!["failed"]
    );
}

/// TLS trusts the system's certificate store (SSL_CERT_FILE and SSL_CERT_DIR replace it, as
/// for OpenSSL): with no CA certificate at all the client cannot be set up, and the sync says
/// so instead of failing each request.
#[tokio::test]
async fn without_any_ca_certificate_a_sync_exits_1_saying_so() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(1)).await;
    let empty = env.dir.path().join("no-certificates.pem");
    std::fs::write(&empty, "").unwrap();
    let out = sync_now(
        &env,
        &[
            ("RUST_LOG", "off"),
            ("SSL_CERT_FILE", empty.to_str().unwrap()),
            ("SSL_CERT_DIR", ""),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot set up the HTTP client")
            && stderr.contains("No CA certificates were loaded from the system"),
        "{stderr}"
    );
    assert!(env.server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn config_errors_exit_2_name_the_key_and_create_nothing() {
    let env = TestEnv::new().await;
    let cases: &[(&str, &str, &str)] = &[
        ("page_size = 0", "", "dingtalk.page_size"),
        ("page_size = 101", "", "dingtalk.page_size"),
        ("max_attempts = 0", "", "dingtalk.max_attempts"),
        (
            "requests_per_second = 0",
            "",
            "dingtalk.requests_per_second",
        ),
        ("app_key = \"\"", "", "dingtalk.app_key"),
        ("union_id = \"\"", "", "dingtalk.union_id"),
        ("base_url = \"not a url\"", "", "dingtalk.base_url"),
        (
            "app_secret_file = \"/nonexistent/secret\"",
            "",
            "dingtalk.app_secret",
        ),
        ("page_sise = 5", "", "page_sise"),
        (
            "",
            "[sync]\nmax_removal_ratio = 1.5",
            "sync.max_removal_ratio",
        ),
        ("", "[schedule]\ncron = \"0 * * * *\"", "schedule.cron"),
        ("", "[schedule]\ncron = \"0 99 * * * *\"", "schedule.cron"),
        ("", "[log]\nformat = \"xml\"", "log.format"),
        ("", "[log]\nlevel = \"loud=[\"", "log.level"),
        ("", "[database]\nextra = 1", "database"),
    ];
    for (dingtalk, tail, key) in cases {
        env.write_config(dingtalk, tail);
        let out = sync_now(&env, &[]).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{dingtalk} {tail}: {stderr}");
        assert!(
            stderr.contains(key),
            "{dingtalk} {tail}: message should name {key}: {stderr}"
        );
        assert!(
            !env.db.exists(),
            "no database may be created on a config error"
        );
        assert!(!stderr.contains(SECRET));
    }
    // Environment overrides are checked too, and name the key.
    env.write_config("", "");
    let out = sync_now(&env, &[("ROOMSYNC__DINGTALK__PAGE_SIZE", "500")]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("dingtalk.page_size"));
    let out = roomsync(
        &["--sync-now", "--config", "/nonexistent/roomsync.toml"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/roomsync.toml"));
    let out = roomsync(&["--sync-now", "--bogus"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!env.db.exists());
}

#[tokio::test]
async fn environment_overrides_the_file_and_roomsync_config_finds_it() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    let other_db = env.dir.path().join("elsewhere.db");
    let config = env.config.to_str().unwrap().to_string();
    let db = other_db.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        roomsync(
            &["--sync-now"],
            &[
                ("ROOMSYNC_CONFIG", &config),
                ("ROOMSYNC__DATABASE__PATH", &db),
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(other_db.exists() && !env.db.exists());
}

#[tokio::test]
async fn a_second_sync_exits_75_and_touches_nothing() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    let _held = SyncLock::try_acquire(&env.db).unwrap().unwrap();
    let out = sync_now(&env, &[]).await;
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("another sync"));
    assert!(!env.db.exists());
    assert!(env.server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_left_byte_for_byte() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    let content = b"these are somebody's notes, not a database\n".repeat(100);
    std::fs::write(&env.db, &content).unwrap();
    let out = sync_now(&env, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not an SQLite database"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(&env.db).unwrap(), content);
    assert!(!Path::new(&format!("{}-wal", env.db.display())).exists());
}

#[tokio::test]
async fn a_newer_schema_or_a_foreign_database_is_refused_unchanged() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    assert_eq!(sync_now(&env, &[]).await.status.code(), Some(0));
    write_sql(
        &env.db,
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time)
         VALUES (99990101000000, 'from the future', '2099-01-01', 1, x'00', 0);
         PRAGMA wal_checkpoint(TRUNCATE);",
    )
    .await;
    assert_refused_unchanged(&env, "newer than this roomsync").await;

    let foreign = TestEnv::new().await;
    write_sql(
        &foreign.db,
        "CREATE TABLE invoices (id INTEGER PRIMARY KEY); INSERT INTO invoices VALUES (1);",
    )
    .await;
    assert_refused_unchanged(&foreign, "not a roomsync one").await;
}

/// `--sync-now` exits 1 saying `why`, and leaves the database file byte for byte as it was.
async fn assert_refused_unchanged(env: &TestEnv, why: &str) {
    let before = std::fs::read(&env.db).unwrap();
    let out = sync_now(env, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(why), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&env.db).unwrap(), before);
}

#[tokio::test]
async fn a_run_left_running_by_a_killed_process_is_marked_interrupted() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    assert_eq!(sync_now(&env, &[]).await.status.code(), Some(0));
    write_sql(
        &env.db,
        "INSERT INTO sync_runs (trigger, started_at, status) VALUES ('schedule', '2026-01-01T00:00:00Z', 'running')",
    )
    .await;
    assert_eq!(sync_now(&env, &[]).await.status.code(), Some(0));
    assert_eq!(
        env.rows("SELECT run_id || ':' || status FROM sync_runs ORDER BY run_id")
            .await,
        vec!["1:succeeded", "2:interrupted", "3:succeeded"]
    );
}

#[tokio::test]
async fn sigterm_during_the_fetch_exits_promptly_and_changes_nothing() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    assert_eq!(sync_now(&env, &[]).await.status.code(), Some(0));
    let before = env.data_snapshot().await;

    // Page 1 now hangs far longer than the test waits.
    env.hang_on_page_one().await;
    for signal in ["-TERM", "-INT"] {
        let child = Command::new(BIN)
            .args(["--sync-now", "--config", env.config.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !env.page_one_requested().await {
            assert!(Instant::now() < deadline, "page 1 was never requested");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let signalled = Instant::now();
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        let status = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "took {:?}",
            signalled.elapsed()
        );
        assert_eq!(status.status.code(), Some(1));
        assert!(
            text(&status.stderr).contains("interrupted"),
            "{}",
            text(&status.stderr)
        );
        env.hang_on_page_one().await;
    }
    assert_eq!(env.data_snapshot().await, before);
    assert_eq!(
        env.rows("SELECT status || ':' || pages_fetched FROM sync_runs ORDER BY run_id")
            .await,
        vec!["succeeded:2", "interrupted:1", "interrupted:1"]
    );
}

/// Every file of the database (main, WAL, shared memory) as one byte string.
fn database_bytes(db: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(bytes) = std::fs::read(format!("{}{suffix}", db.display())) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn secrets_never_reach_logs_output_or_the_database() {
    for format in ["text", "json"] {
        let env = TestEnv::with("", &format!("[log]\nformat = \"{format}\"")).await;
        // A run that renews its token, is throttled, and finally fails on a refused secret.
        env.reset_upstream(&rooms_in_pages(3)).await;
        // Every crate at trace (a bare level would apply to roomsync's own lines only).
        let all_at_trace = ("RUST_LOG", "trace,roomsync=trace");
        let mut outputs = vec![sync_now(&env, &[all_at_trace]).await];
        env.server.reset().await;
        env.mount_token(None).await;
        page_request(0)
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({
                "code": "InvalidAuthentication", "message": format!("bad token {TOKEN}")})))
            .mount(&env.server)
            .await;
        outputs.push(sync_now(&env, &[all_at_trace]).await);
        env.server.reset().await;
        wiremock::Mock::given(wiremock::matchers::path(TOKEN_PATH))
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({
                "code": "invalidClientIdOrSecret", "message": format!("secret {SECRET} is wrong")})))
            .mount(&env.server)
            .await;
        outputs.push(sync_now(&env, &[all_at_trace]).await);
        assert_eq!(
            outputs
                .iter()
                .map(|o| o.status.code().unwrap())
                .collect::<Vec<_>>(),
            vec![0, 1, 1]
        );

        for out in &outputs {
            let all = [text(&out.stdout), text(&out.stderr)].concat();
            assert!(all.len() > 1000, "trace logging should be verbose");
            assert!(!all.contains(SECRET), "secret leaked in {format} output");
            assert!(!all.contains(TOKEN), "token leaked in {format} output");
        }
        let db = database_bytes(&env.db);
        assert!(
            contains(&db, "invalidClientIdOrSecret"),
            "the error itself is recorded"
        );
        assert!(
            !contains(&db, SECRET) && !contains(&db, TOKEN),
            "secret in the database"
        );
    }
}

#[tokio::test]
async fn every_log_line_of_a_run_carries_its_run_id() {
    let env = TestEnv::with("", "[log]\nformat = \"json\"").await;
    env.mount_token(None).await;
    // A retried page: the client logs from inside its own span, below the run's.
    page_request(1)
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"code": "system.error"})))
        .up_to_n_times(1)
        .mount(&env.server)
        .await;
    env.mount_listing(&rooms_in_pages(3), None).await;
    let out = sync_now(&env, &[("RUST_LOG", "roomsync=debug")]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let message = |l: &serde_json::Value| l["fields"]["message"].as_str().unwrap_or("").to_string();
    let first = lines
        .iter()
        .position(|l| message(l) == "sync run started")
        .expect("the run logs its start");
    let last = lines
        .iter()
        .position(|l| message(l).starts_with("sync run 1 succeeded"))
        .expect("the run logs its summary");
    let run_lines = &lines[first..=last];
    for line in run_lines {
        let spans = line["spans"].as_array().cloned().unwrap_or_default();
        assert!(
            spans.iter().any(|s| s["run_id"] == 1),
            "a line of run 1 without its run_id: {line}"
        );
    }
    // Lines from the client's retry, the page processor's task and the apply are among them.
    let targets: Vec<&str> = run_lines
        .iter()
        .filter_map(|l| l["target"].as_str())
        .collect();
    for target in [
        "roomsync::dingtalk::client",
        "roomsync::sync::fetch",
        "roomsync::store::apply",
    ] {
        assert!(
            targets.contains(&target),
            "no line from {target}: {targets:?}"
        );
    }
}
