//! `[metrics]` and `[notify]`: what roomsync tells the outside about its runs (Prometheus
//! metrics, a health endpoint, a webhook), as written and as validated.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::number::{self, RawNumber};
use super::{invalid, ConfigError};

/// `[metrics]`, validated.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// Where the daemon serves `GET /metrics` and `GET /healthz`; None: nothing listens.
    pub listen: Option<SocketAddr>,
    /// Where every run writes the metrics for node_exporter's textfile collector.
    pub textfile: Option<PathBuf>,
    /// `/healthz` answers 200 while the last success is younger.
    pub healthy_max_age: Duration,
}

/// When the webhook is called (`[notify] on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyOn {
    /// A run that added, updated, removed or restored a room.
    Changes,
    /// A run that failed.
    Failure,
    /// Every run that succeeded.
    Success,
}

/// `[notify]`, validated; present only when a webhook is configured.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    pub webhook_url: Url,
    pub on: Vec<NotifyOn>,
    pub timeout: Duration,
    /// The HMAC-SHA256 key of `X-Roomsync-Signature`, when one is set.
    pub secret: Option<SecretString>,
}

impl NotifySettings {
    /// The webhook's host (and port), the only part of its URL ever logged: its path, query
    /// and user info may all be credentials.
    pub fn host(&self) -> String {
        let host = self.webhook_url.host_str().unwrap_or("?");
        match self.webhook_url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        }
    }
}

/// `[metrics]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMetrics {
    listen: String,
    textfile: String,
    healthy_max_age: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self {
            listen: String::new(),
            textfile: String::new(),
            healthy_max_age: "2h".into(),
        }
    }
}

impl RawMetrics {
    pub(super) fn validate(self) -> Result<MetricsSettings, ConfigError> {
        let listen = match self.listen.trim() {
            "" => None,
            text => Some(text.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "metrics.listen",
                    format!("{text:?} is not an address and port such as \"127.0.0.1:9466\""),
                )
            })?),
        };
        let textfile = match self.textfile.trim() {
            "" => None,
            text => Some(validate_textfile(Path::new(text))?),
        };
        let healthy_max_age = humantime::parse_duration(self.healthy_max_age.trim())
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                invalid(
                    "metrics.healthy_max_age",
                    format!(
                        "{:?} is not a duration such as \"2h\" or \"90m\"",
                        self.healthy_max_age
                    ),
                )
            })?;
        Ok(MetricsSettings {
            listen,
            textfile,
            healthy_max_age,
        })
    }
}

/// The textfile's directory must exist: the file is written beside a temporary one and renamed.
fn validate_textfile(path: &Path) -> Result<PathBuf, ConfigError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if path.file_name().is_none() || !dir.is_dir() {
        return Err(invalid(
            "metrics.textfile",
            format!("{}: its directory must exist", path.display()),
        ));
    }
    Ok(path.to_path_buf())
}

/// `[notify]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawNotify {
    webhook_url: String,
    on: Vec<NotifyOn>,
    timeout_secs: RawNumber,
    secret: Option<SecretString>,
    secret_file: Option<PathBuf>,
}

impl Default for RawNotify {
    fn default() -> Self {
        Self {
            webhook_url: String::new(),
            on: vec![NotifyOn::Changes, NotifyOn::Failure],
            timeout_secs: RawNumber::Int(10),
            secret: None,
            secret_file: None,
        }
    }
}

impl RawNotify {
    /// The secret file, when one is set (for the exposure check).
    pub(super) fn secret_file(&self) -> Option<&Path> {
        self.secret_file.as_deref()
    }

    pub(super) fn validate(self) -> Result<Option<NotifySettings>, ConfigError> {
        let timeout = number::decimal("notify.timeout_secs", &self.timeout_secs, 1.0..=120.0)?;
        let secret = match (self.secret, self.secret_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "notify.secret",
                    "set either secret or secret_file, not both",
                ))
            }
            (Some(s), None) => Some(s),
            (None, Some(path)) => Some(super::read_secret_file(&path, "notify.secret_file")?),
            (None, None) => None,
        };
        if secret
            .as_ref()
            .is_some_and(|s| s.expose_secret().is_empty())
        {
            return Err(invalid("notify.secret", "the webhook secret is empty"));
        }
        let text = self.webhook_url.trim();
        if text.is_empty() {
            return Ok(None);
        }
        Ok(Some(NotifySettings {
            webhook_url: validate_webhook_url(text)?,
            on: self.on,
            timeout: Duration::from_secs_f64(timeout),
            secret,
        }))
    }
}

/// `https`, or `http` to a loopback address. The URL itself is never echoed: its path or
/// query may be a credential.
fn validate_webhook_url(text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text)
        .ok()
        .filter(|u| u.has_host())
        .ok_or_else(|| invalid("notify.webhook_url", "not an http(s) URL"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(invalid(
            "notify.webhook_url",
            "must be https (plain http only to a loopback address: 127.0.0.0/8, ::1, localhost)",
        )),
        _ => Err(invalid("notify.webhook_url", "not an http(s) URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_need_https_except_on_loopback() {
        for ok in [
            "https://hooks.example.com/x?token=abc",
            "http://127.0.0.1:8080/hook",
            "http://127.9.9.9/hook",
            "http://localhost/hook",
            "http://[::1]:9000/hook",
        ] {
            assert!(validate_webhook_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://hooks.example.com/x",
            "ftp://x/y",
            "not a url",
            "http://10.0.0.1/x",
        ] {
            let err = validate_webhook_url(bad).unwrap_err().to_string();
            assert!(err.contains("notify.webhook_url"), "{err}");
            assert!(!err.contains(bad), "the URL is not echoed: {err}");
        }
    }

    #[test]
    fn metrics_keys_are_checked() {
        let raw = |listen: &str, textfile: &str, age: &str| RawMetrics {
            listen: listen.into(),
            textfile: textfile.into(),
            healthy_max_age: age.into(),
        };
        let ok = raw("127.0.0.1:9466", "/tmp/roomsync.prom", "90m")
            .validate()
            .unwrap();
        assert_eq!(ok.listen, Some("127.0.0.1:9466".parse().unwrap()));
        assert_eq!(ok.healthy_max_age, Duration::from_secs(5400));
        assert!(raw("localhost", "", "2h").validate().is_err());
        assert!(raw("", "/no/such/dir/x.prom", "2h").validate().is_err());
        assert!(raw("", "", "soon").validate().is_err());
        let off = raw("", "", "2h").validate().unwrap();
        assert!(off.listen.is_none() && off.textfile.is_none());
    }
}
