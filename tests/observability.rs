//! Metrics, the health endpoint, the textfile and the webhook, against the real binary: a real
//! listener scraped and parsed as Prometheus parses it, a receiver on loopback.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{until, Daemon};
use common::scrape::{free_port, metrics_text, scrape, try_scrape, Scrape};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn get(url: &str) -> (u16, String) {
    let response = common::http_get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Runs finished so far, as the metrics count them (0 before the listener is up). The metrics
/// of a run are updated just after its record is written: a test that waited on the database
/// could scrape before them.
async fn runs_counted(port: u16) -> f64 {
    try_scrape(port)
        .await
        .map_or(0.0, |m| m.sum("roomsync_runs_total"))
}

async fn wait_for_runs(port: u16, daemon: &Daemon, n: u32) {
    until(
        daemon,
        Duration::from_secs(15),
        &format!("{n} runs"),
        || async { runs_counted(port).await >= f64::from(n) },
    )
    .await;
}

/// `promtool check metrics` on `text`, where promtool is installed; CI installs it and sets
/// ROOMSYNC_REQUIRE_PROMTOOL=1, so that a missing promtool fails there.
fn promtool_check(text: &str) {
    use std::io::Write as _;
    let spawned = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if std::env::var_os("ROOMSYNC_REQUIRE_PROMTOOL").is_some() => {
            panic!("promtool is required here: {e}")
        }
        Err(_) => {
            println!("promtool not installed: `promtool check metrics` not run");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", text_of(&out.stdout), text_of(&out.stderr));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const ROOMS: &str = "/v1.0/rooms/meetingRoomLists";

#[tokio::test]
async fn the_daemon_serves_metrics_that_follow_its_runs_and_survive_a_restart() {
    let port = free_port();
    let tail = format!(
        "[schedule]\ncron = \"*/2 * * * * *\"\nrun_on_start = true\n\n[metrics]\nlisten = \"127.0.0.1:{port}\""
    );
    let env = TestEnv::with("", &tail).await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    let mut daemon = Daemon::start(&env, &[]);

    // The initial sync.
    wait_for_runs(port, &daemon, 1).await;
    let m = scrape(port).await;
    assert_eq!(
        m.value(
            "roomsync_runs_total",
            &[("trigger", "startup"), ("status", "succeeded")]
        ),
        1.0
    );
    assert_eq!(
        m.value("roomsync_room_changes_total", &[("change", "added")]),
        3.0
    );
    assert_eq!(m.value("roomsync_rooms", &[("state", "active")]), 3.0);
    assert_eq!(m.value("roomsync_pages_fetched_total", &[]), 2.0);
    assert_eq!(
        m.value(
            "roomsync_http_requests_total",
            &[("endpoint", ROOMS), ("outcome", "ok")]
        ),
        2.0
    );
    assert_eq!(
        m.value(
            "roomsync_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let first_success = m.value("roomsync_last_success_timestamp_seconds", &[]);
    assert!(first_success > 1.7e9, "{first_success}");

    // A no-op resync: a run more, no change, and the token of the first run reused.
    wait_for_runs(port, &daemon, 2).await;
    let m = scrape(port).await;
    assert_eq!(
        m.value(
            "roomsync_runs_total",
            &[("trigger", "schedule"), ("status", "succeeded")]
        ),
        1.0
    );
    assert_eq!(
        m.value("roomsync_room_changes_total", &[("change", "added")]),
        3.0
    );
    assert_eq!(
        m.value("roomsync_room_changes_total", &[("change", "updated")]),
        0.0
    );
    assert_eq!(
        m.value(
            "roomsync_http_requests_total",
            &[("endpoint", TOKEN_PATH), ("outcome", "ok")]
        ),
        1.0,
        "the daemon's runs share one token"
    );

    // A change.
    let mut pages = rooms_in_pages(3);
    pages[0][0]["roomName"] = json!("Renamed");
    env.reset_upstream(&pages).await;
    wait_for_runs(port, &daemon, 3).await;
    let m = scrape(port).await;
    assert_eq!(
        m.value("roomsync_room_changes_total", &[("change", "updated")]),
        1.0
    );

    // A failure.
    env.server.reset().await;
    env.mount_token(None).await;
    page_request(0)
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"code": "param.error"})))
        .mount(&env.server)
        .await;
    wait_for_runs(port, &daemon, 4).await;
    let m = scrape(port).await;
    assert_eq!(
        m.value(
            "roomsync_runs_total",
            &[("trigger", "schedule"), ("status", "failed")]
        ),
        1.0
    );
    assert_eq!(
        m.value("roomsync_sync_errors_total", &[("code", "param.error")]),
        1.0
    );
    assert_eq!(
        m.value(
            "roomsync_http_requests_total",
            &[("endpoint", ROOMS), ("outcome", "http_4xx")]
        ),
        1.0
    );
    assert!(
        m.value("roomsync_last_run_timestamp_seconds", &[])
            > m.value("roomsync_last_success_timestamp_seconds", &[])
    );

    // Throttled once, then served.
    env.reset_upstream(&pages).await;
    page_request(0)
        .respond_with(
            ResponseTemplate::new(403)
                .set_body_json(json!({"code": "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&env.server)
        .await;
    wait_for_runs(port, &daemon, 5).await;
    let text = metrics_text(port).await;
    let m = Scrape::parse(&text);
    assert_eq!(
        m.value(
            "roomsync_http_requests_total",
            &[("endpoint", ROOMS), ("outcome", "throttled")]
        ),
        1.0
    );
    assert_eq!(m.value("roomsync_retries_total", &[]), 1.0);
    assert_eq!(
        m.value(
            "roomsync_runs_total",
            &[("trigger", "schedule"), ("status", "succeeded")]
        ),
        3.0
    );
    assert!(m.value("roomsync_run_duration_seconds_count", &[]) >= 5.0);
    promtool_check(&text);

    // After a restart the mirror's gauges come from the database; counters start at 0.
    daemon.signal("-TERM");
    assert_eq!(daemon.wait(Duration::from_secs(5)).await, 0);
    let last_success = m.value("roomsync_last_success_timestamp_seconds", &[]);
    env.write_config(
        "",
        &tail
            .replace("*/2 * * * * *", "0 0 0 1 1 *")
            .replace("run_on_start = true", "run_on_start = false"),
    );
    let daemon = Daemon::start(&env, &[]);
    let m = loop {
        if let Some(m) = try_scrape(port).await {
            break m;
        }
        assert!(daemon.log().len() < 100_000);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        m.value("roomsync_last_success_timestamp_seconds", &[]),
        last_success
    );
    assert_eq!(m.value("roomsync_rooms", &[("state", "active")]), 3.0);
    assert_eq!(
        m.value(
            "roomsync_runs_total",
            &[("trigger", "schedule"), ("status", "succeeded")]
        ),
        0.0
    );
}

#[tokio::test]
async fn healthz_turns_503_once_the_last_success_is_older_than_the_limit() {
    let port = free_port();
    let env = TestEnv::with(
        "",
        &format!(
            "[schedule]\ncron = \"0 0 0 1 1 *\"\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\nhealthy_max_age = \"3s\""
        ),
    )
    .await;
    env.mount_token(None).await;
    page_request(0)
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"code": "system.error"})))
        .mount(&env.server)
        .await;
    let mut daemon = Daemon::start(&env, &[]);
    wait_for_runs(port, &daemon, 1).await;
    let health = format!("http://127.0.0.1:{port}/healthz");
    let (status, body) = get(&health).await;
    assert_eq!(
        (status, body.as_str()),
        (503, "stale: no successful sync yet (max age 3s)\n")
    );
    for other in ["/", "/metrics/x", "/health"] {
        assert_eq!(
            get(&format!("http://127.0.0.1:{port}{other}")).await.0,
            404,
            "{other}"
        );
    }
    daemon.signal("-TERM");
    assert_eq!(daemon.wait(Duration::from_secs(5)).await, 0);

    env.reset_upstream(&rooms_in_pages(3)).await;
    let daemon = Daemon::start(&env, &[]);
    until(&daemon, Duration::from_secs(10), "a success", || async {
        // What /healthz says follows the metrics, updated just after the run's record.
        runs_counted(port).await >= 1.0
    })
    .await;
    let (status, body) = get(&health).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ok: last successful sync "), "{body}");
    let started = Instant::now();
    let body = loop {
        let (status, body) = get(&health).await;
        if status == 503 {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        body.starts_with("stale: last successful sync 3s ago (max age 3s)"),
        "{body}"
    );
}

#[tokio::test]
async fn sync_now_writes_the_textfile_atomically_after_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let textfile = dir.path().join("roomsync.prom");
    let env = TestEnv::with(
        "",
        &format!("[metrics]\ntextfile = \"{}\"", textfile.display()),
    )
    .await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    let out = sync_now(&env, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let first = std::fs::read_to_string(&textfile).unwrap();
    let m = Scrape::parse(&first);
    assert_eq!(
        m.value(
            "roomsync_runs_total",
            &[("trigger", "manual"), ("status", "succeeded")]
        ),
        1.0
    );
    assert_eq!(m.value("roomsync_rooms", &[("state", "active")]), 3.0);
    promtool_check(&first);
    let inode =
        |p: &std::path::Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = inode(&textfile);

    let out = sync_now(&env, &[]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_ne!(
        inode(&textfile),
        before,
        "replaced by a rename, not rewritten in place"
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["roomsync.prom"], "no temporary file left");
    let m = Scrape::parse(&std::fs::read_to_string(&textfile).unwrap());
    assert!(
        m.value("roomsync_last_success_timestamp_seconds", &[])
            >= Scrape::parse(&first).value("roomsync_last_success_timestamp_seconds", &[])
    );

    env.write_config("", "[metrics]\ntextfile = \"/no/such/dir/roomsync.prom\"");
    let out = sync_now(&env, &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("metrics.textfile"),
        "{}",
        text(&out.stderr)
    );
}

const HOOK_KEY: &str = "hook-signing-key-5b1e";

async fn receiver(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

async fn received(server: &MockServer) -> Vec<(Value, Option<String>, Vec<u8>)> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            let signature = r
                .headers
                .get("x-roomsync-signature")
                .map(|v| v.to_str().unwrap().to_string());
            (serde_json::from_slice(&r.body).unwrap(), signature, r.body)
        })
        .collect()
}

fn signed(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_KEY.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn the_webhook_reports_changes_and_failures_signed_and_nothing_for_a_no_op() {
    let hook = receiver(204).await;
    let env = TestEnv::with(
        "",
        &format!(
            "[notify]\nwebhook_url = \"{}/hook?token=hook-query-credential\"\nsecret = \"{HOOK_KEY}\"",
            hook.uri()
        ),
    )
    .await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    assert_eq!(sync_now(&env, &[]).await.status.code(), Some(0));
    let got = received(&hook).await;
    assert_eq!(got.len(), 1);
    let (body, signature, raw) = &got[0];
    assert_eq!(signature.as_deref(), Some(signed(raw).as_str()));
    let expected = json!({
        "run_id": 1, "trigger": "manual", "status": "succeeded", "rooms_seen": 3,
        "added": 3, "updated": 0, "removed": 0, "restored": 0, "warnings": 0, "error": null,
        "first_change_id": 1, "last_change_id": 3, "database": env.db.display().to_string(),
    });
    for (key, value) in expected.as_object().unwrap() {
        assert_eq!(&body[key], value, "{key}: {body}");
    }
    for key in ["started_at", "finished_at"] {
        assert!(
            humantime::parse_rfc3339(body[key].as_str().unwrap()).is_ok(),
            "{key}: {body}"
        );
    }

    // A no-op: nothing is sent.
    assert_eq!(sync_now(&env, &[]).await.status.code(), Some(0));
    assert_eq!(received(&hook).await.len(), 1);

    // A removal, then the room back: removed, then restored (not added).
    env.reset_upstream(&[vec![
        room("r000", "Room 0", &[1], Some(1)),
        room("r001", "Room 1", &[1], Some(1)),
    ]])
    .await;
    assert_eq!(sync_now(&env, &[]).await.status.code(), Some(0));
    env.reset_upstream(&rooms_in_pages(3)).await;
    assert_eq!(sync_now(&env, &[]).await.status.code(), Some(0));
    let got = received(&hook).await;
    assert_eq!(
        (got[1].0["removed"].clone(), got[1].0["added"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(
        (got[2].0["restored"].clone(), got[2].0["added"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(got[2].0["first_change_id"], got[2].0["last_change_id"]);

    // A failure.
    env.server.reset().await;
    env.mount_token(None).await;
    page_request(0)
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"code": "param.error"})))
        .mount(&env.server)
        .await;
    let out = sync_now(&env, &[("RUST_LOG", "debug")]).await;
    assert_eq!(out.status.code(), Some(1));
    let got = received(&hook).await;
    let (failed, signature, raw) = got.last().unwrap();
    assert_eq!(signature.as_deref(), Some(signed(raw).as_str()));
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["warnings"], Value::Null);
    assert_eq!(failed["first_change_id"], Value::Null);
    assert!(
        failed["error"].as_str().unwrap().contains("param.error"),
        "{failed}"
    );
    let everything = format!(
        "{}{}{:?}",
        text(&out.stderr),
        text(&out.stdout),
        got.iter().map(|g| g.0.to_string()).collect::<Vec<_>>()
    );
    for secret in [HOOK_KEY, "hook-query-credential", SECRET, TOKEN] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked: {everything}"
        );
    }
}

#[tokio::test]
async fn a_failing_receiver_is_retried_then_given_up_while_the_schedule_goes_on() {
    let hook = receiver(503).await;
    let port = free_port();
    let env = TestEnv::with(
        "",
        &format!(
            "[schedule]\ncron = \"* * * * * *\"\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [notify]\nwebhook_url = \"{}/hook\"\non = [\"success\"]\ntimeout_secs = 1",
            hook.uri()
        ),
    )
    .await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    let mut daemon = Daemon::start(&env, &[]);
    let started = Instant::now();
    // Runs go on every second while the first delivery waits 1, 2 and 4 s between attempts.
    wait_for_runs(port, &daemon, 4).await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        env.scalar("SELECT COUNT(*) FROM sync_runs WHERE status <> 'succeeded'")
            .await,
        0,
        "delivery never fails a run"
    );
    until(
        &daemon,
        Duration::from_secs(15),
        "a delivery given up",
        || async {
            scrape(port).await.value(
                "roomsync_webhook_deliveries_total",
                &[("outcome", "failed")],
            ) >= 1.0
        },
    )
    .await;
    let attempts_of_run_1 = received(&hook)
        .await
        .iter()
        .filter(|(body, _, _)| body["run_id"] == 1)
        .count();
    assert_eq!(attempts_of_run_1, 4, "one attempt and three retries");
    daemon.signal("-TERM");
    assert_eq!(daemon.wait(Duration::from_secs(5)).await, 0);
    assert!(
        daemon.log().contains("webhook delivery failed"),
        "{}",
        daemon.log()
    );
}
