//! `[availability]`: room free/busy, refreshed on its own schedule, as written and validated.

use std::time::Duration;

use serde::Deserialize;

use super::number::{self, RawNumber};
use super::{validate_cron_of, ConfigError};

/// The default refresh: every five minutes.
pub const DEFAULT_AVAILABILITY_CRON: &str = "0 */5 * * * *";

/// `[availability]`, validated.
#[derive(Debug, Clone)]
pub struct AvailabilitySettings {
    /// Off by default: DingTalk's calendar permission is needed too.
    pub enabled: bool,
    /// The daemon's schedule of refreshes: six fields, seconds first, UTC.
    pub cron: String,
    /// From the start of the current minute.
    pub window: Duration,
    pub rooms_per_request: u32,
    /// Requests in flight at once.
    pub concurrency: u32,
    /// Room groups to refresh (with their subgroups); empty: every active room.
    pub only_groups: Vec<i64>,
}

/// `[availability]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAvailability {
    enabled: bool,
    cron: String,
    window_hours: RawNumber,
    rooms_per_request: RawNumber,
    concurrency: RawNumber,
    only_groups: Vec<i64>,
}

impl Default for RawAvailability {
    fn default() -> Self {
        Self {
            enabled: false,
            cron: DEFAULT_AVAILABILITY_CRON.into(),
            window_hours: RawNumber::Int(24),
            rooms_per_request: RawNumber::Int(20),
            concurrency: RawNumber::Int(4),
            only_groups: Vec::new(),
        }
    }
}

impl RawAvailability {
    pub(super) fn validate(self) -> Result<AvailabilitySettings, ConfigError> {
        validate_cron_of("availability.cron", &self.cron)?;
        let hours = number::integer("availability.window_hours", &self.window_hours, 1..=720)?;
        Ok(AvailabilitySettings {
            enabled: self.enabled,
            cron: self.cron,
            window: Duration::from_secs(hours as u64 * 3600),
            rooms_per_request: number::integer(
                "availability.rooms_per_request",
                &self.rooms_per_request,
                1..=100,
            )? as u32,
            concurrency: number::integer("availability.concurrency", &self.concurrency, 1..=16)?
                as u32,
            only_groups: self.only_groups,
        })
    }
}
