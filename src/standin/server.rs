//! The HTTP side of the stand-in: the token endpoint, `meetingRoomLists` and `groupLists`, with
//! DingTalk's pagination and error shapes, per-page latency and scripted faults.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::org::OrgSpec;
use super::schedules;
use super::{Fault, FaultKind, StandInConfig};

pub(super) struct Shared {
    pub org: RwLock<OrgSpec>,
    pub app_key: String,
    pub app_secret: String,
    pub union_id: String,
    pub page_latency: Duration,
    pub faults: Mutex<Vec<Fault>>,
    /// Scripted faults of the free/busy endpoint: each replaces that many answers.
    pub schedule_faults: Mutex<Vec<(u32, FaultKind)>>,
    pub tokens: Mutex<TokenState>,
    pub counts: Counters,
    /// Answer every metered request as DingTalk does once the organisation's monthly quota
    /// is spent.
    pub quota_spent: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
pub struct Counters {
    pub token_requests: AtomicU64,
    pub page_requests: AtomicU64,
    pub group_requests: AtomicU64,
    pub schedule_requests: AtomicU64,
}

pub(super) struct TokenState {
    current: Option<String>,
    issued: u64,
    /// Listing requests the current token still serves, when a fault makes it expire.
    uses_left: Option<u32>,
    expire_after: Option<u32>,
}

impl Shared {
    pub fn new(config: StandInConfig) -> Shared {
        Shared {
            org: RwLock::new(config.org),
            app_key: config.app_key,
            app_secret: config.app_secret,
            union_id: config.union_id,
            page_latency: config.page_latency,
            faults: Mutex::new(config.faults),
            schedule_faults: Mutex::new(Vec::new()),
            tokens: Mutex::new(TokenState {
                current: None,
                issued: 0,
                uses_left: None,
                expire_after: config.expire_token_after,
            }),
            counts: Counters::default(),
            quota_spent: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1.0/oauth2/accessToken", post(access_token))
        .route("/v1.0/rooms/meetingRoomLists", get(room_list))
        .route("/v1.0/rooms/groupLists", get(group_list))
        .route(
            "/v1.0/calendar/users/{user_id}/meetingRooms/schedules/query",
            post(room_schedules),
        )
        .with_state(shared)
}

/// DingTalk's answer once the organisation's calls for the month passed its quota.
fn quota_spent(s: &Shared) -> Option<Response> {
    s.quota_spent.load(Ordering::Relaxed).then(|| {
        dingtalk_error(
            StatusCode::FORBIDDEN,
            "Forbidden.AccessDenied.ApiCountLimitForOrg",
            "您的企业本月api调用量已超过限制,调用量:10001次,额度:10000次",
        )
    })
}

fn dingtalk_error(status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = format!("standin-{:016x}", fastrand::u64(..));
    (
        status,
        [("x-acs-request-id", request_id.clone())],
        Json(json!({"code": code, "message": message, "requestid": request_id})),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRequest {
    app_key: Option<String>,
    app_secret: Option<String>,
}

async fn access_token(State(s): State<Arc<Shared>>, body: Option<Json<TokenRequest>>) -> Response {
    s.counts.token_requests.fetch_add(1, Ordering::Relaxed);
    let Some(Json(body)) = body else {
        return dingtalk_error(
            StatusCode::BAD_REQUEST,
            "param.error",
            "the body must be JSON",
        );
    };
    if body.app_key.as_deref() != Some(&s.app_key)
        || body.app_secret.as_deref() != Some(&s.app_secret)
    {
        return dingtalk_error(
            StatusCode::BAD_REQUEST,
            "invalidClientIdOrSecret",
            "invalid appKey or appSecret",
        );
    }
    let mut t = s.tokens.lock().expect("not poisoned");
    // Like DingTalk: asking again while a token is valid returns the same token.
    let token = match &t.current {
        Some(token) => token.clone(),
        None => {
            t.issued += 1;
            let token = format!("standin-token-{}-{:08x}", t.issued, fastrand::u32(..));
            t.current = Some(token.clone());
            t.uses_left = t.expire_after;
            token
        }
    };
    Json(json!({"accessToken": token, "expireIn": 7200})).into_response()
}

/// A refused request: a 400 with DingTalk's error body.
struct Rejection {
    code: &'static str,
    message: &'static str,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        dingtalk_error(StatusCode::BAD_REQUEST, self.code, self.message)
    }
}

const EXPIRED: Rejection = Rejection {
    code: "InvalidAuthentication",
    message: "token is invalid or expired",
};

/// Checks the token header; a token that has run out of uses stops being valid.
fn check_token(s: &Shared, headers: &HeaderMap) -> Result<(), Rejection> {
    let Some(given) = headers
        .get("x-acs-dingtalk-access-token")
        .and_then(|v| v.to_str().ok())
    else {
        return Err(Rejection {
            code: "AuthenticationFailed.MissingParameter",
            message: "x-acs-dingtalk-access-token is missing",
        });
    };
    let mut t = s.tokens.lock().expect("not poisoned");
    if t.current.as_deref() != Some(given) {
        return Err(EXPIRED);
    }
    if let Some(left) = t.uses_left.as_mut() {
        if *left == 0 {
            t.current = None;
            return Err(EXPIRED);
        }
        *left -= 1;
    }
    Ok(())
}

fn check_union_id(s: &Shared, query: &HashMap<String, String>) -> Result<(), Rejection> {
    match query.get("unionId") {
        None => Err(Rejection {
            code: "param.error",
            message: "unionId is required",
        }),
        Some(u) if *u != s.union_id => Err(Rejection {
            code: "user.not.employee",
            message: "User Not Employee",
        }),
        Some(_) => Ok(()),
    }
}

/// A page of the room list, answered `page_latency` after the request came in (the page is
/// built while that time runs, as a real server's response time includes building it).
async fn room_list(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let answer_at = tokio::time::Instant::now() + s.page_latency;
    let response = build_room_page(&s, &headers, &query);
    wait_until(answer_at).await;
    response
}

fn build_room_page(s: &Shared, headers: &HeaderMap, query: &HashMap<String, String>) -> Response {
    s.counts.page_requests.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = quota_spent(s) {
        return r;
    }
    if let Err(r) = check_token(s, headers).and_then(|()| check_union_id(s, query)) {
        return r.into_response();
    }
    let org = *s.org.read().expect("not poisoned");
    let page_size = match query.get("maxResults").map(|v| v.parse::<usize>()) {
        None => 20,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        _ => {
            return dingtalk_error(
                StatusCode::BAD_REQUEST,
                "param.error",
                "maxResults must be 1..=100",
            )
        }
    };
    let offset = match query.get("nextToken").map(|v| v.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) if n > 0 && n < org.rooms => n,
        _ => {
            return dingtalk_error(
                StatusCode::BAD_REQUEST,
                "param.error",
                "nextToken is invalid",
            )
        }
    };
    let page = (offset / page_size) as u32;
    let fault = take_fault(s, Some(page));
    if let Some(r) = fault.as_ref().and_then(fault_response) {
        return r;
    }

    let end = (offset + page_size).min(org.rooms);
    let has_more = end < org.rooms;
    let mut body = Vec::with_capacity(page_size * 600);
    body.extend_from_slice(format!("{{\"hasMore\":{has_more},").as_bytes());
    if has_more {
        body.extend_from_slice(format!("\"nextToken\":{end},").as_bytes());
    }
    body.extend_from_slice(b"\"result\":[");
    for i in offset..end {
        if i > offset {
            body.push(b',');
        }
        serde_json::to_writer(&mut body, &org.room(i)).expect("serializable");
    }
    body.extend_from_slice(b"]}");
    if matches!(fault.map(|f| f.kind), Some(FaultKind::TruncatedBody)) {
        body.truncate(body.len() / 2);
    }
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn group_list(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    s.counts.group_requests.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = quota_spent(&s) {
        return r;
    }
    if let Err(r) = check_token(&s, &headers).and_then(|()| check_union_id(&s, &query)) {
        return r.into_response();
    }
    let fault = take_fault(&s, None);
    if let Some(r) = fault.as_ref().and_then(fault_response) {
        return r;
    }
    let org = *s.org.read().expect("not poisoned");
    let mut body = serde_json::to_vec(&json!({"result": org.groups()})).expect("serializable");
    if matches!(fault.map(|f| f.kind), Some(FaultKind::TruncatedBody)) {
        body.truncate(body.len() / 2);
    }
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Free/busy of the rooms asked for, answered `page_latency` after the request came in.
async fn room_schedules(
    State(s): State<Arc<Shared>>,
    axum::extract::Path(user_id): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Option<Json<schedules::QueryBody>>,
) -> Response {
    let answer_at = tokio::time::Instant::now() + s.page_latency;
    let response = build_schedules(&s, &user_id, &headers, body.map(|Json(b)| b));
    wait_until(answer_at).await;
    response
}

fn build_schedules(
    s: &Shared,
    user_id: &str,
    headers: &HeaderMap,
    body: Option<schedules::QueryBody>,
) -> Response {
    s.counts.schedule_requests.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = quota_spent(s) {
        return r;
    }
    if let Err(r) = check_token(s, headers) {
        return r.into_response();
    }
    if user_id != s.union_id {
        return dingtalk_error(
            StatusCode::BAD_REQUEST,
            "user.not.employee",
            "User Not Employee",
        );
    }
    let fault = {
        let mut faults = s.schedule_faults.lock().expect("not poisoned");
        let fault = faults.iter_mut().find(|(times, _)| *times > 0);
        fault.map(|(times, kind)| {
            *times -= 1;
            kind.clone()
        })
    };
    if let Some(kind) = &fault {
        let scripted = Fault {
            page: None,
            times: 1,
            kind: kind.clone(),
        };
        if let Some(r) = fault_response(&scripted) {
            return r;
        }
    }
    let Some(body) = body else {
        return dingtalk_error(
            StatusCode::BAD_REQUEST,
            "param.error",
            "the body must be JSON",
        );
    };
    let (start, rooms) = match schedules::check(&body) {
        Ok(checked) => checked,
        Err(message) => return dingtalk_error(StatusCode::BAD_REQUEST, "param.error", message),
    };
    let org_rooms = s.org.read().expect("not poisoned").rooms;
    let information: Vec<serde_json::Value> = rooms
        .iter()
        .map(|id| schedules::room_schedule(id, org_rooms, start))
        .collect();
    let mut body =
        serde_json::to_vec(&json!({"scheduleInformation": information})).expect("serializable");
    if matches!(fault, Some(FaultKind::TruncatedBody)) {
        body.truncate(body.len() / 2);
    }
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Waits until `deadline`, to within microseconds: the timer wheel rounds sleeps up to the
/// next millisecond, so the last two milliseconds are spent yielding instead.
async fn wait_until(deadline: tokio::time::Instant) {
    if let Some(coarse) = deadline.checked_sub(Duration::from_millis(2)) {
        if tokio::time::Instant::now() < coarse {
            tokio::time::sleep_until(coarse).await;
        }
    }
    while tokio::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
}

/// Takes one use of the first fault scripted for this page (`None`: the group list).
fn take_fault(s: &Shared, page: Option<u32>) -> Option<Fault> {
    let mut faults = s.faults.lock().expect("not poisoned");
    let fault = faults.iter_mut().find(|f| f.page == page && f.times > 0)?;
    fault.times -= 1;
    Some(fault.clone())
}

/// The response a fault replaces the page with; `None` when the page is served and altered.
fn fault_response(fault: &Fault) -> Option<Response> {
    match &fault.kind {
        FaultKind::Status { status, code } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Some(dingtalk_error(status, code, "scripted fault"))
        }
        FaultKind::HtmlThrottle => Some(
            (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                "<html><head><title>Access denied</title></head><body>Too many requests from your IP.</body></html>",
            )
                .into_response(),
        ),
        FaultKind::TruncatedBody => None,
    }
}
