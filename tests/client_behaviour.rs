//! The client under throttling, token refresh and its own rate limit.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

#[tokio::test]
async fn throttling_is_retried_until_it_passes() {
    let throttles = [
        ResponseTemplate::new(403).set_body_json(json!({
            "code": "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", "message": "qps", "requestid": "r1"})),
        ResponseTemplate::new(200).set_body_raw("<html><body>Too many requests</body></html>", "text/html"),
        ResponseTemplate::new(200).set_body_json(json!({"status": 1111, "wait": 5, "punish": "deny"})),
        ResponseTemplate::new(429).set_body_json(json!({"code": "Forbidden.AccessDenied.QpsLimitForApi"})),
    ];
    let expected = [
        "fetch|0|403|Forbidden.AccessDenied.QpsLimitForAppkeyAndApi|1",
        "fetch|0|200|ip.throttled|1",
        "fetch|0|200|ip.throttled|1",
        "fetch|0|429|Forbidden.AccessDenied.QpsLimitForApi|1",
    ];
    for (throttle, expected) in throttles.into_iter().zip(expected) {
        let env = TestEnv::new().await;
        env.mount_token(Some(1)).await;
        page_request(0)
            .respond_with(throttle)
            .up_to_n_times(2)
            .expect(2)
            .mount(&env.server)
            .await;
        env.mount_listing(&rooms_in_pages(2), Some(1)).await;
        let report = env.sync().await;
        assert_eq!(report.status.as_str(), "succeeded", "{report}");
        assert_eq!(report.counts.unwrap().added, 2);
        assert_eq!(env.errors_of(report.run_id).await, vec![expected, expected]);
    }
}

#[tokio::test]
async fn a_refused_token_is_renewed_once_and_the_request_repeated() {
    let env = TestEnv::new().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"accessToken": TOKEN, "expireIn": 7200})),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&env.server)
        .await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"accessToken": TOKEN_2, "expireIn": 7200})),
        )
        .expect(1)
        .mount(&env.server)
        .await;
    env.mount_groups(json!({"result": []})).await;
    let pages = rooms_in_pages(4);
    page_request(0)
        .respond_with(page(&pages[0], Some(101)))
        .expect(1)
        .mount(&env.server)
        .await;
    // Page 1 refuses the first token (it expired between pages) and accepts the renewed one.
    Mock::given(method("GET"))
        .and(path(ROOMS_PATH))
        .and(header("x-acs-dingtalk-access-token", TOKEN))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": "InvalidAuthentication", "message": "token expired", "requestid": "r9"})))
        .expect(1)
        .mount(&env.server)
        .await;
    Mock::given(method("GET"))
        .and(path(ROOMS_PATH))
        .and(header("x-acs-dingtalk-access-token", TOKEN_2))
        .respond_with(page(&pages[1], None))
        .expect(1)
        .mount(&env.server)
        .await;

    let report = env.sync().await;
    assert_eq!(report.status.as_str(), "succeeded", "{report}");
    assert_eq!(report.counts.unwrap().seen, 4);
    assert_eq!(
        env.errors_of(report.run_id).await,
        vec!["fetch|1|400|InvalidAuthentication|1"]
    );
}

#[tokio::test]
async fn a_token_refused_twice_fails_the_run_after_one_renewal() {
    let env = TestEnv::new().await;
    env.mount_token(Some(2)).await;
    page_request(0)
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"code": "InvalidAuthentication", "message": "no"})),
        )
        .expect(2)
        .mount(&env.server)
        .await;
    let report = env.sync().await;
    assert_eq!(report.status.as_str(), "failed");
    assert!(report.error.unwrap().contains("InvalidAuthentication"));
    assert_eq!(
        env.errors_of(report.run_id).await,
        vec![
            "fetch|0|400|InvalidAuthentication|1",
            "fetch|0|400|InvalidAuthentication|0"
        ]
    );
}

#[tokio::test]
async fn requests_keep_to_requests_per_second() {
    let env = TestEnv::with("requests_per_second = 20", "").await;
    env.mount_token(Some(1)).await;
    env.mount_listing(&rooms_in_pages(10), Some(1)).await; // 5 pages + 1 token = 6 requests
    let started = Instant::now();
    let report = env.sync().await;
    assert_eq!(report.status.as_str(), "succeeded");
    // Six requests at 20 per second, evenly spaced: at least five gaps of 50 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "took {:?}",
        started.elapsed()
    );
}
