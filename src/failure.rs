//! One error of a sync run, as recorded in `sync_errors`, and the redaction of secrets from
//! every text taken from upstream.

use std::fmt;
use std::sync::{Arc, Mutex};

use secrecy::{ExposeSecret, SecretString};

/// Where in a run an error happened (`sync_errors.stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Auth,
    Fetch,
    Validate,
    Store,
    /// A bug: the run panicked (error code `internal.panic`).
    Internal,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Auth => "auth",
            Stage::Fetch => "fetch",
            Stage::Validate => "validate",
            Stage::Store => "store",
            Stage::Internal => "internal",
        }
    }
}

/// Whether a run stopped for it (`sync_errors.severity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The request or the run failed.
    Error,
    /// A part of a record was left out; the run went on.
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// roomsync's own error codes, recorded where DingTalk gave none.
pub mod codes {
    /// A complete listing would have removed too many rooms.
    pub const REMOVAL_GUARD: &str = "removal.guard";
    /// DingTalk's per-IP throttle answered with an HTML page or a `punish` body.
    pub const IP_THROTTLED: &str = "ip.throttled";
    /// The request did not complete: connection refused or reset, or the body broke off.
    pub const CONNECTION: &str = "network.connection";
    /// The request took longer than `timeout_secs`.
    pub const TIMEOUT: &str = "network.timeout";
    /// An HTTP error whose body was not DingTalk's JSON error shape.
    pub const HTTP: &str = "http.error";
    /// The response did not have the documented shape.
    pub const BAD_RESPONSE: &str = "response.invalid";
    /// `hasMore` was true but no `nextToken` came with it.
    pub const MISSING_NEXT_TOKEN: &str = "pagination.missing_next_token";
    /// A `nextToken` came back that this run had already followed.
    pub const REPEATED_NEXT_TOKEN: &str = "pagination.repeated_next_token";
    /// The local database refused a write.
    pub const DATABASE: &str = "database.error";
    /// The server answered with a redirect, which is never followed.
    pub const REDIRECT: &str = "http.redirect";
    /// A response body longer than `dingtalk.max_response_bytes`.
    pub const TOO_LARGE: &str = "response.too_large";
    /// More pages than `dingtalk.max_pages`, or empty pages that promise more, without end.
    pub const RUNAWAY_PAGINATION: &str = "pagination.runaway";
    /// The run panicked: a bug, caught so the process goes on.
    pub const PANIC: &str = "internal.panic";
    /// A warning: a part of a record that could not be used was left out.
    pub const PART_SKIPPED: &str = "record.part_skipped";
}

/// One failed step: a request attempt, a validation, or a database write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub stage: Stage,
    /// 0-based page of the room list, where it applies.
    pub page: Option<u32>,
    pub http_status: Option<u16>,
    /// DingTalk's code, or one of [`codes`].
    pub code: Option<String>,
    pub message: String,
    pub request_id: Option<String>,
    /// True when the request was tried again after this error.
    pub retried: bool,
    pub severity: Severity,
}

impl Failure {
    pub fn new(stage: Stage, code: &str, message: impl Into<String>) -> Self {
        Failure {
            stage,
            page: None,
            http_status: None,
            code: Some(code.to_string()),
            message: message.into(),
            request_id: None,
            retried: false,
            severity: Severity::Error,
        }
    }

    /// A warning of the run: `message` says which part of which record was left out.
    pub fn warning(page: Option<u32>, message: impl Into<String>) -> Self {
        Failure {
            severity: Severity::Warning,
            ..Failure::new(Stage::Validate, codes::PART_SKIPPED, message).on_page(page)
        }
    }

    pub fn on_page(mut self, page: Option<u32>) -> Self {
        self.page = page;
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.stage.as_str())?;
        if let Some(page) = self.page {
            write!(f, " (page {page})")?;
        }
        write!(f, ": ")?;
        if let Some(status) = self.http_status {
            write!(f, "HTTP {status} ")?;
        }
        if let Some(code) = &self.code {
            write!(f, "[{code}] ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

/// A test hook of debug builds (`cargo test` builds the binary so): `ROOMSYNC_TEST_PANIC_RUNS=N`
/// makes the first N runs of the process panic, to show that a panicking run is recorded and
/// the process goes on. Release builds have no such hook.
pub fn panic_if_asked_in_tests() {
    #[cfg(debug_assertions)]
    {
        use std::sync::atomic::{AtomicU32, Ordering};
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let asked = std::env::var("ROOMSYNC_TEST_PANIC_RUNS")
            .ok()
            .and_then(|v| v.parse::<u32>().ok());
        if let Some(n) = asked {
            if RUNS.fetch_add(1, Ordering::SeqCst) < n {
                panic!("ROOMSYNC_TEST_PANIC_RUNS asked this run to panic");
            }
        }
    }
}

/// Makes upstream text safe to log, print and store: the app secret and every access token
/// this process was issued are replaced by `[redacted]`, and the text is cut to
/// [`MAX_UPSTREAM_TEXT`] characters. Clones share the tokens registered with any of them.
#[derive(Clone)]
pub struct Redactor {
    /// The operator's secret: redacted whatever its length.
    app_secret: SecretString,
    /// Tokens DingTalk issued.
    tokens: Arc<Mutex<Vec<SecretString>>>,
}

/// Issued tokens shorter than this are left alone: real ones are far longer, and a short
/// value an upstream chose would match ordinary words of every message.
const MIN_TOKEN_LEN: usize = 8;

/// The longest upstream text kept in a message, a request id or an error code.
pub const MAX_UPSTREAM_TEXT: usize = 500;

impl Redactor {
    pub fn new(app_secret: &SecretString) -> Redactor {
        Redactor {
            app_secret: app_secret.clone(),
            tokens: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Registers a newly issued token, to be redacted from now on.
    pub fn add(&self, token: &SecretString) {
        if token.expose_secret().len() < MIN_TOKEN_LEN {
            return;
        }
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if !tokens
            .iter()
            .any(|s| s.expose_secret() == token.expose_secret())
        {
            tokens.push(token.clone());
        }
    }

    /// `text` without any secret, at most [`MAX_UPSTREAM_TEXT`] characters long.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        let secret = self.app_secret.expose_secret();
        if !secret.trim().is_empty() && text.contains(secret) {
            text = text.replace(secret, "[redacted]");
        }
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        for token in tokens.iter().map(|s| s.expose_secret()) {
            if text.contains(token) {
                text = text.replace(token, "[redacted]");
            }
        }
        truncate(text)
    }

    /// The failure with its message, code and request id redacted.
    pub fn failure(&self, mut f: Failure) -> Failure {
        f.message = self.redact(&f.message);
        f.code = f.code.map(|c| self.redact(&c));
        f.request_id = f.request_id.map(|r| self.redact(&r));
        f
    }
}

fn truncate(text: String) -> String {
    if text.chars().count() <= MAX_UPSTREAM_TEXT {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_UPSTREAM_TEXT - 3).collect();
    cut.push_str("...");
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_and_every_issued_token_are_redacted_and_text_is_cut() {
        let redactor = Redactor::new(&SecretString::from("0123456789abcdef"));
        redactor.clone().add(&SecretString::from("token-one-xyz"));
        redactor.add(&SecretString::from("token-two-xyz"));
        assert_eq!(
            redactor.redact("bad secret 0123456789abcdef, token-one-xyz and token-two-xyz!"),
            "bad secret [redacted], [redacted] and [redacted]!"
        );
        // A short token an upstream issued would match ordinary words: left alone.
        redactor.add(&SecretString::from("s"));
        assert_eq!(redactor.redact("short s"), "short s");
        let long = "x".repeat(2000);
        let cut = redactor.redact(&long);
        assert_eq!(cut.chars().count(), MAX_UPSTREAM_TEXT);
        assert!(cut.ends_with("..."));
        let f = Failure {
            request_id: Some("id-token-one-xyz".into()),
            ..Failure::new(Stage::Fetch, "token-two-xyz", "m")
        };
        let f = redactor.failure(f);
        assert_eq!(f.request_id.as_deref(), Some("id-[redacted]"));
        assert_eq!(f.code.as_deref(), Some("[redacted]"));
    }

    #[test]
    fn a_short_app_secret_is_redacted_too() {
        // The operator chose it: however short, it never reaches a log.
        let redactor = Redactor::new(&SecretString::from("pw42"));
        assert_eq!(
            redactor.redact("invalid appSecret pw42 for app"),
            "invalid appSecret [redacted] for app"
        );
        assert_eq!(
            Redactor::new(&SecretString::from("")).redact("nothing to hide"),
            "nothing to hide"
        );
    }
}
