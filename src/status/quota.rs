//! The API budget in `roomsync status`: this month's calls per endpoint, the budget and the
//! pace, the month-end projection at the daemon's schedule, the interval the budget allows, and
//! whether DingTalk said the quota is spent. All from the database, as the latest run recorded
//! the budget: `status` reads no configuration but `database.path`.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use sqlx::SqliteConnection;

use crate::budget::{Budget, Outlook, FIRST_RUN_COST};
use crate::store::budget::{last_run_cost, month_calls, read_budget, BudgetRecord, EndpointCalls};

/// The budget part of the report.
#[derive(Debug)]
pub struct BudgetStatus {
    record: BudgetRecord,
    budget: Budget,
    calls: Vec<EndpointCalls>,
    outlook: Outlook,
}

/// Reads the budget as recorded, this month's calls and the last run's cost; None before the
/// first run has recorded a budget.
pub async fn read(conn: &mut SqliteConnection) -> sqlx::Result<Option<BudgetStatus>> {
    let Some(record) = read_budget(conn).await? else {
        return Ok(None);
    };
    let budget = Budget::new(record.monthly_calls.max(0) as u64, &record.time_zone)
        .or_else(|_| Budget::new(record.monthly_calls.max(0) as u64, "UTC"))
        .expect("UTC is a time zone");
    let now = SystemTime::now();
    let calls = month_calls(conn, &budget.month_of(now)).await?;
    let cost = last_run_cost(conn, "rooms")
        .await?
        .unwrap_or(FIRST_RUN_COST);
    let total = calls.iter().map(|c| c.calls.max(0) as u64).sum();
    let outlook = budget.outlook(now, total, cost, &record.schedule_cron);
    Ok(Some(BudgetStatus {
        record,
        budget,
        calls,
        outlook,
    }))
}

impl BudgetStatus {
    /// Whether the budget allows runs only further apart than `max_age`: the mirror would be
    /// reported stale by design.
    pub fn paced_beyond(&self, max_age: Duration) -> Option<Duration> {
        self.outlook.paced_every.filter(|every| *every > max_age)
    }

    pub fn render(&self, out: &mut String, max_age: Duration) {
        let o = &self.outlook;
        let limit = match self.budget.monthly_calls {
            0 => "no limit".to_string(),
            n => format!("budget {n} a month"),
        };
        let _ = writeln!(
            out,
            "API calls in {} (months of {}): {}, {limit}",
            o.pace.month, self.budget.time_zone_name, o.calls
        );
        let width = self
            .calls
            .iter()
            .map(|c| c.endpoint.len())
            .max()
            .unwrap_or(0);
        for c in &self.calls {
            let _ = writeln!(out, "  {:<width$}  {:>8}", c.endpoint, c.calls);
        }
        if self.budget.monthly_calls > 0 {
            let verdict = if o.holding_back {
                "ahead of the even pace: ticks are being skipped until it catches up"
            } else {
                "on pace: ticks run"
            };
            let _ = writeln!(
                out,
                "pace: {} calls against {:.0} spent evenly by now ({:.0}% of the month): {verdict}",
                o.calls,
                o.pace.line,
                o.pace.elapsed_share * 100.0
            );
        }
        if let Some(projected) = o.projected {
            let _ = writeln!(
                out,
                "projected: about {projected} calls by the month's end if every tick of {} ran ({} calls a run)",
                self.record.schedule_cron, o.cost
            );
        }
        if let Some(every) = o.paced_every {
            let _ = writeln!(out, "paced: about one run every {}", rounded(every));
        }
        if let Some(every) = self.paced_beyond(max_age) {
            let _ = writeln!(
                out,
                "warning: the budget allows a run only about every {}, longer than the max age {}: \
                 the mirror is reported stale by design; raise [budget] monthly_calls, or --max-age",
                rounded(every),
                humantime::format_duration(max_age)
            );
        }
        if let Some(until) = self.spent_until() {
            let _ = writeln!(
                out,
                "quota: DingTalk says the organisation's monthly API quota is spent; the daemon \
                 sends no request until {}",
                self.budget.local(until)
            );
        }
    }

    /// Until when DingTalk said the quota is spent, if that is still ahead.
    pub fn spent_until(&self) -> Option<SystemTime> {
        self.record
            .exhausted_until
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .filter(|t| *t > SystemTime::now())
    }
}

/// A duration to the minute (to the second under a minute), e.g. `3h 10m`.
fn rounded(d: Duration) -> String {
    let secs = d.as_secs();
    let secs = if secs >= 60 { secs - secs % 60 } else { secs };
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}
