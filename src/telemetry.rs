//! Logging: which lines are kept (the filter) and where they go.
//!
//! - stderr connected to the journal (`$JOURNAL_STREAM` names stderr's device and inode, as
//!   systemd sets it): native journald entries, with the span's and the event's fields as
//!   journal fields without prefix (`RUN_ID`, `TRIGGER`, the summary's counts), levels as
//!   priorities and no timestamp of our own (journald records it);
//! - a terminal: text with ANSI colours, unless `NO_COLOR` is set;
//! - anything else (a pipe, a file): plain text lines with timestamps, no escape sequences;
//! - `[log] format = "json"`: JSON lines on stderr wherever it goes, for log shippers.
//!
//! `RUST_LOG` wins over `[log] level` when set. A level name applies to roomsync's own lines;
//! dependencies log warnings and errors only, unless a filter asks for more.

use std::io::IsTerminal as _;
use std::os::fd::AsFd as _;
use std::os::unix::fs::MetadataExt as _;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// The crate's own target; level names apply to it.
const OWN_TARGET: &str = "roomsync";

/// Where stderr leads, as far as logging is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// systemd connected stderr to the journal.
    Journal,
    /// A terminal that may show colours.
    ColourTerminal,
    /// Anything else: a pipe, a file, a terminal with `NO_COLOR`.
    Plain,
}

impl Destination {
    /// Looks at the process's stderr and environment.
    pub fn detect() -> Destination {
        let journal_stream = std::env::var("JOURNAL_STREAM").ok();
        if journal_stream.is_some_and(|v| stderr_is(&v)) {
            return Destination::Journal;
        }
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        if std::io::stderr().is_terminal() && !no_color {
            Destination::ColourTerminal
        } else {
            Destination::Plain
        }
    }
}

/// Whether `journal_stream` (`<device>:<inode>`, decimal, as systemd sets `$JOURNAL_STREAM`)
/// names the file stderr is open on. A child whose stderr was redirected elsewhere inherits the
/// variable but not the stream, hence the comparison.
fn stderr_is(journal_stream: &str) -> bool {
    let Some((dev, ino)) = journal_stream.trim().split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// The filter for `spec` (`RUST_LOG` or `[log] level`, validated by the config): a level name
/// applies to roomsync, and dependencies stay at `warn` (or quieter, with `error` or `off`); a
/// filter with directives is used as written.
pub fn filter_for(spec: &str) -> EnvFilter {
    let spec = spec.trim();
    if let Ok(level) = spec.parse::<LevelFilter>() {
        if !spec.contains(['=', ',']) {
            let dependencies = level.min(LevelFilter::WARN);
            return EnvFilter::new(format!("{dependencies},{OWN_TARGET}={level}"));
        }
    }
    EnvFilter::builder()
        .parse(spec)
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,{OWN_TARGET}=info")))
}

/// `RUST_LOG` when set and not blank, else `[log] level`.
fn filter_spec(log: &LogSettings) -> String {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| log.level.clone())
}

/// Installs the global subscriber (a second call is a no-op).
pub fn init(log: &LogSettings) {
    let filter = filter_for(&filter_spec(log));
    let destination = Destination::detect();
    if log.format == LogFormat::Json {
        let _ = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_ansi(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
        return;
    }
    if destination == Destination::Journal {
        match journald_layer() {
            Ok(layer) => {
                let _ = tracing_subscriber::registry()
                    .with(filter)
                    .with(layer)
                    .try_init();
            }
            // Still stderr into the journal: plain lines, and journald adds the time.
            Err(_) => {
                let _ = tracing_subscriber::fmt()
                    .with_ansi(false)
                    .without_time()
                    .with_env_filter(filter)
                    .with_writer(std::io::stderr)
                    .try_init();
            }
        }
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_ansi(destination == Destination::ColourTerminal)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Panics go to the log as one line (a panicking run is recorded and the process goes on, so
/// the default hook's lines on stderr would only be noise around the run's own summary).
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("no message");
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(place, "panic: {message}");
    }));
}

/// Native journald entries: fields without the crate's default `F_` prefix, so a run's lines
/// are found with `journalctl -u roomsync RUN_ID=12`; tracing's levels as syslog priorities.
fn journald_layer() -> std::io::Result<tracing_journald::Layer> {
    use tracing_journald::{Priority, PriorityMappings};
    Ok(tracing_journald::layer()?
        .with_field_prefix(None)
        .with_syslog_identifier("roomsync".into())
        .with_priority_mappings(PriorityMappings {
            error: Priority::Error,
            warn: Priority::Warning,
            info: Priority::Informational,
            debug: Priority::Debug,
            trace: Priority::Debug,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_name_applies_to_roomsync_and_keeps_dependencies_at_warn() {
        assert_eq!(filter_for("info").to_string(), "roomsync=info,warn");
        assert_eq!(filter_for(" DEBUG ").to_string(), "roomsync=debug,warn");
        assert_eq!(filter_for("error").to_string(), "roomsync=error,error");
        assert_eq!(filter_for("off").to_string(), "roomsync=off,off");
    }

    #[test]
    fn a_filter_is_used_as_written() {
        assert_eq!(
            filter_for("tokio_cron_scheduler=info,roomsync=debug,warn").to_string(),
            "tokio_cron_scheduler=info,roomsync=debug,warn"
        );
        assert_eq!(
            filter_for("trace,roomsync=trace").to_string(),
            "roomsync=trace,trace"
        );
    }

    #[test]
    fn journal_stream_must_name_stderr_itself() {
        assert!(!stderr_is(""));
        assert!(!stderr_is("not:numbers"));
        assert!(!stderr_is("12"));
        let fd = std::io::stderr().as_fd().try_clone_to_owned().unwrap();
        let meta = std::fs::File::from(fd).metadata().unwrap();
        assert!(stderr_is(&format!("{}:{}", meta.dev(), meta.ino())));
        assert!(!stderr_is(&format!("{}:{}", meta.dev(), meta.ino() + 1)));
    }
}
