//! Starting runs: the [`Runner`] a process keeps (its settings, the DingTalk API whose token
//! and rate limit its runs share, its metrics, its webhook), and what follows every run: the
//! metrics, the textfile, the webhook.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{run_sync, RunError, RunReport, SyncOptions};
use crate::config::Settings;
use crate::dingtalk::DingTalkApi;
use crate::lock::{lock_path, SyncLock};
use crate::metrics::{FinishedRun, Metrics};
use crate::notify::{Notifier, RunNotice};
use crate::store::runs::{self, RunStatus};
use crate::store::Store;

/// What a process needs to start runs; the daemon keeps one for its whole life, so that its
/// runs share the access token, the rate limit and the metrics.
pub struct Runner {
    settings: Settings,
    api: Arc<DingTalkApi>,
    metrics: Metrics,
    notifier: Option<Arc<Notifier>>,
    /// Webhook deliveries under way.
    deliveries: TaskTracker,
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
    pub fn new(settings: Settings, metrics: Metrics) -> Result<Runner, RunError> {
        let api = DingTalkApi::new(settings.dingtalk.clone(), metrics.clone())?;
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
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn api(&self) -> &Arc<DingTalkApi> {
        &self.api
    }

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
        let lock = self.take_lock()?;
        let store = Store::open(&self.settings.database.path).await?;
        let report = self.run_locked(&store, &lock, options, shutdown).await;
        store.close().await;
        report
    }

    /// One run on a database kept open (the daemon's): take the sync lock (without waiting),
    /// run.
    pub async fn run_on(
        &self,
        store: &Store,
        options: SyncOptions,
        shutdown: CancellationToken,
    ) -> Result<RunReport, RunError> {
        let lock = self.take_lock()?;
        self.run_locked(store, &lock, options, shutdown).await
    }

    async fn run_locked(
        &self,
        store: &Store,
        lock: &SyncLock,
        options: SyncOptions,
        shutdown: CancellationToken,
    ) -> Result<RunReport, RunError> {
        let report = run_sync(self, store, lock, options, shutdown).await?;
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

    /// The metrics of the run, the textfile, the webhook.
    async fn after_run(&self, store: &Store, report: &RunReport) {
        let counts = report.counts.unwrap_or_default();
        let changes = [
            ("added", counts.added - counts.restored),
            ("updated", counts.updated),
            ("removed", counts.removed),
            ("restored", counts.restored),
        ];
        self.metrics.run_finished(&FinishedRun {
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
        if let Some(notifier) = &self.notifier {
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
