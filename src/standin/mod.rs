//! A stand-in for the DingTalk API on a loopback port: try roomsync without credentials
//! (`roomsync --demo`), benchmark it on large organisations, and test it where wiremock gets
//! unwieldy. It serves the token endpoint, `meetingRoomLists` (cursor pagination, DingTalk's
//! error shapes), `groupLists` and the rooms' free/busy for a generated organisation
//! ([`OrgSpec`]).

pub mod org;
mod schedules;
mod server;
pub mod standalone;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use tokio_util::sync::CancellationToken;

pub use org::OrgSpec;
use server::Shared;

/// Credentials the stand-in accepts.
pub const APP_KEY: &str = "standin-app-key";
pub const APP_SECRET: &str = "standin-app-secret-0000";
pub const UNION_ID: &str = "standin-union-id";

#[derive(Debug, Clone)]
pub struct StandInConfig {
    pub org: OrgSpec,
    pub app_key: String,
    pub app_secret: String,
    pub union_id: String,
    /// Added to every page of the room list.
    pub page_latency: Duration,
    pub faults: Vec<Fault>,
    /// The token stops being valid after this many listing requests (then `InvalidAuthentication`
    /// until a new one is asked for).
    pub expire_token_after: Option<u32>,
}

impl StandInConfig {
    pub fn new(org: OrgSpec) -> StandInConfig {
        StandInConfig {
            org,
            app_key: APP_KEY.into(),
            app_secret: APP_SECRET.into(),
            union_id: UNION_ID.into(),
            page_latency: Duration::ZERO,
            faults: Vec::new(),
            expire_token_after: None,
        }
    }
}

/// A scripted fault: the response for `page` (0-based; `None` for the group list) is replaced
/// `times` times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub page: Option<u32>,
    pub times: u32,
    pub kind: FaultKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// An HTTP error with DingTalk's JSON error body and this code.
    Status { status: u16, code: String },
    /// DingTalk's per-IP throttle: 200 with an HTML page.
    HtmlThrottle,
    /// The JSON body cut off halfway (well-formed HTTP, malformed JSON).
    TruncatedBody,
}

/// Requests served so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestCounts {
    pub tokens: u64,
    pub pages: u64,
    pub group_lists: u64,
    /// Free/busy requests.
    pub schedules: u64,
}

/// A running stand-in; stops when dropped or with [`StandIn::stop`].
pub struct StandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl StandIn {
    /// Serves on an ephemeral port of 127.0.0.1.
    pub async fn start(config: StandInConfig) -> std::io::Result<StandIn> {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Serves on `addr` (`roomsync stand-in --listen`).
    pub async fn start_at(addr: SocketAddr, config: StandInConfig) -> std::io::Result<StandIn> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let shutdown = CancellationToken::new();
        let app = server::router(shared.clone());
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "stand-in server failed");
            }
        });
        Ok(StandIn {
            addr,
            shared,
            shutdown,
            task: Some(task),
        })
    }

    pub fn base_url(&self) -> Url {
        Url::parse(&format!("http://{}", self.addr)).expect("valid URL")
    }

    pub fn org(&self) -> OrgSpec {
        *self.shared.org.read().expect("not poisoned")
    }

    /// Changes the organisation served from now on (a new revision, more or fewer rooms).
    pub fn set_org(&self, org: OrgSpec) {
        *self.shared.org.write().expect("not poisoned") = org;
    }

    /// From now on, answers every room and group request as DingTalk does once the
    /// organisation's monthly API quota is spent (403 `...ApiCountLimitForOrg`), or no more.
    pub fn set_quota_spent(&self, spent: bool) {
        self.shared.quota_spent.store(spent, Ordering::Relaxed);
    }

    /// The next `times` free/busy answers are replaced by `kind`.
    pub fn add_schedule_fault(&self, times: u32, kind: FaultKind) {
        self.shared
            .schedule_faults
            .lock()
            .expect("not poisoned")
            .push((times, kind));
    }

    pub fn add_fault(&self, fault: Fault) {
        self.shared.faults.lock().expect("not poisoned").push(fault);
    }

    pub fn requests(&self) -> RequestCounts {
        let c = &self.shared.counts;
        RequestCounts {
            tokens: c.token_requests.load(Ordering::Relaxed),
            pages: c.page_requests.load(Ordering::Relaxed),
            group_lists: c.group_requests.load(Ordering::Relaxed),
            schedules: c.schedule_requests.load(Ordering::Relaxed),
        }
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Settings for syncing from a stand-in into `database`: its credentials, page size 100, no
/// client-side rate limit to speak of, and short retry delays.
pub fn settings_for(standin: &StandIn, database: std::path::PathBuf) -> crate::config::Settings {
    crate::config::Settings::for_endpoint(
        standin.base_url(),
        APP_KEY,
        secrecy::SecretString::from(APP_SECRET),
        UNION_ID,
        database,
    )
}
