//! One error of a sync run, as recorded in `sync_errors`.

use std::fmt;

/// Where in a run an error happened (`sync_errors.stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Auth,
    Fetch,
    Validate,
    Store,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Auth => "auth",
            Stage::Fetch => "fetch",
            Stage::Validate => "validate",
            Stage::Store => "store",
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
