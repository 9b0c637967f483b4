//! The DingTalk HTTP client: access token cache, retries with backoff, throttling, rate limit.
//!
//! Every failed attempt is handed to the [`Observer`] (the sync run records it in `sync_errors`)
//! before the client decides whether to try again; the final failure is also returned.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderMap, HeaderValue, LOCATION};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::calls::{CallCounts, CallTally};
use super::model::{parse_json, GroupListResponse, RoomListPage, TokenResponse};
use super::schedule::{ScheduleAnswer, ScheduleQuery};
use crate::config::DingTalkSettings;
use crate::failure::{codes, Failure, Redactor, Stage};
use crate::metrics::{HttpOutcome, Metrics};

/// Receives every failed attempt, retried or not, as it happens.
pub type Observer = Arc<dyn Fn(Failure) + Send + Sync>;

const TOKEN_HEADER: &str = "x-acs-dingtalk-access-token";
/// The longest wait between two attempts, whatever the backoff says.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// DingTalk documents tokens of 7200 s; used when a token response omits `expireIn`.
const DEFAULT_TOKEN_LIFETIME: i64 = 7200;
/// The token lifetimes believed, in seconds: an `expireIn` outside is clamped into it.
const TOKEN_LIFETIME: std::ops::RangeInclusive<i64> = 60..=86_400;

/// The request paths, as counted per endpoint (metrics, the monthly API budget).
pub mod endpoints {
    pub const TOKEN: &str = "/v1.0/oauth2/accessToken";
    pub const ROOM_LIST: &str = "/v1.0/rooms/meetingRoomLists";
    pub const GROUP_LIST: &str = "/v1.0/rooms/groupLists";
    /// Free/busy of rooms; the path names the operator (`{unionId}`), left out of the counts.
    pub const ROOM_SCHEDULES: &str = "/v1.0/calendar/users/{unionId}/meetingRooms/schedules/query";
}

/// What the process keeps of the DingTalk API across runs: the connection pool, the rate
/// limit, the access token (reused while valid), the secrets to redact and the metrics.
pub struct DingTalkApi {
    http: reqwest::Client,
    cfg: DingTalkSettings,
    limiter: DefaultDirectRateLimiter,
    token: Mutex<Option<CachedToken>>,
    /// Knows the secret and every token issued, so no upstream text carries them on.
    redactor: Redactor,
    metrics: Metrics,
    /// Set when DingTalk answers that the organisation's monthly quota is spent.
    quota_spent: std::sync::atomic::AtomicBool,
}

/// The DingTalk API as one run sees it: requests within the rate limit, retried as DingTalk
/// asks, each failed attempt reported to the run's observer, each request counted.
pub struct DingTalkClient {
    api: Arc<DingTalkApi>,
    observer: Observer,
    /// Requests this client sent, by endpoint path, whatever their outcome.
    calls: CallTally,
}

struct CachedToken {
    value: SecretString,
    refresh_at: Instant,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Retry,
    /// The token was refused: get a new one and repeat the request, once.
    Reauth,
    Fatal,
}

struct AttemptError {
    failure: Failure,
    verdict: Verdict,
}

impl AttemptError {
    fn new(verdict: Verdict, failure: Failure) -> Self {
        AttemptError { failure, verdict }
    }
}

/// DingTalk's error body: `{"code", "message", "requestid"}`.
#[derive(Deserialize, Default)]
struct ApiError {
    code: Option<String>,
    message: Option<String>,
    requestid: Option<String>,
}

/// Attempt bookkeeping for one logical request.
struct Attempts {
    made: u32,
    reauthed: bool,
}

impl DingTalkApi {
    /// The API for the process; its token and rate limit are shared by every run.
    pub fn new(cfg: DingTalkSettings, metrics: Metrics) -> Result<Arc<Self>, reqwest::Error> {
        let http = crate::http::client_builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("roomsync/", env!("CARGO_PKG_VERSION")))
            // DingTalk's API does not redirect: a redirect would carry the token (or re-post
            // the secret) to another origin. Every 3xx fails the request instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        // Burst of one: requests are spaced evenly, never more than the limit in any second.
        let period =
            Duration::from_secs_f64(1.0 / cfg.requests_per_second).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .expect("period is positive")
            .allow_burst(NonZeroU32::MIN);
        let redactor = Redactor::new(&cfg.app_secret);
        Ok(Arc::new(DingTalkApi {
            http,
            cfg,
            limiter: RateLimiter::direct(quota),
            token: Mutex::new(None),
            redactor,
            metrics,
            quota_spent: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Whether DingTalk said the organisation's monthly quota is spent since the last call.
    pub fn take_quota_spent(&self) -> bool {
        self.quota_spent
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// The settings the API works with.
    pub fn settings(&self) -> &DingTalkSettings {
        &self.cfg
    }

    /// The redactor that knows the secret and every token this API was issued.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// A client for one run, reporting its failed attempts to `observer` and counting its
    /// requests in `calls`.
    pub fn client(self: &Arc<Self>, observer: Observer, calls: CallTally) -> DingTalkClient {
        DingTalkClient {
            api: self.clone(),
            observer,
            calls,
        }
    }
}

impl DingTalkClient {
    /// The settings the client works with.
    pub fn settings(&self) -> &DingTalkSettings {
        &self.api.cfg
    }

    /// The requests sent so far, by endpoint path, whatever their outcome.
    pub fn calls(&self) -> CallCounts {
        self.calls.sent()
    }

    /// One page of the room list; `page` is the 0-based page number for error records.
    #[tracing::instrument(skip_all, fields(page))]
    pub async fn room_page(
        &self,
        page: u32,
        next_token: Option<i64>,
    ) -> Result<RoomListPage, Failure> {
        let mut url = self.endpoint(endpoints::ROOM_LIST);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("maxResults", &self.api.cfg.page_size.to_string());
            q.append_pair("unionId", &self.api.cfg.union_id);
            if let Some(t) = next_token {
                q.append_pair("nextToken", &t.to_string());
            }
        }
        self.get_json(endpoints::ROOM_LIST, url, Some(page)).await
    }

    /// Every room group of the organisation (`groupLists`, not paginated).
    #[tracing::instrument(skip_all)]
    pub async fn group_list(&self) -> Result<GroupListResponse, Failure> {
        let mut url = self.endpoint(endpoints::GROUP_LIST);
        url.query_pairs_mut()
            .append_pair("unionId", &self.api.cfg.union_id);
        self.get_json(endpoints::GROUP_LIST, url, None).await
    }

    fn endpoint(&self, path: &str) -> Url {
        let base = self.api.cfg.base_url.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}{path}")).expect("base_url was validated as a URL")
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        url: Url,
        page: Option<u32>,
    ) -> Result<T, Failure> {
        self.call_json(endpoint, page, |http| http.get(url.clone()))
            .await
    }

    /// Free/busy of `room_ids` over `[start_time, end_time)` (`yyyy-MM-ddTHH:mmZ`), asked as the
    /// configured unionId. Its failures are counted and retried like the room list's.
    #[tracing::instrument(skip_all, fields(rooms = room_ids.len()))]
    pub async fn room_schedules(
        &self,
        room_ids: &[String],
        start_time: &str,
        end_time: &str,
    ) -> Result<ScheduleAnswer, Failure> {
        let mut url = self.endpoint("/v1.0/calendar/users");
        url.path_segments_mut()
            .expect("an http(s) URL has path segments")
            .push(&self.api.cfg.union_id)
            .extend(["meetingRooms", "schedules", "query"]);
        let body = ScheduleQuery {
            room_ids,
            start_time,
            end_time,
        };
        self.call_json(endpoints::ROOM_SCHEDULES, None, |http| {
            http.post(url.clone()).json(&body)
        })
        .await
    }

    /// One logical request with its token, its retries and its re-authentication: `build`
    /// makes each attempt's request, the token header is added to it.
    async fn call_json<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        page: Option<u32>,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<T, Failure> {
        let mut attempts = Attempts {
            made: 0,
            reauthed: false,
        };
        loop {
            let token = self.access_token().await?;
            let result = match token_header(&token) {
                Ok(header) => {
                    let request = build(&self.api.http).header(TOKEN_HEADER, header);
                    self.attempt(endpoint, request, Stage::Fetch)
                        .await
                        .and_then(|body| parse_body(&body))
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(value) => return Ok(value),
                Err(mut e) => {
                    e.failure.page = page;
                    if e.verdict == Verdict::Reauth {
                        self.forget_token(&token).await;
                    }
                    self.after_failure(&mut attempts, e).await?;
                }
            }
        }
    }

    /// The cached token, or a new one when there is none or it is about to expire.
    async fn access_token(&self) -> Result<SecretString, Failure> {
        let mut cached = self.api.token.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(t.value.clone());
        }
        let mut attempts = Attempts {
            made: 0,
            reauthed: true,
        };
        let (value, lifetime) = loop {
            match self.fetch_token().await {
                Ok(t) => break t,
                Err(e) => self.after_failure(&mut attempts, e).await?,
            }
        };
        self.api.redactor.add(&value);
        *cached = Some(CachedToken {
            value: value.clone(),
            refresh_at: Instant::now() + renew_after(lifetime),
        });
        tracing::debug!(expires_in_secs = lifetime, "got a new access token");
        Ok(value)
    }

    async fn forget_token(&self, refused: &SecretString) {
        let mut cached = self.api.token.lock().await;
        if cached
            .as_ref()
            .is_some_and(|t| t.value.expose_secret() == refused.expose_secret())
        {
            *cached = None;
        }
    }

    async fn fetch_token(&self) -> Result<(SecretString, i64), AttemptError> {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct TokenRequest<'a> {
            app_key: &'a str,
            app_secret: &'a str,
        }
        let body = TokenRequest {
            app_key: &self.api.cfg.app_key,
            app_secret: self.api.cfg.app_secret.expose_secret(),
        };
        let request = self
            .api
            .http
            .post(self.endpoint(endpoints::TOKEN))
            .json(&body);
        let bytes = self
            .attempt(endpoints::TOKEN, request, Stage::Auth)
            .await
            .map_err(|mut e| {
                // A refused token request is never cured by asking again for a token.
                if e.verdict == Verdict::Reauth {
                    e.verdict = Verdict::Fatal;
                }
                e
            })?;
        // Say which field is wrong but never echo values: they may hold the token.
        let bad = |what: &str| {
            AttemptError::new(
                Verdict::Fatal,
                Failure::new(
                    Stage::Auth,
                    codes::BAD_RESPONSE,
                    format!("token response {what}"),
                ),
            )
        };
        let parsed: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|_| bad("is not the documented {accessToken, expireIn} JSON"))?;
        let token = parsed
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("has no accessToken"))?;
        let given = parsed.expire_in.unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let lifetime = given.clamp(*TOKEN_LIFETIME.start(), *TOKEN_LIFETIME.end());
        if lifetime != given {
            tracing::warn!(
                expire_in = given,
                using_secs = lifetime,
                "the token answer's expireIn is outside 60..=86400 seconds; using {lifetime} s"
            );
        }
        Ok((SecretString::from(token), lifetime))
    }

    /// Sends one request within the rate limit and returns the body of a successful answer;
    /// counts it, whatever its outcome.
    async fn attempt(
        &self,
        endpoint: &'static str,
        request: RequestBuilder,
        stage: Stage,
    ) -> Result<Bytes, AttemptError> {
        self.api.limiter.until_ready().await;
        // Counted as it goes out: a request cut short (an interrupted run) was still sent.
        self.calls.count(endpoint);
        self.api.metrics.api_call(endpoint);
        let result = self.send(request, stage).await;
        let outcome = match &result {
            Ok(_) => HttpOutcome::Ok,
            Err(e) => {
                if quota_spent(&e.failure) {
                    self.api
                        .quota_spent
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                }
                outcome_of(&e.failure)
            }
        };
        self.api.metrics.http_request(endpoint, outcome);
        result
    }

    async fn send(&self, request: RequestBuilder, stage: Stage) -> Result<Bytes, AttemptError> {
        let response = request.send().await.map_err(|e| network_error(stage, &e))?;
        let status = response.status();
        let header_request_id = request_id_header(response.headers());
        if status.is_redirection() {
            return Err(redirect_error(stage, &response));
        }
        let body = read_body(response, self.api.cfg.max_response_bytes, stage).await?;
        if !status.is_success() {
            return Err(error_response(stage, status, header_request_id, &body));
        }
        if let Some(e) = legacy_error(stage, status, header_request_id.clone(), &body) {
            return Err(e);
        }
        if is_throttle_page(&body) {
            let mut f = Failure::new(
                stage,
                codes::IP_THROTTLED,
                "DingTalk answered with its per-IP throttle page instead of JSON",
            );
            f.http_status = Some(status.as_u16());
            f.request_id = header_request_id;
            return Err(AttemptError::new(Verdict::Retry, f));
        }
        Ok(body)
    }

    /// Records a failed attempt; returns after the backoff delay when it is worth trying again,
    /// or the final failure.
    async fn after_failure(&self, attempts: &mut Attempts, e: AttemptError) -> Result<(), Failure> {
        let AttemptError {
            mut failure,
            verdict,
        } = e;
        let delay = match verdict {
            Verdict::Reauth if !attempts.reauthed => {
                attempts.reauthed = true;
                Some(Duration::ZERO)
            }
            // A refused token after a fresh one: retrying within the attempt budget
            // would only repeat the refusal.
            Verdict::Reauth | Verdict::Fatal => None,
            Verdict::Retry => {
                attempts.made += 1;
                (attempts.made < self.api.cfg.max_attempts).then(|| self.backoff(attempts.made))
            }
        };
        failure.retried = delay.is_some();
        let failure = self.api.redactor.failure(failure);
        match delay {
            Some(delay) => {
                self.api.metrics.retry();
                tracing::warn!(error = %failure, retry_in_ms = delay.as_millis() as u64, "request failed, retrying");
                (self.observer)(failure);
                tokio::time::sleep(delay).await;
                Ok(())
            }
            None => {
                (self.observer)(failure.clone());
                Err(failure)
            }
        }
    }

    /// Exponential backoff from `retry_base_delay`, with jitter so that many clients throttled
    /// together do not come back together.
    fn backoff(&self, failed_attempts: u32) -> Duration {
        let exp = self
            .api
            .cfg
            .retry_base_delay
            .saturating_mul(1u32 << (failed_attempts - 1).min(16));
        let capped = exp.min(MAX_RETRY_DELAY);
        capped.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

/// How long a token of `lifetime` seconds is used: until a tenth of its lifetime, at most five
/// minutes, is left.
fn renew_after(lifetime: i64) -> Duration {
    let lifetime = Duration::from_secs(lifetime.max(0) as u64);
    lifetime - (lifetime / 10).min(Duration::from_secs(300))
}

fn token_header(token: &SecretString) -> Result<HeaderValue, AttemptError> {
    let mut value = HeaderValue::from_str(token.expose_secret()).map_err(|_| {
        AttemptError::new(
            Verdict::Fatal,
            Failure::new(
                Stage::Auth,
                codes::BAD_RESPONSE,
                "the access token is not a valid header value",
            ),
        )
    })?;
    // Marked sensitive so that HTTP-level debug output never shows it.
    value.set_sensitive(true);
    Ok(value)
}

/// Whether DingTalk answered that the organisation's monthly API quota is spent:
/// `Forbidden.AccessDenied.ApiCountLimitForOrg` (v1.0) or errcode 90020 (the legacy API).
fn quota_spent(failure: &Failure) -> bool {
    failure
        .code
        .as_deref()
        .is_some_and(|c| c.contains("ApiCountLimitForOrg") || c == "90020")
}

/// DingTalk's legacy error shape, a 200 with `{"errcode": 90020, "errmsg": "..."}`: an error
/// all the same. 90018 and 90002 are its throttling (tried again), any other code is final.
fn legacy_error(
    stage: Stage,
    status: StatusCode,
    request_id: Option<String>,
    body: &[u8],
) -> Option<AttemptError> {
    #[derive(Deserialize)]
    struct Legacy {
        errcode: Option<i64>,
        errmsg: Option<String>,
    }
    let starts_as_object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if !starts_as_object || memchr::memmem::find(body, b"\"errcode\"").is_none() {
        return None;
    }
    let legacy: Legacy = serde_json::from_slice(body).ok()?;
    let code = legacy.errcode.filter(|c| *c != 0)?;
    let verdict = if matches!(code, 90018 | 90002) {
        Verdict::Retry
    } else {
        Verdict::Fatal
    };
    let message = legacy
        .errmsg
        .unwrap_or_else(|| "DingTalk answered with an error code".into());
    let failure = Failure {
        http_status: Some(status.as_u16()),
        request_id,
        ..Failure::new(stage, &code.to_string(), message)
    };
    Some(AttemptError::new(verdict, failure))
}

/// A successful answer's JSON; its wrong shape is final.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, AttemptError> {
    parse_json::<T>(body).map_err(|e| {
        AttemptError::new(
            Verdict::Fatal,
            Failure::new(Stage::Validate, codes::BAD_RESPONSE, e.to_string()),
        )
    })
}

/// How a failed attempt counts in `roomsync_http_requests_total`.
fn outcome_of(failure: &Failure) -> HttpOutcome {
    let code = failure.code.as_deref().unwrap_or("");
    let status = failure.http_status.unwrap_or(0);
    match code {
        "90018" | "90002" => HttpOutcome::Throttled,
        _ if (200..300).contains(&status) && code.parse::<i64>().is_ok() => HttpOutcome::ApiError,
        codes::TIMEOUT => HttpOutcome::Timeout,
        codes::CONNECTION => HttpOutcome::Network,
        codes::REDIRECT => HttpOutcome::Http3xx,
        codes::TOO_LARGE => HttpOutcome::TooLarge,
        codes::IP_THROTTLED => HttpOutcome::Throttled,
        _ if status == 429 || (status == 403 && code.contains("QpsLimit")) => {
            HttpOutcome::Throttled
        }
        _ if (400..500).contains(&status) => HttpOutcome::Http4xx,
        _ if status >= 500 => HttpOutcome::Http5xx,
        // A 2xx whose body was not the JSON expected: the request itself went through.
        _ => HttpOutcome::Ok,
    }
}

/// A 3xx answer: never followed. The message names the status and the target's host, not its
/// path or query (which could carry anything).
fn redirect_error(stage: Stage, response: &Response) -> AttemptError {
    let target = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|location| response.url().join(location).ok());
    let host = match target.as_ref().and_then(|u| u.host_str()) {
        Some(host) => match target.as_ref().and_then(Url::port) {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        },
        None => "an unknown location".to_string(),
    };
    let failure = Failure {
        http_status: Some(response.status().as_u16()),
        request_id: request_id_header(response.headers()),
        ..Failure::new(
            stage,
            codes::REDIRECT,
            format!(
                "the server redirected to {host}; DingTalk's API does not redirect, so the \
                 redirect was not followed (check dingtalk.base_url)"
            ),
        )
    };
    AttemptError::new(Verdict::Fatal, failure)
}

/// Reads a body chunk by chunk, up to `limit` bytes: a longer one is never buffered whole.
async fn read_body(
    mut response: Response,
    limit: u64,
    stage: Stage,
) -> Result<Bytes, AttemptError> {
    let status = response.status().as_u16();
    let too_large = || {
        let message =
            format!("the response body is longer than dingtalk.max_response_bytes ({limit} bytes)");
        let failure = Failure {
            http_status: Some(status),
            ..Failure::new(stage, codes::TOO_LARGE, message)
        };
        AttemptError::new(Verdict::Fatal, failure)
    };
    let announced = response.content_length();
    if announced.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = BytesMut::with_capacity(announced.unwrap_or(64 * 1024).min(limit) as usize);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| network_error(stage, &e))?
    {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn request_id_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-acs-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn network_error(stage: Stage, e: &reqwest::Error) -> AttemptError {
    let code = if e.is_timeout() {
        codes::TIMEOUT
    } else {
        codes::CONNECTION
    };
    // The URL carries no secret, but the message reads better without it.
    let mut message = e.to_string();
    if let Some(url) = e.url() {
        message = message
            .replace(&format!(" for url ({url})"), "")
            .replace(url.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    let failure = Failure {
        http_status: e.status().map(|s| s.as_u16()),
        ..Failure::new(stage, code, message)
    };
    AttemptError::new(Verdict::Retry, failure)
}

/// Sorts an HTTP error answer into retry, re-authenticate or give up.
fn error_response(
    stage: Stage,
    status: StatusCode,
    header_request_id: Option<String>,
    body: &[u8],
) -> AttemptError {
    let api: Option<ApiError> = serde_json::from_slice(body).ok();
    let is_json_error = api.as_ref().is_some_and(|a| a.code.is_some());
    let api = api.unwrap_or_default();
    let code = api.code.unwrap_or_else(|| {
        if is_throttle_page(body) {
            codes::IP_THROTTLED
        } else {
            codes::HTTP
        }
        .to_string()
    });
    let message = api.message.unwrap_or_else(|| {
        let reason = status.canonical_reason().unwrap_or("error");
        if is_json_error {
            reason.to_string()
        } else {
            format!("{reason} (the body was not DingTalk's JSON error)")
        }
    });
    let verdict = if code == "InvalidAuthentication" {
        Verdict::Reauth
    } else if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN
            && (code.contains("QpsLimit") || code == codes::IP_THROTTLED))
    {
        Verdict::Retry
    } else {
        Verdict::Fatal
    };
    let failure = Failure {
        http_status: Some(status.as_u16()),
        request_id: api.requestid.or(header_request_id),
        ..Failure::new(stage, &code, message)
    };
    AttemptError::new(verdict, failure)
}

/// DingTalk's per-IP throttle answers 200 with an HTML page, or with a JSON body such as
/// `{"status":1111,"wait":5,"punish":"deny"}`, instead of the API's JSON.
fn is_throttle_page(body: &[u8]) -> bool {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'<') => true,
        // memmem: a byte-by-byte window scan of every page cost ~3% of a sync's CPU.
        Some(b'{') if memchr::memmem::find(body, b"\"punish\"").is_some() => {
            serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .is_some_and(|v| v.get("punish").is_some())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_shortly_before_expiry() {
        assert_eq!(renew_after(7200), Duration::from_secs(6900));
        assert_eq!(renew_after(600), Duration::from_secs(540));
        assert_eq!(renew_after(1), Duration::from_millis(900));
    }

    #[test]
    fn throttle_pages_are_recognised() {
        assert!(is_throttle_page(b"  <html><body>busy</body></html>"));
        assert!(is_throttle_page(
            br#"{"status":1111,"wait":5,"punish":"deny"}"#
        ));
        assert!(!is_throttle_page(
            br#"{"hasMore":false,"result":[{"roomName":"\"punish\""}]}"#
        ));
        assert!(!is_throttle_page(br#"{"hasMore":false}"#));
    }

    #[test]
    fn errors_are_sorted_by_code_and_status() {
        let verdict = |status: u16, body: &str| {
            error_response(
                Stage::Fetch,
                StatusCode::from_u16(status).unwrap(),
                None,
                body.as_bytes(),
            )
            .verdict
        };
        assert_eq!(
            verdict(400, r#"{"code":"InvalidAuthentication","message":"x"}"#),
            Verdict::Reauth
        );
        assert_eq!(
            verdict(
                403,
                r#"{"code":"Forbidden.AccessDenied.QpsLimitForAppkeyAndApi"}"#
            ),
            Verdict::Retry
        );
        assert_eq!(
            verdict(
                403,
                r#"{"code":"Forbidden.AccessDenied.ApiCountLimitForOrg"}"#
            ),
            Verdict::Fatal
        );
        assert_eq!(
            verdict(403, r#"{"code":"Forbidden.AccessDenied.IpNotInWhiteList"}"#),
            Verdict::Fatal
        );
        assert_eq!(verdict(429, "<html></html>"), Verdict::Retry);
        assert_eq!(verdict(500, r#"{"code":"system.error"}"#), Verdict::Retry);
        assert_eq!(verdict(502, "Bad gateway"), Verdict::Retry);
        assert_eq!(
            verdict(400, r#"{"code":"param.error","message":"Param Error"}"#),
            Verdict::Fatal
        );
        assert_eq!(
            verdict(400, r#"{"code":"invalidClientIdOrSecret"}"#),
            Verdict::Fatal
        );
    }

    #[test]
    fn error_fields_come_from_the_body_or_the_header() {
        let e = error_response(
            Stage::Fetch,
            StatusCode::BAD_REQUEST,
            Some("hdr-id".into()),
            br#"{"code":"user.not.employee","message":"User Not Employee","requestid":"body-id"}"#,
        );
        assert_eq!(e.failure.code.as_deref(), Some("user.not.employee"));
        assert_eq!(e.failure.message, "User Not Employee");
        assert_eq!(e.failure.request_id.as_deref(), Some("body-id"));
        assert_eq!(e.failure.http_status, Some(400));
        let e = error_response(
            Stage::Fetch,
            StatusCode::BAD_GATEWAY,
            Some("hdr-id".into()),
            b"oops",
        );
        assert_eq!(e.failure.request_id.as_deref(), Some("hdr-id"));
        assert_eq!(e.failure.code.as_deref(), Some(codes::HTTP));
    }
}
