//! The webhook: after a run that matches `[notify] on`, one JSON document POSTed to
//! `[notify] webhook_url`, signed with HMAC-SHA256 when a secret is set
//! (`X-Roomsync-Signature: sha256=<hex>`, as GitHub's webhooks do).
//!
//! Delivery never changes a run's outcome and never holds up the next one: it runs in a task of
//! its own, retried after 1, 2 and 4 s on network errors, timeouts and 5xx. A final failure is
//! logged at WARN and counted in `roomsync_webhook_deliveries_total{outcome="failed"}`. Only the
//! webhook's host is ever logged: its path, query and user info may be credentials.

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::Sha256;

use crate::config::{NotifyOn, NotifySettings};
use crate::metrics::Metrics;

/// The waits before the second, third and fourth attempt.
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// The document POSTed after a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunNotice {
    pub run_id: i64,
    pub trigger: String,
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub rooms_seen: Option<u64>,
    /// New rooms.
    pub added: u64,
    pub updated: u64,
    pub removed: u64,
    /// Rooms that had left the listing and came back.
    pub restored: u64,
    /// Parts of records left out; null for a run that failed.
    pub warnings: Option<u64>,
    /// Why the run failed; only for a failed run.
    pub error: Option<String>,
    /// The run's range in `room_changes` (`change_id BETWEEN first AND last`); null when the
    /// run changed nothing.
    pub first_change_id: Option<i64>,
    pub last_change_id: Option<i64>,
    /// The mirror's path.
    pub database: String,
}

impl RunNotice {
    fn changed_rooms(&self) -> bool {
        self.added + self.updated + self.removed + self.restored > 0
    }
}

/// The configured webhook.
pub struct Notifier {
    http: reqwest::Client,
    settings: NotifySettings,
    metrics: Metrics,
}

/// How one attempt went.
enum Attempt {
    Delivered,
    /// Worth trying again (network, timeout, 5xx): what happened, in words.
    Retry(String),
    /// Not worth trying again (a 4xx): what happened.
    GiveUp(String),
}

impl Notifier {
    pub fn new(settings: NotifySettings, metrics: Metrics) -> Result<Notifier, reqwest::Error> {
        let http = crate::http::client_builder()
            .timeout(settings.timeout)
            .user_agent(concat!("roomsync/", env!("CARGO_PKG_VERSION")))
            // A redirect could carry the signed body elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Notifier {
            http,
            settings,
            metrics,
        })
    }

    /// Whether `[notify] on` asks for this run: `changes` (a run that changed rooms),
    /// `failure` (a failed run), `success` (every succeeded run).
    pub fn wants(&self, notice: &RunNotice) -> bool {
        self.settings.on.iter().any(|on| match on {
            NotifyOn::Changes => notice.status == "succeeded" && notice.changed_rooms(),
            NotifyOn::Failure => notice.status == "failed",
            NotifyOn::Success => notice.status == "succeeded",
        })
    }

    /// Delivers `notice`, trying again as the module says; returns whether it arrived.
    pub async fn deliver(&self, notice: RunNotice) -> bool {
        let body = serde_json::to_vec(&notice).expect("a notice serializes");
        let signature = self.signature(&body);
        let host = self.settings.host();
        let mut last = String::new();
        for attempt in 0..=RETRY_DELAYS.len() {
            if attempt > 0 {
                tokio::time::sleep(RETRY_DELAYS[attempt - 1]).await;
            }
            match self.attempt(&body, signature.as_deref()).await {
                Attempt::Delivered => {
                    tracing::debug!(run_id = notice.run_id, host, "webhook delivered");
                    self.metrics.webhook_delivery("delivered");
                    return true;
                }
                Attempt::Retry(why) => last = why,
                Attempt::GiveUp(why) => {
                    last = why;
                    break;
                }
            }
        }
        tracing::warn!(
            run_id = notice.run_id,
            host,
            "webhook delivery failed, not tried again: {last}"
        );
        self.metrics.webhook_delivery("failed");
        false
    }

    async fn attempt(&self, body: &[u8], signature: Option<&str>) -> Attempt {
        let mut request = self
            .http
            .post(self.settings.webhook_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("X-Roomsync-Signature", signature);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Attempt::Delivered,
            Ok(response) if response.status().is_server_error() => {
                Attempt::Retry(format!("HTTP {}", response.status().as_u16()))
            }
            Ok(response) => Attempt::GiveUp(format!("HTTP {}", response.status().as_u16())),
            // Without the URL: it may hold a credential.
            Err(e) => Attempt::Retry(e.without_url().to_string()),
        }
    }

    /// `sha256=<hex>` of the body under the secret, when one is set.
    fn signature(&self, body: &[u8]) -> Option<String> {
        let key = self.settings.secret.as_ref()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(body);
        Some(format!(
            "sha256={}",
            hex::encode(mac.finalize().into_bytes())
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(status: &str, added: u64) -> RunNotice {
        RunNotice {
            run_id: 1,
            trigger: "schedule".into(),
            status: status.into(),
            started_at: "2026-11-27T10:00:00Z".into(),
            finished_at: Some("2026-11-27T10:00:01Z".into()),
            rooms_seen: Some(3),
            added,
            updated: 0,
            removed: 0,
            restored: 0,
            warnings: Some(0),
            error: None,
            first_change_id: None,
            last_change_id: None,
            database: "/var/lib/roomsync/rooms.db".into(),
        }
    }

    fn notifier(on: Vec<NotifyOn>, secret: Option<&str>) -> Notifier {
        let settings = NotifySettings {
            webhook_url: "https://hooks.example.com/x".parse().unwrap(),
            on,
            timeout: Duration::from_secs(1),
            secret: secret.map(|s| secrecy::SecretString::from(s.to_string())),
        };
        Notifier::new(settings, Metrics::new()).unwrap()
    }

    #[test]
    fn the_default_asks_for_changes_and_failures_not_for_no_ops() {
        let n = notifier(vec![NotifyOn::Changes, NotifyOn::Failure], None);
        assert!(n.wants(&notice("succeeded", 2)));
        assert!(n.wants(&notice("failed", 0)));
        assert!(!n.wants(&notice("succeeded", 0)));
        assert!(!n.wants(&notice("interrupted", 0)));
        let all = notifier(vec![NotifyOn::Success], None);
        assert!(all.wants(&notice("succeeded", 0)));
        assert!(!all.wants(&notice("failed", 0)));
    }

    #[test]
    fn the_signature_is_githubs() {
        // The example of GitHub's documentation on validating webhook deliveries.
        let n = notifier(vec![], Some("It's a Secret to Everybody"));
        assert_eq!(
            n.signature(b"Hello, World!").unwrap(),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        assert!(notifier(vec![], None).signature(b"x").is_none());
    }
}
