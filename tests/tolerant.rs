//! What DingTalk's own SDK accepts: unusable parts of a record are left out with a warning and
//! the run goes on; label names stick; warnings are recorded with the apply.

mod common;

use common::*;
use serde_json::{json, Value};
use wiremock::ResponseTemplate;

/// One page of `rooms`, served for page size 10.
async fn serve(env: &TestEnv, rooms: Vec<Value>, groups: Value) {
    env.server.reset().await;
    env.mount_token_only().await;
    env.mount_groups(groups).await;
    env.mount_listing(&[rooms], None).await;
}

async fn tolerant_env() -> TestEnv {
    TestEnv::with("page_size = 10", "").await
}

/// `sync_errors` rows of a run as `severity|stage|page|error_code|message`.
async fn warnings_of(env: &TestEnv, run_id: i64) -> Vec<String> {
    env.rows(&format!(
        "SELECT severity || '|' || stage || '|' || IFNULL(page, '-') || '|' || error_code || '|' || message
         FROM sync_errors WHERE run_id = {run_id} ORDER BY error_id"
    ))
    .await
}

fn with(mut record: Value, key: &str, value: Value) -> Value {
    record[key] = value;
    record
}

#[tokio::test]
async fn unusable_groups_labels_and_records_are_left_out_and_the_run_goes_on() {
    let env = tolerant_env().await;
    let base = room("base", "Base", &[1], Some(1));
    let rooms = vec![
        base.clone(),
        with(room("g-empty", "E", &[], None), "roomGroup", json!({})),
        with(room("g-null", "N", &[], None), "roomGroup", Value::Null),
        with(
            room("g-nulls", "NN", &[], None),
            "roomGroup",
            json!({"groupId": null, "groupName": null, "parentId": null}),
        ),
        with(
            room("g-noid", "NoId", &[], None),
            "roomGroup",
            json!({"groupName": "Lost", "parentId": 0}),
        ),
        with(
            room("l-noid", "L", &[], None),
            "roomLabels",
            json!([{"labelId": 2, "labelName": "Phone"}, {"labelName": "no id"}]),
        ),
        with(
            room("l-null", "LN", &[], None),
            "roomLabels",
            json!([null, {"labelId": 3, "labelName": "Projector"}, null]),
        ),
        Value::Null,
    ];
    serve(
        &env,
        rooms,
        json!({"result": [
            {"groupId": 1, "groupName": "Group 1", "parentId": 0},
            {"groupName": "Listed without id", "parentId": 1},
            null,
        ]}),
    )
    .await;
    let out = sync_now(&env, &[("RUST_LOG", "off")]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("removed 0, 5 warnings in "), "{stdout}");

    assert_eq!(
        env.rows("SELECT room_id || '|' || IFNULL(group_id, 'NULL') || '|' || label_ids FROM active_rooms ORDER BY room_id")
            .await,
        vec![
            "base|1|[1]",
            "g-empty|NULL|[]",
            "g-noid|NULL|[]",
            "g-null|NULL|[]",
            "g-nulls|NULL|[]",
            "l-noid|NULL|[2]",
            "l-null|NULL|[3]",
        ]
    );
    assert_eq!(
        env.rows("SELECT group_id FROM room_groups").await,
        vec!["1"]
    );
    assert_eq!(
        warnings_of(&env, 1).await,
        vec![
            "warning|validate|-|record.part_skipped|groupLists result[1]: group without groupId left out",
            "warning|validate|-|record.part_skipped|groupLists result[2]: null group record left out",
            "warning|validate|0|record.part_skipped|result[4].roomGroup: group without groupId left out (roomId \"g-noid\")",
            "warning|validate|0|record.part_skipped|result[5].roomLabels[1]: label without labelId left out (roomId \"l-noid\")",
            "warning|validate|0|record.part_skipped|result[7]: null room record left out",
        ]
    );
    assert_eq!(
        env.rows("SELECT status || '|' || warnings FROM sync_runs")
            .await,
        vec!["succeeded|5"]
    );
    let status = roomsync(&["status", "--config", env.config.to_str().unwrap()], &[]);
    let status = text(&status.stdout);
    assert!(status.contains("warnings"), "{status}");
    let run_line = status
        .lines()
        .find(|l| l.trim_start().starts_with("1  "))
        .unwrap();
    assert!(run_line.split_whitespace().any(|w| w == "5"), "{status}");

    // The same listing again: the data tables are not written, the warnings recorded again.
    let before = env.data_snapshot().await;
    log_writes(&env).await;
    let report = env.sync().await;
    assert_eq!(report.status.as_str(), "succeeded", "{report}");
    assert_eq!(report.warnings, 5);
    assert!(report.to_string().contains(", 5 warnings in "), "{report}");
    assert_eq!(
        env.rows("SELECT tbl FROM write_log").await,
        Vec::<String>::new()
    );
    assert_eq!(env.data_snapshot().await, before);
    assert_eq!(warnings_of(&env, report.run_id).await.len(), 5);

    // A listing that differs only in what is left out or ignored (an empty group object for a
    // null one and back, no null label items, an unknown key) is the same data: no write.
    let same_data = vec![
        with(base, "someNewKey", json!({"nested": [1, 2]})),
        with(room("g-empty", "E", &[], None), "roomGroup", Value::Null),
        with(room("g-null", "N", &[], None), "roomGroup", json!({})),
        with(
            room("g-nulls", "NN", &[], None),
            "roomGroup",
            json!({"groupId": null}),
        ),
        with(
            room("g-noid", "NoId", &[], None),
            "roomGroup",
            json!({"groupName": "Lost elsewhere"}),
        ),
        with(
            room("l-noid", "L", &[], None),
            "roomLabels",
            json!([{"labelName": "another without id"}, {"labelId": 2, "labelName": "Phone"}]),
        ),
        with(
            room("l-null", "LN", &[], None),
            "roomLabels",
            json!([{"labelId": 3, "labelName": "Projector"}]),
        ),
    ];
    serve(
        &env,
        same_data,
        json!({"result": [{"groupId": 1, "groupName": "Group 1", "parentId": 0}]}),
    )
    .await;
    let report = env.sync().await;
    assert_eq!(report.status.as_str(), "succeeded", "{report}");
    assert_eq!(
        env.rows("SELECT tbl FROM write_log").await,
        Vec::<String>::new(),
        "{report}"
    );
    assert_eq!(env.data_snapshot().await, before);
}

#[tokio::test]
async fn one_warning_says_so_in_the_singular_and_none_says_nothing() {
    let env = tolerant_env().await;
    serve(
        &env,
        vec![room("a", "A", &[1], None)],
        json!({"result": []}),
    )
    .await;
    let report = env.sync().await;
    assert!(!report.to_string().contains("warning"), "{report}");
    serve(
        &env,
        vec![with(
            room("a", "A", &[1], None),
            "roomGroup",
            json!({"groupName": "x"}),
        )],
        json!({"result": []}),
    )
    .await;
    let report = env.sync().await;
    assert!(
        report.to_string().contains("removed 0, 1 warning in "),
        "{report}"
    );
}

#[tokio::test]
async fn a_run_that_fails_records_its_errors_only_and_no_warning() {
    let env = TestEnv::new().await;
    env.mount_token(None).await;
    let odd = with(
        room("a", "A", &[], None),
        "roomGroup",
        json!({"groupName": "x"}),
    );
    page_request(0)
        .respond_with(page(&[odd], Some(101)))
        .mount(&env.server)
        .await;
    page_request(1)
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"code": "param.error"})))
        .mount(&env.server)
        .await;
    let report = env.sync().await;
    assert_eq!(report.status.as_str(), "failed");
    assert_eq!(report.warnings, 0);
    assert_eq!(
        warnings_of(&env, report.run_id).await,
        vec!["error|fetch|1|param.error|Bad Request"]
    );
    assert_eq!(env.scalar("SELECT warnings FROM sync_runs").await, 0);
}

#[tokio::test]
async fn a_flood_of_warnings_keeps_100_rows_and_the_exact_count() {
    let env = TestEnv::with("page_size = 100", "").await;
    let odd = |i: usize| {
        with(
            room(&format!("r{i:03}"), "R", &[], None),
            "roomLabels",
            json!([{"labelName": "a"}, {"labelName": "b"}]),
        )
    };
    let pages: Vec<Vec<Value>> = (0..2)
        .map(|p| (0..80).map(|i| odd(p * 80 + i)).collect())
        .collect();
    env.reset_upstream(&pages).await;
    let report = env.sync().await;
    assert_eq!(report.status.as_str(), "succeeded", "{report}");
    assert_eq!(report.warnings, 320);
    assert_eq!(env.scalar("SELECT warnings FROM sync_runs").await, 320);
    assert_eq!(env.scalar("SELECT COUNT(*) FROM sync_errors").await, 100);
    assert_eq!(env.scalar("SELECT COUNT(*) FROM active_rooms").await, 160);
}

/// `label_id|label_name` of every label.
async fn labels(env: &TestEnv) -> Vec<String> {
    env.rows("SELECT label_id || '|' || IFNULL(label_name, 'NULL') FROM labels ORDER BY label_id")
        .await
}

fn labelled(id: &str, labels: Value) -> Value {
    with(room(id, id, &[], None), "roomLabels", labels)
}

#[tokio::test]
async fn label_names_stick_within_a_listing_and_across_runs() {
    let env = tolerant_env().await;
    // Named then nameless, nameless then named, nameless only.
    serve(
        &env,
        vec![
            labelled("a", json!([{"labelId": 2, "labelName": "Phone"}, {"labelId": 7}])),
            labelled("b", json!([{"labelId": 2}, {"labelId": 7, "labelName": "Seven"}, {"labelId": 9, "labelName": ""}])),
            labelled("c", json!([{"labelId": 2, "labelName": null}, {"labelId": 9}])),
        ],
        json!({"result": []}),
    )
    .await;
    assert_eq!(env.sync().await.status.as_str(), "succeeded");
    assert_eq!(labels(&env).await, vec!["2|Phone", "7|Seven", "9|NULL"]);

    // Later runs that mention them without names keep the stored names.
    serve(
        &env,
        vec![labelled(
            "a",
            json!([{"labelId": 2}, {"labelId": 7, "labelName": ""}, {"labelId": 9}]),
        )],
        json!({"result": []}),
    )
    .await;
    env.sync_with(true).await;
    assert_eq!(labels(&env).await, vec!["2|Phone", "7|Seven", "9|NULL"]);

    // Renamed: the last name given wins, also over an earlier one in the same listing.
    serve(
        &env,
        vec![
            labelled("a", json!([{"labelId": 2, "labelName": "Telephone"}, {"labelId": 9, "labelName": "Nine"}])),
            labelled("b", json!([{"labelId": 2, "labelName": "Phone line"}, {"labelId": 9}])),
        ],
        json!({"result": []}),
    )
    .await;
    env.sync().await;
    assert_eq!(
        labels(&env).await,
        vec!["2|Phone line", "7|Seven", "9|Nine"]
    );
}
