//! Resyncs: changes, removals, reappearance, the no-op resync and the mass-removal guard.

mod common;

use common::*;

async fn backdate_all_rooms(env: &TestEnv) {
    write_sql(
        &env.db,
        "UPDATE rooms SET updated_at = '2000-01-01T00:00:00Z'",
    )
    .await;
}

#[tokio::test]
async fn resync_without_upstream_change_writes_no_row() {
    let env = TestEnv::new().await;
    let pages = vec![
        vec![
            room("a", "A", &[1, 2], Some(1)),
            room("b", "B", &[3], Some(2)),
        ],
        vec![room("c", "C", &[], None)],
    ];
    env.reset_upstream(&pages).await;
    assert_eq!(env.sync().await.status.as_str(), "succeeded");
    let before = env.data_snapshot().await;
    log_writes(&env).await;

    let report = env.sync().await;
    assert_eq!(report.status.as_str(), "succeeded", "{report}");
    let c = report.counts.unwrap();
    assert_eq!((c.seen, c.added, c.updated, c.removed), (3, 0, 0, 0));
    assert_eq!(
        env.rows("SELECT tbl || ' ' || op FROM write_log").await,
        Vec::<String>::new()
    );
    assert_eq!(env.data_snapshot().await, before);
}

#[tokio::test]
async fn resync_applies_renames_labels_groups_removals_and_reappearance() {
    let env = TestEnv::new().await;
    env.reset_upstream(&[
        vec![
            room("a", "A", &[1], Some(1)),
            room("b", "B", &[1, 2], Some(1)),
        ],
        vec![room("c", "C", &[], Some(1)), room("d", "D", &[4], Some(2))],
        vec![room("e", "E", &[5], None), room("f", "F", &[], None)],
    ])
    .await;
    env.sync().await;

    // Second listing: a renamed, b loses label 2 and gains 3, c moves group, d gone, e gone,
    // f unchanged, g new.
    env.reset_upstream(&[
        vec![
            room("a", "A renamed", &[1], Some(1)),
            room("b", "B", &[1, 3], Some(1)),
        ],
        vec![room("c", "C", &[], Some(2)), room("f", "F", &[], None)],
        vec![room("g", "G", &[2], Some(3))],
    ])
    .await;
    backdate_all_rooms(&env).await;
    let report = env.sync().await;
    let c = report.counts.unwrap();
    assert_eq!(
        (c.seen, c.added, c.updated, c.removed),
        (5, 1, 3, 2),
        "{report}"
    );
    assert_eq!(
        env.rows("SELECT room_id FROM rooms WHERE updated_at > '2000-01-01T00:00:00Z' ORDER BY 1")
            .await,
        vec!["a", "b", "c", "g"]
    );
    assert_eq!(
        env.rows("SELECT room_id FROM rooms WHERE removed_at IS NOT NULL ORDER BY 1")
            .await,
        vec!["d", "e"]
    );
    assert_eq!(
        env.rows("SELECT room_name FROM rooms WHERE room_id = 'a'")
            .await,
        vec!["A renamed"]
    );
    assert_eq!(
        env.rows("SELECT room_id || ':' || label_id FROM room_labels ORDER BY 1")
            .await,
        // d and e keep their last known labels.
        vec!["a:1", "b:1", "b:3", "d:4", "e:5", "g:2"]
    );
    assert_eq!(
        env.rows("SELECT group_id FROM rooms WHERE room_id = 'c'")
            .await,
        vec!["2"]
    );
    assert_eq!(
        env.rows("SELECT group_id || ':' || group_name FROM room_groups ORDER BY 1")
            .await,
        vec!["1:Group 1", "2:Group 2", "3:Group 3"]
    );

    // Third listing: d comes back with a new label; everything else as before.
    env.reset_upstream(&[
        vec![
            room("a", "A renamed", &[1], Some(1)),
            room("b", "B", &[1, 3], Some(1)),
        ],
        vec![room("c", "C", &[], Some(2)), room("f", "F", &[], None)],
        vec![room("g", "G", &[2], Some(3)), room("d", "D", &[2], Some(2))],
    ])
    .await;
    let first_seen_d = env
        .rows("SELECT first_seen_at FROM rooms WHERE room_id = 'd'")
        .await;
    backdate_all_rooms(&env).await;
    let report = env.sync().await;
    let c = report.counts.unwrap();
    assert_eq!(
        (c.seen, c.added, c.updated, c.removed),
        (6, 1, 0, 0),
        "{report}"
    );
    assert_eq!(
        env.rows("SELECT room_id FROM rooms WHERE removed_at IS NOT NULL")
            .await,
        vec!["e"]
    );
    assert_eq!(
        env.rows("SELECT first_seen_at FROM rooms WHERE room_id = 'd'")
            .await,
        first_seen_d
    );
    assert_eq!(
        env.rows("SELECT room_id FROM rooms WHERE updated_at > '2000-01-01T00:00:00Z'")
            .await,
        vec!["d"]
    );
    assert_eq!(
        env.rows("SELECT label_id FROM room_labels WHERE room_id = 'd'")
            .await,
        vec!["2"]
    );
}

#[tokio::test]
async fn a_label_rename_updates_the_label_not_the_rooms() {
    let env = TestEnv::new().await;
    env.reset_upstream(&[vec![room("a", "A", &[7], None), room("b", "B", &[7], None)]])
        .await;
    env.sync().await;
    let mut renamed = room("a", "A", &[], None);
    renamed["roomLabels"] = serde_json::json!([{"labelId": 7, "labelName": "Ceiling mic"}]);
    let mut renamed_b = renamed.clone();
    renamed_b["roomId"] = "b".into();
    renamed_b["roomName"] = "B".into();
    env.reset_upstream(&[vec![renamed, renamed_b]]).await;
    let report = env.sync().await;
    assert_eq!(report.counts.unwrap().updated, 0);
    assert_eq!(
        env.rows("SELECT label_name FROM labels WHERE label_id = 7")
            .await,
        vec!["Ceiling mic"]
    );
}

#[tokio::test]
async fn mass_removal_is_refused_unless_allowed_for_one_run() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(12)).await;
    env.sync().await;
    let before = env.data_snapshot().await;

    // 12 active, 6 would remain: removing 6 > max(5, 0.5 x 12 = 6)? No: 6 is allowed.
    // 5 remain: removing 7 is more than 6.
    env.reset_upstream(&rooms_in_pages(5)).await;
    let report = env.sync().await;
    assert_eq!(report.status.as_str(), "failed");
    assert!(
        report.error.as_deref().unwrap().contains("removal.guard"),
        "{report}"
    );
    assert!(
        report
            .error
            .as_deref()
            .unwrap()
            .contains("--allow-mass-removal"),
        "{report}"
    );
    assert_eq!(env.data_snapshot().await, before);
    assert_eq!(
        env.errors_of(report.run_id).await,
        vec!["store|-|-|removal.guard|0"]
    );
    assert_eq!(
        env.rows(&format!(
            "SELECT status || ':' || IFNULL(rooms_removed, '-') FROM sync_runs WHERE run_id = {}",
            report.run_id
        ))
        .await,
        vec!["failed:-"]
    );

    let report = env.sync_with(true).await;
    assert_eq!(report.status.as_str(), "succeeded", "{report}");
    assert_eq!(report.counts.unwrap().removed, 7);
    assert_eq!(
        env.scalar("SELECT COUNT(*) FROM rooms WHERE removed_at IS NULL")
            .await,
        5
    );
}

#[tokio::test]
async fn removals_within_the_limit_go_through() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(12)).await;
    env.sync().await;
    env.reset_upstream(&rooms_in_pages(6)).await; // removes exactly 6 = 0.5 x 12
    let report = env.sync().await;
    assert_eq!(report.status.as_str(), "succeeded", "{report}");
    assert_eq!(report.counts.unwrap().removed, 6);

    // A small organisation may always lose up to five rooms.
    env.reset_upstream(&rooms_in_pages(1)).await;
    let report = env.sync().await;
    assert_eq!(report.status.as_str(), "succeeded", "{report}");
    assert_eq!(report.counts.unwrap().removed, 5);
}

#[tokio::test]
async fn an_empty_listing_does_not_wipe_the_mirror() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(20)).await;
    env.sync().await;
    env.reset_upstream(&[vec![]]).await;
    let report = env.sync().await;
    assert_eq!(report.status.as_str(), "failed");
    assert_eq!(
        env.scalar("SELECT COUNT(*) FROM rooms WHERE removed_at IS NULL")
            .await,
        20
    );
}

#[tokio::test]
async fn a_later_unchanged_record_cancels_an_earlier_changed_one() {
    let env = TestEnv::new().await;
    env.reset_upstream(&[vec![
        room("a", "A", &[1], Some(1)),
        room("b", "B", &[2], None),
    ]])
    .await;
    env.sync().await;
    let rows = |table: &'static str| {
        let env = &env;
        async move {
            let pool = env.pool().await;
            table_rows(&pool, table).await
        }
    };
    let before = (
        rows("rooms").await,
        rows("room_labels").await,
        rows("room_changes").await,
    );
    // Page 0 brings a renamed "a" (staged), page 1 "a" as it is in the mirror: the later wins.
    env.reset_upstream(&[
        vec![
            room("a", "A renamed", &[1, 3], Some(1)),
            room("b", "B", &[2], None),
        ],
        vec![room("a", "A", &[1], Some(1))],
    ])
    .await;
    let report = env.sync().await;
    let c = report.counts.unwrap();
    assert_eq!(
        (c.seen, c.added, c.updated, c.removed),
        (2, 0, 0, 0),
        "{report}"
    );
    let after = (
        rows("rooms").await,
        rows("room_labels").await,
        rows("room_changes").await,
    );
    assert_eq!(
        after, before,
        "the room, its labels and the change feed are as they were"
    );
    // The label the earlier record named was still in the listing: it is known from now on.
    assert_eq!(
        env.rows("SELECT label_name FROM labels WHERE label_id = 3")
            .await,
        vec!["Projector"]
    );
}

#[tokio::test]
async fn an_unchanged_record_then_a_changed_one_counts_the_room_once() {
    let env = TestEnv::new().await;
    env.reset_upstream(&[vec![room("a", "A", &[1], None), room("b", "B", &[], None)]])
        .await;
    env.sync().await;
    env.reset_upstream(&[
        vec![room("a", "A", &[1], None), room("b", "B", &[], None)],
        vec![room("a", "A later", &[1], None)],
    ])
    .await;
    let report = env.sync().await;
    let c = report.counts.unwrap();
    assert_eq!(
        (c.seen, c.added, c.updated, c.removed),
        (2, 0, 1, 0),
        "{report}"
    );
    assert_eq!(
        env.rows("SELECT room_name FROM rooms WHERE room_id = 'a'")
            .await,
        vec!["A later"]
    );
}

#[tokio::test]
async fn rooms_without_fingerprints_are_compared_by_value_and_get_one() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(8)).await;
    env.sync().await;
    // As if synced by a version that kept no fingerprints.
    write_sql(&env.db, "DELETE FROM roomsync_room_fingerprints").await;
    log_writes(&env).await;
    env.reset_upstream(&rooms_in_pages(6)).await; // r006 and r007 are gone
    let report = env.sync().await;
    let c = report.counts.unwrap();
    assert_eq!(
        (c.seen, c.added, c.updated, c.removed),
        (6, 0, 0, 2),
        "{report}"
    );
    assert_eq!(
        env.scalar("SELECT COUNT(*) FROM roomsync_room_fingerprints")
            .await,
        6
    );
    assert_eq!(
        env.rows("SELECT DISTINCT tbl || ' ' || op FROM write_log")
            .await,
        vec!["rooms UPDATE"],
        "only the two removals were written"
    );
    assert_eq!(env.scalar("SELECT COUNT(*) FROM write_log").await, 2);
}

/// More rooms than the processor stages in one batch (1,000): when they are new or changed,
/// records placed before and after them meet in different batches, the earlier one staged.
fn fillers(name: &str) -> Vec<serde_json::Value> {
    (0..1100)
        .map(|i| room(&format!("filler-{i:04}"), name, &[2], Some(1)))
        .collect()
}

/// Pages of at most 100 rooms, in the order of `parts`.
fn pages_of_100(parts: Vec<Vec<serde_json::Value>>) -> Vec<Vec<serde_json::Value>> {
    parts
        .iter()
        .flat_map(|part| part.chunks(100).map(<[_]>::to_vec))
        .collect()
}

#[tokio::test]
async fn records_a_staging_batch_apart_keep_the_later_one() {
    let env = TestEnv::with("page_size = 100", "").await;
    let a = room("a", "A", &[1], Some(1));
    env.reset_upstream(&pages_of_100(vec![vec![a.clone()], fillers("Filler")]))
        .await;
    env.sync().await;
    let feed_before = env
        .scalar("SELECT COUNT(*) FROM room_changes WHERE room_id = 'a'")
        .await;

    // A changed record of "a" is staged a batch before its unchanged one: "a" stays as it was.
    env.reset_upstream(&pages_of_100(vec![
        vec![room("a", "A renamed", &[1, 3], Some(1))],
        fillers("Filler, renamed"),
        vec![a.clone()],
    ]))
    .await;
    let c = env.sync().await.counts.unwrap();
    assert_eq!((c.seen, c.added, c.updated, c.removed), (1101, 0, 1100, 0));
    assert_eq!(
        env.rows("SELECT room_name FROM rooms WHERE room_id = 'a'")
            .await,
        vec!["A"]
    );
    assert_eq!(
        env.rows("SELECT label_id FROM room_labels WHERE room_id = 'a'")
            .await,
        vec!["1"]
    );
    assert_eq!(
        env.scalar("SELECT COUNT(*) FROM room_changes WHERE room_id = 'a'")
            .await,
        feed_before
    );

    // Two changed records a batch apart: the later one, labels included, is what is stored.
    env.reset_upstream(&pages_of_100(vec![
        vec![room("a", "First", &[1, 3], Some(1))],
        fillers("Filler"),
        vec![room("a", "Second", &[4], Some(1))],
    ]))
    .await;
    let c = env.sync().await.counts.unwrap();
    assert_eq!((c.seen, c.added, c.updated, c.removed), (1101, 0, 1101, 0));
    assert_eq!(
        env.rows("SELECT room_name FROM rooms WHERE room_id = 'a'")
            .await,
        vec!["Second"]
    );
    assert_eq!(
        env.rows("SELECT label_id FROM room_labels WHERE room_id = 'a'")
            .await,
        vec!["4"]
    );
    assert_eq!(
        env.rows(
            "SELECT changed_fields FROM room_changes WHERE room_id = 'a' AND change = 'updated'"
        )
        .await,
        vec![r#"["room_name","labels"]"#]
    );
}

#[tokio::test]
async fn fingerprints_are_kept_for_active_rooms_only_and_a_stale_one_misleads_nothing() {
    let env = TestEnv::new().await;
    let (a, b) = (room("a", "A", &[1], Some(1)), room("b", "B", &[2], None));
    env.reset_upstream(&[vec![a.clone(), b.clone()]]).await;
    env.sync().await;
    let b_fingerprint = env
        .scalar("SELECT fingerprint FROM roomsync_room_fingerprints WHERE room_id = 'b'")
        .await;

    env.reset_upstream(&[vec![a.clone()]]).await;
    assert_eq!(env.sync().await.counts.unwrap().removed, 1);
    assert_eq!(
        env.rows("SELECT room_id FROM roomsync_room_fingerprints")
            .await,
        vec!["a"],
        "a removed room's fingerprint goes with it"
    );

    // A mirror edited by hand keeps the removed room's fingerprint: the room, back unchanged,
    // is still restored rather than taken for an unchanged active room.
    write_sql(
        &env.db,
        &format!("INSERT INTO roomsync_room_fingerprints VALUES ('b', {b_fingerprint})"),
    )
    .await;
    env.reset_upstream(&[vec![a.clone(), b.clone()]]).await;
    let c = env.sync().await.counts.unwrap();
    assert_eq!((c.seen, c.added, c.updated, c.removed), (2, 1, 0, 0));
    assert_eq!(
        env.rows("SELECT change FROM room_changes WHERE room_id = 'b' ORDER BY change_id")
            .await,
        vec!["added", "removed", "restored"]
    );
    assert_eq!(
        env.scalar("SELECT COUNT(*) FROM rooms WHERE removed_at IS NULL")
            .await,
        2
    );

    // Restored without any hand edit: the fingerprint comes back with the room.
    env.reset_upstream(&[vec![a.clone()]]).await;
    env.sync().await;
    env.reset_upstream(&[vec![a, b]]).await;
    assert_eq!(env.sync().await.counts.unwrap().added, 1);
    assert_eq!(
        env.rows("SELECT room_id FROM roomsync_room_fingerprints ORDER BY 1")
            .await,
        vec!["a", "b"]
    );
}
