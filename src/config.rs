//! Settings: built-in defaults < TOML file < environment (`ROOMSYNC__<SECTION>__<KEY>`).
//!
//! Everything is validated here, before anything touches the network or the database, so a
//! config error exits 2 with a message that names the key. No message ever shows the app
//! secret: syntax errors name the place, not the line, and every message is scrubbed of it.

mod availability;
mod number;
mod observe;
mod quota;
mod source;

pub use availability::AvailabilitySettings;

pub use observe::{MetricsSettings, NotifyOn, NotifySettings};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use number::RawNumber;

/// Where the configuration file is looked for when neither `--config` nor `$ROOMSYNC_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/roomsync/roomsync.toml";
/// Default schedule: every 15 minutes, 7 minutes past the quarter, away from the top of the hour
/// as DingTalk asks of batch jobs.
pub const DEFAULT_CRON: &str = "0 7/15 * * * *";

/// Why the configuration was refused; the message names the key (or the place) and never
/// holds the app secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path} not found ({hint})")]
    FileNotFound { path: PathBuf, hint: &'static str },
    #[error("configuration file {path}: cannot read it: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("configuration file {path}, line {line}, column {column}: {problem}{}", key_note(.key))]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        problem: String,
        /// The key the broken line sets, when it has one.
        key: Option<String>,
    },
    #[error("configuration: {0}")]
    Parse(String),
    #[error("configuration: {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

fn key_note(key: &Option<String>) -> String {
    key.as_ref()
        .map(|k| format!(" (in the line of {k})"))
        .unwrap_or_default()
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// The validated settings every part of roomsync works from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub dingtalk: DingTalkSettings,
    pub database: DatabaseSettings,
    pub sync: SyncSettings,
    pub log: LogSettings,
    pub schedule: ScheduleSettings,
    pub metrics: MetricsSettings,
    /// The webhook, when `[notify] webhook_url` is set.
    pub notify: Option<NotifySettings>,
    /// DingTalk's monthly API quota: how much of it roomsync may spend.
    pub budget: crate::budget::Budget,
    /// Room availability (free/busy), refreshed on a schedule of its own when enabled.
    pub availability: AvailabilitySettings,
    /// Found while loading, to be logged once logging is set up (e.g. a secret file that
    /// other users can read).
    pub warnings: Vec<String>,
}

/// `[dingtalk]`: the API, the credentials, and the limits of every request.
#[derive(Debug, Clone)]
pub struct DingTalkSettings {
    pub base_url: Url,
    pub app_key: String,
    pub app_secret: SecretString,
    pub union_id: String,
    pub page_size: u32,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub retry_base_delay: Duration,
    pub requests_per_second: f64,
    /// The largest response body read; a longer one fails the run.
    pub max_response_bytes: u64,
    /// The most pages one run follows.
    pub max_pages: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    pub path: PathBuf,
}

/// `[sync]`: what one run may do.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub max_removal_ratio: f64,
    /// Days `room_changes` entries are kept; 0 keeps them forever.
    pub keep_changes_days: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleSettings {
    pub cron: String,
    pub run_on_start: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/lib/roomsync/rooms.db"),
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        Self {
            cron: DEFAULT_CRON.into(),
            run_on_start: true,
        }
    }
}

/// The documented range of every number of `[dingtalk]` and `[sync]` (README, config file).
mod ranges {
    use std::ops::RangeInclusive;

    pub const PAGE_SIZE: RangeInclusive<i64> = 1..=100;
    pub const TIMEOUT_SECS: RangeInclusive<f64> = 1.0..=600.0;
    pub const MAX_ATTEMPTS: RangeInclusive<i64> = 1..=100;
    pub const RETRY_BASE_DELAY_MS: RangeInclusive<i64> = 1..=60_000;
    pub const REQUESTS_PER_SECOND: RangeInclusive<f64> = 0.1..=10_000.0;
    /// 64 KiB (a page of long records) to 1 GiB.
    pub const MAX_RESPONSE_BYTES: RangeInclusive<i64> = 65_536..=1_073_741_824;
    pub const MAX_PAGES: RangeInclusive<i64> = 1..=1_000_000;
    pub const MAX_REMOVAL_RATIO: RangeInclusive<f64> = 0.0..=1.0;
    /// Up to a hundred years.
    pub const KEEP_CHANGES_DAYS: RangeInclusive<i64> = 0..=36_500;
}

/// The `[dingtalk]` table as written, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDingTalk {
    base_url: String,
    app_key: Option<String>,
    app_secret: Option<SecretString>,
    app_secret_file: Option<PathBuf>,
    union_id: Option<String>,
    page_size: RawNumber,
    timeout_secs: RawNumber,
    max_attempts: RawNumber,
    retry_base_delay_ms: RawNumber,
    requests_per_second: RawNumber,
    max_response_bytes: RawNumber,
    max_pages: RawNumber,
}

impl Default for RawDingTalk {
    fn default() -> Self {
        Self {
            base_url: "https://api.dingtalk.io".into(),
            app_key: None,
            app_secret: None,
            app_secret_file: None,
            union_id: None,
            page_size: RawNumber::Int(100),
            timeout_secs: RawNumber::Int(30),
            max_attempts: RawNumber::Int(5),
            retry_base_delay_ms: RawNumber::Int(500),
            requests_per_second: RawNumber::Int(10),
            max_response_bytes: RawNumber::Int(8 * 1024 * 1024),
            max_pages: RawNumber::Int(10_000),
        }
    }
}

/// The `[sync]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSync {
    max_removal_ratio: RawNumber,
    keep_changes_days: RawNumber,
}

impl Default for RawSync {
    fn default() -> Self {
        Self {
            max_removal_ratio: RawNumber::Float(0.5),
            keep_changes_days: RawNumber::Int(90),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawSettings {
    dingtalk: RawDingTalk,
    database: DatabaseSettings,
    sync: RawSync,
    log: LogSettings,
    schedule: ScheduleSettings,
    metrics: observe::RawMetrics,
    notify: observe::RawNotify,
    budget: quota::RawBudget,
    availability: availability::RawAvailability,
}

/// Where the settings came from, for the checks that look at files.
struct Origin {
    config: PathBuf,
    config_holds_secret: bool,
    credentials_dir: Option<PathBuf>,
}

impl Settings {
    /// Loads the settings the way the binary does: `explicit` (from `--config`), else
    /// `$ROOMSYNC_CONFIG`, else [`DEFAULT_CONFIG_PATH`]; then the process environment.
    pub fn load(explicit: Option<&Path>) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load_with_env(explicit, &env)
    }

    /// Like [`Settings::load`], with the environment given as a map (tests use this).
    pub fn load_with_env(
        explicit: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        let loaded: Loaded<RawSettings> = load_layers(explicit, env)?;
        validate_rust_log(env)?;
        let origin = Origin {
            config_holds_secret: loaded.holds_secret,
            config: loaded.path,
            credentials_dir: env.get("CREDENTIALS_DIRECTORY").map(PathBuf::from),
        };
        let secrets: Vec<&str> = loaded.secrets.iter().map(String::as_str).collect();
        loaded.raw.validate(&origin).map_err(|e| match e {
            ConfigError::Invalid { key, problem } => invalid(key, source::scrub(problem, &secrets)),
            other => other,
        })
    }

    /// Settings for a run against a given endpoint without a config file (`--demo`, the
    /// benchmark): the built-in defaults, except short retry delays, no client-side rate
    /// limit to speak of, and no API budget.
    pub fn for_endpoint(
        base_url: Url,
        app_key: &str,
        app_secret: SecretString,
        union_id: &str,
        database: PathBuf,
    ) -> Settings {
        let raw = RawSettings::default();
        let mut dingtalk = raw
            .dingtalk
            .validate_limits()
            .expect("the built-in defaults are valid");
        dingtalk.retry_base_delay = Duration::from_millis(50);
        dingtalk.requests_per_second = 10_000.0;
        Settings {
            dingtalk: DingTalkSettings {
                base_url,
                app_key: app_key.into(),
                app_secret,
                union_id: union_id.into(),
                ..dingtalk.into_settings()
            },
            database: DatabaseSettings { path: database },
            sync: raw
                .sync
                .validate()
                .expect("the built-in defaults are valid"),
            log: raw.log,
            schedule: raw.schedule,
            metrics: raw
                .metrics
                .validate()
                .expect("the built-in defaults are valid"),
            notify: None,
            // The stand-in's calls are not DingTalk's: no budget.
            budget: crate::budget::Budget::new(0, "Asia/Shanghai").expect("a known time zone"),
            availability: raw
                .availability
                .validate()
                .expect("the built-in defaults are valid"),
            warnings: Vec::new(),
        }
    }
}

/// The layers as deserialized, with what the checks and the scrubbing of messages need.
struct Loaded<T> {
    raw: T,
    path: PathBuf,
    /// The file itself holds a secret (`app_secret`, `notify.secret`).
    holds_secret: bool,
    /// The secrets given in the file or the environment, to scrub from messages.
    secrets: Vec<String>,
}

/// The file named by `explicit`, else `$ROOMSYNC_CONFIG`, else [`DEFAULT_CONFIG_PATH`], under
/// the `ROOMSYNC__<SECTION>__<KEY>` environment, deserialized as `T` (not yet validated).
fn load_layers<T: serde::de::DeserializeOwned>(
    explicit: Option<&Path>,
    env: &HashMap<String, String>,
) -> Result<Loaded<T>, ConfigError> {
    let (path, hint) = match (explicit, env.get("ROOMSYNC_CONFIG")) {
        (Some(p), _) => (p.to_path_buf(), "given with --config"),
        (None, Some(p)) if !p.is_empty() => (PathBuf::from(p), "given in $ROOMSYNC_CONFIG"),
        _ => (
            PathBuf::from(DEFAULT_CONFIG_PATH),
            "the default; use --config PATH or $ROOMSYNC_CONFIG",
        ),
    };
    if !path.is_file() {
        return Err(ConfigError::FileNotFound { path, hint });
    }
    let file = source::read(&path)?;
    let inline_secrets = source::inline_secrets(&file.table);
    let env_secrets = ["ROOMSYNC__DINGTALK__APP_SECRET", "ROOMSYNC__NOTIFY__SECRET"]
        .iter()
        .filter_map(|k| env.get(*k).map(String::as_str));
    let secrets: Vec<&str> = inline_secrets.iter().copied().chain(env_secrets).collect();
    let overrides: config::Map<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("ROOMSYNC__"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let raw: T = config::Config::builder()
        .add_source(config::File::from_str(&file.text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("ROOMSYNC")
                .prefix_separator("__")
                .separator("__")
                .source(Some(overrides)),
        )
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| {
            let message = source::scrub(e.to_string(), &secrets);
            ConfigError::Parse(format!("{message} ({})", path.display()))
        })?;
    Ok(Loaded {
        raw,
        path,
        holds_secret: !inline_secrets.is_empty(),
        secrets: secrets.into_iter().map(String::from).collect(),
    })
}

/// What `roomsync status` reads of the configuration: `[database]` and nothing else, so that it
/// works without the `[dingtalk]` section or the app secret.
#[derive(Deserialize)]
struct DatabaseOnly {
    #[serde(default)]
    database: DatabaseSettings,
}

impl DatabaseSettings {
    /// `[database]` from the same layers as [`Settings::load`]; the rest of the file (the
    /// `[dingtalk]` section, the secret) is neither needed nor checked.
    pub fn load(explicit: Option<&Path>) -> Result<DatabaseSettings, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load_with_env(explicit, &env)
    }

    /// Like [`DatabaseSettings::load`], with the environment given as a map.
    pub fn load_with_env(
        explicit: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<DatabaseSettings, ConfigError> {
        let loaded: Loaded<DatabaseOnly> = load_layers(explicit, env)?;
        validate_rust_log(env)?;
        validate_database_path(&loaded.raw.database.path)?;
        Ok(loaded.raw.database)
    }
}

/// The numbers of `[dingtalk]`, checked.
struct Limits {
    page_size: u32,
    timeout: Duration,
    max_attempts: u32,
    retry_base_delay: Duration,
    requests_per_second: f64,
    max_response_bytes: u64,
    max_pages: u32,
}

impl Limits {
    /// Settings with these limits and placeholder credentials, to be filled in.
    fn into_settings(self) -> DingTalkSettings {
        DingTalkSettings {
            base_url: Url::parse("http://127.0.0.1/").expect("a valid URL"),
            app_key: String::new(),
            app_secret: SecretString::from(""),
            union_id: String::new(),
            page_size: self.page_size,
            timeout: self.timeout,
            max_attempts: self.max_attempts,
            retry_base_delay: self.retry_base_delay,
            requests_per_second: self.requests_per_second,
            max_response_bytes: self.max_response_bytes,
            max_pages: self.max_pages,
        }
    }
}

impl RawDingTalk {
    fn validate_limits(&self) -> Result<Limits, ConfigError> {
        use number::{decimal, integer};
        Ok(Limits {
            page_size: integer("dingtalk.page_size", &self.page_size, ranges::PAGE_SIZE)? as u32,
            timeout: Duration::from_secs_f64(decimal(
                "dingtalk.timeout_secs",
                &self.timeout_secs,
                ranges::TIMEOUT_SECS,
            )?),
            max_attempts: integer(
                "dingtalk.max_attempts",
                &self.max_attempts,
                ranges::MAX_ATTEMPTS,
            )? as u32,
            retry_base_delay: Duration::from_millis(integer(
                "dingtalk.retry_base_delay_ms",
                &self.retry_base_delay_ms,
                ranges::RETRY_BASE_DELAY_MS,
            )? as u64),
            requests_per_second: decimal(
                "dingtalk.requests_per_second",
                &self.requests_per_second,
                ranges::REQUESTS_PER_SECOND,
            )?,
            max_response_bytes: integer(
                "dingtalk.max_response_bytes",
                &self.max_response_bytes,
                ranges::MAX_RESPONSE_BYTES,
            )? as u64,
            max_pages: integer("dingtalk.max_pages", &self.max_pages, ranges::MAX_PAGES)? as u32,
        })
    }

    fn validate(self, origin: &Origin) -> Result<DingTalkSettings, ConfigError> {
        let base_url = Url::parse(&self.base_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| invalid("dingtalk.base_url", "not an http(s) URL"))?;
        let limits = self.validate_limits()?;
        let app_key = credential("dingtalk.app_key", self.app_key)?;
        let union_id = credential("dingtalk.union_id", self.union_id)?;
        let app_secret = resolve_secret(
            self.app_secret,
            self.app_secret_file,
            origin.credentials_dir.clone(),
        )?;
        Ok(DingTalkSettings {
            base_url,
            app_key,
            app_secret,
            union_id,
            ..limits.into_settings()
        })
    }
}

impl RawSync {
    fn validate(self) -> Result<SyncSettings, ConfigError> {
        Ok(SyncSettings {
            max_removal_ratio: number::decimal(
                "sync.max_removal_ratio",
                &self.max_removal_ratio,
                ranges::MAX_REMOVAL_RATIO,
            )?,
            keep_changes_days: number::integer(
                "sync.keep_changes_days",
                &self.keep_changes_days,
                ranges::KEEP_CHANGES_DAYS,
            )? as u32,
        })
    }
}

impl RawSettings {
    fn validate(self, origin: &Origin) -> Result<Settings, ConfigError> {
        let credential = origin
            .credentials_dir
            .as_ref()
            .map(|d| d.join("app_secret"));
        let secret_files: Vec<PathBuf> = [
            self.dingtalk.app_secret_file.clone().or(credential),
            self.notify.secret_file().map(Path::to_path_buf),
        ]
        .into_iter()
        .flatten()
        .collect();
        let dingtalk = self.dingtalk.validate(origin)?;
        let sync = self.sync.validate()?;
        validate_database_path(&self.database.path)?;
        validate_log_filter("log.level", &self.log.level)?;
        validate_cron(&self.schedule.cron)?;
        let metrics = self.metrics.validate()?;
        let notify = self.notify.validate()?;
        let budget = self.budget.validate()?;
        let availability = self.availability.validate()?;
        let warnings =
            source::exposure_warnings(&origin.config, origin.config_holds_secret, &secret_files);
        Ok(Settings {
            dingtalk,
            database: self.database,
            sync,
            log: self.log,
            schedule: self.schedule,
            metrics,
            notify,
            budget,
            availability,
            warnings,
        })
    }
}

/// The database must be a regular file or not exist yet: a device, a directory or a FIFO is
/// refused before anything (a lock file, a journal) is created beside it.
fn validate_database_path(path: &Path) -> Result<(), ConfigError> {
    if path.as_os_str().is_empty() {
        return Err(invalid("database.path", "must not be empty"));
    }
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => {
            let kind = if m.is_dir() {
                "a directory"
            } else {
                "not a regular file (a device, FIFO or socket)"
            };
            Err(invalid(
                "database.path",
                format!(
                    "{} is {kind}; it must be a regular file or not exist yet",
                    path.display()
                ),
            ))
        }
        _ => Ok(()),
    }
}

fn required(key: &'static str, value: Option<String>) -> Result<String, ConfigError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(invalid(key, "missing required key")),
    }
}

/// A required credential that must not still be the template's placeholder: `app_key =
/// "dingxxxxxxxxxxxxxxxx"` or `union_id = "xxxxxxxxxxxxxxxxxxxx"` would otherwise be sent to
/// DingTalk and fail there, far from the file that holds them.
fn credential(key: &'static str, value: Option<String>) -> Result<String, ConfigError> {
    let value = required(key, value)?;
    if is_placeholder(&value) {
        return Err(invalid(
            key,
            "still holds the configuration template's placeholder; set the real value from \
             DingTalk's developer console (see the README)",
        ));
    }
    Ok(value)
}

/// The placeholders of `config/roomsync.toml` and the README: runs of `x` (after DingTalk's
/// `ding` prefix for app keys), or the README's `YOUR-...` words.
fn is_placeholder(value: &str) -> bool {
    let value = value.trim();
    let lower = value.to_ascii_lowercase();
    let xs = lower.strip_prefix("ding").unwrap_or(&lower);
    (xs.len() >= 4 && xs.bytes().all(|b| b == b'x')) || value.starts_with("YOUR-")
}

/// The level names a single-word `log.level` or `RUST_LOG` may be.
pub const LOG_LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// A level name, or a tracing filter that parses and whose bare words are level names: an
/// unknown word such as `warning` would otherwise be read as a target name and silently turn
/// every line off.
pub fn validate_log_filter(key: &'static str, spec: &str) -> Result<(), ConfigError> {
    if spec.trim().is_empty() {
        return Err(invalid(
            key,
            "must not be empty (use \"off\" to turn logging off)",
        ));
    }
    let bare_words = spec
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !d.contains(['=', '[', '{', ':']));
    for word in bare_words {
        if !LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(word)) {
            return Err(invalid(
                key,
                format!(
                    "{word:?} is not a level; use one of {} or a filter such as \"roomsync=debug,warn\"",
                    LOG_LEVELS.join(", ")
                ),
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(spec)
        .map(|_| ())
        .map_err(|e| invalid(key, format!("{spec:?} is not a level or filter: {e}")))
}

/// `RUST_LOG`, when set, wins over `log.level`, so it is held to the same rules.
fn validate_rust_log(env: &HashMap<String, String>) -> Result<(), ConfigError> {
    match env.get("RUST_LOG").map(|v| v.trim()) {
        Some(v) if !v.is_empty() => validate_log_filter("RUST_LOG", v),
        _ => Ok(()),
    }
}

/// `app_secret`, else the contents of `app_secret_file`, else `$CREDENTIALS_DIRECTORY/app_secret`
/// (systemd `LoadCredential=`). Setting both keys is refused as ambiguous.
fn resolve_secret(
    inline: Option<SecretString>,
    file: Option<PathBuf>,
    credentials_dir: Option<PathBuf>,
) -> Result<SecretString, ConfigError> {
    let (secret, key) = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(invalid("dingtalk.app_secret", "set either app_secret or app_secret_file, not both"))
        }
        (Some(s), None) => (s, "dingtalk.app_secret"),
        (None, Some(path)) => (read_secret_file(&path, "dingtalk.app_secret_file")?, "dingtalk.app_secret_file"),
        (None, None) => match credentials_dir.map(|d| d.join("app_secret")).filter(|p| p.exists()) {
            Some(path) => (read_secret_file(&path, "dingtalk.app_secret")?, "dingtalk.app_secret"),
            None => {
                return Err(invalid(
                    "dingtalk.app_secret",
                    "missing required key (set app_secret, app_secret_file, or provide the systemd credential app_secret)",
                ))
            }
        },
    };
    if secret.expose_secret().trim().is_empty() {
        return Err(invalid(key, "the app secret is empty"));
    }
    if is_placeholder(secret.expose_secret()) {
        return Err(invalid(
            key,
            "the app secret is still the README's placeholder; use the AppSecret from DingTalk's developer console",
        ));
    }
    Ok(secret)
}

/// A secret from a file, one trailing newline trimmed.
pub(crate) fn read_secret_file(
    path: &Path,
    key: &'static str,
) -> Result<SecretString, ConfigError> {
    let mut text = std::fs::read_to_string(path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    // One trailing newline is what editors and `echo` add; anything else is part of the secret.
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(SecretString::from(text))
}

/// Six fields, seconds first, parsed the way the scheduler will parse it.
pub fn validate_cron(expr: &str) -> Result<(), ConfigError> {
    validate_cron_of("schedule.cron", expr)
}

/// A six-field schedule for `key`, parsed the way the scheduler will parse it.
fn validate_cron_of(key: &'static str, expr: &str) -> Result<(), ConfigError> {
    let fields = expr.split_whitespace().count();
    if fields != 6 {
        return Err(invalid(
            key,
            format!("{expr:?} has {fields} fields; six are needed, seconds first (e.g. {DEFAULT_CRON:?})"),
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(expr)
        .map(|_| ())
        .map_err(|e| invalid(key, format!("{expr:?} is not a valid schedule: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const MINIMAL: &str = "[dingtalk]\napp_key = \"key\"\nunion_id = \"union\"\n";

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_fill_everything_not_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "c.toml",
            &format!("{MINIMAL}app_secret = \"s3cr3t-value\"\n"),
        );
        let s = Settings::load_with_env(Some(&path), &HashMap::new()).unwrap();
        assert_eq!(s.dingtalk.base_url.as_str(), "https://api.dingtalk.io/");
        assert_eq!(s.dingtalk.page_size, 100);
        assert_eq!(s.dingtalk.timeout, Duration::from_secs(30));
        assert_eq!(s.dingtalk.max_attempts, 5);
        assert_eq!(s.dingtalk.retry_base_delay, Duration::from_millis(500));
        assert_eq!(s.dingtalk.requests_per_second, 10.0);
        assert_eq!(s.database.path, PathBuf::from("/var/lib/roomsync/rooms.db"));
        assert_eq!(s.sync.max_removal_ratio, 0.5);
        assert_eq!(s.sync.keep_changes_days, 90);
        assert_eq!(
            (s.log.level.as_str(), s.log.format),
            ("info", LogFormat::Text)
        );
        assert_eq!(
            (s.schedule.cron.as_str(), s.schedule.run_on_start),
            (DEFAULT_CRON, true)
        );
        assert_eq!(s.dingtalk.app_secret.expose_secret(), "s3cr3t-value");
    }

    #[test]
    fn environment_wins_over_the_file_and_keeps_strings_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "c.toml",
            &format!("{MINIMAL}app_secret = \"from-file\"\npage_size = 50\n"),
        );
        let e = env(&[
            ("ROOMSYNC__DINGTALK__APP_SECRET", "0123"),
            ("ROOMSYNC__DINGTALK__PAGE_SIZE", "20"),
            ("ROOMSYNC__SCHEDULE__RUN_ON_START", "false"),
        ]);
        let s = Settings::load_with_env(Some(&path), &e).unwrap();
        assert_eq!(
            s.dingtalk.app_secret.expose_secret(),
            "0123",
            "leading zero kept"
        );
        assert_eq!(s.dingtalk.page_size, 20);
        assert!(!s.schedule.run_on_start);
    }

    #[test]
    fn the_config_path_comes_from_the_flag_then_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "c.toml",
            &format!("{MINIMAL}app_secret = \"s\"\n"),
        );
        let e = env(&[("ROOMSYNC_CONFIG", path.to_str().unwrap())]);
        assert!(Settings::load_with_env(None, &e).is_ok());
        let err = Settings::load_with_env(Some(Path::new("/nope.toml")), &e).unwrap_err();
        assert!(err.to_string().contains("/nope.toml"), "{err}");
        let err = Settings::load_with_env(None, &HashMap::new()).unwrap_err();
        assert!(err.to_string().contains(DEFAULT_CONFIG_PATH), "{err}");
    }

    #[test]
    fn the_secret_file_loses_one_trailing_newline_only() {
        let dir = tempfile::tempdir().unwrap();
        let secret = write(dir.path(), "secret", "abc \n\n");
        let path = write(
            dir.path(),
            "c.toml",
            &format!("{MINIMAL}app_secret_file = \"{}\"\n", secret.display()),
        );
        let s = Settings::load_with_env(Some(&path), &HashMap::new()).unwrap();
        assert_eq!(s.dingtalk.app_secret.expose_secret(), "abc \n");
        write(dir.path(), "secret", "abc\r\n");
        let s = Settings::load_with_env(Some(&path), &HashMap::new()).unwrap();
        assert_eq!(s.dingtalk.app_secret.expose_secret(), "abc");
    }

    #[test]
    fn the_systemd_credential_is_used_when_no_secret_is_configured() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "app_secret", "from-credential\n");
        let path = write(dir.path(), "c.toml", MINIMAL);
        let e = env(&[("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap())]);
        let s = Settings::load_with_env(Some(&path), &e).unwrap();
        assert_eq!(s.dingtalk.app_secret.expose_secret(), "from-credential");
        let err = Settings::load_with_env(Some(&path), &HashMap::new()).unwrap_err();
        assert!(
            err.to_string()
                .contains("dingtalk.app_secret: missing required key"),
            "{err}"
        );
    }

    #[test]
    fn both_secret_keys_or_an_empty_secret_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = write(dir.path(), "secret", "x\n");
        let both = format!(
            "{MINIMAL}app_secret = \"a\"\napp_secret_file = \"{}\"\n",
            secret.display()
        );
        let path = write(dir.path(), "c.toml", &both);
        let err = Settings::load_with_env(Some(&path), &HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
        let path = write(
            dir.path(),
            "c.toml",
            &format!("{MINIMAL}app_secret = \" \"\n"),
        );
        let err = Settings::load_with_env(Some(&path), &HashMap::new()).unwrap_err();
        assert!(
            err.to_string()
                .contains("dingtalk.app_secret: the app secret is empty"),
            "{err}"
        );
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "c.toml",
            &format!("{MINIMAL}app_secret = \"hunter2-hunter2\"\n"),
        );
        let s = Settings::load_with_env(Some(&path), &HashMap::new()).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn cron_needs_six_valid_fields() {
        assert!(validate_cron(DEFAULT_CRON).is_ok());
        assert!(validate_cron("*/1 * * * * *").is_ok());
        assert!(validate_cron("0 7/15 * * *").is_err());
        assert!(validate_cron("0 61 * * * *").is_err());
    }
}
