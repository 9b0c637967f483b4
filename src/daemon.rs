//! Daemon mode: the cron schedule, no overlapping runs, systemd notification, graceful shutdown.
//!
//! Every tick starts a run the same way as `--sync-now` ([`Runner::run_on`], on the store the
//! daemon keeps open, with the runner it keeps: its runs share the access token and the
//! metrics). A tick that finds a run in progress, in this process or another (an operator's
//! `--sync-now` holding the lock), is skipped: not queued and not recorded. A failed run is
//! simply tried again at the next tick. With `[metrics] listen`, the daemon serves the metrics
//! and the health endpoint.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sd_notify::NotifyState;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::lock::SyncLock;
use crate::metrics::Metrics;
use crate::signal::ShutdownSignals;
use crate::store::runs::{RunKind, Trigger};
use crate::store::Store;
use crate::sync::{HeldBack, RunError, Runner, SyncOptions};

/// How long shutdown waits for a run in progress. Interrupting a fetch takes milliseconds;
/// this leaves an apply under way time to finish inside systemd's patience and the
/// promised five seconds.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(4500);

/// What every tick needs.
struct Daemon {
    settings: Settings,
    runner: Runner,
    store: Store,
    /// Set while this process runs a sync; ticks that find it set are skipped.
    busy: AtomicBool,
    shutdown: CancellationToken,
    runs: TaskTracker,
}

/// Runs until SIGTERM or SIGINT. Errors are start-up problems (unusable database, scheduler),
/// reported before READY=1.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::register().context("handling SIGTERM and SIGINT")?;
    let daemon = Arc::new(Daemon::open(settings).await?);
    let listener = daemon.serve_metrics().await?;
    let mut scheduler = daemon.schedule().await?;
    let next = next_tick(&mut scheduler).await;
    tracing::info!(
        cron = %daemon.settings.schedule.cron,
        next_tick = next.as_deref().unwrap_or("unknown"),
        database = %daemon.settings.database.path.display(),
        "roomsync daemon started"
    );
    let status = match daemon.quota_spent_notice() {
        Some(notice) => notice,
        None => "waiting for the first sync".to_string(),
    };
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    if daemon.settings.schedule.run_on_start {
        // One of each kind, one after the other: never two runs at once.
        let mut kinds = vec![RunKind::Rooms];
        if daemon.settings.availability.enabled {
            kinds.push(RunKind::Availability);
        }
        daemon.start_runs(kinds, Trigger::Startup);
    }

    let signal = signals.wait().await;
    tracing::info!(signal, "shutting down");
    notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
    daemon.stop(scheduler).await;
    if let Some(listener) = listener {
        let _ = listener.await;
    }
    tracing::info!("roomsync daemon stopped");
    Ok(())
}

impl Daemon {
    /// Opens the database and checks the lock file can be created; sets up the runner.
    async fn open(settings: Settings) -> anyhow::Result<Daemon> {
        let runner = Runner::new(settings.clone(), Metrics::new())?;
        let db = settings.database.path.clone();
        let store = Store::open(&db).await?;
        // Refuse now, before READY=1, a database every run would fail to write.
        store.check_writable().await?;
        // Fail now, not at the first tick, when the lock file cannot be created.
        drop(SyncLock::try_acquire(&db).with_context(|| {
            format!(
                "cannot create the sync lock file {}",
                crate::lock::lock_path(&db).display()
            )
        })?);
        runner.read_mirror_gauges(&store).await;
        // The budget for `roomsync status`, and whether DingTalk said the quota is spent.
        runner.record_budget(&store).await;
        Ok(Daemon {
            settings,
            runner,
            store,
            busy: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            runs: TaskTracker::new(),
        })
    }

    /// When an earlier run (of this process or one before) found DingTalk's monthly quota
    /// spent: said once at ERROR, with the date requests resume, and returned for STATUS=.
    fn quota_spent_notice(&self) -> Option<String> {
        let until = self.runner.quota_spent_until()?;
        let resumes = self.settings.budget.local(until);
        tracing::error!(
            resumes = %resumes,
            "DingTalk said the organisation's monthly API quota is spent: no request is sent \
             until the next quota month begins, {resumes}"
        );
        Some(format!(
            "monthly API quota spent; no request until {resumes}"
        ))
    }

    /// With `[metrics] listen`: the metrics listener, bound now so that a bad address stops
    /// the start; it ends with the shutdown.
    async fn serve_metrics(&self) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
        let Some(listen) = self.settings.metrics.listen else {
            return Ok(None);
        };
        let served = crate::metrics::serve(
            listen,
            self.runner.metrics().clone(),
            self.settings.metrics.healthy_max_age,
            self.shutdown.clone(),
        )
        .await
        .with_context(|| format!("metrics.listen: cannot listen on {listen}"))?;
        tracing::info!(%listen, "serving /metrics and /healthz");
        Ok(Some(served))
    }

    /// The scheduler with the sync job and, when systemd asks for it, the watchdog ping.
    async fn schedule(self: &Arc<Self>) -> anyhow::Result<JobScheduler> {
        let scheduler = JobScheduler::new()
            .await
            .context("starting the scheduler")?;
        let job = self.job(&self.settings.schedule.cron, RunKind::Rooms)?;
        scheduler
            .add(job)
            .await
            .context("scheduling the sync job")?;
        if self.settings.availability.enabled {
            let job = self.job(&self.settings.availability.cron, RunKind::Availability)?;
            scheduler
                .add(job)
                .await
                .context("scheduling the availability refresh")?;
        }
        if let Some(period) = watchdog_period() {
            // Pinged by a job of the scheduler itself: if the scheduler loop stalls, so do the
            // pings, and systemd restarts the service.
            let ping = Job::new_repeated_async(period, |_, _| {
                Box::pin(async {
                    notify(&[NotifyState::Watchdog]);
                })
            })
            .context("scheduling the watchdog")?;
            scheduler
                .add(ping)
                .await
                .context("scheduling the watchdog")?;
        }
        scheduler.start().await.context("starting the scheduler")?;
        Ok(scheduler)
    }

    /// Stops scheduling, interrupts a fetch in progress, and waits (a bounded time) for the
    /// run to end.
    async fn stop(&self, mut scheduler: JobScheduler) {
        self.shutdown.cancel();
        if let Err(e) = scheduler.shutdown().await {
            tracing::warn!(error = %e, "scheduler did not shut down cleanly");
        }
        self.runs.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.runs.wait())
            .await
            .is_err()
        {
            tracing::error!("a sync run did not finish within the shutdown grace period");
        }
        self.store.pool().close().await;
    }

    /// Starts a run in the background unless one is in progress here or elsewhere.
    fn start_runs(self: &Arc<Self>, kinds: Vec<RunKind>, trigger: Trigger) {
        if self.shutdown.is_cancelled() {
            return;
        }
        if self.busy.swap(true, Ordering::SeqCst) {
            self.runner.metrics().tick_skipped("busy");
            tracing::info!(
                trigger = trigger.as_str(),
                "skipping this tick: the previous run is still in progress"
            );
            return;
        }
        let busy = Busy(self.clone());
        self.runs.spawn(async move {
            for kind in kinds {
                if busy.0.shutdown.is_cancelled() {
                    break;
                }
                busy.0.run_locked(kind, trigger).await;
            }
            drop(busy);
        });
    }

    /// A scheduler job that starts a run of `kind` on `cron`.
    fn job(self: &Arc<Self>, cron: &str, kind: RunKind) -> anyhow::Result<Job> {
        let ticker = self.clone();
        Job::new_async(cron, move |_, _| {
            let daemon = ticker.clone();
            Box::pin(async move { daemon.start_runs(vec![kind], Trigger::Schedule) })
        })
        .with_context(|| format!("the {} schedule {cron:?}", kind.as_str()))
    }

    /// One run, unless the budget holds it back or another process holds the sync lock; its
    /// summary becomes the status systemd shows.
    async fn run_locked(&self, kind: RunKind, trigger: Trigger) {
        if self.held_back(kind, trigger).await {
            return;
        }
        let shutdown = self.shutdown.clone();
        let run = match kind {
            RunKind::Rooms => {
                let options = SyncOptions {
                    trigger,
                    allow_mass_removal: false,
                };
                self.runner.run_on(&self.store, options, shutdown).await
            }
            RunKind::Availability => self.runner.refresh_on(&self.store, trigger, shutdown).await,
        };
        match run {
            Ok(report) => notify(&[NotifyState::Status(&format!("last run: {report}"))]),
            Err(RunError::Locked { .. }) => {
                self.runner.metrics().tick_skipped("locked");
                tracing::info!(
                    trigger = trigger.as_str(),
                    "skipping this tick: another process holds the sync lock"
                );
            }
            Err(RunError::Lock { source, .. }) => {
                tracing::error!(error = %source, "cannot take the sync lock; skipping this tick");
            }
            Err(e) => {
                tracing::error!(error = %e, "sync run could not be recorded");
                notify(&[NotifyState::Status(&format!(
                    "last run could not be recorded: {e}"
                ))]);
            }
        }
    }
}

impl Daemon {
    /// Whether the API budget holds this tick back (the start-up run too, so that a restart
    /// loop cannot burn the quota): a skipped tick is one log line and a metric, not a run.
    async fn held_back(&self, kind: RunKind, trigger: Trigger) -> bool {
        let Err(held) = self.runner.budget_allows(&self.store, kind).await else {
            return false;
        };
        self.runner.metrics().tick_skipped(held.reason());
        match held {
            HeldBack::Budget(why) => {
                tracing::info!(trigger = trigger.as_str(), "skipping this tick: {why}")
            }
            // Said once at ERROR when DingTalk answered so; the ticks until then are quiet.
            HeldBack::QuotaSpent(why) => {
                tracing::debug!(trigger = trigger.as_str(), "skipping this tick: {why}")
            }
        }
        true
    }
}

/// The daemon's busy flag while a run is under way: cleared when dropped, however the run
/// ended, so that a run that went wrong never stops the schedule.
struct Busy(Arc<Daemon>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::SeqCst);
    }
}

/// Half the watchdog interval systemd asks for, when it asks.
fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|interval| interval / 2)
}

/// Tells systemd (when run by it); a no-op otherwise.
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

async fn next_tick(scheduler: &mut JobScheduler) -> Option<String> {
    scheduler
        .time_till_next_job()
        .await
        .ok()
        .flatten()
        .map(|d| {
            format!(
                "in {}",
                humantime::format_duration(Duration::from_secs(d.as_secs()))
            )
        })
}
