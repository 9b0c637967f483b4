//! Starting runs: the [`Runner`] a process keeps (its settings, the DingTalk API whose token
//! and rate limit its runs share, its metrics, its webhook), and what follows every run: the
//! metrics, the textfile, the webhook.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::availability::run_refresh;
use super::{run_span, run_sync, RunError, RunReport, SyncOptions};
use crate::budget::FIRST_RUN_COST;
use crate::config::Settings;
use crate::dingtalk::{CallTally, DingTalkApi};
use crate::lock::{lock_path, SyncLock};
use crate::metrics::{FinishedRun, Metrics};
use crate::notify::{Notifier, RunNotice};
use crate::store::availability::rooms_in_scope;
use crate::store::budget::{self as store_budget, BudgetRecord, RunCalls};
use crate::store::runs::{self, RunKind, RunStatus, Trigger};
use crate::store::Store;

/// Why a run should not start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeldBack {
    /// The month's calls are ahead of the even-spending line.
    Budget(String),
    /// DingTalk said the organisation's quota is spent, until the next quota month.
    QuotaSpent(String),
}

impl HeldBack {
    /// The `reason` label of `roomsync_ticks_skipped_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            HeldBack::Budget(_) => "budget",
            HeldBack::QuotaSpent(_) => "quota_exhausted",
        }
    }

    /// The sentence the skip is logged with.
    pub fn message(&self) -> &str {
        match self {
            HeldBack::Budget(m) | HeldBack::QuotaSpent(m) => m,
        }
    }
}

/// What a process needs to start runs; the daemon keeps one for its whole life, so that its
/// runs share the access token, the rate limit and the metrics.
pub struct Runner {
    settings: Settings,
    api: Arc<DingTalkApi>,
    metrics: Metrics,
    notifier: Option<Arc<Notifier>>,
    /// Webhook deliveries under way.
    deliveries: TaskTracker,
    /// Until when DingTalk said the organisation's monthly quota is spent.
    quota_spent_until: Mutex<Option<SystemTime>>,
}

/// What a run does: the room list, or an availability refresh.
#[derive(Debug, Clone, Copy)]
enum Work {
    Rooms(SyncOptions),
    Availability(Trigger),
}

impl Work {
    fn kind(self) -> RunKind {
        match self {
            Work::Rooms(_) => RunKind::Rooms,
            Work::Availability(_) => RunKind::Availability,
        }
    }

    fn trigger(self) -> Trigger {
        match self {
            Work::Rooms(options) => options.trigger,
            Work::Availability(trigger) => trigger,
        }
    }
}

/// One run with a runner of its own (fresh metrics, a new token): for one-shot callers
/// (`--demo`, tests, the benchmark). See [`Runner::run_once`].
pub async fn run_once(
    settings: &Settings,
    options: SyncOptions,
    shutdown: CancellationToken,
) -> Result<RunReport, RunError> {
    let runner = Runner::new(settings.clone(), Metrics::new())?;
    runner.run_once(options, shutdown).await
}

impl Runner {
    /// A runner for `settings`, counting into `metrics`: the DingTalk client (its token and
    /// rate limit shared by every run) and the webhook, when one is configured.
    pub fn new(settings: Settings, metrics: Metrics) -> Result<Runner, RunError> {
        let api = DingTalkApi::new(settings.dingtalk.clone(), metrics.clone())?;
        metrics.set_api_budget(settings.budget.monthly_calls);
        let notifier = match &settings.notify {
            Some(notify) => Some(Arc::new(Notifier::new(notify.clone(), metrics.clone())?)),
            None => None,
        };
        Ok(Runner {
            settings,
            api,
            metrics,
            notifier,
            deliveries: TaskTracker::new(),
            quota_spent_until: Mutex::new(None),
        })
    }

    /// The settings the runner was made with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The DingTalk client every run of this runner uses.
    pub fn api(&self) -> &Arc<DingTalkApi> {
        &self.api
    }

    /// The metrics every run of this runner counts into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// One run as a one-shot process does it: take the sync lock (without waiting), open the
    /// database, run, close. Nothing is touched when the lock is held elsewhere.
    pub async fn run_once(
        &self,
        options: SyncOptions,
        shutdown: CancellationToken,
    ) -> Result<RunReport, RunError> {
        self.once(Work::Rooms(options), shutdown).await
    }

    /// One run on a database kept open (the daemon's): take the sync lock (without waiting),
    /// run.
    pub async fn run_on(
        &self,
        store: &Store,
        options: SyncOptions,
        shutdown: CancellationToken,
    ) -> Result<RunReport, RunError> {
        self.on(store, Work::Rooms(options), shutdown).await
    }

    /// One availability refresh as a one-shot process does it: lock, open, refresh, close.
    pub async fn refresh_once(
        &self,
        trigger: Trigger,
        shutdown: CancellationToken,
    ) -> Result<RunReport, RunError> {
        self.once(Work::Availability(trigger), shutdown).await
    }

    /// One availability refresh on a database kept open (the daemon's).
    pub async fn refresh_on(
        &self,
        store: &Store,
        trigger: Trigger,
        shutdown: CancellationToken,
    ) -> Result<RunReport, RunError> {
        self.on(store, Work::Availability(trigger), shutdown).await
    }

    async fn once(&self, work: Work, shutdown: CancellationToken) -> Result<RunReport, RunError> {
        let lock = self.take_lock()?;
        let store = Store::open(&self.settings.database.path).await?;
        self.record_budget(&store).await;
        if work.trigger() == Trigger::Manual {
            // The operator asked: the run goes ahead, said to be over budget when it is.
            if let Err(held) = self.budget_allows(&store, work.kind()).await {
                tracing::warn!("{}; --sync-now runs anyway", held.message());
            }
        }
        let report = self.locked(&store, &lock, work, shutdown).await;
        store.close().await;
        report
    }

    async fn on(
        &self,
        store: &Store,
        work: Work,
        shutdown: CancellationToken,
    ) -> Result<RunReport, RunError> {
        let lock = self.take_lock()?;
        self.record_budget(store).await;
        self.locked(store, &lock, work, shutdown).await
    }

    /// The run itself, the budget recorded and the lock held; then its metrics and webhook.
    async fn locked(
        &self,
        store: &Store,
        lock: &SyncLock,
        work: Work,
        shutdown: CancellationToken,
    ) -> Result<RunReport, RunError> {
        let report = match work {
            Work::Rooms(options) => run_sync(self, store, lock, options, shutdown).await?,
            Work::Availability(trigger) => {
                run_refresh(self, store, lock, trigger, shutdown).await?
            }
        };
        self.after_run(store, &report).await;
        Ok(report)
    }

    fn take_lock(&self) -> Result<SyncLock, RunError> {
        let db = &self.settings.database.path;
        match SyncLock::try_acquire(db) {
            Ok(Some(lock)) => Ok(lock),
            Ok(None) => Err(RunError::Locked {
                database: db.clone(),
                lock: lock_path(db),
            }),
            Err(source) => Err(RunError::Lock {
                lock: lock_path(db),
                source,
            }),
        }
    }

    /// The calls of `tally` not recorded yet, for the quota month of now.
    pub(super) fn pending_calls(&self, tally: &CallTally) -> RunCalls {
        RunCalls {
            month: self.settings.budget.month_of(SystemTime::now()),
            by_endpoint: tally.unrecorded(),
        }
    }

    /// After a failed run: when DingTalk said the monthly quota is spent, until when (the start
    /// of the next quota month, RFC 3339), said once at ERROR.
    pub(super) fn note_quota(&self) -> Option<String> {
        if !self.api.take_quota_spent() {
            return None;
        }
        let budget = &self.settings.budget;
        let until = budget.next_month_start(SystemTime::now());
        *self
            .quota_spent_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(until);
        tracing::error!(
            resumes = %budget.local(until),
            "DingTalk says the organisation's monthly API quota is spent (every app of the \
             organisation is refused): no request is sent until the next quota month begins, \
             {}",
            budget.local(until)
        );
        Some(humantime::format_rfc3339_seconds(until).to_string())
    }

    /// Whether the database still says the quota is spent. A run of another process (an
    /// operator's `--sync-now` once the organisation bought more calls) that succeeded has
    /// cleared it: then this process forgets it too.
    async fn quota_still_spent(&self, store: &Store) -> bool {
        let stored = async {
            let mut conn = store.pool().acquire().await?;
            store_budget::read_budget(&mut conn).await
        };
        match stored.await {
            Ok(Some(record)) if record.exhausted_until.is_none() => {
                *self
                    .quota_spent_until
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = None;
                tracing::info!("a later run succeeded: DingTalk's monthly API quota is available");
                false
            }
            _ => true,
        }
    }

    /// Until when the organisation's quota is known to be spent, if it is now.
    pub fn quota_spent_until(&self) -> Option<SystemTime> {
        let mut until = self
            .quota_spent_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if until.is_some_and(|t| t <= SystemTime::now()) {
            *until = None;
        }
        *until
    }

    /// Records the budget this runner keeps to, for readers without the configuration; and
    /// learns whether a run of an earlier process found the quota spent.
    pub async fn record_budget(&self, store: &Store) {
        let budget = &self.settings.budget;
        let record = BudgetRecord {
            monthly_calls: budget.monthly_calls as i64,
            time_zone: budget.time_zone_name.clone(),
            utc_offset_seconds: i64::from(budget.utc_offset_seconds(SystemTime::now())),
            schedule_cron: self.settings.schedule.cron.clone(),
            exhausted_until: None,
        };
        let written = async {
            let mut conn = store.pool().acquire().await?;
            store_budget::write_budget(&mut conn, &record).await?;
            store_budget::read_budget(&mut conn).await
        };
        match written.await {
            Ok(Some(stored)) => {
                let spent = stored
                    .exhausted_until
                    .and_then(|t| humantime::parse_rfc3339(&t).ok())
                    .filter(|t| *t > SystemTime::now());
                let mut until = self
                    .quota_spent_until
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if until.is_none() {
                    *until = spent;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "could not record the budget"),
        }
    }

    /// Whether the budget lets a run of `kind` start now: the month's calls plus its estimated
    /// cost (the last run of its kind, or [`FIRST_RUN_COST`]) under the even-spending line
    /// plus that cost, and DingTalk's quota not spent. `Err` says why not.
    pub async fn budget_allows(&self, store: &Store, kind: RunKind) -> Result<(), HeldBack> {
        if let Some(until) = self.quota_spent_until() {
            if self.quota_still_spent(store).await {
                return Err(HeldBack::QuotaSpent(format!(
                    "DingTalk's monthly API quota is spent until {}",
                    self.settings.budget.local(until)
                )));
            }
        }
        let budget = &self.settings.budget;
        if budget.monthly_calls == 0 {
            return Ok(());
        }
        let now = SystemTime::now();
        let pace = budget.pace(now);
        let spent = async {
            let mut conn = store.pool().acquire().await?;
            let calls = store_budget::month_calls(&mut conn, &pace.month).await?;
            let cost = match kind {
                RunKind::Rooms => store_budget::last_run_cost(&mut conn, kind.as_str()).await?,
                RunKind::Availability => Some(self.refresh_cost(store).await?),
            };
            Ok::<_, sqlx::Error>((
                calls.iter().map(|c| c.calls.max(0) as u64).sum::<u64>(),
                cost,
            ))
        };
        let (calls, cost) = match spent.await {
            Ok(spent) => spent,
            Err(e) => {
                tracing::warn!(error = %e, "the month's API calls could not be read; running");
                return Ok(());
            }
        };
        let cost = cost.unwrap_or(FIRST_RUN_COST);
        if budget.allows(now, calls, cost) {
            Ok(())
        } else {
            Err(HeldBack::Budget(format!(
                "API budget: {calls} of {} calls spent in {}, {:.0} allowed by now at an even \
                 pace, and a run costs about {cost}",
                budget.monthly_calls, pace.month, pace.line
            )))
        }
    }

    /// What a refresh costs: one call per batch of `rooms_per_request` rooms in scope.
    async fn refresh_cost(&self, store: &Store) -> sqlx::Result<u64> {
        let settings = &self.settings.availability;
        let rooms = rooms_in_scope(store.pool(), &settings.only_groups).await?;
        Ok((rooms.len() as u64).div_ceil(u64::from(settings.rooms_per_request)))
    }

    /// Sets the gauges of the mirror from the database (the daemon at start, and after every
    /// run): the last run and success survive a restart.
    pub async fn read_mirror_gauges(&self, store: &Store) {
        match runs::mirror_gauges(store.pool()).await {
            Ok(gauges) => self.metrics.set_mirror(&gauges),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the mirror's state for the metrics")
            }
        }
    }

    /// The metrics of the run, the textfile, the webhook; logged in the run's span.
    async fn after_run(&self, store: &Store, report: &RunReport) {
        let span = run_span(report.kind, report.run_id, report.trigger);
        self.after_run_steps(store, report).instrument(span).await
    }

    async fn after_run_steps(&self, store: &Store, report: &RunReport) {
        let counts = report.counts.unwrap_or_default();
        let changes = [
            ("added", counts.added - counts.restored),
            ("updated", counts.updated),
            ("removed", counts.removed),
            ("restored", counts.restored),
        ];
        self.metrics.run_finished(&FinishedRun {
            kind: report.kind.as_str(),
            trigger: report.trigger.as_str(),
            status: report.status.as_str(),
            duration: report.duration,
            pages: report.pages_fetched,
            changes: if report.counts.is_some() {
                &changes
            } else {
                &[]
            },
            warnings: report.warnings,
        });
        let metrics = &self.settings.metrics;
        if metrics.listen.is_some() || metrics.textfile.is_some() {
            self.read_mirror_gauges(store).await;
        }
        if let Some(path) = &metrics.textfile {
            if let Err(e) = self.metrics.write_textfile(path) {
                tracing::warn!(error = %e, path = %path.display(), "could not write the metrics textfile");
            }
        }
        if let Some(notifier) = self
            .notifier
            .as_ref()
            .filter(|_| report.kind == RunKind::Rooms)
        {
            let notice = self.notice(store, report).await;
            if notifier.wants(&notice) {
                let notifier = notifier.clone();
                let delivery = async move {
                    notifier.deliver(notice).await;
                };
                self.deliveries.spawn(delivery.in_current_span());
            }
        }
    }

    /// The webhook's document for a run, with what the report does not carry read back.
    async fn notice(&self, store: &Store, report: &RunReport) -> RunNotice {
        let facts = runs::run_facts(store.pool(), report.run_id)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not read the run back for the webhook");
                runs::RunFacts::default()
            });
        let counts = report.counts.unwrap_or_default();
        let applied = report.status == RunStatus::Succeeded;
        RunNotice {
            run_id: report.run_id,
            trigger: report.trigger.as_str().to_string(),
            status: report.status.as_str().to_string(),
            started_at: facts.started_at.unwrap_or_else(|| {
                humantime::format_rfc3339_seconds(SystemTime::now() - report.duration).to_string()
            }),
            finished_at: facts.finished_at,
            rooms_seen: report.rooms_seen,
            added: counts.added - counts.restored,
            updated: counts.updated,
            removed: counts.removed,
            restored: counts.restored,
            warnings: applied.then_some(report.warnings),
            error: (report.status == RunStatus::Failed)
                .then(|| report.error.clone().unwrap_or_default()),
            first_change_id: facts.first_change_id,
            last_change_id: facts.last_change_id,
            database: self.settings.database.path.display().to_string(),
        }
    }

    /// Waits, at most `limit`, for webhook deliveries under way (a one-shot run before it
    /// exits); says whether they all ended.
    pub async fn finish_deliveries(&self, limit: Duration) -> bool {
        self.deliveries.close();
        tokio::time::timeout(limit, self.deliveries.wait())
            .await
            .is_ok()
    }
}
