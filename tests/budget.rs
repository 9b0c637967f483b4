//! DingTalk's monthly API quota: every request counted per month and endpoint, the daemon paced
//! under the budget, no request once DingTalk says the quota is spent, and status showing it.

mod common;

use std::time::{Duration, SystemTime};

use common::daemon::{until, Daemon};
use common::scrape::{free_port, scrape};
use common::*;
use roomsync::budget::Budget;
use roomsync::standin::{OrgSpec, StandIn, StandInConfig};
use serde_json::json;
use wiremock::ResponseTemplate;

fn shanghai(monthly_calls: u64) -> Budget {
    Budget::new(monthly_calls, "Asia/Shanghai").unwrap()
}

/// `endpoint|calls` of this month's `api_calls`.
async fn month_calls(env: &TestEnv) -> Vec<String> {
    let month = shanghai(0).month_of(SystemTime::now());
    env.rows(&format!(
        "SELECT endpoint || '|' || calls FROM api_calls WHERE month = '{month}' ORDER BY endpoint"
    ))
    .await
}

/// Requests the mock server saw, by path, as `path|count`.
async fn seen(env: &TestEnv) -> Vec<String> {
    let mut counts = std::collections::BTreeMap::new();
    for r in env.server.received_requests().await.unwrap() {
        *counts.entry(r.url.path().to_string()).or_insert(0) += 1;
    }
    counts
        .into_iter()
        .map(|(p, n)| format!("{p}|{n}"))
        .collect()
}

#[tokio::test]
async fn every_request_is_counted_per_month_and_endpoint_whatever_its_outcome() {
    let env = TestEnv::new().await;
    env.mount_token(None).await;
    // Page 0 fails once with a 500 and is tried again: both count.
    page_request(0)
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"code": "system.error"})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&env.server)
        .await;
    env.mount_listing(&rooms_in_pages(3), None).await;
    assert_eq!(env.sync().await.status.as_str(), "succeeded");
    assert_eq!(month_calls(&env).await, seen(&env).await);
    assert_eq!(
        month_calls(&env).await,
        [
            "/v1.0/oauth2/accessToken|1",
            "/v1.0/rooms/groupLists|1",
            "/v1.0/rooms/meetingRoomLists|3",
        ]
    );
    assert_eq!(
        env.scalar("SELECT api_calls FROM sync_runs WHERE run_id = 1")
            .await,
        5
    );

    // A failed run counts its calls too.
    env.server.reset().await;
    env.mount_token(None).await;
    page_request(0)
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"code": "param.error"})))
        .mount(&env.server)
        .await;
    assert_eq!(env.sync().await.status.as_str(), "failed");
    assert_eq!(
        env.scalar("SELECT api_calls FROM sync_runs WHERE run_id = 2")
            .await,
        3
    );

    // An interrupted run too: SIGTERM while page 1 hangs, through the real binary, whose
    // counts must be in the database after it exits (and so after any restart).
    env.hang_on_page_one().await;
    let config = env.config.to_str().unwrap().to_string();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_roomsync"))
        .args(["--sync-now", "--config", &config])
        .env("RUST_LOG", "off")
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !env.page_one_requested().await {
        assert!(
            std::time::Instant::now() < deadline,
            "page 1 never asked for"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        env.rows("SELECT status || '|' || api_calls FROM sync_runs WHERE run_id = 3")
            .await,
        ["interrupted|4"]
    );
    let total: i64 = month_calls(&env)
        .await
        .iter()
        .map(|r| r.split('|').nth(1).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, 5 + 3 + 4, "every request of the three runs");
}

#[tokio::test]
async fn calls_are_written_as_a_run_goes_so_a_killed_process_loses_only_the_last_seconds() {
    let env = TestEnv::new().await;
    env.mount_token(None).await;
    env.mount_groups(json!({"result": []})).await;
    // 40 pages of 150 ms: a run of about 6 s, whose calls are written every 2 s.
    let pages = rooms_in_pages(80);
    for (k, rooms) in pages.iter().enumerate() {
        let next = (k + 1 < pages.len()).then_some(101 + k as i64);
        page_request(k)
            .respond_with(page(rooms, next).set_delay(Duration::from_millis(150)))
            .mount(&env.server)
            .await;
    }
    let config = env.config.to_str().unwrap().to_string();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_roomsync"))
        .args(["--sync-now", "--config", &config])
        .env("RUST_LOG", "off")
        .spawn()
        .unwrap();
    let written = "SELECT api_calls FROM sync_runs WHERE run_id = 1";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while env.try_scalar(written).await.unwrap_or(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "no calls written");
        assert!(child.try_wait().unwrap().is_none(), "the run ended first");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let sent = env.server.received_requests().await.unwrap().len() as i64;
    let recorded = env.scalar(written).await;
    assert!(
        recorded >= 3 && recorded <= sent && sent < 42,
        "{recorded} recorded of {sent} sent"
    );
    assert_eq!(
        env.scalar("SELECT SUM(calls) FROM api_calls").await,
        recorded
    );
    // The next run marks the killed one interrupted and keeps what it counted.
    env.reset_upstream(&rooms_in_pages(3)).await;
    env.sync().await;
    assert_eq!(
        env.rows("SELECT status || '|' || api_calls FROM sync_runs WHERE run_id = 1")
            .await,
        [format!("interrupted|{recorded}")]
    );
}

/// A config with a budget of `monthly_calls`, a schedule of every second, metrics on `port`.
async fn paced_env(monthly_calls: u64, run_on_start: bool, port: u16) -> TestEnv {
    TestEnv::with(
        "",
        &format!(
            "[schedule]\ncron = \"* * * * * *\"\nrun_on_start = {run_on_start}\n\n\
             [budget]\nmonthly_calls = {monthly_calls}\ntime_zone = \"Asia/Shanghai\"\n\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\""
        ),
    )
    .await
}

/// Records `calls` as this month's spending so far, as earlier runs would have.
async fn spent(env: &TestEnv, calls: i64) {
    let month = shanghai(0).month_of(SystemTime::now());
    // Open the database the way roomsync does (migrated), then add the calls.
    roomsync::store::Store::open(&env.db)
        .await
        .unwrap()
        .close()
        .await;
    write_sql(
        &env.db,
        &format!(
            "INSERT INTO api_calls VALUES ('{month}', '/v1.0/rooms/meetingRoomLists', {calls})"
        ),
    )
    .await;
}

#[tokio::test]
async fn the_daemon_skips_ticks_to_stay_on_the_even_spending_line() {
    // A budget whose line is well above zero whatever the day of the month.
    let share = shanghai(1).pace(SystemTime::now()).elapsed_share.max(1e-6);
    let budget = ((1000.0 / share).ceil() as u64).max(100_000);
    let port = free_port();
    let env = paced_env(budget, true, port).await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    // Five calls below the line: the start-up run (4 calls: a token, the groups, two pages) and
    // one tick (3: the token is reused) fit, the next do not.
    let line = shanghai(budget).pace(SystemTime::now()).line;
    spent(&env, line.floor() as i64 - 5).await;
    let mut daemon = Daemon::start(&env, &[]);
    until(
        &daemon,
        Duration::from_secs(10),
        "a skipped tick",
        || async { daemon.log().contains("skipping this tick: API budget") },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = scrape(port).await;
    daemon.signal("-TERM");
    assert_eq!(daemon.wait(Duration::from_secs(5)).await, 0);
    assert_eq!(
        env.scalar("SELECT COUNT(*) FROM sync_runs").await,
        2,
        "{}",
        daemon.log()
    );
    assert_eq!(m.value("roomsync_api_budget_calls", &[]), budget as f64);
    assert!(m.value("roomsync_ticks_skipped_total", &[("reason", "budget")]) >= 2.0);
    assert_eq!(
        m.value(
            "roomsync_api_calls_total",
            &[("endpoint", "/v1.0/rooms/meetingRoomLists")]
        ),
        4.0,
        "two runs of two pages"
    );
    let calls = env.scalar("SELECT SUM(calls) FROM api_calls").await as f64;
    let line = shanghai(budget).pace(SystemTime::now()).line;
    assert!(
        calls <= line + 4.0,
        "{calls} calls against a line of {line}"
    );
    let skips = daemon
        .log()
        .matches("skipping this tick: API budget")
        .count();
    assert!(skips >= 2, "{}", daemon.log());
}

#[tokio::test]
async fn the_start_up_run_obeys_the_budget_and_sync_now_runs_but_warns() {
    let env = paced_env(3000, true, free_port()).await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    let line = shanghai(3000).pace(SystemTime::now()).line;
    spent(&env, line.ceil() as i64 + 10).await;
    let mut daemon = Daemon::start(&env, &[]);
    until(
        &daemon,
        Duration::from_secs(10),
        "the start-up run held back",
        || async {
            daemon.log().contains("trigger=\"startup\"") || daemon.log().contains("trigger=startup")
        },
    )
    .await;
    daemon.signal("-TERM");
    assert_eq!(daemon.wait(Duration::from_secs(5)).await, 0);
    assert!(
        daemon.log().contains("skipping this tick: API budget"),
        "{}",
        daemon.log()
    );
    assert_eq!(env.scalar("SELECT COUNT(*) FROM sync_runs").await, 0);

    // The operator asked: --sync-now runs, and says it is over budget.
    let out = sync_now(&env, &[("RUST_LOG", "warn")]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("API budget") && stderr.contains("--sync-now runs anyway"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_spent_quota_stops_every_request_until_the_next_month() {
    let standin = StandIn::start(StandInConfig::new(OrgSpec::new(7, 30)))
        .await
        .unwrap();
    standin.set_quota_spent(true);
    let env = paced_env(0, true, free_port()).await;
    env.use_standin(standin.base_url().as_str());

    let mut daemon = Daemon::start(&env, &[]);
    until(
        &daemon,
        Duration::from_secs(10),
        "the first run",
        || async {
            env.try_scalar("SELECT COUNT(*) FROM sync_runs WHERE status = 'failed'")
                .await
                .unwrap_or(0)
                == 1
        },
    )
    .await;
    let after_first = standin.requests();
    // Ticks every second for three seconds: not one request more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(standin.requests(), after_first);
    daemon.signal("-TERM");
    assert_eq!(daemon.wait(Duration::from_secs(5)).await, 0);
    let log = daemon.log();
    assert_eq!(
        log.matches("monthly API quota is spent").count(),
        1,
        "said once: {log}"
    );
    let resumes = shanghai(0).next_month_start(SystemTime::now());
    assert!(log.contains(&shanghai(0).local(resumes)), "{log}");
    assert_eq!(env.scalar("SELECT COUNT(*) FROM sync_runs").await, 1);
    assert_eq!(
        env.rows("SELECT exhausted_until FROM roomsync_budget")
            .await,
        [humantime::format_rfc3339_seconds(resumes).to_string()]
    );
    let errors = env.errors_of(1).await;
    assert_eq!(
        errors,
        ["fetch|-|403|Forbidden.AccessDenied.ApiCountLimitForOrg|0"]
    );

    // A restart remembers it, and says so once at start-up, with the date requests resume.
    let mut daemon = Daemon::start(&env, &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let notes = daemon.notifications().join("\n");
    assert!(
        notes.contains(&format!(
            "STATUS=monthly API quota spent; no request until {}",
            shanghai(0).local(resumes)
        )),
        "{notes}"
    );
    assert_eq!(standin.requests(), after_first, "{}", daemon.log());
    let config = env.config.to_str().unwrap();
    let status = text(&roomsync(&["status", "--config", config], &[]).stdout);
    assert!(
        status.contains(&format!(
            "sends no request until {}",
            shanghai(0).local(resumes)
        )),
        "{status}"
    );

    // The organisation buys more calls and the operator runs --sync-now: it succeeds, and the
    // running daemon takes up its schedule again at its next tick.
    standin.set_quota_spent(false);
    // The stand-in answers on this test's runtime: the binary is waited for off it.
    let args = ["--sync-now".to_string(), "--config".into(), config.into()];
    let out = tokio::task::spawn_blocking(move || {
        roomsync(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    until(
        &daemon,
        Duration::from_secs(10),
        "a scheduled run after the quota came back",
        || async {
            env.try_scalar(
                "SELECT COUNT(*) FROM sync_runs WHERE trigger = 'schedule' AND status = 'succeeded'",
            )
            .await
            .unwrap_or(0)
                >= 1
        },
    )
    .await;
    daemon.signal("-TERM");
    assert_eq!(daemon.wait(Duration::from_secs(5)).await, 0);
    let log = daemon.log();
    let notice = log
        .lines()
        .filter(|l| l.contains("monthly API quota is spent"))
        .collect::<Vec<_>>();
    assert_eq!(notice.len(), 1, "{log}");
    assert!(
        notice[0].contains("ERROR") && notice[0].contains(&shanghai(0).local(resumes)),
        "{log}"
    );
    assert!(log.contains("monthly API quota is available"), "{log}");
}

#[tokio::test]
async fn status_and_sync_status_show_the_months_calls_the_pace_and_the_projection() {
    let env = TestEnv::with("", "[budget]\nmonthly_calls = 3000").await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    assert_eq!(env.sync().await.status.as_str(), "succeeded");
    let month = shanghai(0).month_of(SystemTime::now());
    let out = roomsync(&["status", "--config", env.config.to_str().unwrap()], &[]);
    let status = text(&out.stdout);
    for expected in [
        format!("API calls in {month} (months of Asia/Shanghai): 4, budget 3000 a month"),
        "/v1.0/rooms/meetingRoomLists         2".to_string(),
        "pace: 4 calls against ".to_string(),
        "projected: about ".to_string(),
        "if every tick of 0 7/15 * * * * ran (4 calls a run)".to_string(),
        // 3000 calls of 4 a run: 750 runs in a month of 28 to 31 days.
        "paced: about one run every ".to_string(),
    ] {
        assert!(status.contains(&expected), "{expected}: {status}");
    }
    assert!(!status.contains("warning:"), "{status}");
    assert_eq!(
        env.rows("SELECT calls_this_month || '|' || monthly_budget FROM sync_status")
            .await,
        ["4|3000"]
    );

    // A budget that allows a run only every few days: stale by design, and said so.
    env.write_config("", "[budget]\nmonthly_calls = 5");
    env.reset_upstream(&rooms_in_pages(3)).await;
    env.sync().await;
    let out = roomsync(
        &[
            "status",
            "--config",
            env.config.to_str().unwrap(),
            "--max-age",
            "2h",
        ],
        &[],
    );
    let status = text(&out.stdout);
    assert!(
        status.contains("warning: the budget allows a run only about every "),
        "{status}"
    );
    assert!(status.contains("longer than the max age 2h"), "{status}");
    assert!(status.contains("ticks are being skipped"), "{status}");
}
