//! DingTalk's monthly API quota, spent deliberately: quota months in `[budget] time_zone`
//! (DingTalk's, `Asia/Shanghai`), and the even-spending line a schedule keeps to.
//!
//! A run may start when the month's calls plus its estimated cost stay under
//! `monthly_calls x (elapsed share of the month) + cost`: even spending, one run of slack.

use std::time::{Duration, SystemTime};

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

/// The cost assumed of a run of a kind never run before: a token, the group list, one page.
pub const FIRST_RUN_COST: u64 = 3;

/// The monthly budget and the time zone of its months.
#[derive(Debug, Clone)]
pub struct Budget {
    /// 0: no limit.
    pub monthly_calls: u64,
    pub time_zone: TimeZone,
    /// The IANA name, as configured.
    pub time_zone_name: String,
}

/// Where a month's spending stands at a moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Pace {
    /// `YYYY-MM` in the budget's time zone.
    pub month: String,
    /// How much of the month has passed, 0.0..1.0.
    pub elapsed_share: f64,
    /// The calls even spending allows so far: `monthly_calls x elapsed_share`.
    pub line: f64,
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a time zone name of the IANA database (e.g. \"Asia/Shanghai\")")]
pub struct UnknownTimeZone(pub String);

impl Budget {
    pub fn new(monthly_calls: u64, time_zone: &str) -> Result<Budget, UnknownTimeZone> {
        let tz = TimeZone::get(time_zone).map_err(|_| UnknownTimeZone(time_zone.to_string()))?;
        Ok(Budget {
            monthly_calls,
            time_zone: tz,
            time_zone_name: time_zone.to_string(),
        })
    }

    fn zoned(&self, at: SystemTime) -> Zoned {
        Timestamp::try_from(at)
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned(self.time_zone.clone())
    }

    /// The quota month of `at`, `YYYY-MM` (the key of `api_calls.month`).
    pub fn month_of(&self, at: SystemTime) -> String {
        self.zoned(at).strftime("%Y-%m").to_string()
    }

    /// The start of the month of `at` and of the next one.
    fn month_bounds(&self, at: SystemTime) -> (Zoned, Zoned) {
        let zoned = self.zoned(at);
        let start = zoned
            .first_of_month()
            .and_then(|d| d.start_of_day())
            .unwrap_or_else(|_| zoned.clone());
        let next = start
            .checked_add(1.month())
            .unwrap_or_else(|_| start.clone());
        (start, next)
    }

    /// When the month after the one of `at` begins: when a spent quota comes back.
    pub fn next_month_start(&self, at: SystemTime) -> SystemTime {
        SystemTime::from(self.month_bounds(at).1.timestamp())
    }

    /// The month's length at `at` (28 to 31 days, give or take a DST hour).
    pub fn month_length(&self, at: SystemTime) -> Duration {
        let (start, next) = self.month_bounds(at);
        next.duration_since(&start).unsigned_abs()
    }

    pub fn pace(&self, at: SystemTime) -> Pace {
        let (start, next) = self.month_bounds(at);
        let zoned = self.zoned(at);
        let length = next.duration_since(&start).as_secs_f64();
        let elapsed = zoned.duration_since(&start).as_secs_f64();
        let elapsed_share = if length > 0.0 {
            (elapsed / length).clamp(0.0, 1.0)
        } else {
            0.0
        };
        Pace {
            month: zoned.strftime("%Y-%m").to_string(),
            elapsed_share,
            line: self.monthly_calls as f64 * elapsed_share,
        }
    }

    /// Whether a run costing `cost` may start at `at` with `calls` spent this month.
    pub fn allows(&self, at: SystemTime, calls: u64, cost: u64) -> bool {
        self.monthly_calls == 0 || (calls + cost) as f64 <= self.pace(at).line + cost as f64
    }

    /// The interval between runs of `cost` calls that spends the budget evenly over a month;
    /// None without a limit.
    pub fn paced_interval(&self, at: SystemTime, cost: u64) -> Option<Duration> {
        if self.monthly_calls == 0 {
            return None;
        }
        let runs = (self.monthly_calls as f64 / cost.max(1) as f64).max(f64::MIN_POSITIVE);
        Some(Duration::from_secs_f64(
            (self.month_length(at).as_secs_f64() / runs).min(1e12),
        ))
    }

    /// The offset from UTC at `at`, in seconds (stored for the `sync_status` view, which
    /// names the current month with it).
    pub fn utc_offset_seconds(&self, at: SystemTime) -> i32 {
        self.zoned(at).offset().seconds()
    }

    /// `at` as a date and time in the budget's zone, e.g. `2026-12-01 00:00 (Asia/Shanghai)`.
    pub fn local(&self, at: SystemTime) -> String {
        format!(
            "{} ({})",
            self.zoned(at).strftime("%Y-%m-%d %H:%M"),
            self.time_zone_name
        )
    }
}

/// How often a six-field cron schedule (seconds first, UTC) fires, in runs per day: its ticks
/// over the next day, counted up to a bound (a schedule of every second is 86,400 a day).
pub fn ticks_per_day(cron: &str, from: SystemTime) -> Option<f64> {
    let schedule = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(cron)
        .ok()?;
    let start: chrono::DateTime<chrono::Utc> = from.into();
    let end = start + chrono::Duration::days(1);
    // One occurrence after another (croner's own iterator skips every other one of a schedule
    // that fires every second).
    let mut ticks = 0u32;
    let mut at = start;
    while let Ok(next) = schedule.find_next_occurrence(&at, false) {
        if next > end || ticks > 86_400 {
            break;
        }
        ticks += 1;
        at = next;
    }
    Some(f64::from(ticks))
}

/// The month as `roomsync status` tells it.
#[derive(Debug, Clone)]
pub struct Outlook {
    pub pace: Pace,
    /// The month's calls so far.
    pub calls: u64,
    /// The calls of the last run (or [`FIRST_RUN_COST`]).
    pub cost: u64,
    /// The calls by the month's end if every tick of the schedule ran.
    pub projected: Option<u64>,
    /// Whether the next tick would be held back by the budget.
    pub holding_back: bool,
    /// The interval between runs the budget allows.
    pub paced_every: Option<Duration>,
}

impl Budget {
    /// Where the month stands at `at`, with `calls` spent, runs of `cost`, the daemon's `cron`.
    pub fn outlook(&self, at: SystemTime, calls: u64, cost: u64, cron: &str) -> Outlook {
        let pace = self.pace(at);
        let left = self
            .next_month_start(at)
            .duration_since(at)
            .unwrap_or_default();
        let projected = ticks_per_day(cron, at)
            .map(|per_day| calls + (per_day * left.as_secs_f64() / 86_400.0 * cost as f64) as u64);
        Outlook {
            holding_back: !self.allows(at, calls, cost),
            paced_every: self.paced_interval(at, cost),
            pace,
            calls,
            cost,
            projected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    #[test]
    fn months_are_shanghais_and_roll_over_at_its_midnight() {
        let b = Budget::new(3000, "Asia/Shanghai").unwrap();
        assert_eq!(b.month_of(at("2026-11-30T15:59:59Z")), "2026-11");
        assert_eq!(b.month_of(at("2026-11-30T16:00:00Z")), "2026-12");
        assert_eq!(
            b.next_month_start(at("2026-11-27T10:00:00Z")),
            at("2026-11-30T16:00:00Z")
        );
        assert_eq!(
            b.month_length(at("2026-11-27T10:00:00Z")),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(b.utc_offset_seconds(at("2026-11-27T10:00:00Z")), 8 * 3600);
        assert_eq!(
            b.local(at("2026-11-30T16:00:00Z")),
            "2026-12-01 00:00 (Asia/Shanghai)"
        );
    }

    #[test]
    fn the_line_grows_evenly_and_starts_again_with_the_month() {
        let b = Budget::new(3000, "Asia/Shanghai").unwrap();
        let mid = b.pace(at("2026-11-15T16:00:00Z"));
        assert_eq!(mid.month, "2026-11");
        assert!((mid.elapsed_share - 0.5).abs() < 1e-9, "{mid:?}");
        assert!((mid.line - 1500.0).abs() < 1e-6);
        // 1,500 calls spent by mid-month: a run of 4 goes over the line by 4, allowed as the
        // one run of slack; one more call spent and it is not.
        assert!(b.allows(at("2026-11-15T16:00:00Z"), 1500, 4));
        assert!(!b.allows(at("2026-11-15T16:00:00Z"), 1501, 4));
        // The next month: the line starts at 0 again, and the month's calls are the new
        // month's (none yet).
        let new_month = at("2026-11-30T16:00:01Z");
        assert_eq!(b.pace(new_month).month, "2026-12");
        assert!(b.pace(new_month).line < 0.01);
        assert!(b.allows(new_month, 0, 4));
        assert!(!b.allows(new_month, 1, 4));
        assert!(Budget::new(0, "UTC")
            .unwrap()
            .allows(new_month, 1_000_000, 4));
    }

    #[test]
    fn the_paced_interval_spreads_the_budget_over_the_month() {
        let b = Budget::new(3000, "Asia/Shanghai").unwrap();
        // 30 days, 750 runs of 4 calls: one every 57.6 minutes.
        let every = b.paced_interval(at("2026-11-27T10:00:00Z"), 4).unwrap();
        assert_eq!(every.as_secs(), 3456);
        assert!(Budget::new(0, "UTC")
            .unwrap()
            .paced_interval(SystemTime::now(), 4)
            .is_none());
    }

    #[test]
    fn the_outlook_projects_the_schedule_to_the_months_end() {
        let b = Budget::new(3000, "Asia/Shanghai").unwrap();
        assert_eq!(
            ticks_per_day("0 7/15 * * * *", at("2026-11-27T10:00:00Z")),
            Some(96.0)
        );
        assert_eq!(
            ticks_per_day("* * * * * *", at("2026-11-27T10:00:00Z")),
            Some(86_400.0)
        );
        assert_eq!(ticks_per_day("nonsense", at("2026-11-27T10:00:00Z")), None);
        // Three and a half days left (to 2026-11-30T16:00Z), 96 runs a day of 4 calls.
        let o = b.outlook(at("2026-11-27T04:00:00Z"), 2000, 4, "0 7/15 * * * *");
        assert_eq!(o.projected, Some(2000 + 1344));
        assert!(!o.holding_back);
        assert_eq!(o.paced_every.unwrap().as_secs(), 3456);
        let o = b.outlook(at("2026-11-27T04:00:00Z"), 2900, 4, "0 7/15 * * * *");
        assert!(o.holding_back);
    }

    #[test]
    fn daylight_saving_zones_keep_calendar_months() {
        let b = Budget::new(100, "Europe/Berlin").unwrap();
        assert_eq!(b.month_of(at("2026-10-31T22:59:59Z")), "2026-10");
        assert_eq!(b.month_of(at("2026-10-31T23:00:00Z")), "2026-11");
        // October 2026 in Berlin has 31 days and one hour more (summer time ends).
        assert_eq!(
            b.month_length(at("2026-10-15T00:00:00Z")),
            Duration::from_secs(31 * 86_400 + 3600)
        );
        assert!(Budget::new(1, "Mars/Olympus").is_err());
    }
}
