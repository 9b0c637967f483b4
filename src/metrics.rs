//! Prometheus metrics of the process: what runs did, what DingTalk answered, how the mirror
//! stands. Served by the daemon on `[metrics] listen` (`GET /metrics`, `GET /healthz`) and
//! written after every run to `[metrics] textfile`, in the text exposition format 0.0.4.
//!
//! Counters count from the start of the process; the gauges of the mirror (the last run and
//! success, the rooms) are set from the database at start and after every run.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use tokio_util::sync::CancellationToken;

/// How one HTTP request to DingTalk ended (`roomsync_http_requests_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpOutcome {
    /// A 2xx answer with a usable body.
    Ok,
    /// A redirect (never followed).
    Http3xx,
    Http4xx,
    Http5xx,
    /// DingTalk's throttling: 429, 403 `...QpsLimit...`, or its per-IP throttle page.
    Throttled,
    Timeout,
    /// The connection failed or broke off.
    Network,
    /// A body longer than `dingtalk.max_response_bytes`.
    TooLarge,
    /// A 2xx carrying DingTalk's legacy error code (`errcode`).
    ApiError,
}

impl HttpOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpOutcome::Ok => "ok",
            HttpOutcome::Http3xx => "http_3xx",
            HttpOutcome::Http4xx => "http_4xx",
            HttpOutcome::Http5xx => "http_5xx",
            HttpOutcome::Throttled => "throttled",
            HttpOutcome::Timeout => "timeout",
            HttpOutcome::Network => "network",
            HttpOutcome::TooLarge => "too_large",
            HttpOutcome::ApiError => "api_error",
        }
    }
}

/// What a finished run adds to the metrics.
pub struct FinishedRun<'a> {
    /// `rooms` or `availability`: only the room list's runs count in `roomsync_runs_total`
    /// and the last run and success, as in `sync_status`.
    pub kind: &'a str,
    pub trigger: &'a str,
    pub status: &'a str,
    pub duration: Duration,
    pub pages: u32,
    /// `(change, rooms)`: added, updated, removed, restored; only for a run that applied.
    pub changes: &'a [(&'static str, u64)],
    pub warnings: u64,
}

/// The metrics of one process; clones share them.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Families>,
}

struct Families {
    registry: Registry,
    mirror: MirrorFamilies,
    runs: RunFamilies,
    upstream: UpstreamFamilies,
}

/// The gauges of the mirror.
struct MirrorFamilies {
    last_run: Gauge,
    last_success: Gauge,
    last_availability: Gauge,
    rooms: IntGaugeVec,
}

/// What runs did.
struct RunFamilies {
    runs: IntCounterVec,
    availability_runs: IntCounterVec,
    run_duration: Histogram,
    room_changes: IntCounterVec,
    pages: IntCounter,
    sync_errors: IntCounterVec,
    warnings: IntCounter,
}

/// What was asked of DingTalk and of the webhook, and what was held back.
struct UpstreamFamilies {
    http_requests: IntCounterVec,
    retries: IntCounter,
    api_calls: IntCounterVec,
    api_budget: IntGauge,
    ticks_skipped: IntCounterVec,
    webhook_deliveries: IntCounterVec,
}

impl MirrorFamilies {
    fn register(r: &Registry) -> Self {
        let rooms = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "roomsync_rooms",
                    "Rooms in the mirror: active (listed) or removed",
                ),
                &["state"],
            )
            .expect("valid gauge"),
        );
        for state in ["active", "removed"] {
            rooms.with_label_values(&[state]);
        }
        MirrorFamilies {
            last_run: register(
                r,
                gauge(
                    "roomsync_last_run_timestamp_seconds",
                    "When the latest run finished, whatever its status (Unix time)",
                ),
            ),
            last_success: register(
                r,
                gauge(
                    "roomsync_last_success_timestamp_seconds",
                    "When the latest successful run finished (Unix time)",
                ),
            ),
            last_availability: register(
                r,
                gauge(
                    "roomsync_last_availability_timestamp_seconds",
                    "When the latest successful availability refresh finished (Unix time)",
                ),
            ),
            rooms,
        }
    }
}

impl RunFamilies {
    fn register(r: &Registry) -> Self {
        let buckets = vec![
            0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
        ];
        RunFamilies {
            runs: register(
                r,
                counter_vec(
                    "roomsync_runs_total",
                    "Runs of the room list by trigger and status",
                    &["trigger", "status"],
                ),
            ),
            availability_runs: register(
                r,
                counter_vec(
                    "roomsync_availability_runs_total",
                    "Availability refreshes by trigger and status",
                    &["trigger", "status"],
                ),
            ),
            run_duration: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new("roomsync_run_duration_seconds", "How long runs took")
                        .buckets(buckets),
                )
                .expect("valid histogram"),
            ),
            room_changes: register(
                r,
                counter_vec(
                    "roomsync_room_changes_total",
                    "Room changes applied: added, updated, removed, restored",
                    &["change"],
                ),
            ),
            pages: register(
                r,
                counter("roomsync_pages_fetched_total", "Room list pages fetched"),
            ),
            sync_errors: register(
                r,
                counter_vec(
                    "roomsync_sync_errors_total",
                    "Errors recorded in sync_errors, by error code",
                    &["code"],
                ),
            ),
            warnings: register(
                r,
                counter(
                    "roomsync_warnings_total",
                    "Parts of records left out with a warning, in runs that applied",
                ),
            ),
        }
    }
}

impl UpstreamFamilies {
    fn register(r: &Registry) -> Self {
        UpstreamFamilies {
            http_requests: register(
                r,
                counter_vec(
                    "roomsync_http_requests_total",
                    "Requests sent to DingTalk by endpoint (the path) and outcome",
                    &["endpoint", "outcome"],
                ),
            ),
            retries: register(
                r,
                counter("roomsync_retries_total", "Requests to DingTalk tried again"),
            ),
            api_calls: register(
                r,
                counter_vec(
                    "roomsync_api_calls_total",
                    "Calls to DingTalk's metered API, by endpoint",
                    &["endpoint"],
                ),
            ),
            api_budget: register(
                r,
                IntGauge::new(
                    "roomsync_api_budget_calls",
                    "The monthly API call budget ([budget] monthly_calls; 0 = no limit)",
                )
                .expect("valid gauge"),
            ),
            ticks_skipped: register(
                r,
                counter_vec(
                    "roomsync_ticks_skipped_total",
                    "Scheduled ticks not run, by reason",
                    &["reason"],
                ),
            ),
            webhook_deliveries: register(
                r,
                counter_vec(
                    "roomsync_webhook_deliveries_total",
                    "Webhook deliveries by outcome: delivered, or failed after the retries",
                    &["outcome"],
                ),
            ),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let build_info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "roomsync_build_info",
                    "The running roomsync: always 1, its version as label",
                ),
                &["version"],
            )
            .expect("valid gauge"),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let families = Families {
            mirror: MirrorFamilies::register(&registry),
            runs: RunFamilies::register(&registry),
            upstream: UpstreamFamilies::register(&registry),
            registry,
        };
        Metrics {
            inner: Arc::new(families),
        }
    }

    /// Every metric in the text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.inner.registry.gather(), &mut out)
            .expect("the text encoder writes to memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// A request to DingTalk going out: a call of the metered API.
    pub fn api_call(&self, endpoint: &str) {
        self.inner
            .upstream
            .api_calls
            .with_label_values(&[endpoint])
            .inc();
    }

    /// How a request to DingTalk ended.
    pub fn http_request(&self, endpoint: &str, outcome: HttpOutcome) {
        self.inner
            .upstream
            .http_requests
            .with_label_values(&[endpoint, outcome.as_str()])
            .inc();
    }

    pub fn retry(&self) {
        self.inner.upstream.retries.inc();
    }

    /// An error recorded in `sync_errors`.
    pub fn sync_error(&self, code: &str) {
        self.inner.runs.sync_errors.with_label_values(&[code]).inc();
    }

    pub fn run_finished(&self, run: &FinishedRun<'_>) {
        let runs = &self.inner.runs;
        if run.kind == "availability" {
            runs.availability_runs
                .with_label_values(&[run.trigger, run.status])
                .inc();
            runs.warnings.inc_by(run.warnings);
            return;
        }
        runs.runs
            .with_label_values(&[run.trigger, run.status])
            .inc();
        runs.run_duration.observe(run.duration.as_secs_f64());
        runs.pages.inc_by(u64::from(run.pages));
        for (change, rooms) in run.changes {
            runs.room_changes
                .with_label_values(&[change])
                .inc_by(*rooms);
        }
        runs.warnings.inc_by(run.warnings);
    }

    /// The mirror as the database has it: the last run's and the last success's finish, the
    /// rooms.
    pub fn set_mirror(&self, mirror: &MirrorGauges) {
        let families = &self.inner.mirror;
        if let Some(t) = mirror.last_run {
            families.last_run.set(unix_seconds(t));
        }
        if let Some(t) = mirror.last_success {
            families.last_success.set(unix_seconds(t));
        }
        if let Some(t) = mirror.last_availability {
            families.last_availability.set(unix_seconds(t));
        }
        families
            .rooms
            .with_label_values(&["active"])
            .set(mirror.active_rooms);
        families
            .rooms
            .with_label_values(&["removed"])
            .set(mirror.removed_rooms);
    }

    /// When the last successful run finished, if one has.
    pub fn last_success(&self) -> Option<SystemTime> {
        let secs = self.inner.mirror.last_success.get();
        (secs > 0.0).then(|| UNIX_EPOCH + Duration::from_secs_f64(secs))
    }

    pub fn webhook_delivery(&self, outcome: &str) {
        self.inner
            .upstream
            .webhook_deliveries
            .with_label_values(&[outcome])
            .inc();
    }

    pub fn set_api_budget(&self, calls: u64) {
        self.inner.upstream.api_budget.set(calls as i64);
    }

    pub fn tick_skipped(&self, reason: &str) {
        self.inner
            .upstream
            .ticks_skipped
            .with_label_values(&[reason])
            .inc();
    }

    /// Writes the metrics to `path` atomically: a temporary file in the same directory, then
    /// a rename, so node_exporter's textfile collector never reads half a file.
    pub fn write_textfile(&self, path: &Path) -> std::io::Result<()> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let written =
            std::fs::write(&temp, self.render()).and_then(|()| std::fs::rename(&temp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }
}

/// The gauges that describe the mirror rather than the process.
#[derive(Debug, Clone, Default)]
pub struct MirrorGauges {
    pub last_run: Option<SystemTime>,
    pub last_success: Option<SystemTime>,
    pub last_availability: Option<SystemTime>,
    pub active_rooms: i64,
    pub removed_rooms: i64,
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

fn gauge(name: &str, help: &str) -> Gauge {
    Gauge::new(name, help).expect("valid gauge")
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid counter")
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter")
}

/// `/healthz`: fresh while the last success is younger than `max_age`, the same rule as
/// `roomsync status --max-age`.
pub fn health(metrics: &Metrics, max_age: Duration) -> (bool, String) {
    let max = humantime::format_duration(max_age);
    match metrics.last_success() {
        None => (
            false,
            format!("stale: no successful sync yet (max age {max})"),
        ),
        Some(at) => {
            let age = SystemTime::now().duration_since(at).unwrap_or_default();
            let age_text = humantime::format_duration(Duration::from_secs(age.as_secs()));
            if age < max_age {
                (
                    true,
                    format!("ok: last successful sync {age_text} ago (max age {max})"),
                )
            } else {
                (
                    false,
                    format!("stale: last successful sync {age_text} ago (max age {max})"),
                )
            }
        }
    }
}

#[derive(Clone)]
struct Served {
    metrics: Metrics,
    healthy_max_age: Duration,
}

/// The metrics listener: binds now (so a bad address fails the start), serves until
/// `shutdown`. It only reads the registry: a scrape never waits for, or delays, a sync.
pub async fn serve(
    listen: SocketAddr,
    metrics: Metrics,
    healthy_max_age: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(health_page))
        .with_state(Served {
            metrics,
            healthy_max_age,
        });
    Ok(tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "the metrics listener failed");
        }
    }))
}

async fn metrics_page(State(s): State<Served>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn health_page(State(s): State<Served>) -> Response {
    let (fresh, line) = health(&s.metrics, s.healthy_max_age);
    let status = if fresh {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{line}\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_the_age_of_the_last_success() {
        let metrics = Metrics::new();
        let (fresh, line) = health(&metrics, Duration::from_secs(3600));
        assert!(!fresh && line.contains("no successful sync yet"), "{line}");
        let mirror = MirrorGauges {
            last_success: Some(SystemTime::now() - Duration::from_secs(60)),
            ..MirrorGauges::default()
        };
        metrics.set_mirror(&mirror);
        assert!(health(&metrics, Duration::from_secs(3600)).0);
        let (fresh, line) = health(&metrics, Duration::from_secs(30));
        assert!(
            !fresh && line.starts_with("stale: last successful sync 1m"),
            "{line}"
        );
    }

    #[test]
    fn the_text_format_names_every_family() {
        let metrics = Metrics::new();
        metrics.http_request("/v1.0/rooms/meetingRoomLists", HttpOutcome::Ok);
        let text = metrics.render();
        for name in [
            "roomsync_build_info{version=",
            "roomsync_rooms{state=\"active\"} 0",
            "roomsync_http_requests_total{endpoint=\"/v1.0/rooms/meetingRoomLists\",outcome=\"ok\"} 1",
            "# TYPE roomsync_run_duration_seconds histogram",
        ] {
            assert!(text.contains(name), "{name}: {text}");
        }
    }
}
