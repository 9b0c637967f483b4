//! What applications that read the mirror rely on: the documented example queries, the views,
//! the group list, the change feed, and consistent reads while a sync applies.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteRow};
use sqlx::{ConnectOptions, Connection, Row};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const SCHEMA_DOC: &str = include_str!("../docs/schema.md");

/// The SQL of the example named `name` in docs/schema.md.
fn example(name: &str) -> String {
    let start = format!("```sql\n-- example: {name}\n");
    let from = SCHEMA_DOC
        .find(&start)
        .unwrap_or_else(|| panic!("docs/schema.md has no example {name}"));
    let body = &SCHEMA_DOC[from + start.len()..];
    body[..body.find("```").unwrap()].to_string()
}

fn cell(row: &SqliteRow, i: usize) -> String {
    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
        return v.map_or("NULL".into(), |v| v.to_string());
    }
    row.try_get::<Option<String>, _>(i)
        .unwrap()
        .unwrap_or_else(|| "NULL".into())
}

/// Runs an example with its parameters and gives each row as `col|col|...`.
async fn run_example(env: &TestEnv, name: &str, params: &[&str]) -> Vec<String> {
    let pool = env.pool().await;
    let sql = example(name);
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for p in params {
        query = query.bind(*p);
    }
    let rows = query
        .fetch_all(&pool)
        .await
        .unwrap_or_else(|e| panic!("example {name}: {e}"));
    pool.close().await;
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| cell(r, i))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

fn group(id: i64, name: &str, parent: i64) -> Value {
    json!({"groupId": id, "groupName": name, "parentId": parent})
}

/// Campus 1 > Building 7 > Floor 1, Floor 2; Campus 1 > Building 8 > Empty wing.
fn groups() -> Value {
    json!({"result": [
        group(1, "Campus 1", 0), group(7, "Building 7", 1), group(71, "Floor 1", 7),
        group(72, "Floor 2", 7), group(8, "Building 8", 1), group(99, "Empty wing", 8)
    ]})
}

fn fixture_room(
    id: &str,
    name: &str,
    capacity: i64,
    status: i64,
    labels: &[i64],
    group: i64,
) -> Value {
    let mut r = room(id, name, labels, None);
    r["roomCapacity"] = json!(capacity);
    r["roomStatus"] = json!(status);
    let names = [
        (1, "Campus 1"),
        (7, "Building 7"),
        (71, "Floor 1"),
        (72, "Floor 2"),
        (8, "Building 8"),
    ];
    let parent = [(7, 1), (71, 7), (72, 7), (8, 1)];
    r["roomGroup"] = json!({
        "groupId": group,
        "groupName": names.iter().find(|(g, _)| *g == group).unwrap().1,
        "parentId": parent.iter().find(|(g, _)| *g == group).map_or(0, |p| p.1),
    });
    r
}

fn fixture_rooms() -> Vec<Value> {
    vec![
        fixture_room("a", "Alpha", 12, 0, &[3, 1], 71),
        fixture_room("b", "Beta", 8, 0, &[3], 71),
        fixture_room("c", "Gamma", 20, 1, &[3], 72),
        fixture_room("d", "Delta", 16, 0, &[3, 5], 72),
        fixture_room("e", "Epsilon", 30, 0, &[3], 8),
        fixture_room("f", "Zeta", 10, 0, &[4], 72),
    ]
}

async fn serve(env: &TestEnv, rooms: Vec<Value>, groups: Value) {
    env.server.reset().await;
    env.mount_token_only().await;
    env.mount_groups(groups).await;
    env.mount_listing(
        &rooms.chunks(2).map(|c| c.to_vec()).collect::<Vec<_>>(),
        None,
    )
    .await;
}

/// Every example the schema document shows is checked below; a new one needs a check too.
#[test]
fn every_documented_example_is_checked() {
    let names: Vec<&str> = SCHEMA_DOC
        .lines()
        .filter_map(|l| l.strip_prefix("-- example: "))
        .collect();
    assert_eq!(
        names,
        vec![
            "projector-rooms-in-building",
            "changes-since",
            "rooms-per-label",
            "empty-groups",
            "free-projector-rooms-next-hour",
            "next-bookings",
            "stale-schedules",
            "freshness"
        ]
    );
}

/// `now` plus `minutes`, as stored (to the second).
fn at(now: std::time::SystemTime, minutes: i64) -> String {
    let shift = std::time::Duration::from_secs(minutes.unsigned_abs() * 60);
    let t = if minutes >= 0 {
        now + shift
    } else {
        now - shift
    };
    humantime::format_rfc3339_seconds(t).to_string()
}

#[tokio::test]
async fn availability_examples_give_the_expected_answers() {
    let env = TestEnv::with("", "[availability]\nenabled = true").await;
    serve(&env, fixture_rooms(), groups()).await;
    assert_eq!(env.sync().await.status.as_str(), "succeeded");
    let now = std::time::SystemTime::now();
    let item = |from: i64, to: i64| {
        json!({"status": "BUSY", "organizer": {"id": "u1"},
        "start": {"dateTime": at(now, from)}, "end": {"dateTime": at(now, to)}})
    };
    // Alpha busy now; Delta free for 30 minutes only; Gamma (not open to all) free; Epsilon in
    // Building 8; Zeta has no projector; Beta's schedule could not be read.
    let schedules = json!({"scheduleInformation": [
        {"roomId": "a", "scheduleItems": [item(-10, 20), item(30, 60), item(90, 120), item(200, 210)]},
        {"roomId": "b", "error": "no permission"},
        {"roomId": "c", "scheduleItems": []},
        {"roomId": "d", "scheduleItems": [item(30, 90)]},
        {"roomId": "e", "scheduleItems": []},
        {"roomId": "f", "scheduleItems": []},
    ]});
    Mock::given(method("POST"))
        .and(path(
            "/v1.0/calendar/users/union-0042/meetingRooms/schedules/query",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(schedules))
        .mount(&env.server)
        .await;
    let runner =
        roomsync::sync::Runner::new(env.settings(), roomsync::metrics::Metrics::new()).unwrap();
    let trigger = roomsync::store::runs::Trigger::Manual;
    let report = runner
        .refresh_once(trigger, Default::default())
        .await
        .unwrap();
    assert_eq!(report.status.as_str(), "succeeded", "{report}");

    let window_end = env
        .rows("SELECT window_end_at FROM room_schedule_checks WHERE room_id = 'c'")
        .await
        .pop()
        .unwrap();
    assert_eq!(
        run_example(
            &env,
            "free-projector-rooms-next-hour",
            &["Campus 1 / Building 7"]
        )
        .await,
        vec![format!("c|Gamma|{window_end}")]
    );
    assert_eq!(
        run_example(&env, "next-bookings", &["a"]).await,
        vec![
            format!("{}|{}|BUSY|u1", at(now, -10), at(now, 20)),
            format!("{}|{}|BUSY|u1", at(now, 30), at(now, 60)),
            format!("{}|{}|BUSY|u1", at(now, 90), at(now, 120)),
        ]
    );
    assert_eq!(
        run_example(&env, "stale-schedules", &[]).await,
        vec!["b|Beta|NULL|no permission"]
    );
    write_sql(
        &env.db,
        "UPDATE room_schedule_checks SET checked_at = '2000-01-01T00:00:00Z' WHERE room_id = 'f'",
    )
    .await;
    assert_eq!(
        run_example(&env, "stale-schedules", &[]).await,
        vec![
            "b|Beta|NULL|no permission".to_string(),
            "f|Zeta|2000-01-01T00:00:00Z|NULL".to_string()
        ]
    );
}

#[tokio::test]
async fn documented_examples_give_the_expected_answers() {
    let env = TestEnv::new().await;
    serve(&env, fixture_rooms(), groups()).await;
    assert_eq!(env.sync().await.status.as_str(), "succeeded");

    assert_eq!(
        run_example(
            &env,
            "projector-rooms-in-building",
            &["Campus 1 / Building 7"]
        )
        .await,
        vec![
            "a|Alpha|12|Campus 1 / Building 7 / Floor 1",
            "d|Delta|16|Campus 1 / Building 7 / Floor 2"
        ]
    );
    assert_eq!(
        run_example(&env, "rooms-per-label", &[]).await,
        vec![
            "1|TV|1",
            "3|Projector|5",
            "4|Whiteboard|1",
            "5|Video Meeting|1"
        ]
    );
    assert_eq!(
        run_example(&env, "empty-groups", &[]).await,
        vec![
            "1|Campus 1",
            "7|Campus 1 / Building 7",
            "99|Campus 1 / Building 8 / Empty wing"
        ]
    );
    assert_eq!(run_example(&env, "freshness", &[]).await.len(), 1);
    assert!(run_example(&env, "freshness", &[]).await[0].starts_with("succeeded|"));
    assert!(run_example(&env, "freshness", &[]).await[0].ends_with("|1"));

    // The change feed: everything was added by the first run.
    let first = run_example(&env, "changes-since", &["0"]).await;
    assert_eq!(first.len(), 6);
    assert!(
        first
            .iter()
            .all(|c| c.contains("|added|") && c.ends_with("|NULL")),
        "{first:?}"
    );
    let last_seen = first.last().unwrap().split('|').next().unwrap().to_string();

    // Second run: a loses a label, b is renamed, f is gone, g is new.
    let mut rooms = fixture_rooms();
    rooms[0] = fixture_room("a", "Alpha", 12, 0, &[3], 71);
    rooms[1]["roomName"] = json!("Beta (renovated)");
    rooms[5] = fixture_room("g", "Eta", 6, 0, &[], 8);
    serve(&env, rooms.clone(), groups()).await;
    let report = env.sync().await;
    let c = report.counts.unwrap();
    assert_eq!((c.added, c.updated, c.removed), (1, 2, 1), "{report}");
    let changes = run_example(&env, "changes-since", &[&last_seen]).await;
    let kinds: Vec<String> = changes
        .iter()
        .map(|c| {
            let f: Vec<&str> = c.split('|').collect();
            format!("{} {} {}", f[1], f[2], f[4])
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            r#"a updated ["labels"]"#,
            r#"b updated ["room_name"]"#,
            "g added NULL",
            "f removed NULL"
        ]
    );
    let last_seen = changes
        .last()
        .unwrap()
        .split('|')
        .next()
        .unwrap()
        .to_string();

    // A resync without change adds nothing to the feed; f coming back is a restore.
    assert_eq!(env.sync().await.counts.unwrap().updated, 0);
    assert!(run_example(&env, "changes-since", &[&last_seen])
        .await
        .is_empty());
    rooms.push(fixture_room("f", "Zeta", 10, 0, &[4], 72));
    serve(&env, rooms, groups()).await;
    env.sync().await;
    let changes = run_example(&env, "changes-since", &[&last_seen]).await;
    assert_eq!(changes.len(), 1);
    assert!(changes[0].contains("|f|restored|"), "{changes:?}");
}

#[tokio::test]
async fn views_show_paths_labels_and_status() {
    let env = TestEnv::new().await;
    serve(&env, fixture_rooms(), groups()).await;
    env.sync().await;
    assert_eq!(
        env.rows("SELECT room_id || '|' || group_name || '|' || group_path || '|' || label_names || '|' || label_ids
                  FROM active_rooms WHERE room_id IN ('a', 'b', 'f') ORDER BY room_id").await,
        vec![
            r#"a|Floor 1|Campus 1 / Building 7 / Floor 1|["TV","Projector"]|[1,3]"#,
            r#"b|Floor 1|Campus 1 / Building 7 / Floor 1|["Projector"]|[3]"#,
            r#"f|Floor 2|Campus 1 / Building 7 / Floor 2|["Whiteboard"]|[4]"#,
        ]
    );
    assert_eq!(
        env.rows(
            "SELECT group_id || ':' || depth || ':' || path FROM room_group_tree ORDER BY group_id"
        )
        .await,
        vec![
            "1:0:Campus 1",
            "7:1:Campus 1 / Building 7",
            "8:1:Campus 1 / Building 8",
            "71:2:Campus 1 / Building 7 / Floor 1",
            "72:2:Campus 1 / Building 7 / Floor 2",
            "99:2:Campus 1 / Building 8 / Empty wing",
        ]
    );
    let status = env
        .rows("SELECT latest_status || '|' || last_success_run_id || '|' || (seconds_since_success BETWEEN 0 AND 60) FROM sync_status")
        .await;
    assert_eq!(status, vec!["succeeded|1|1"]);

    // A failed run is the latest; the success stays the last success.
    env.server.reset().await;
    env.mount_token_only().await;
    Mock::given(method("GET"))
        .and(path(GROUPS_PATH))
        .respond_with(ResponseTemplate::new(500))
        .mount(&env.server)
        .await;
    env.sync().await;
    assert_eq!(
        env.rows("SELECT latest_run_id || '|' || latest_status || '|' || last_success_run_id FROM sync_status").await,
        vec!["2|failed|1"]
    );
    // Removed rooms leave active_rooms.
    let mut rooms = fixture_rooms();
    rooms.remove(0);
    serve(&env, rooms, groups()).await;
    env.sync().await;
    assert_eq!(env.scalar("SELECT COUNT(*) FROM active_rooms").await, 5);
    assert_eq!(
        env.scalar("SELECT COUNT(*) FROM active_rooms WHERE room_id = 'a'")
            .await,
        0
    );
}

#[tokio::test]
async fn the_group_list_keeps_every_group_and_marks_those_gone() {
    let env = TestEnv::new().await;
    serve(&env, fixture_rooms(), groups()).await;
    env.sync().await;
    assert_eq!(
        env.scalar("SELECT COUNT(*) FROM room_groups WHERE removed_at IS NULL")
            .await,
        6
    );

    // "Empty wing" is gone upstream, "Floor 2" is renamed, a new top-level group appears.
    let smaller = json!({"result": [
        group(1, "Campus 1", 0), group(7, "Building 7", 1), group(71, "Floor 1", 7),
        group(72, "Level 2", 7), group(8, "Building 8", 1), group(2, "Campus 2", 0)
    ]});
    serve(&env, fixture_rooms(), smaller).await;
    env.sync().await;
    assert_eq!(
        env.rows("SELECT group_id FROM room_groups WHERE removed_at IS NOT NULL")
            .await,
        vec!["99"]
    );
    assert_eq!(
        env.rows("SELECT group_name FROM room_groups WHERE group_id = 72")
            .await,
        vec!["Level 2"]
    );
    assert_eq!(
        env.rows("SELECT path FROM room_group_tree WHERE group_id = 2")
            .await,
        vec!["Campus 2"]
    );

    // It comes back.
    serve(&env, fixture_rooms(), groups()).await;
    env.sync().await;
    assert_eq!(
        env.scalar("SELECT COUNT(*) FROM room_groups WHERE removed_at IS NOT NULL")
            .await,
        1
    );
    assert_eq!(
        env.rows("SELECT group_id FROM room_groups WHERE removed_at IS NOT NULL")
            .await,
        vec!["2"]
    );

    // A group list that fails fails the run and changes nothing.
    let before = env.data_snapshot().await;
    env.server.reset().await;
    env.mount_token_only().await;
    Mock::given(method("GET"))
        .and(path(GROUPS_PATH))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"code": "system.error"})))
        .expect(3)
        .mount(&env.server)
        .await;
    let report = env.sync().await;
    assert_eq!(report.status.as_str(), "failed");
    assert_eq!(
        env.errors_of(report.run_id).await,
        vec![
            "fetch|-|503|system.error|1",
            "fetch|-|503|system.error|1",
            "fetch|-|503|system.error|0"
        ]
    );
    assert_eq!(env.data_snapshot().await, before);
}

#[tokio::test]
async fn old_changes_are_pruned_after_keep_changes_days() {
    for (days, expected_old) in [(90, 0), (0, 3)] {
        let env = TestEnv::with("", &format!("[sync]\nkeep_changes_days = {days}")).await;
        serve(&env, fixture_rooms(), groups()).await;
        env.sync().await;
        // The first three entries (the oldest ids) date from long ago.
        write_sql(
            &env.db,
            "UPDATE room_changes SET changed_at = '2000-01-01T00:00:00Z' WHERE change_id <= 3",
        )
        .await;
        // Pruning happens in the apply of every run, whether it changes something or not.
        env.sync().await;
        let old = env
            .scalar("SELECT COUNT(*) FROM room_changes WHERE changed_at < '2001'")
            .await;
        assert_eq!(old, expected_old, "keep {days} days");
        let kept = env
            .scalar("SELECT COUNT(*) FROM room_changes WHERE change_id > 3")
            .await;
        assert_eq!(kept, 3, "younger entries stay");
    }
}

#[tokio::test]
async fn a_read_only_reader_sees_one_complete_state_while_syncs_apply() {
    use roomsync::standin::{settings_for, OrgSpec, StandIn, StandInConfig};
    // Every room changes its name in every revision: a mixed state would show two revisions.
    let org = OrgSpec {
        change_every: 1,
        ..OrgSpec::new(9, 3_000)
    };
    let standin = StandIn::start(StandInConfig::new(org)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rooms.db");
    let settings = settings_for(&standin, db.clone());
    let sync = || async {
        let options = roomsync::sync::SyncOptions {
            trigger: roomsync::store::runs::Trigger::Manual,
            allow_mass_removal: false,
        };
        let report = roomsync::sync::run_once(&settings, options, Default::default())
            .await
            .unwrap();
        assert_eq!(report.status.as_str(), "succeeded", "{report}");
    };
    sync().await;

    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn({
        let (db, stop) = (db.clone(), stop.clone());
        async move {
            let mut conn = SqliteConnectOptions::new()
                .filename(&db)
                .read_only(true)
                .connect()
                .await
                .unwrap();
            let mut revisions_seen = std::collections::BTreeSet::new();
            let mut reads = 0;
            while !stop.load(Ordering::SeqCst) {
                let mut tx = conn.begin().await.unwrap();
                let tags: Vec<String> = sqlx::query_scalar(
                    "SELECT DISTINCT CASE WHEN instr(room_name, ' (rev ') > 0
                            THEN substr(room_name, instr(room_name, ' (rev ')) ELSE '' END FROM rooms",
                )
                .fetch_all(&mut *tx)
                .await
                .unwrap();
                assert_eq!(tags.len(), 1, "a reader saw a mix of states: {tags:?}");
                // The feed and the run record agree with the data in the same snapshot.
                let (updated, fed): (i64, i64) = sqlx::query_as(
                    "SELECT rooms_updated, (SELECT COUNT(*) FROM room_changes c WHERE c.run_id = s.run_id AND change = 'updated')
                     FROM sync_runs s WHERE status = 'succeeded' ORDER BY run_id DESC LIMIT 1",
                )
                .fetch_one(&mut *tx)
                .await
                .unwrap();
                assert_eq!(updated, fed);
                tx.commit().await.unwrap();
                revisions_seen.insert(tags[0].clone());
                reads += 1;
            }
            (reads, revisions_seen.len())
        }
    });
    for revision in 1..=4 {
        standin.set_org(OrgSpec { revision, ..org });
        sync().await;
    }
    stop.store(true, Ordering::SeqCst);
    let (reads, revisions) = reader.await.unwrap();
    assert!(reads > 10, "the reader read {reads} times");
    assert!(
        revisions >= 2,
        "the reader saw {revisions} states; it should have seen the syncs land"
    );

    // A read transaction keeps its snapshot while a sync commits.
    let mut conn = SqliteConnectOptions::new()
        .filename(&db)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let mut tx = conn.begin().await.unwrap();
    let before: String =
        sqlx::query_scalar("SELECT room_name FROM rooms WHERE room_id = 'room-000000'")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    standin.set_org(OrgSpec { revision: 5, ..org });
    sync().await;
    let during: String =
        sqlx::query_scalar("SELECT room_name FROM rooms WHERE room_id = 'room-000000'")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(before, during);
    tx.commit().await.unwrap();
    let after: String =
        sqlx::query_scalar("SELECT room_name FROM rooms WHERE room_id = 'room-000000'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(after.ends_with("(rev 5)"), "{after}");
}
