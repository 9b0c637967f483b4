//! Every way a run can fail leaves the mirrored data as it was, and is recorded.

mod common;

use common::*;
use roomsync::sync::RunReport;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

fn dingtalk_error(status: u16, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("x-acs-request-id", "hdr-req-1")
        .set_body_json(
            json!({"code": code, "message": format!("{code} message"), "requestid": "req-42"}),
        )
}

#[tokio::test]
async fn non_retryable_client_errors_fail_at_once_naming_the_code() {
    for code in [
        "param.error",
        "user.not.employee",
        "org.not.found",
        "Forbidden.AccessDenied.ApiCountLimitForOrg",
    ] {
        let (env, before) = synced_env().await;
        let status = if code.starts_with("Forbidden") {
            403
        } else {
            400
        };
        env.mount_token(None).await;
        let pages = rooms_in_pages(4);
        page_request(0)
            .respond_with(page(&pages[0], Some(101)))
            .mount(&env.server)
            .await;
        page_request(1)
            .respond_with(dingtalk_error(status, code))
            .expect(1)
            .mount(&env.server)
            .await;

        let report = env.sync().await;
        assert_failed_untouched(&env, &before, &report, code).await;
        assert_eq!(
            env.errors_of(report.run_id).await,
            vec![format!("fetch|1|{status}|{code}|0")]
        );
        assert_eq!(report.pages_fetched, 1);
        assert_eq!(
            env.rows(&format!(
                "SELECT request_id || '|' || message FROM sync_errors WHERE run_id = {}",
                report.run_id
            ))
            .await,
            vec![format!("req-42|{code} message")]
        );
    }
}

#[tokio::test]
async fn server_errors_are_retried_up_to_max_attempts_then_fail() {
    let (env, before) = synced_env().await;
    env.mount_token(None).await;
    page_request(0)
        .respond_with(dingtalk_error(500, "system.error"))
        .expect(3)
        .mount(&env.server)
        .await;
    let report = env.sync().await;
    assert_failed_untouched(&env, &before, &report, "system.error").await;
    assert_eq!(
        env.errors_of(report.run_id).await,
        vec![
            "fetch|0|500|system.error|1",
            "fetch|0|500|system.error|1",
            "fetch|0|500|system.error|0"
        ]
    );
}

#[tokio::test]
async fn timeouts_are_retried_then_fail() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    env.sync().await;
    let before = env.data_snapshot().await;
    env.server.reset().await;
    env.mount_token(None).await;
    page_request(0)
        .respond_with(ResponseTemplate::new(200).set_delay(std::time::Duration::from_millis(400)))
        .expect(3)
        .mount(&env.server)
        .await;
    // A tenth of a second: below what the config file allows, to keep the test quick.
    let mut settings = env.settings();
    settings.dingtalk.timeout = std::time::Duration::from_millis(100);
    let report = env.sync_settings(settings, false).await;
    assert_failed_untouched(&env, &before, &report, "network.timeout").await;
    assert_eq!(
        env.errors_of(report.run_id).await,
        vec![
            "fetch|0|-|network.timeout|1",
            "fetch|0|-|network.timeout|1",
            "fetch|0|-|network.timeout|0"
        ]
    );
}

#[tokio::test]
async fn connection_refused_is_retried_then_fails() {
    let (env, before) = synced_env().await;
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.point_at(&format!("http://127.0.0.1:{port}"));
    let report = env.sync().await;
    assert_failed_untouched(&env, &before, &report, "network.connection").await;
    assert_eq!(env.errors_of(report.run_id).await.len(), 3);
    assert_eq!(
        env.errors_of(report.run_id).await[0],
        "auth|-|-|network.connection|1"
    );
}

#[tokio::test]
async fn a_refused_app_secret_fails_in_auth_without_retrying() {
    let (env, before) = synced_env().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(dingtalk_error(400, "invalidClientIdOrSecret"))
        .expect(1)
        .mount(&env.server)
        .await;
    let report = env.sync().await;
    assert_failed_untouched(&env, &before, &report, "invalidClientIdOrSecret").await;
    assert_eq!(
        env.errors_of(report.run_id).await,
        vec!["auth|-|400|invalidClientIdOrSecret|0"]
    );
}

#[tokio::test]
async fn a_token_response_without_a_token_fails_in_auth() {
    let (env, before) = synced_env().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"expireIn": 7200})))
        .mount(&env.server)
        .await;
    let report = env.sync().await;
    assert_failed_untouched(&env, &before, &report, "no accessToken").await;
    assert_eq!(
        env.errors_of(report.run_id).await,
        vec!["auth|-|-|response.invalid|0"]
    );
}

/// Page 0 answers `body` (hasMore/nextToken as given); nothing else is served.
async fn fail_on_body(body: serde_json::Value) -> (TestEnv, String, RunReport) {
    let (env, before) = synced_env().await;
    env.mount_token(None).await;
    page_request(0)
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(1)
        .mount(&env.server)
        .await;
    let report = env.sync().await;
    (env, before, report)
}

#[tokio::test]
async fn has_more_without_next_token_fails() {
    let (env, before, report) =
        fail_on_body(json!({"hasMore": true, "result": [room("a", "A", &[], None)]})).await;
    assert_failed_untouched(&env, &before, &report, "pagination.missing_next_token").await;
    assert_eq!(
        env.errors_of(report.run_id).await,
        vec!["validate|0|-|pagination.missing_next_token|0"]
    );
}

#[tokio::test]
async fn a_room_without_room_id_fails() {
    let (env, before, report) = fail_on_body(
        json!({"hasMore": false, "result": [room("a", "A", &[], None), {"roomName": "nameless"}]}),
    )
    .await;
    assert_failed_untouched(&env, &before, &report, "result[1]: room without roomId").await;
    assert_eq!(
        env.errors_of(report.run_id).await,
        vec!["validate|0|-|response.invalid|0"]
    );
}

#[tokio::test]
async fn a_wrong_field_type_fails_naming_the_field() {
    let mut bad = room("a", "A", &[], None);
    bad["roomCapacity"] = json!("twelve");
    let (env, before, report) = fail_on_body(json!({"hasMore": false, "result": [bad]})).await;
    assert_failed_untouched(
        &env,
        &before,
        &report,
        "result[0].roomCapacity: invalid type",
    )
    .await;

    let (env, before, report) = fail_on_body(json!({"hasMore": "yes", "result": []})).await;
    assert_failed_untouched(&env, &before, &report, "hasMore: invalid type").await;

    let (env, before, report) =
        fail_on_body(json!({"hasMore": true, "nextToken": "abc", "result": []})).await;
    assert_failed_untouched(&env, &before, &report, "nextToken: invalid type").await;

    let mut bad = room("a", "A", &[], None);
    bad["roomId"] = json!(42);
    let (env, before, report) = fail_on_body(json!({"hasMore": false, "result": [bad]})).await;
    assert_failed_untouched(&env, &before, &report, "result[0].roomId: invalid type").await;

    let mut bad = room("a", "A", &[], None);
    bad["roomId"] = json!("");
    let (env, before, report) = fail_on_body(json!({"hasMore": false, "result": [bad]})).await;
    assert_failed_untouched(&env, &before, &report, "result[0]: room without roomId").await;

    // An integer outside i64: refused, not wrapped or cut.
    let mut bad = room("a", "A", &[], None);
    bad["roomCapacity"] = json!(9_223_372_036_854_775_808u64);
    let (env, before, report) = fail_on_body(json!({"hasMore": false, "result": [bad]})).await;
    assert_failed_untouched(
        &env,
        &before,
        &report,
        "result[0].roomCapacity: invalid value",
    )
    .await;
}

#[tokio::test]
async fn malformed_json_fails_without_retrying() {
    let (env, before) = synced_env().await;
    env.mount_token(None).await;
    page_request(0)
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"hasMore": false, "result": [{"roomId": "a""#,
            "application/json",
        ))
        .expect(1)
        .mount(&env.server)
        .await;
    let report = env.sync().await;
    assert_failed_untouched(&env, &before, &report, "EOF while parsing").await;
    assert_eq!(
        env.errors_of(report.run_id).await,
        vec!["validate|0|-|response.invalid|0"]
    );
}

#[tokio::test]
async fn a_repeated_next_token_fails_instead_of_looping() {
    let (env, before) = synced_env().await;
    env.mount_token(None).await;
    let pages = rooms_in_pages(6);
    page_request(0)
        .respond_with(page(&pages[0], Some(101)))
        .expect(1)
        .mount(&env.server)
        .await;
    page_request(1)
        .respond_with(page(&pages[1], Some(101)))
        .expect(1)
        .mount(&env.server)
        .await;
    let report = env.sync().await;
    assert_failed_untouched(&env, &before, &report, "pagination.repeated_next_token").await;
    assert_eq!(
        env.errors_of(report.run_id).await,
        vec!["validate|1|-|pagination.repeated_next_token|0"]
    );
    assert_eq!(report.pages_fetched, 2);
}

#[tokio::test]
async fn a_database_error_during_the_apply_rolls_back_everything() {
    let (env, before) = synced_env().await;
    // Rooms and groups are written before the label links; make the links fail.
    write_sql(
        &env.db,
        "CREATE TRIGGER refuse_links BEFORE INSERT ON room_labels BEGIN SELECT RAISE(ABORT, 'disk says no'); END;",
    )
    .await;
    let mut changed = rooms_in_pages(3);
    changed[0][0]["roomName"] = json!("Renamed");
    changed[1].push(room("new", "New room", &[4], Some(77)));
    env.reset_upstream(&changed).await;
    let report = env.sync().await;
    assert_failed_untouched(&env, &before, &report, "disk says no").await;
    assert_eq!(
        env.errors_of(report.run_id).await,
        vec!["store|-|-|database.error|0"]
    );
}
