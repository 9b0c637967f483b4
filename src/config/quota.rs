//! `[budget]`: DingTalk's monthly API quota, as written and as validated.

use serde::Deserialize;

use super::number::{self, RawNumber};
use super::{invalid, ConfigError};
use crate::budget::Budget;

/// `[budget]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBudget {
    monthly_calls: RawNumber,
    time_zone: String,
}

impl Default for RawBudget {
    fn default() -> Self {
        Self {
            // About a third of a basic organisation's quota of 10,000: the other apps of the
            // organisation share it.
            monthly_calls: RawNumber::Int(3000),
            time_zone: "Asia/Shanghai".into(),
        }
    }
}

impl RawBudget {
    pub(super) fn validate(self) -> Result<Budget, ConfigError> {
        let calls = number::integer(
            "budget.monthly_calls",
            &self.monthly_calls,
            0..=1_000_000_000,
        )?;
        Budget::new(calls as u64, self.time_zone.trim())
            .map_err(|e| invalid("budget.time_zone", e.to_string()))
    }
}
