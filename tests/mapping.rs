//! The reference's example response, mapped field by field, and pagination.

mod common;

use common::*;
use serde_json::json;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

/// The response body example of `meetingRoomLists.txt`, verbatim.
const REFERENCE_EXAMPLE: &str = r#"{
  "hasMore" : true,
  "nextToken" : 123,
  "result" : [ {
    "roomId" : "0ffb7xxxxx",
    "roomStaffId" : "012241xxxxx",
    "corpId" : "ding994axxxx",
    "roomName" : "Test room",
    "roomStatus" : 0,
    "roomLabels" : [ {
      "labelId" : 1,
      "labelName" : "TV"
    } ],
    "roomCapacity" : 10,
    "roomLocation" : {
      "title" : "xxx Company",
      "desc" : "No. xx, xx Street, xx District, xx City"
    },
    "roomPicture" : "https://static.dingtalk.io/media/lADPxxxxx.jpg",
    "isvRoomId" : "xxxIsvRoomId",
    "roomGroup" : {
      "groupId" : 1,
      "groupName" : "Test group",
      "parentId" : 0
    }
  } ]
}"#;

#[tokio::test]
async fn reference_example_is_mapped_field_by_field() {
    let env = TestEnv::new().await;
    env.mount_token(Some(1)).await;
    page_request(0)
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(REFERENCE_EXAMPLE, "application/json"),
        )
        .expect(1)
        .mount(&env.server)
        .await;
    Mock::given(method("GET"))
        .and(path(ROOMS_PATH))
        .and(query_param("nextToken", "123"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"hasMore": false, "result": []})),
        )
        .expect(1)
        .mount(&env.server)
        .await;

    let report = env.sync().await;
    assert_eq!(report.status.as_str(), "succeeded", "{report}");
    let pool = env.pool().await;
    let row = sqlx::query_as::<_, (String, String, String, String, i64, i64, String, String, String, String, i64)>(
        "SELECT room_id, corp_id, room_staff_id, room_name, room_status, room_capacity, location_title,
                location_desc, room_picture, isv_room_id, group_id FROM rooms",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            "0ffb7xxxxx".into(),
            "ding994axxxx".into(),
            "012241xxxxx".into(),
            "Test room".into(),
            0,
            10,
            "xxx Company".into(),
            "No. xx, xx Street, xx District, xx City".into(),
            "https://static.dingtalk.io/media/lADPxxxxx.jpg".into(),
            "xxxIsvRoomId".into(),
            1
        )
    );
    let (first_seen, updated, removed): (String, String, Option<String>) =
        sqlx::query_as("SELECT first_seen_at, updated_at, removed_at FROM rooms")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(first_seen, updated);
    assert!(
        humantime::parse_rfc3339(&first_seen).is_ok()
            && first_seen.ends_with('Z')
            && first_seen.len() == 20,
        "{first_seen}"
    );
    assert_eq!(removed, None);
    assert_eq!(table_rows(&pool, "labels").await, vec!["1|'TV'"]);
    assert_eq!(
        table_rows(&pool, "room_labels").await,
        vec!["'0ffb7xxxxx'|1"]
    );
    assert_eq!(
        table_rows(&pool, "room_groups").await,
        vec!["1|'Test group'|0|NULL"]
    );
    let run: (String, String, i64, i64, i64, i64, i64, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT trigger, status, pages_fetched, rooms_seen, rooms_added, rooms_updated, rooms_removed, error, finished_at
         FROM sync_runs WHERE run_id = ?",
    )
    .bind(report.run_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (
            run.0.as_str(),
            run.1.as_str(),
            run.2,
            run.3,
            run.4,
            run.5,
            run.6
        ),
        ("manual", "succeeded", 2, 1, 1, 0, 0)
    );
    assert_eq!(run.7, None);
    assert!(run.8.is_some());
    assert_eq!(env.scalar("SELECT COUNT(*) FROM sync_errors").await, 0);
    // WAL mode, so readers never wait for a sync; it persists in the file.
    assert_eq!(env.rows("PRAGMA journal_mode").await, vec!["wal"]);
    let header = std::fs::read(&env.db).unwrap();
    assert_eq!((header[18], header[19]), (2, 2));
}

#[tokio::test]
async fn absent_and_null_optional_fields_are_stored_as_null() {
    let env = TestEnv::with("page_size = 3", "").await;
    env.mount_token(None).await;
    let body = json!({"hasMore": false, "nextToken": null, "result": [
        {"roomId": "bare"},
        {"roomId": "nulls", "corpId": null, "roomName": null, "roomStatus": null, "roomCapacity": null,
         "roomLabels": null, "roomLocation": null, "roomGroup": null, "roomPicture": null, "isvRoomId": null,
         "roomStaffId": null, "someFutureField": [1, 2, 3]},
        {"roomId": "half", "roomLocation": {"title": "Only title"}, "roomGroup": {"groupId": 9}}
    ]});
    page_request_of(0, 3)
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&env.server)
        .await;

    let report = env.sync().await;
    assert_eq!(report.status.as_str(), "succeeded", "{report}");
    let pool = env.pool().await;
    let rows = table_rows(&pool, "rooms").await;
    let strip_times = |r: &String| r.split('|').take(11).collect::<Vec<_>>().join("|");
    assert_eq!(
        rows.iter().map(strip_times).collect::<Vec<_>>(),
        vec![
            "'bare'|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL",
            "'half'|NULL|NULL|NULL|NULL|NULL|'Only title'|NULL|NULL|NULL|9",
            "'nulls'|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL",
        ]
    );
    assert_eq!(
        table_rows(&pool, "room_groups").await,
        vec!["9|NULL|NULL|NULL"]
    );
    assert!(table_rows(&pool, "room_labels").await.is_empty());
}

#[tokio::test]
async fn every_page_is_fetched_once_with_one_token() {
    let env = TestEnv::new().await;
    env.mount_token(Some(1)).await;
    let pages = rooms_in_pages(7); // 4 pages: 2 + 2 + 2 + 1
    env.mount_listing(&pages, Some(1)).await;

    let report = env.sync().await;
    assert_eq!(report.status.as_str(), "succeeded", "{report}");
    assert_eq!(report.pages_fetched, 4);
    let c = report.counts.unwrap();
    assert_eq!((c.seen, c.added, c.updated, c.removed), (7, 7, 0, 0));
    assert_eq!(
        env.scalar("SELECT COUNT(*) FROM rooms WHERE removed_at IS NULL")
            .await,
        7
    );
    assert_eq!(env.scalar("SELECT pages_fetched FROM sync_runs").await, 4);
    // Drop checks the .expect(1) of every mock: each page and the token exactly once.
    env.server.verify().await;
}

#[tokio::test]
async fn the_same_room_on_two_pages_keeps_the_later_record() {
    let env = TestEnv::new().await;
    env.mount_token(None).await;
    let pages = vec![
        vec![
            room("a", "First A", &[1, 2], Some(1)),
            room("b", "B", &[], None),
        ],
        vec![room("a", "Later A", &[3], Some(2))],
    ];
    env.mount_listing(&pages, Some(1)).await;

    let report = env.sync().await;
    let c = report.counts.unwrap();
    assert_eq!((c.seen, c.added), (2, 2));
    assert_eq!(
        env.rows("SELECT room_name || ':' || group_id FROM rooms WHERE room_id = 'a'")
            .await,
        vec!["Later A:2"]
    );
    assert_eq!(
        env.rows("SELECT room_id || ':' || label_id FROM room_labels ORDER BY 1")
            .await,
        vec!["a:3"]
    );
}

#[tokio::test]
async fn non_ascii_names_and_quotes_survive_the_round_trip() {
    let env = TestEnv::new().await;
    env.mount_token(None).await;
    let name = "会议室 \"Ōsaka\" — l'été 🚀";
    env.mount_listing(&[vec![room("x", name, &[42], None)]], None)
        .await;
    env.sync().await;
    assert_eq!(env.rows("SELECT room_name FROM rooms").await, vec![name]);
    assert_eq!(
        env.rows("SELECT label_name FROM labels").await,
        vec!["Custom 42"]
    );
}

#[tokio::test]
async fn a_page_with_more_label_links_than_sqlite_binds_in_one_statement() {
    // 100 rooms x 200 labels = 20,000 links: 40,000 values, more than one SQLite statement
    // may bind (32,766).
    let env = TestEnv::with("page_size = 100", "").await;
    env.mount_token(None).await;
    let labels: Vec<i64> = (1..=200).collect();
    let rooms: Vec<_> = (0..100)
        .map(|i| room(&format!("r{i:03}"), "R", &labels, None))
        .collect();
    page_request_of(0, 100)
        .respond_with(page(&rooms, None))
        .mount(&env.server)
        .await;
    let report = env.sync().await;
    assert_eq!(report.status.as_str(), "succeeded", "{report}");
    assert_eq!(env.scalar("SELECT COUNT(*) FROM room_labels").await, 20_000);
}
