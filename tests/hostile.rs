//! A hostile or broken upstream, and bad config: no credential leaves for another origin, no
//! panic reaches a user, memory and pagination stay bounded, an empty answer wipes nothing,
//! upstream text is scrubbed, and the records stay honest.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::daemon::{succeeded_runs, until, Daemon};
use common::*;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn redirect_to(status: u16, target: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).insert_header("location", target)
}

#[tokio::test]
async fn a_redirect_of_the_room_list_is_not_followed_and_the_other_origin_gets_nothing() {
    let (env, before) = synced_env().await;
    let other = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(page(&[room("planted", "Planted", &[1], None)], None))
        .mount(&other)
        .await;
    let other_host = other.uri().trim_start_matches("http://").to_string();
    for status in [301, 302, 303, 307, 308] {
        env.server.reset().await;
        env.mount_token(None).await;
        let target = format!(
            "{}{ROOMS_PATH}?unionId={UNION_ID}&leak=query-text",
            other.uri()
        );
        page_request(0)
            .respond_with(redirect_to(status, &target))
            .mount(&env.server)
            .await;
        let report = env.sync().await;
        assert_failed_untouched(&env, &before, &report, "http.redirect").await;
        let error = report.error.unwrap();
        assert!(error.contains(&format!("HTTP {status}")), "{error}");
        assert!(
            error.contains(&other_host),
            "names the target's host: {error}"
        );
        assert!(!error.contains("query-text"), "not its query: {error}");
        assert_eq!(
            env.errors_of(report.run_id).await,
            vec![format!("fetch|0|{status}|http.redirect|0")],
            "not retried"
        );
    }
    assert!(other.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_redirect_of_the_token_request_never_reposts_the_secret() {
    let (env, before) = synced_env().await;
    let other = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"accessToken": TOKEN})))
        .mount(&other)
        .await;
    for status in [307, 308] {
        env.server.reset().await;
        Mock::given(method("POST"))
            .and(path(TOKEN_PATH))
            .respond_with(redirect_to(status, &format!("{}{TOKEN_PATH}", other.uri())))
            .mount(&env.server)
            .await;
        let report = env.sync().await;
        assert_failed_untouched(&env, &before, &report, "http.redirect").await;
        assert_eq!(
            env.errors_of(report.run_id).await,
            vec![format!("auth|-|{status}|http.redirect|0")]
        );
    }
    assert!(other.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_absurd_token_lifetime_is_clamped_and_warned_about_not_a_panic() {
    let env = TestEnv::new().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"accessToken": TOKEN, "expireIn": 9_223_372_036_854_775_807_i64}),
        ))
        .mount(&env.server)
        .await;
    env.mount_groups(json!({"result": []})).await;
    env.mount_listing(&rooms_in_pages(3), None).await;
    let out = sync_now(&env, &[("RUST_LOG", "warn")]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("outside 60..=86400"), "{stderr}");
    assert!(stderr.contains("using 86400 s"), "{stderr}");
}

#[tokio::test]
async fn a_panicking_run_is_recorded_failed_and_sync_now_exits_1_with_one_line() {
    let (env, before) = synced_env().await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    let out = sync_now(
        &env,
        &[("RUST_LOG", "off"), ("ROOMSYNC_TEST_PANIC_RUNS", "1")],
    )
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("roomsync: sync run 2 failed") && stderr.contains("internal.panic"),
        "{stderr}"
    );
    assert_eq!(env.data_snapshot().await, before);
    assert_eq!(
        env.rows("SELECT status FROM sync_runs ORDER BY run_id")
            .await,
        vec!["succeeded", "failed"]
    );
    assert_eq!(
        env.errors_of(2).await,
        vec!["internal|-|-|internal.panic|0"]
    );
    // The requests the run made before it panicked count against the month all the same.
    let sent = env.server.received_requests().await.unwrap().len() as i64;
    assert!(sent >= 2, "{sent}");
    assert_eq!(
        env.scalar("SELECT api_calls FROM sync_runs WHERE run_id = 2")
            .await,
        sent
    );
}

#[tokio::test]
async fn the_daemon_keeps_its_schedule_after_panicking_runs() {
    let env = TestEnv::with(
        "",
        "[schedule]\ncron = \"* * * * * *\"\nrun_on_start = true",
    )
    .await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    // The start-up run and the first tick panic; the tick after succeeds.
    let mut daemon = Daemon::start(&env, &[("ROOMSYNC_TEST_PANIC_RUNS", "2")]);
    until(
        &daemon,
        Duration::from_secs(15),
        "a run after the panics",
        || async { succeeded_runs(&env).await >= 1 },
    )
    .await;
    daemon.signal("-TERM");
    assert_eq!(daemon.wait(Duration::from_secs(5)).await, 0);
    let runs = env
        .rows("SELECT status || '|' || IFNULL(error, '') FROM sync_runs ORDER BY run_id LIMIT 3")
        .await;
    assert!(
        runs[0].starts_with("failed|") && runs[0].contains("internal.panic"),
        "{runs:?}"
    );
    assert!(
        runs[1].starts_with("failed|") && runs[1].contains("internal.panic"),
        "{runs:?}"
    );
    assert!(runs[2].starts_with("succeeded|"), "{runs:?}");
    assert!(
        !daemon.log().contains("previous run is still in progress"),
        "{}",
        daemon.log()
    );
}

/// Runs `roomsync --sync-now`, for its exit code, its peak resident memory in MiB and its
/// stderr. The peak is the child's own VmHWM, read while it runs: the rusage of a child
/// counts the memory of the (large) test process it was spawned from.
async fn sync_now_measured(env: &TestEnv) -> (i32, f64, String) {
    let config = env.config.clone();
    let log = env.dir.path().join("measured.log");
    let stderr = std::fs::File::create(&log).unwrap();
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_roomsync"))
            .args(["--sync-now", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "off")
            .env_remove("ROOMSYNC_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let status_file = format!("/proc/{}/status", child.id());
        let mut peak_kib = 0u64;
        let code = loop {
            let hwm = std::fs::read_to_string(&status_file).ok().and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_string();
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            });
            peak_kib = peak_kib.max(hwm.unwrap_or(0));
            if let Some(status) = child.try_wait().unwrap() {
                break status.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        (
            code,
            peak_kib as f64 / 1024.0,
            std::fs::read_to_string(&log).unwrap(),
        )
    })
    .await
    .unwrap()
}

/// A loopback HTTP/1.1 server for what wiremock cannot do: a room list streamed in chunks,
/// without a length, `megabytes` long. The token and the group list are answered normally.
fn serve_endless_room_name(megabytes: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&request).into_owned();
            let answer = |stream: &mut std::net::TcpStream, body: &str| {
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            };
            if head.contains("accessToken") {
                // The token request's body may still be on its way: read it so the close is clean.
                let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
                let _ = stream.read(&mut buf);
                answer(
                    &mut stream,
                    &json!({"accessToken": TOKEN, "expireIn": 7200}).to_string(),
                );
            } else if head.contains("groupLists") {
                answer(&mut stream, r#"{"result":[]}"#);
            } else {
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                );
                let chunk = vec![b'x'; 64 * 1024];
                let mut send = |data: &[u8]| -> std::io::Result<()> {
                    write!(stream, "{:x}\r\n", data.len())?;
                    stream.write_all(data)?;
                    stream.write_all(b"\r\n")
                };
                let mut ok =
                    send(br#"{"hasMore":false,"result":[{"roomId":"a","roomName":""#).is_ok();
                for _ in 0..megabytes * 16 {
                    if !ok {
                        break;
                    }
                    ok = send(&chunk).is_ok();
                }
                if ok {
                    let _ = send(br#""}]}"#);
                    let _ = stream.write_all(b"0\r\n\r\n");
                }
            }
        }
    });
    base
}

#[tokio::test]
async fn a_50_mb_body_fails_too_large_without_being_buffered() {
    let (env, before) = synced_env().await;
    // Announced by its length: refused before reading.
    env.mount_token(None).await;
    let huge = vec![b' '; 50 * 1024 * 1024];
    page_request(0)
        .respond_with(ResponseTemplate::new(200).set_body_raw(huge, "application/json"))
        .mount(&env.server)
        .await;
    let (code, peak, log) = sync_now_measured(&env).await;
    assert_eq!(code, 1, "{log}");
    assert!(peak < 100.0, "peak RSS {peak:.1} MiB");
    assert_eq!(env.data_snapshot().await, before);
    assert_eq!(
        env.errors_of(2).await,
        vec!["fetch|0|200|response.too_large|0"]
    );

    // Streamed without a length (one 50 MB room name): read up to the limit, then refused.
    env.point_at(&serve_endless_room_name(50));
    let (code, peak, log) = sync_now_measured(&env).await;
    assert_eq!(code, 1, "{log}");
    assert!(peak < 100.0, "peak RSS {peak:.1} MiB");
    assert_eq!(env.data_snapshot().await, before);
    assert_eq!(
        env.errors_of(3).await,
        vec!["fetch|0|200|response.too_large|0"]
    );
}

#[tokio::test]
async fn a_page_with_more_rooms_than_asked_for_is_invalid() {
    let (env, before) = synced_env().await;
    env.mount_token(None).await;
    let rooms: Vec<_> = (0..3)
        .map(|i| room(&format!("x{i}"), "X", &[], None))
        .collect();
    page_request(0)
        .respond_with(page(&rooms, None))
        .mount(&env.server)
        .await;
    let report = env.sync().await;
    assert_failed_untouched(&env, &before, &report, "more than the 2 asked for").await;
    assert_eq!(
        env.errors_of(report.run_id).await,
        vec!["validate|0|-|response.invalid|0"]
    );
}

/// Answers every page with `hasMore` and a fresh `nextToken`; `rooms_per_page` rooms each.
fn endless_listing(rooms_per_page: usize) -> impl Fn(&Request) -> ResponseTemplate {
    move |request: &Request| {
        let token: i64 = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "nextToken")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let rooms: Vec<_> = (0..rooms_per_page)
            .map(|i| room(&format!("p{token}-{i}"), "Endless", &[], None))
            .collect();
        page(&rooms, Some(token + 1))
    }
}

async fn page_requests(env: &TestEnv) -> usize {
    let requests = env.server.received_requests().await.unwrap();
    requests
        .iter()
        .filter(|r| r.url.path() == ROOMS_PATH)
        .count()
}

#[tokio::test]
async fn endless_empty_pages_stop_after_three() {
    let (env, before) = synced_env().await;
    env.mount_token(None).await;
    Mock::given(method("GET"))
        .and(path(ROOMS_PATH))
        .respond_with(endless_listing(0))
        .mount(&env.server)
        .await;
    let report = env.sync().await;
    assert_failed_untouched(&env, &before, &report, "pagination.runaway").await;
    assert_eq!(
        page_requests(&env).await,
        4,
        "three empty pages tolerated, not a fourth"
    );
}

#[tokio::test]
async fn no_run_follows_more_than_max_pages() {
    let env = TestEnv::with("max_pages = 5", "").await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    env.sync().await;
    let before = env.data_snapshot().await;
    env.server.reset().await;
    env.mount_token(None).await;
    Mock::given(method("GET"))
        .and(path(ROOMS_PATH))
        .respond_with(endless_listing(2))
        .mount(&env.server)
        .await;
    let report = env.sync().await;
    assert_failed_untouched(&env, &before, &report, "pagination.runaway").await;
    assert_eq!(page_requests(&env).await, 5);
    assert_eq!(
        env.errors_of(report.run_id).await,
        vec!["validate|5|-|pagination.runaway|0"]
    );
}

#[tokio::test]
async fn an_empty_listing_never_wipes_even_a_small_mirror() {
    let env = TestEnv::with("page_size = 5", "").await;
    let five: Vec<_> = (0..5)
        .map(|i| room(&format!("r{i}"), "R", &[1], None))
        .collect();
    env.reset_upstream(&[five]).await;
    env.sync().await;
    let before = env.data_snapshot().await;
    for body in [json!({}), json!({"hasMore": false, "result": null})] {
        env.server.reset().await;
        env.mount_token(None).await;
        page_request_of(0, 5)
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&env.server)
            .await;
        let report = env.sync().await;
        assert_failed_untouched(&env, &before, &report, "removal.guard").await;
        assert!(
            report
                .error
                .unwrap()
                .contains("the listing is empty and would remove all 5"),
            "says why"
        );
    }
    let report = env.sync_with(true).await;
    assert_eq!(
        report.counts.unwrap().removed,
        5,
        "--allow-mass-removal lets it through"
    );
}

#[tokio::test]
async fn upstream_text_is_scrubbed_of_the_secret_and_the_token_everywhere() {
    let (env, _) = synced_env().await;
    env.mount_token(None).await;
    let echo = format!("echo {SECRET} and {TOKEN} {}", "padding ".repeat(200));
    page_request(0)
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": "param.error",
            "message": echo,
            "requestid": format!("req-{TOKEN}-{SECRET}"),
        })))
        .mount(&env.server)
        .await;
    let out = sync_now(&env, &[("RUST_LOG", "trace")]).await;
    assert_eq!(out.status.code(), Some(1));
    let status = roomsync(&["status", "--config", env.config.to_str().unwrap()], &[]);
    let stored = env
        .rows(
            "SELECT message || '|' || request_id FROM sync_errors WHERE run_id = 2
             UNION ALL SELECT error FROM sync_runs WHERE run_id = 2",
        )
        .await;
    let everything = format!(
        "{}{}{}{}",
        text(&out.stdout),
        text(&out.stderr),
        text(&status.stdout),
        stored.join("\n")
    );
    assert!(!everything.contains(SECRET), "{everything}");
    assert!(!everything.contains(TOKEN), "{everything}");
    assert!(
        stored[0].contains("echo [redacted] and [redacted]"),
        "{stored:?}"
    );
    assert!(
        stored[0].ends_with("|req-[redacted]-[redacted]"),
        "{stored:?}"
    );
    let message_len = env
        .scalar("SELECT length(message) FROM sync_errors WHERE run_id = 2")
        .await;
    assert_eq!(message_len, 500, "cut to 500 characters");
}

#[tokio::test]
async fn config_numbers_are_checked_against_their_documented_ranges() {
    let env = TestEnv::new().await;
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "requests_per_second = 1e-30",
            "",
            "dingtalk.requests_per_second",
            "0.1..=10000, got 1e-30",
        ),
        (
            "requests_per_second = 20000",
            "",
            "dingtalk.requests_per_second",
            "0.1..=10000",
        ),
        ("timeout_secs = 0.5", "", "dingtalk.timeout_secs", "1..=600"),
        ("timeout_secs = 601", "", "dingtalk.timeout_secs", "1..=600"),
        (
            "retry_base_delay_ms = 0",
            "",
            "dingtalk.retry_base_delay_ms",
            "1..=60000",
        ),
        (
            "page_size = 1e30",
            "",
            "dingtalk.page_size",
            "1..=100, got 1e30",
        ),
        ("page_size = 2.5", "", "dingtalk.page_size", "an integer"),
        (
            "page_size = 99999999999999999999",
            "",
            "dingtalk.page_size",
            "line",
        ),
        (
            "max_response_bytes = 10",
            "",
            "dingtalk.max_response_bytes",
            "65536..=",
        ),
        ("max_pages = 0", "", "dingtalk.max_pages", "1..=1000000"),
        (
            "",
            "[sync]\nkeep_changes_days = -1",
            "sync.keep_changes_days",
            "0..=36500",
        ),
    ];
    for (dingtalk, tail, key, range) in cases {
        env.write_config(dingtalk, tail);
        let out = sync_now(&env, &[]).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{dingtalk} {tail}: {stderr}");
        assert!(
            stderr.contains(key),
            "{dingtalk} {tail}: names {key}: {stderr}"
        );
        assert!(
            stderr.contains(range),
            "{dingtalk} {tail}: gives {range}: {stderr}"
        );
        assert!(!stderr.contains("9223372036854775807"), "{stderr}");
    }
    assert!(!env.db.exists());
}

#[tokio::test]
async fn a_database_path_that_is_not_a_regular_file_is_refused_before_anything_is_created() {
    let env = TestEnv::new().await;
    let dir = env.dir.path().join("a-directory");
    std::fs::create_dir(&dir).unwrap();
    for target in ["/dev/null", dir.to_str().unwrap()] {
        let config = std::fs::read_to_string(&env.config).unwrap();
        let config = config.replace(env.db.to_str().unwrap(), target);
        let path = env.dir.path().join("other.toml");
        std::fs::write(&path, config).unwrap();
        let out = roomsync(&["--sync-now", "--config", path.to_str().unwrap()], &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("database.path"), "{stderr}");
        assert!(!std::path::Path::new(&format!("{target}.lock")).exists());
        assert!(!std::path::Path::new(&format!("{target}-journal")).exists());
    }
}

#[tokio::test]
async fn a_syntax_error_on_the_secrets_line_never_shows_the_secret() {
    let env = TestEnv::new().await;
    let config = std::fs::read_to_string(&env.config).unwrap();
    let broken = config.replace(
        &format!("app_secret = \"{SECRET}\""),
        &format!("app_secret = \"{SECRET}"),
    );
    assert_ne!(broken, config);
    std::fs::write(&env.config, broken).unwrap();
    let out = sync_now(&env, &[]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
    assert!(
        stderr.contains(env.config.to_str().unwrap()),
        "names the file: {stderr}"
    );
    assert!(
        stderr.contains("line 4, column"),
        "names the place: {stderr}"
    );
    assert!(
        stderr.contains("dingtalk.app_secret"),
        "names the key: {stderr}"
    );
}

#[tokio::test]
async fn secrets_others_can_read_are_warned_about_at_start() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(1)).await;
    let warned = |out: &std::process::Output, file: &std::path::Path| {
        let stderr = text(&out.stderr);
        stderr.contains("WARN") && stderr.contains(&format!("chmod o-r {}", file.display()))
    };
    let chmod = |file: &std::path::Path, mode: u32| {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    chmod(&env.config, 0o644);
    let out = sync_now(&env, &[("RUST_LOG", "warn")]).await;
    assert!(warned(&out, &env.config), "{}", text(&out.stderr));
    chmod(&env.config, 0o640);
    let out = sync_now(&env, &[("RUST_LOG", "warn")]).await;
    assert!(!warned(&out, &env.config), "{}", text(&out.stderr));

    let secret = env.dir.path().join("app_secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    chmod(&secret, 0o644);
    let config = std::fs::read_to_string(&env.config).unwrap();
    let config = config.replace(
        &format!("app_secret = \"{SECRET}\""),
        &format!("app_secret_file = \"{}\"", secret.display()),
    );
    std::fs::write(&env.config, config).unwrap();
    chmod(&env.config, 0o644);
    let out = sync_now(&env, &[("RUST_LOG", "warn")]).await;
    assert!(warned(&out, &secret), "{}", text(&out.stderr));
    assert!(
        !warned(&out, &env.config),
        "no secret inline: {}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn the_daemon_refuses_a_database_it_cannot_write_before_it_reports_ready() {
    let (env, _) = synced_env().await;
    let chmod = |file: &std::path::Path, mode: u32| {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let _ = std::fs::remove_file(roomsync::lock::lock_path(&env.db));
    let as_root = unsafe { libc::geteuid() } == 0;
    let wrapper: &[&str] = if as_root {
        // Root may write whatever the modes say: the daemon runs as nobody, in a directory it
        // may write (the -wal and -shm files, the lock) beside a database file it may not.
        chmod(env.dir.path(), 0o777);
        chmod(&env.config, 0o644);
        chmod(&env.db, 0o644);
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]
    } else {
        chmod(&env.db, 0o444);
        &[]
    };
    let mut daemon = Daemon::start_as(&env, &[], wrapper);
    assert_eq!(
        daemon.wait(Duration::from_secs(5)).await,
        1,
        "{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(log.contains("cannot be written"), "{log}");
    assert!(log.contains("readonly"), "{log}");
    assert!(!daemon.notifications().iter().any(|n| n.contains("READY=1")));
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: std::path::PathBuf, size: &str) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(&at).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(SmallDisk(at))
        } else {
            Err(text(&out.stderr))
        }
    }

    fn free_bytes(&self) -> u64 {
        let path = std::ffi::CString::new(self.0.to_str().unwrap()).unwrap();
        // SAFETY: statvfs fills in the plain struct for a NUL-terminated path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
        st.f_bavail as u64 * st.f_frsize as u64
    }

    /// Fills the disk until `reserve` bytes are left.
    fn fill_leaving(&self, reserve: u64) {
        let filler = self.0.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while self.free_bytes() > reserve {
            let n = (self.free_bytes() - reserve).min(block.len() as u64) as usize;
            if file.write_all(&block[..n]).is_err() {
                break;
            }
            file.flush().unwrap();
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_never_leaves_a_run_running_or_names_a_run_that_does_not_exist() {
    let env = TestEnv::with("page_size = 100", "").await;
    if unsafe { libc::geteuid() } != 0 {
        println!("disk-full test skipped: mounting a tmpfs needs root");
        return;
    }
    let disk = match SmallDisk::mount(env.dir.path().join("small"), "4m") {
        Ok(disk) => disk,
        Err(e) => {
            println!("disk-full test skipped: cannot mount a tmpfs here: {e}");
            return;
        }
    };
    let db = disk.0.join("rooms.db");
    let config = env.dir.path().join("small.toml");
    let text_of_config = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &config,
        text_of_config.replace(env.db.to_str().unwrap(), db.to_str().unwrap()),
    )
    .unwrap();
    let run = || {
        roomsync(
            &["--sync-now", "--config", config.to_str().unwrap()],
            &[("RUST_LOG", "off")],
        )
    };
    let rooms = |name: &str| -> Vec<_> {
        (0..60)
            .map(|i| {
                room(
                    &format!("r{i:02}"),
                    &format!("{name} {i}"),
                    &[1, 2],
                    Some(1),
                )
            })
            .collect()
    };
    env.reset_upstream(&[rooms("Room")]).await;
    assert_eq!(run().status.code(), Some(0));
    let pristine = env.dir.path().join("pristine.db");
    std::fs::copy(&db, &pristine).unwrap();
    let before = data_snapshot_of(&db).await;
    env.reset_upstream(&[rooms("Renamed")]).await;

    let mut outcomes = Vec::new();
    for reserve_kib in [0, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024] {
        for leftover in ["-wal", "-shm", ".lock"] {
            let _ = std::fs::remove_file(format!("{}{leftover}", db.display()));
        }
        std::fs::copy(&pristine, &db).unwrap();
        disk.fill_leaving(reserve_kib * 1024);
        let out = run();
        std::fs::remove_file(disk.0.join("filler")).unwrap();
        let stderr = text(&out.stderr);
        let runs = env_rows(
            &db,
            "SELECT run_id || '|' || status FROM sync_runs ORDER BY run_id",
        )
        .await;
        assert!(
            !runs.iter().any(|r| r.ends_with("|running")),
            "{reserve_kib} KiB: a run left running: {runs:?}; {stderr}"
        );
        let named = stderr
            .split("sync run ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .map(str::to_string);
        if let Some(id) = &named {
            assert!(
                runs.iter().any(|r| r.starts_with(&format!("{id}|"))),
                "{reserve_kib} KiB: output names run {id}, which does not exist: {runs:?}; {stderr}"
            );
        }
        let data = data_snapshot_of(&db).await;
        match out.status.code() {
            Some(0) => assert_ne!(data, before, "{reserve_kib} KiB: succeeded, so applied"),
            code => {
                assert_eq!(code, Some(1), "{reserve_kib} KiB: {stderr}");
                assert_eq!(
                    data, before,
                    "{reserve_kib} KiB: failed, so nothing changed"
                );
            }
        }
        outcomes.push(format!(
            "{reserve_kib} KiB free: exit {:?}, runs {runs:?}: {}",
            out.status.code(),
            stderr.trim()
        ));
    }
    println!("{}", outcomes.join("\n"));
    assert!(
        outcomes.iter().any(|o| o.contains("exit Some(1)")),
        "{outcomes:#?}"
    );
    assert!(
        outcomes.iter().any(|o| o.contains("exit Some(0)")),
        "{outcomes:#?}"
    );
}

async fn env_rows(db: &std::path::Path, sql: &str) -> Vec<String> {
    let pool = open_pool(db).await;
    let rows = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows
}
