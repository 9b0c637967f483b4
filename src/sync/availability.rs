//! One availability refresh (a run of kind `availability`): the active rooms in scope, asked
//! about in batches sent concurrently (under the shared rate limit, retries and token), one
//! window for every request, the answers applied in one transaction.
//!
//! A room answered with an error, or in a request that failed after its retries, keeps its
//! previous busy rows and is marked with the error; the refresh goes on. More than half of the
//! rooms failing makes the refresh `failed`, and then nothing changes.

use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use jiff::Timestamp;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::calls::CallFlusher;
use super::runner::Runner;
use super::{
    guarded, start_recorded, CheckedRooms, FailureLog, NotApplied, RunError, RunRecord, RunReport,
    Warnings,
};
use crate::dingtalk::schedule::{utc_text, ScheduleAnswer};
use crate::dingtalk::DingTalkClient;
use crate::failure::{Failure, Severity, Stage};
use crate::lock::SyncLock;
use crate::store::availability::{
    apply_refresh, rooms_in_scope, AnsweredRoom, FailedRoom, RefreshApply,
};
use crate::store::runs::{self, RunKind, RunStatus, Trigger};
use crate::store::Store;

/// Error codes of the refresh.
pub mod codes {
    /// A room DingTalk answered with an `error` (a warning of the refresh).
    pub const ROOM_ERROR: &str = "availability.room_error";
    /// More than half of the rooms could not be read: the refresh changed nothing.
    pub const TOO_MANY_FAILED: &str = "availability.too_many_failed";
    /// A batch not sent because the refresh could no longer succeed.
    pub const NOT_ASKED: &str = "availability.not_asked";
}

/// Runs one refresh. The caller holds the sync lock (`_lock` is the proof); `shutdown`
/// interrupts it before the apply.
pub(super) async fn run_refresh(
    runner: &Runner,
    store: &Store,
    _lock: &SyncLock,
    trigger: Trigger,
    shutdown: CancellationToken,
) -> Result<RunReport, RunError> {
    let start = start_recorded(runner, store, RunKind::Availability, trigger).await?;
    let refresh = Refresh {
        runner,
        store,
        client: runner
            .api()
            .client(start.failures.observer(), start.record.calls.clone()),
        failures: start.failures,
        record: start.record.clone(),
        shutdown,
    };
    let body = refresh.execute(start.recorder);
    Ok(guarded(runner, store, &start.record, body).await)
}

/// The window every request of one refresh asks about: from the start of the current minute.
struct Window {
    /// `yyyy-MM-ddTHH:mmZ`, as the API asks.
    start_param: String,
    end_param: String,
    /// RFC 3339 with seconds, as stored.
    start: String,
    end: String,
}

impl Window {
    fn starting_now(length: Duration) -> Window {
        let now = Timestamp::try_from(SystemTime::now()).unwrap_or(Timestamp::UNIX_EPOCH);
        let start =
            Timestamp::from_second(now.as_second() - now.as_second().rem_euclid(60)).unwrap_or(now);
        let end = start
            .checked_add(jiff::SignedDuration::from_secs(length.as_secs() as i64))
            .unwrap_or(start);
        let param = |t: Timestamp| t.strftime("%Y-%m-%dT%H:%MZ").to_string();
        Window {
            start_param: param(start),
            end_param: param(end),
            start: utc_text(start),
            end: utc_text(end),
        }
    }
}

/// How one request went: the batch and DingTalk's answer, or its final failure.
struct BatchAnswer<'a> {
    rooms: &'a [String],
    answer: Result<ScheduleAnswer, Failure>,
}

/// A batch the refresh gave up on before sending it.
fn not_asked<'a>(rooms: &'a [String], why: &str) -> BatchAnswer<'a> {
    BatchAnswer {
        rooms,
        answer: Err(Failure::new(
            Stage::Fetch,
            codes::NOT_ASKED,
            format!("not asked: the refresh could no longer succeed after {why}"),
        )),
    }
}

/// The refresh's answers, sorted out.
#[derive(Default)]
struct Sorted {
    answered: Vec<AnsweredRoom>,
    failed: Vec<FailedRoom>,
}

struct Refresh<'a> {
    runner: &'a Runner,
    store: &'a Store,
    client: DingTalkClient,
    failures: FailureLog,
    record: RunRecord,
    shutdown: CancellationToken,
}

impl Refresh<'_> {
    async fn execute(self, recorder: JoinHandle<Vec<Failure>>) -> RunReport {
        tracing::info!("availability refresh started");
        let mut warnings = Warnings::default();
        let mut requests = 0u32;
        let outcome = self.fetch_and_apply(&mut warnings, &mut requests).await;
        let Refresh {
            runner,
            store,
            client,
            failures,
            record,
            ..
        } = self;
        let calls = runner.pending_calls(&record.calls);
        drop((client, failures));
        let unrecorded = recorder.await.unwrap_or_default();
        let (status, error) = match &outcome {
            Ok(_) => (RunStatus::Succeeded, None),
            Err(NotApplied::Failed(f)) => (RunStatus::Failed, Some(f.to_string())),
            Err(NotApplied::Interrupted) => (
                RunStatus::Interrupted,
                Some(
                    "interrupted by a shutdown signal before the apply; nothing was changed".into(),
                ),
            ),
        };
        let mut report = RunReport {
            pages_fetched: requests,
            ..RunReport::unapplied(&record, status, error.clone().unwrap_or_default())
        };
        match outcome {
            Ok(checked) => {
                report.error = None;
                report.checked = Some(checked);
                report.rooms_seen = Some(checked.rooms);
                report.warnings = warnings.count;
                for failure in &unrecorded {
                    let _ = runs::record_error(store.pool(), record.run_id, failure).await;
                }
            }
            Err(_) => {
                let spent_until = runner.note_quota();
                let end = runs::UnappliedEnd {
                    status,
                    pages_fetched: requests,
                    rooms_seen: None,
                    error: error.as_deref().unwrap_or_default(),
                    calls: &calls,
                    exhausted_until: spent_until.as_deref(),
                };
                let recorded =
                    runs::end_run_unapplied(store.pool(), record.run_id, &end, &unrecorded).await;
                report.end_not_recorded = recorded.err().map(|e| e.to_string());
            }
        }
        report.duration = record.started.elapsed();
        report
    }

    /// Asks about every room in scope, sorts the answers out and applies them.
    async fn fetch_and_apply(
        &self,
        warnings: &mut Warnings,
        requests: &mut u32,
    ) -> Result<CheckedRooms, NotApplied> {
        let settings = &self.runner.settings().availability;
        let rooms = rooms_in_scope(self.store.pool(), &settings.only_groups)
            .await
            .map_err(|e| {
                self.failures
                    .store_failed("reading the rooms to refresh", e)
            })?;
        let window = Window::starting_now(settings.window);
        let batches: Vec<&[String]> = rooms.chunks(settings.rooms_per_request as usize).collect();
        *requests = batches.len() as u32;
        let flusher = CallFlusher::new(
            self.runner,
            self.store.pool().clone(),
            self.record.run_id,
            self.record.calls.clone(),
        );
        let fetched = self.fetch(batches, &window, settings.concurrency as usize, &flusher);
        let answers = tokio::select! {
            answers = fetched => answers,
            _ = self.shutdown.cancelled() => {
                tracing::warn!("shutdown requested: abandoning the refresh, nothing is applied");
                return Err(NotApplied::Interrupted);
            }
        };
        let sorted = self.sort(answers, warnings);
        self.check_enough(&sorted, rooms.len())?;
        let calls = self.runner.pending_calls(&self.record.calls);
        let apply = RefreshApply {
            run_id: self.record.run_id,
            window_start: &window.start,
            window_end: &window.end,
            answered: &sorted.answered,
            failed: &sorted.failed,
            requests: *requests,
            warnings: &warnings.rows,
            warning_count: warnings.count,
            calls: &calls,
        };
        apply_refresh(self.store.pool(), &apply)
            .await
            .map_err(|e| self.failures.store_failed("applying the refresh", e))?;
        self.record.calls.mark_recorded(&calls.by_endpoint);
        Ok(CheckedRooms {
            rooms: rooms.len() as u64,
            failed: sorted.failed.len() as u64,
        })
    }

    /// Sends the batches, `concurrency` at a time; the client's rate limit spaces them. Once
    /// the refresh cannot succeed (no token could be had, or more than half of the rooms
    /// failed already), the batches not yet sent are not sent: each would cost a call of the
    /// month's quota, and a token failure would be retried once per batch.
    async fn fetch<'b>(
        &self,
        batches: Vec<&'b [String]>,
        window: &Window,
        concurrency: usize,
        flusher: &CallFlusher<'_>,
    ) -> Vec<BatchAnswer<'b>> {
        let rooms: usize = batches.iter().map(|b| b.len()).sum();
        let mut waiting = batches.into_iter();
        // Boxed with their lifetimes spelled out: the compiler cannot otherwise prove the
        // daemon's spawned run `Send` (rust-lang/rust#102211).
        let mut in_flight: FuturesUnordered<BoxFuture<'_, BatchAnswer<'b>>> =
            FuturesUnordered::new();
        let mut answers = Vec::new();
        let mut failed_rooms = 0;
        let mut given_up: Option<String> = None;
        loop {
            while given_up.is_none() && in_flight.len() < concurrency.max(1) {
                match waiting.next() {
                    Some(rooms) => in_flight.push(Box::pin(self.ask(rooms, window))),
                    None => break,
                }
            }
            let Some(answer) = in_flight.next().await else {
                break;
            };
            if let Err(failure) = &answer.answer {
                failed_rooms += answer.rooms.len();
                if given_up.is_none() && (failure.stage == Stage::Auth || failed_rooms * 2 > rooms)
                {
                    given_up = Some(failure.to_string());
                }
            }
            answers.push(answer);
            flusher.flush_if_due().await;
        }
        if let Some(why) = given_up {
            answers.extend(waiting.map(|rooms| not_asked(rooms, &why)));
        }
        answers
    }

    /// One request: the free/busy of `rooms` over the window.
    async fn ask<'b>(&self, rooms: &'b [String], window: &Window) -> BatchAnswer<'b> {
        let answer = self
            .client
            .room_schedules(rooms, &window.start_param, &window.end_param)
            .await;
        BatchAnswer { rooms, answer }
    }

    /// Each room of each batch: answered (its readable items), or failed with why.
    fn sort(&self, answers: Vec<BatchAnswer<'_>>, warnings: &mut Warnings) -> Sorted {
        let mut sorted = Sorted::default();
        for batch in answers {
            let answer = match batch.answer {
                Ok(answer) => answer,
                Err(failure) => {
                    let error = failure.to_string();
                    sorted
                        .failed
                        .extend(batch.rooms.iter().map(|id| FailedRoom {
                            room_id: id.clone(),
                            error: error.clone(),
                        }));
                    continue;
                }
            };
            self.sort_answer(batch.rooms, answer, &mut sorted, warnings);
        }
        sorted
    }

    fn sort_answer(
        &self,
        asked: &[String],
        answer: ScheduleAnswer,
        sorted: &mut Sorted,
        warnings: &mut Warnings,
    ) {
        let mut skipped = Vec::new();
        let mut answered_ids = std::collections::HashSet::new();
        let entries = answer.schedule_information.unwrap_or_default();
        for (i, entry) in entries.into_iter().enumerate() {
            let Some(entry) = entry else { continue };
            let Some(room_id) = entry.room_id.clone().filter(|id| asked.contains(id)) else {
                continue;
            };
            if !answered_ids.insert(room_id.clone()) {
                continue;
            }
            if let Some(error) = entry.error.clone().filter(|e| !e.is_empty()) {
                let warning = Failure {
                    severity: Severity::Warning,
                    ..Failure::new(
                        Stage::Fetch,
                        codes::ROOM_ERROR,
                        format!("room {room_id:?}: DingTalk answered with an error: {error}"),
                    )
                };
                warnings.add(self.failures.redactor.failure(warning));
                let error = self.failures.redactor.redact(&error);
                sorted.failed.push(FailedRoom { room_id, error });
                continue;
            }
            let items = entry.items(i, &room_id, &mut skipped);
            sorted.answered.push(AnsweredRoom { room_id, items });
        }
        for id in asked.iter().filter(|id| !answered_ids.contains(*id)) {
            sorted.failed.push(FailedRoom {
                room_id: id.clone(),
                error: "DingTalk's answer has no schedule for this room".into(),
            });
        }
        for part in &skipped {
            warnings.add(self.failures.warning(None, part));
        }
    }

    /// More than half of the rooms failing fails the refresh: nothing is changed.
    fn check_enough(&self, sorted: &Sorted, rooms: usize) -> Result<(), NotApplied> {
        if sorted.failed.len() * 2 <= rooms {
            return Ok(());
        }
        let first = sorted
            .failed
            .first()
            .map(|r| r.error.as_str())
            .unwrap_or("");
        let message = format!(
            "{} of {rooms} rooms could not be read, more than half; nothing was changed. \
             First error: {first}",
            sorted.failed.len()
        );
        Err(self
            .failures
            .fail(Failure::new(Stage::Fetch, codes::TOO_MANY_FAILED, message)))
    }
}
