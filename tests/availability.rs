//! Room availability: the refresh's requests, its concurrency under the rate limit, the busy
//! rows it replaces (and a no-op that writes nothing), rooms with errors, the half-failing
//! refresh, local times, warnings, the scope of groups, the view's answers relative to now,
//! the daemon's two schedules, SIGTERM, and status.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::daemon::{until, Daemon};
use common::*;
use roomsync::standin::{FaultKind, OrgSpec, StandIn, StandInConfig};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, ResponseTemplate};

const SCHEDULES: &str = "/v1.0/calendar/users/union-0042/meetingRooms/schedules/query";

fn enabled(extra: &str) -> String {
    format!("[availability]\nenabled = true\n{extra}")
}

/// A refresh through the binary: `--sync-now --availability-only`.
async fn refresh(env: &TestEnv) -> std::process::Output {
    let config = env.config.to_str().unwrap().to_string();
    tokio::task::spawn_blocking(move || {
        roomsync(
            &["--sync-now", "--availability-only", "--config", &config],
            &[("RUST_LOG", "off")],
        )
    })
    .await
    .unwrap()
}

/// An answer for the rooms of a request, each with `items`.
fn answer_all(items: Value) -> impl Fn(&Request) -> ResponseTemplate {
    move |request: &Request| {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let info: Vec<Value> = body["roomIds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| json!({"roomId": id, "scheduleItems": items.clone()}))
            .collect();
        ResponseTemplate::new(200).set_body_json(json!({"scheduleInformation": info}))
    }
}

/// The test's clock, read once: bookings are placed relative to it, to the second.
fn t0() -> SystemTime {
    use std::sync::OnceLock;
    static T0: OnceLock<SystemTime> = OnceLock::new();
    *T0.get_or_init(|| {
        let now = SystemTime::now();
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    })
}

/// `t0` plus `minutes` (negative: before), as stored.
fn utc(minutes: i64) -> String {
    let shift = Duration::from_secs(minutes.unsigned_abs() * 60);
    let t = if minutes >= 0 {
        t0() + shift
    } else {
        t0() - shift
    };
    humantime::format_rfc3339_seconds(t).to_string()
}

fn item(from: i64, to: i64) -> Value {
    json!({"eventId": format!("e{from}"), "status": "BUSY",
           "start": {"dateTime": utc(from), "timeZone": "UTC"},
           "end": {"dateTime": utc(to), "timeZone": "UTC"},
           "organizer": {"id": "u-7"}})
}

/// A mirror of `rooms` rooms (pages of two) synced from the mock.
async fn synced_rooms(env: &TestEnv, rooms: usize) {
    env.reset_upstream(&rooms_in_pages(rooms)).await;
    assert_eq!(env.sync().await.status.as_str(), "succeeded");
}

#[tokio::test]
async fn requests_name_the_union_id_ask_in_batches_and_share_one_window() {
    let env = TestEnv::with("", &enabled("rooms_per_request = 3\nwindow_hours = 5")).await;
    synced_rooms(&env, 7).await;
    Mock::given(method("POST"))
        .and(path(SCHEDULES))
        .respond_with(answer_all(json!([])))
        .mount(&env.server)
        .await;
    let out = refresh(&env).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with(
            "availability refresh 2 succeeded: 3 requests, 7 rooms, 0 with errors in "
        ),
        "{}",
        text(&out.stdout)
    );
    let requests: Vec<Request> = env
        .server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == SCHEDULES)
        .collect();
    assert_eq!(requests.len(), 3);
    let mut asked = Vec::new();
    let mut windows = std::collections::BTreeSet::new();
    for r in &requests {
        assert_eq!(r.headers.get("x-acs-dingtalk-access-token").unwrap(), TOKEN);
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let ids: Vec<String> = serde_json::from_value(body["roomIds"].clone()).unwrap();
        assert!(ids.len() <= 3);
        asked.extend(ids);
        let (start, end) = (
            body["startTime"].as_str().unwrap(),
            body["endTime"].as_str().unwrap(),
        );
        for t in [start, end] {
            assert_eq!(t.len(), 17, "yyyy-MM-ddTHH:mmZ: {t}");
            assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        }
        windows.insert((start.to_string(), end.to_string()));
    }
    asked.sort();
    assert_eq!(
        asked,
        (0..7).map(|i| format!("r{i:03}")).collect::<Vec<_>>()
    );
    assert_eq!(
        windows.len(),
        1,
        "one window for every request: {windows:?}"
    );
    let (start, end) = windows.into_iter().next().unwrap();
    let start_at = humantime::parse_rfc3339(&format!("{}:00Z", &start[..16])).unwrap();
    let end_at = humantime::parse_rfc3339(&format!("{}:00Z", &end[..16])).unwrap();
    assert_eq!(
        end_at.duration_since(start_at).unwrap(),
        Duration::from_secs(5 * 3600)
    );
    assert!(SystemTime::now().duration_since(start_at).unwrap() < Duration::from_secs(120));
    assert_eq!(
        env.rows("SELECT kind || '|' || status || '|' || pages_fetched || '|' || rooms_seen || '|' || api_calls FROM sync_runs WHERE run_id = 2").await,
        ["availability|succeeded|3|7|4"]
    );
    assert_eq!(
        env.scalar("SELECT COUNT(*) FROM room_schedule_checks WHERE checked_at IS NOT NULL AND error IS NULL AND run_id = 2").await,
        7
    );
}

#[tokio::test]
async fn requests_in_flight_keep_to_the_concurrency_and_the_rate_limit() {
    // A server that answers after 100 ms and counts the requests in flight.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let starts = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let env = TestEnv::with("", &enabled("rooms_per_request = 1\nconcurrency = 3")).await;
    synced_rooms(&env, 12).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = {
        let (in_flight, most, starts) = (in_flight.clone(), most.clone(), starts.clone());
        axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let (in_flight, most, starts) = (in_flight.clone(), most.clone(), starts.clone());
            async move {
                if body.starts_with(b"{\"appKey\"") {
                    return axum::Json(json!({"accessToken": TOKEN, "expireIn": 7200}));
                }
                starts.lock().unwrap().push(Instant::now());
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let body: Value = serde_json::from_slice(&body).unwrap();
                let info: Vec<Value> = body["roomIds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|id| json!({"roomId": id, "scheduleItems": []}))
                    .collect();
                axum::Json(json!({"scheduleInformation": info}))
            }
        })
    };
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    env.point_at(&format!("http://{addr}"));
    let out = refresh(&env).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(starts.lock().unwrap().len(), 12);
    assert_eq!(
        most.load(Ordering::SeqCst),
        3,
        "up to `concurrency` in flight, and that many"
    );

    // With a rate limit of 10 a second, requests start at least 100 ms apart, whatever the
    // concurrency.
    most.store(0, Ordering::SeqCst);
    starts.lock().unwrap().clear();
    env.write_config(
        "requests_per_second = 10",
        &enabled("rooms_per_request = 2\nconcurrency = 6"),
    );
    env.point_at(&format!("http://{addr}"));
    let out = refresh(&env).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let starts = starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 6);
    for pair in starts.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(gap >= Duration::from_millis(90), "{gap:?}");
    }
}

/// `room_id|start|end|event` of every busy row.
async fn busy(env: &TestEnv) -> Vec<String> {
    env.rows("SELECT room_id || '|' || start_at || '|' || end_at || '|' || IFNULL(event_id, '') FROM room_busy ORDER BY 1").await
}

/// What a refresh may change: the busy rows and each room's last check.
#[derive(Debug, PartialEq)]
struct AvailabilityState {
    busy: Vec<String>,
    checks: Vec<String>,
}

async fn availability_state(env: &TestEnv) -> AvailabilityState {
    AvailabilityState {
        busy: busy(env).await,
        checks: env
            .rows("SELECT room_id || checked_at FROM room_schedule_checks ORDER BY 1")
            .await,
    }
}

#[tokio::test]
async fn busy_rows_are_replaced_a_same_answer_writes_nothing_and_errors_keep_rows() {
    let env = TestEnv::with("", &enabled("")).await;
    synced_rooms(&env, 2).await;
    let first = json!([item(-30, 30), item(60, 90)]);
    Mock::given(method("POST"))
        .and(path(SCHEDULES))
        .respond_with(answer_all(first.clone()))
        .mount(&env.server)
        .await;
    assert_eq!(refresh(&env).await.status.code(), Some(0));
    let stored = busy(&env).await;
    assert_eq!(stored.len(), 4);

    // The same answer: no write to room_busy.
    write_sql(&env.db, "CREATE TABLE busy_writes (op TEXT);
        CREATE TRIGGER bw_i AFTER INSERT ON room_busy BEGIN INSERT INTO busy_writes VALUES ('i'); END;
        CREATE TRIGGER bw_d AFTER DELETE ON room_busy BEGIN INSERT INTO busy_writes VALUES ('d'); END;
        CREATE TRIGGER bw_u AFTER UPDATE ON room_busy BEGIN INSERT INTO busy_writes VALUES ('u'); END;").await;
    env.server.reset().await;
    env.mount_token(None).await;
    Mock::given(method("POST"))
        .and(path(SCHEDULES))
        .respond_with(answer_all(first))
        .mount(&env.server)
        .await;
    assert_eq!(refresh(&env).await.status.code(), Some(0));
    assert_eq!(env.scalar("SELECT COUNT(*) FROM busy_writes").await, 0);
    assert_eq!(busy(&env).await, stored);

    // A new answer replaces the rows; a room answered with an error keeps its own.
    env.server.reset().await;
    env.mount_token(None).await;
    Mock::given(method("POST"))
        .and(path(SCHEDULES))
        .respond_with(|_: &Request| {
            ResponseTemplate::new(200).set_body_json(json!({"scheduleInformation": [
                {"roomId": "r000", "scheduleItems": [item(120, 150)]},
                {"roomId": "r001", "error": "calendar unavailable"},
            ]}))
        })
        .mount(&env.server)
        .await;
    let out = refresh(&env).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "one of two failing is not more than half"
    );
    let now = busy(&env).await;
    assert_eq!(now.iter().filter(|r| r.starts_with("r000|")).count(), 1);
    assert_eq!(
        now.iter()
            .filter(|r| r.starts_with("r001|"))
            .cloned()
            .collect::<Vec<_>>(),
        stored
            .iter()
            .filter(|r| r.starts_with("r001|"))
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(
        env.rows("SELECT room_id || '|' || IFNULL(error, '-') || '|' || (checked_at IS NOT NULL) FROM room_schedule_checks ORDER BY 1").await,
        ["r000|-|1", "r001|calendar unavailable|1"]
    );
    assert_eq!(
        env.rows("SELECT severity || '|' || error_code FROM sync_errors WHERE run_id = 4")
            .await,
        ["warning|availability.room_error"]
    );
}

#[tokio::test]
async fn more_than_half_failing_fails_the_refresh_and_changes_nothing() {
    let env = TestEnv::with("", &enabled("rooms_per_request = 1")).await;
    synced_rooms(&env, 3).await;
    Mock::given(method("POST"))
        .and(path(SCHEDULES))
        .respond_with(answer_all(json!([item(-5, 5)])))
        .mount(&env.server)
        .await;
    assert_eq!(refresh(&env).await.status.code(), Some(0));
    let before = availability_state(&env).await;

    // Two of three requests refused: the refresh fails and nothing changes.
    env.server.reset().await;
    env.mount_token(None).await;
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    Mock::given(method("POST"))
        .and(path(SCHEDULES))
        .respond_with(move |r: &Request| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            if body["roomIds"][0] == "r000" {
                counter.fetch_add(1, Ordering::SeqCst);
                answer_all(json!([item(100, 110)]))(r)
            } else {
                ResponseTemplate::new(403).set_body_json(
                    json!({"code": "Forbidden.AccessDenied.AccessTokenPermissionDenied"}),
                )
            }
        })
        .mount(&env.server)
        .await;
    let out = refresh(&env).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("availability.too_many_failed"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(served.load(Ordering::SeqCst), 1);
    let after = availability_state(&env).await;
    assert_eq!(after, before);
    assert_eq!(
        env.rows("SELECT status FROM sync_runs WHERE run_id = 3")
            .await,
        ["failed"]
    );
    let error = env
        .rows("SELECT error FROM sync_runs WHERE run_id = 3")
        .await
        .concat();
    assert!(
        error.starts_with(
            "fetch: [availability.too_many_failed] 2 of 3 rooms could not be read, more than \
             half; nothing was changed. First error: fetch: HTTP 403"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn unreadable_times_are_warnings_and_local_times_are_stored_in_utc() {
    let env = TestEnv::with("", &enabled("")).await;
    synced_rooms(&env, 1).await;
    Mock::given(method("POST")).and(path(SCHEDULES)).respond_with(answer_all(json!([
        {"start": {"dateTime": "2026-07-01T09:00:00", "timeZone": "Europe/Berlin"},
         "end": {"dateTime": "2026-07-01T10:30:00", "timeZone": "Europe/Berlin"}},
        {"start": {"dateTime": "2026-12-01T09:00:00", "timeZone": "Europe/Berlin"},
         "end": {"dateTime": "2026-12-01T10:00:00", "timeZone": "Europe/Berlin"}},
        {"start": {"dateTime": "2026-11-27T10:00:00+08:00"}, "end": {"dateTime": "2026-11-27T11:00:00+08:00"}},
        {"start": {"dateTime": "tomorrow-ish"}, "end": {"dateTime": "2026-11-27T11:00:00Z"}},
        {"start": {"dateTime": "2026-11-27T10:00:00", "timeZone": "Atlantis/Capital"}, "end": {"dateTime": "2026-11-27T11:00:00Z"}},
    ]))).mount(&env.server).await;
    let out = refresh(&env).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(", 2 warnings in "),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        env.rows("SELECT start_at || '|' || end_at || '|' || IFNULL(time_zone, '-') FROM room_busy ORDER BY start_at").await,
        [
            "2026-07-01T07:00:00Z|2026-07-01T08:30:00Z|Europe/Berlin",
            "2026-11-27T02:00:00Z|2026-11-27T03:00:00Z|-",
            "2026-12-01T08:00:00Z|2026-12-01T09:00:00Z|Europe/Berlin",
        ]
    );
    assert_eq!(
        env.rows("SELECT severity || '|' || stage || '|' || error_code || '|' || message FROM sync_errors WHERE run_id = 2 ORDER BY error_id").await,
        [
            "warning|validate|record.part_skipped|scheduleInformation[0].scheduleItems[3].start: item with a dateTime that cannot be read left out (roomId \"r000\")",
            "warning|validate|record.part_skipped|scheduleInformation[0].scheduleItems[4].start: item with a timeZone that is not an IANA name left out (roomId \"r000\")",
        ]
    );
}

#[tokio::test]
async fn only_groups_takes_their_subgroups_too() {
    let env = TestEnv::with("", &enabled("only_groups = [10]")).await;
    env.mount_token_only().await;
    env.mount_groups(json!({"result": [
        {"groupId": 10, "groupName": "Campus", "parentId": 0},
        {"groupId": 11, "groupName": "Building", "parentId": 10},
        {"groupId": 12, "groupName": "Floor", "parentId": 11},
        {"groupId": 20, "groupName": "Elsewhere", "parentId": 0},
    ]}))
    .await;
    env.mount_listing(
        &[
            vec![
                room("in-campus", "A", &[], Some(10)),
                room("in-floor", "B", &[], Some(12)),
            ],
            vec![
                room("elsewhere", "C", &[], Some(20)),
                room("no-group", "D", &[], None),
            ],
        ],
        None,
    )
    .await;
    // groupLists gives the tree (the rooms' own records say parent 0).
    assert_eq!(env.sync().await.status.as_str(), "succeeded");
    Mock::given(method("POST"))
        .and(path(SCHEDULES))
        .respond_with(answer_all(json!([])))
        .mount(&env.server)
        .await;
    assert_eq!(refresh(&env).await.status.code(), Some(0));
    assert_eq!(
        env.rows("SELECT room_id FROM room_schedule_checks ORDER BY 1")
            .await,
        ["in-campus", "in-floor"]
    );
}

/// `room_id|busy_now|busy_until|next_busy_at|free_until` from the view.
async fn availability(env: &TestEnv, room: &str) -> String {
    env.rows(&format!(
        "SELECT IFNULL(busy_now, 'NULL') || '|' || IFNULL(busy_until, 'NULL') || '|' ||
                IFNULL(next_busy_at, 'NULL') || '|' || IFNULL(free_until, 'NULL')
         FROM room_availability WHERE room_id = '{room}'"
    ))
    .await
    .pop()
    .unwrap()
}

#[tokio::test]
async fn the_view_answers_free_now_and_until_when() {
    let env = TestEnv::with("", &enabled("window_hours = 4")).await;
    synced_rooms(&env, 6).await;
    Mock::given(method("POST"))
        .and(path(SCHEDULES))
        .respond_with(|r: &Request| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            let items = |room: &str| match room {
                // Busy now, then free.
                "r000" => json!([item(-30, 30)]),
                // Busy now, overlapping and back to back: one stretch until +90.
                "r001" => json!([item(-10, 40), item(20, 60), item(60, 90), item(150, 160)]),
                // Free now, booked later.
                "r002" => json!([item(30, 60), item(60, 80)]),
                // Free for the whole window.
                "r003" => json!([]),
                _ => json!([]),
            };
            let info: Vec<Value> = body["roomIds"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|id| *id != "r004")
                .map(|id| json!({"roomId": id, "scheduleItems": items(id.as_str().unwrap())}))
                .collect();
            ResponseTemplate::new(200).set_body_json(json!({"scheduleInformation": info}))
        })
        .mount(&env.server)
        .await;
    assert_eq!(refresh(&env).await.status.code(), Some(0));
    let window_end = env
        .rows("SELECT window_end_at FROM room_schedule_checks WHERE room_id = 'r003'")
        .await
        .pop()
        .unwrap();
    assert_eq!(
        availability(&env, "r000").await,
        format!("1|{}|NULL|NULL", utc(30))
    );
    assert_eq!(
        availability(&env, "r001").await,
        format!("1|{}|{}|NULL", utc(90), utc(150))
    );
    assert_eq!(
        availability(&env, "r002").await,
        format!("0|NULL|{}|{}", utc(30), utc(30))
    );
    assert_eq!(
        availability(&env, "r003").await,
        format!("0|NULL|NULL|{window_end}")
    );
    // r004 was missing from the answer (an error): never checked.
    assert_eq!(availability(&env, "r004").await, "NULL|NULL|NULL|NULL");
    // A window that has ended: unknown again.
    write_sql(&env.db, "UPDATE room_schedule_checks SET window_end_at = '2000-01-01T00:00:00Z' WHERE room_id = 'r000'").await;
    assert_eq!(availability(&env, "r000").await, "NULL|NULL|NULL|NULL");
    assert_eq!(
        env.rows("SELECT room_id FROM room_availability WHERE busy_now = 0 AND free_until >= strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '+20 minutes') ORDER BY 1").await,
        ["r002", "r003", "r005"]
    );
}

/// Settings for the stand-in, with availability on.
async fn standin_env(standin: &StandIn, tail: &str) -> TestEnv {
    let env = TestEnv::with("", tail).await;
    env.use_standin(standin.base_url().as_str());
    env
}

#[tokio::test]
async fn the_stand_in_s_bookings_come_out_right_in_the_view() {
    let standin = StandIn::start(StandInConfig::new(OrgSpec::new(5, 100)))
        .await
        .unwrap();
    let env = standin_env(&standin, &enabled("")).await;
    let out = sync_now(&env, &[("RUST_LOG", "off")]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    // 4 rooms in 100 are answered with an error.
    assert!(
        stdout
            .lines()
            .nth(1)
            .unwrap()
            .contains("100 rooms, 4 with errors"),
        "{stdout}"
    );
    let busy_now = env
        .scalar("SELECT COUNT(*) FROM room_availability WHERE busy_now = 1")
        .await;
    // Patterns 1, 3 and 7 of every ten are busy now, less rooms 7 and 57 (errors: 7 of 25).
    assert_eq!(busy_now, 30 - 2);
    // Overlapping (pattern 3): busy for 90 minutes from the window's start.
    let overlap = env
        .rows("SELECT busy_until FROM room_availability WHERE room_id = 'room-000003'")
        .await;
    let start = env
        .rows("SELECT window_start_at FROM room_schedule_checks WHERE room_id = 'room-000003'")
        .await;
    let minutes = |t: &str| humantime::parse_rfc3339(t).unwrap();
    assert_eq!(
        minutes(&overlap[0])
            .duration_since(minutes(&start[0]))
            .unwrap(),
        Duration::from_secs(90 * 60)
    );
    // Local times: Shanghai's 3 h after the start are stored in UTC.
    let local = env
        .rows("SELECT start_at FROM room_busy WHERE room_id = 'room-000004'")
        .await;
    assert_eq!(
        minutes(&local[0])
            .duration_since(minutes(&start[0]))
            .unwrap(),
        Duration::from_secs(180 * 60)
    );
    assert_eq!(standin.requests().schedules, 5);

    // A throttled answer, then the stand-in's HTML page: retried, the refresh succeeds.
    standin.add_schedule_fault(
        1,
        FaultKind::Status {
            status: 403,
            code: "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi".into(),
        },
    );
    standin.add_schedule_fault(1, FaultKind::HtmlThrottle);
    let out = refresh(&env).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(standin.requests().schedules, 12);
}

#[tokio::test]
async fn the_daemon_runs_both_schedules_never_two_runs_at_once() {
    let standin = StandIn::start(StandInConfig::new(OrgSpec::new(5, 300)))
        .await
        .unwrap();
    let env = standin_env(
        &standin,
        &format!(
            "[schedule]\ncron = \"* * * * * *\"\n\n{}",
            enabled("cron = \"*/2 * * * * *\"\nrooms_per_request = 10")
        ),
    )
    .await;
    let mut daemon = Daemon::start(&env, &[]);
    until(
        &daemon,
        Duration::from_secs(20),
        "runs of both kinds",
        || async {
            env.try_scalar("SELECT COUNT(DISTINCT kind) FROM sync_runs WHERE status = 'succeeded'")
                .await
                .unwrap_or(0)
                == 2
                && env
                    .try_scalar("SELECT COUNT(*) FROM sync_runs")
                    .await
                    .unwrap_or(0)
                    >= 6
        },
    )
    .await;
    daemon.signal("-TERM");
    assert_eq!(daemon.wait(Duration::from_secs(5)).await, 0);
    let runs = env.rows("SELECT kind || '|' || trigger || '|' || started_at || '|' || IFNULL(finished_at, '') FROM sync_runs ORDER BY run_id").await;
    // The start-up runs: the room list, then one refresh.
    assert!(
        runs[0].starts_with("rooms|startup|") && runs[1].starts_with("availability|startup|"),
        "{runs:?}"
    );
    let mut previous_finish = String::new();
    for run in &runs {
        let f: Vec<&str> = run.split('|').collect();
        assert!(
            f[2] >= previous_finish.as_str(),
            "a run started before the previous one finished: {runs:?}"
        );
        previous_finish = f[3].to_string();
    }
}

#[tokio::test]
async fn sigterm_during_a_refresh_interrupts_it_and_changes_nothing_in_sync_now_and_daemon() {
    let standin = StandIn::start(StandInConfig::new(OrgSpec::new(5, 40)))
        .await
        .unwrap();
    let env = standin_env(&standin, &enabled("rooms_per_request = 5\nconcurrency = 1")).await;
    assert_eq!(
        sync_now(&env, &[("RUST_LOG", "off")]).await.status.code(),
        Some(0)
    );
    let before = availability_state(&env).await;
    // Slow answers from now on: the refresh is under way when the signal comes.
    let slow = StandIn::start(StandInConfig {
        page_latency: Duration::from_secs(30),
        ..StandInConfig::new(OrgSpec::new(5, 40))
    })
    .await
    .unwrap();
    env.write_config("", &enabled("rooms_per_request = 5\nconcurrency = 1"));
    env.use_standin(slow.base_url().as_str());
    let config = env.config.to_str().unwrap().to_string();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_roomsync"))
        .args(["--sync-now", "--availability-only", "--config", &config])
        .env("RUST_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while slow.requests().schedules == 0 {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let signalled = Instant::now();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(signalled.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        env.rows("SELECT kind || '|' || status FROM sync_runs ORDER BY run_id DESC LIMIT 1")
            .await,
        ["availability|interrupted"]
    );
    let after = availability_state(&env).await;
    assert_eq!(after, before);

    // The daemon, in a refresh of its own schedule: exits 0, the refresh interrupted.
    env.write_config(
        "",
        &format!(
            "[schedule]\ncron = \"0 0 0 1 1 *\"\nrun_on_start = false\n\n{}",
            enabled("cron = \"* * * * * *\"\nrooms_per_request = 5\nconcurrency = 1")
        ),
    );
    env.use_standin(slow.base_url().as_str());
    let asked = slow.requests().schedules;
    let mut daemon = Daemon::start(&env, &[]);
    until(
        &daemon,
        Duration::from_secs(10),
        "a refresh under way",
        || {
            let more = slow.requests().schedules > asked;
            async move { more }
        },
    )
    .await;
    let signalled = Instant::now();
    daemon.signal("-TERM");
    assert_eq!(daemon.wait(Duration::from_secs(5)).await, 0);
    assert!(signalled.elapsed() < Duration::from_secs(5));
    assert_eq!(
        env.rows("SELECT kind || '|' || trigger || '|' || status FROM sync_runs ORDER BY run_id DESC LIMIT 1")
            .await,
        ["availability|schedule|interrupted"]
    );
    let after = availability_state(&env).await;
    assert_eq!(after, before);
}

#[tokio::test]
async fn availability_only_needs_it_enabled_and_status_tells_the_last_refresh() {
    let env = TestEnv::new().await;
    let out = refresh(&env).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("availability.enabled"),
        "{}",
        text(&out.stderr)
    );
    assert!(!env.db.exists());

    env.write_config("", &enabled(""));
    synced_rooms(&env, 2).await;
    let status = |args: &[&str]| {
        let mut all = vec!["status", "--config", env.config.to_str().unwrap()];
        all.extend_from_slice(args);
        roomsync(&all, &[])
    };
    let out = status(&["--availability-max-age", "1h"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "no refresh yet: {}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stdout).contains("last availability refresh: none: STALE"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        status(&[]).status.code(),
        Some(0),
        "unchecked without the option"
    );

    Mock::given(method("POST"))
        .and(path(SCHEDULES))
        .respond_with(answer_all(json!([])))
        .mount(&env.server)
        .await;
    assert_eq!(refresh(&env).await.status.code(), Some(0));
    let out = status(&["--availability-max-age", "1h"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("last availability refresh: run 2 finished "),
        "{stdout}"
    );
    assert!(
        stdout.contains("(2 rooms, 0 with errors): fresh (max age 1h)"),
        "{stdout}"
    );
    // The room list's lines still describe the room list only.
    assert!(stdout.contains("last success: run 1 finished"), "{stdout}");
    assert_eq!(
        env.rows("SELECT latest_run_id || '|' || last_success_run_id || '|' || (last_availability_at IS NOT NULL) || '|' || (seconds_since_availability < 60) FROM sync_status").await,
        ["1|1|1|1"]
    );
}

/// A refresh that can no longer succeed stops asking: each request would cost a call of the
/// month's quota. With no token to be had, only the first batch tries for one (its three
/// attempts), not every batch; with more than half of the rooms failed, the rest are not sent.
#[tokio::test]
async fn a_refresh_that_cannot_succeed_stops_spending_calls() {
    let env = TestEnv::with("", &enabled("rooms_per_request = 1\nconcurrency = 1")).await;
    synced_rooms(&env, 10).await;
    let counted = |status: u16, body: Value| {
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        let respond = move |_: &Request| {
            counter.fetch_add(1, Ordering::SeqCst);
            ResponseTemplate::new(status).set_body_json(body.clone())
        };
        (served, respond)
    };

    env.server.reset().await;
    let (tokens, respond) = counted(500, json!({"code": "ServiceUnavailable"}));
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(respond)
        .mount(&env.server)
        .await;
    let out = refresh(&env).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("10 of 10 rooms could not be read"),
        "{stderr}"
    );
    assert_eq!(
        tokens.load(Ordering::SeqCst),
        3,
        "one batch's three attempts"
    );

    env.server.reset().await;
    env.mount_token(None).await;
    let (asked, respond) = counted(
        403,
        json!({"code": "Forbidden.AccessDenied.AccessTokenPermissionDenied"}),
    );
    Mock::given(method("POST"))
        .and(path(SCHEDULES))
        .respond_with(respond)
        .mount(&env.server)
        .await;
    let out = refresh(&env).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        asked.load(Ordering::SeqCst),
        6,
        "the sixth failed room of ten decides the refresh"
    );
}

/// Refresh ticks are paced under `[budget]` like room-list ticks (held back while the month's
/// calls are above the even-spending line), and estimated at the refresh's own cost: one call
/// for each `rooms_per_request` rooms, 10 for 20 rooms at 2 a request.
#[tokio::test]
async fn refresh_ticks_are_paced_at_the_refreshs_own_cost() {
    let shanghai = |calls| roomsync::budget::Budget::new(calls, "Asia/Shanghai").unwrap();
    // A budget whose line is well above zero whatever the day of the month.
    let share = shanghai(1).pace(SystemTime::now()).elapsed_share.max(1e-6);
    let budget = ((1000.0 / share).ceil() as u64).max(100_000);
    let env = TestEnv::with(
        "",
        &format!(
            "[schedule]\ncron = \"0 0 0 1 1 *\"\nrun_on_start = false\n\n\
             [budget]\nmonthly_calls = {budget}\ntime_zone = \"Asia/Shanghai\"\n\n{}",
            enabled("cron = \"* * * * * *\"\nrooms_per_request = 2")
        ),
    )
    .await;
    synced_rooms(&env, 20).await;
    let pace = shanghai(budget).pace(SystemTime::now());
    let so_far = env.scalar("SELECT SUM(calls) FROM api_calls").await;
    write_sql(
        &env.db,
        &format!(
            "UPDATE api_calls SET calls = calls + {} WHERE month = '{}'
             AND endpoint = '/v1.0/rooms/meetingRoomLists'",
            pace.line.ceil() as i64 + 2 - so_far,
            pace.month
        ),
    )
    .await;
    let mut daemon = Daemon::start(&env, &[]);
    until(
        &daemon,
        Duration::from_secs(10),
        "a refresh tick held back",
        || async { daemon.log().contains("skipping this tick: API budget") },
    )
    .await;
    daemon.signal("-TERM");
    assert_eq!(daemon.wait(Duration::from_secs(5)).await, 0);
    let log = daemon.log();
    assert!(log.contains("and a run costs about 10"), "{log}");
    assert_eq!(
        env.scalar("SELECT COUNT(*) FROM sync_runs WHERE kind = 'availability'")
            .await,
        0,
        "{log}"
    );
}
