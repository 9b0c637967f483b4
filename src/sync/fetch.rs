//! The fetch and the apply of one run, as two tasks joined by a short queue:
//!
//! - the fetcher requests pages, validates them and follows the cursor;
//! - the processor sorts each room with the run's ledger (unchanged rooms are not staged) and
//!   stages the rest.
//!
//! Processing one page overlaps fetching the next, and the mirror's fingerprints load while the
//! first pages arrive.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use sqlx::SqlitePool;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::calls::CallFlusher;
use super::ledger::{fingerprint, Decision, Ledger};
use super::queue::{page_queue, PageSender, QueuedPage};
use super::{FailureLog, FetchProgress, NotApplied, Run, Warnings};
use crate::dingtalk::model::{GroupListResponse, GroupPart, RawGroup, RawRoom, SkippedPart};
use crate::dingtalk::{DingTalkClient, Group, Label, Room};
use crate::failure::{codes, Failure, Stage};
use crate::store::apply::{apply, ApplyCounts, ApplyOutcome, ApplyRequest};
use crate::store::fingerprints::{active_rooms_with, load_mirror_summary, stored_fingerprints};
use crate::store::staging::{StagedRoom, Staging};

/// Pages that may wait for the processor: lets the fetcher go on while the processor loads
/// the mirror's fingerprints at the start (a page of 100 rooms holds about 40 kB).
const PAGE_QUEUE: usize = 64;
/// The bytes of rooms those pages may hold, whatever the size of the records.
const QUEUE_BYTES: usize = 16 << 20;

/// What the processor learnt from the listing besides the rooms it staged.
struct Sorted {
    ledger: Ledger,
    /// Every label the listing names, with its latest name.
    labels: BTreeMap<i64, Option<String>>,
    /// Every group the rooms name (the group list adds the others).
    groups: HashMap<i64, Group>,
}

/// What the processor hands back: the staging connection, always (it must be closed), and
/// what it sorted, or why the run stops.
struct Processed {
    staging: Staging,
    sorted: Result<Sorted, NotApplied>,
}

/// Fetches the listing while the processor stages it, then applies it.
pub(super) async fn fetch_and_apply(
    run: &Run<'_>,
    progress: &mut FetchProgress,
) -> Result<ApplyCounts, NotApplied> {
    let failures = &run.failures;
    let client = &run.client;
    let conn = run
        .pool
        .acquire()
        .await
        .map_err(|e| failures.store_failed("opening the staging connection", e))?;
    // Detached: the staging tables go with this connection, which never returns to the pool.
    let staging = Staging::new(conn.detach())
        .await
        .map_err(|e| failures.store_failed("creating the staging tables", e))?;

    let started = Instant::now();
    let (pages, queue) = page_queue(PAGE_QUEUE, QUEUE_BYTES);
    let processor = process_pages(run.pool.clone(), staging, queue, failures.clone());
    let processor = tokio::spawn(processor.in_current_span());
    let flusher = CallFlusher::new(run.runner, run.pool.clone(), run.run_id, run.calls.clone());
    let fetched = tokio::select! {
        fetched = fetch_listing(client, failures, &flusher, pages, progress) => fetched,
        _ = run.shutdown.cancelled() => {
            tracing::warn!("shutdown requested: abandoning the fetch, nothing is applied");
            Err(NotApplied::Interrupted)
        }
    };
    // The queue's sender is gone: the processor finishes what it has and hands back.
    let fetch_ms = started.elapsed().as_millis() as u64;
    let Processed {
        mut staging,
        sorted,
    } = processor.await.expect("the page processor does not panic");
    let process_ms = started.elapsed().as_millis() as u64;
    let result = match (fetched, sorted) {
        (Ok(listed_groups), Ok(mut sorted)) => {
            // From here on the run is not interruptible: the apply completes or rolls back whole.
            // groupLists is the authority on the groups it lists; rooms add the groups it lacks.
            sorted
                .groups
                .extend(listed_groups.into_iter().map(|g| (g.group_id, g)));
            let result = apply_listing(run, &mut staging, sorted, progress).await;
            let apply_ms = started.elapsed().as_millis() as u64 - process_ms;
            tracing::debug!(
                fetch_ms,
                process_ms,
                apply_ms,
                "listing fetched, staged and applied"
            );
            result
        }
        // The fetch's own stop first: a processor that stops early stops the fetch too.
        (Err(stop), _) | (Ok(_), Err(stop)) => Err(stop),
    };
    if let Err(e) = staging.close().await {
        tracing::debug!(error = %e, "closing the staging connection failed");
    }
    result
}

/// Fetches the group list, then every page of rooms, validating as it goes, and queues the
/// rooms; returns the listed groups. Never loops: a missing or repeated cursor fails the run.
/// Returns early (Ok) when the processor has stopped: its error is the run's.
async fn fetch_listing(
    client: &DingTalkClient,
    failures: &FailureLog,
    flusher: &CallFlusher<'_>,
    pages: PageSender,
    progress: &mut FetchProgress,
) -> Result<Vec<Group>, NotApplied> {
    let listed = client.group_list().await.map_err(NotApplied::Failed)?;
    let groups = listed_groups(listed, failures, &mut progress.warnings);
    let mut cursor = Cursor::default();
    let max_pages = client.settings().max_pages;
    for page in 0u32.. {
        if page >= max_pages {
            let message = format!(
                "more than dingtalk.max_pages ({max_pages}) pages in one run; stopping rather than \
                 following the listing without end"
            );
            let failure = Failure::new(Stage::Validate, codes::RUNAWAY_PAGINATION, message);
            return Err(failures.fail(failure.on_page(Some(page))));
        }
        let body = client
            .room_page(page, cursor.next_token)
            .await
            .map_err(NotApplied::Failed)?;
        progress.pages += 1;
        flusher.flush_if_due().await;
        let asked = client.settings().page_size as usize;
        let records = body.result.unwrap_or_default();
        let rooms = page_rooms(records, asked, page, failures, &mut progress.warnings)?;
        tracing::debug!(page, rooms = rooms.len(), has_more = ?body.has_more, "page fetched");
        let more = body.has_more == Some(true);
        let empty = rooms.is_empty();
        if pages.send(rooms).await.is_err() || !more {
            return Ok(groups);
        }
        cursor
            .follow(body.next_token, empty)
            .map_err(|f| failures.fail(f.on_page(Some(page))))?;
    }
    unreachable!("the page loop only ends by returning")
}

/// The groups of `groupLists`; an item without `groupId`, or null, is left out with a warning.
fn listed_groups(
    listed: GroupListResponse,
    failures: &FailureLog,
    warnings: &mut Warnings,
) -> Vec<Group> {
    let mut groups = Vec::new();
    for (i, raw) in listed.result.unwrap_or_default().into_iter().enumerate() {
        let what = match raw.map(RawGroup::into_group) {
            Some(GroupPart::Group(group)) => {
                groups.push(group);
                continue;
            }
            Some(_) => "group without groupId",
            None => "null group record",
        };
        let part = SkippedPart {
            path: format!("groupLists result[{i}]"),
            what,
            room_id: None,
        };
        warnings.add(failures.warning(None, &part));
    }
    groups
}

/// The rooms of one page. A room without `roomId` fails the run; parts that cannot be used,
/// and null records, are left out with a warning each.
fn page_rooms(
    records: Vec<Option<RawRoom>>,
    asked: usize,
    page: u32,
    failures: &FailureLog,
    warnings: &mut Warnings,
) -> Result<Vec<Room>, NotApplied> {
    let invalid = |message: String| {
        let failure = Failure::new(Stage::Validate, codes::BAD_RESPONSE, message);
        failures.fail(failure.on_page(Some(page)))
    };
    if records.len() > asked {
        let message = format!(
            "the page has {} rooms, more than the {asked} asked for (maxResults)",
            records.len()
        );
        return Err(invalid(message));
    }
    let mut skipped = Vec::new();
    let mut rooms = Vec::with_capacity(records.len());
    for (i, record) in records.into_iter().enumerate() {
        match record {
            Some(raw) => rooms.push(
                raw.validate(i, &mut skipped)
                    .map_err(|e| invalid(e.to_string()))?,
            ),
            None => skipped.push(SkippedPart {
                path: format!("result[{i}]"),
                what: "null room record",
                room_id: None,
            }),
        }
    }
    for part in &skipped {
        warnings.add(failures.warning(Some(page), part));
    }
    Ok(rooms)
}

/// A label's name within one listing is the last one any record gives; a mention without a
/// name never replaces a known one. Compared first, so the steady state allocates nothing.
fn note_label(labels: &mut BTreeMap<i64, Option<String>>, label: &Label) {
    match (&label.label_name, labels.get(&label.label_id)) {
        (Some(name), Some(Some(known))) if known == name => {}
        (Some(name), _) => {
            labels.insert(label.label_id, Some(name.clone()));
        }
        (None, Some(_)) => {}
        (None, None) => {
            labels.insert(label.label_id, None);
        }
    }
}

/// Where the listing goes next, and what keeps it from going round in circles.
#[derive(Default)]
struct Cursor {
    next_token: Option<i64>,
    followed: HashSet<i64>,
    /// Empty pages in a row that still promised more.
    empty_in_a_row: u32,
}

/// Empty pages with `hasMore` tolerated in a row before the listing counts as runaway.
const MAX_EMPTY_PAGES_IN_A_ROW: u32 = 3;

impl Cursor {
    /// Moves to the page after one that said `hasMore`.
    fn follow(&mut self, next_token: Option<i64>, page_was_empty: bool) -> Result<(), Failure> {
        let invalid = |code, message| Failure::new(Stage::Validate, code, message);
        self.empty_in_a_row = if page_was_empty {
            self.empty_in_a_row + 1
        } else {
            0
        };
        if self.empty_in_a_row > MAX_EMPTY_PAGES_IN_A_ROW {
            return Err(invalid(
                codes::RUNAWAY_PAGINATION,
                format!(
                    "{} empty pages in a row say hasMore; stopping rather than following the \
                     listing without end",
                    self.empty_in_a_row
                ),
            ));
        }
        match next_token {
            None => Err(invalid(
                codes::MISSING_NEXT_TOKEN,
                "hasMore is true but no nextToken was given".to_string(),
            )),
            Some(t) if !self.followed.insert(t) => Err(invalid(
                codes::REPEATED_NEXT_TOKEN,
                format!(
                    "nextToken {t} was already followed in this run; stopping rather than looping"
                ),
            )),
            Some(t) => {
                self.next_token = Some(t);
                Ok(())
            }
        }
    }
}

/// Sorts each queued room with the ledger and stages what is new, changed or back. Hands the
/// staging connection back whatever happens.
async fn process_pages(
    pool: SqlitePool,
    mut staging: Staging,
    queue: mpsc::Receiver<QueuedPage>,
    failures: FailureLog,
) -> Processed {
    crate::failure::panic_if_asked_in_tests();
    let sorted = match load_mirror_summary(&pool).await {
        Ok(mirror) => sort_and_stage(Ledger::new(mirror), &mut staging, queue, &failures).await,
        Err(e) => Err(failures.store_failed("reading the mirror", e)),
    };
    // Dropping the queue (on error) makes the fetcher stop at its next page.
    Processed { staging, sorted }
}

/// The processor's loop: every room through the ledger, staged in batches.
async fn sort_and_stage(
    mut ledger: Ledger,
    staging: &mut Staging,
    mut queue: mpsc::Receiver<QueuedPage>,
    failures: &FailureLog,
) -> Result<Sorted, NotApplied> {
    let mut labels: BTreeMap<i64, Option<String>> = BTreeMap::new();
    let mut groups: HashMap<i64, Group> = HashMap::new();
    let mut batch = StageBatch::default();
    let mut sort_time = Duration::ZERO;
    let staging_failed = |e| failures.store_failed("staging rooms", e);
    while let Some(page) = queue.recv().await {
        let t0 = Instant::now();
        for room in page.rooms {
            for label in &room.labels {
                note_label(&mut labels, label);
            }
            if let Some(group) = &room.group {
                if groups.get(&group.group_id) != Some(group) {
                    groups.insert(group.group_id, group.clone());
                }
            }
            let fp = fingerprint(&room);
            let decision = ledger.observe(&room, fp);
            batch.sort(room, fp, decision);
        }
        sort_time += t0.elapsed();
        if batch.len() >= STAGE_BATCH || batch.bytes >= STAGE_BATCH_BYTES {
            batch.flush(staging).await.map_err(staging_failed)?;
        }
    }
    tracing::debug!(
        sort_ms = sort_time.as_millis() as u64,
        "listing sorted by the ledger"
    );
    batch.flush(staging).await.map_err(staging_failed)?;
    Ok(Sorted {
        ledger,
        labels,
        groups,
    })
}

/// Rooms staged per round trip to the staging connection: batching pages keeps the round
/// trips, and the thread wake-ups each costs, ten times fewer than staging page by page.
const STAGE_BATCH: usize = 1000;
/// The bytes of rooms a batch may hold before it is staged, whatever the size of the records.
const STAGE_BATCH_BYTES: usize = 8 << 20;

/// What the processor has sorted and not yet staged.
#[derive(Default)]
struct StageBatch {
    stage: Vec<StagedRoom>,
    /// Staged rooms whose earlier record, staged before, this batch replaces.
    again: Vec<String>,
    /// Staged rooms whose later record turned out unchanged: taken out of staging.
    unstage: Vec<String>,
    /// About the memory of the rooms in `stage`.
    bytes: usize,
}

impl StageBatch {
    fn len(&self) -> usize {
        self.stage.len() + self.unstage.len()
    }

    fn sort(&mut self, room: Room, fp: i64, decision: Decision) {
        match decision {
            Decision::Skip => {}
            Decision::Unstage => {
                // A record still pending simply goes; one already staged is taken out.
                self.stage
                    .retain(|staged| staged.room.room_id != room.room_id);
                self.unstage.push(room.room_id);
            }
            Decision::Stage { change, again } => {
                if again {
                    self.again.push(room.room_id.clone());
                }
                self.bytes += room.approx_bytes();
                self.stage.push(StagedRoom {
                    room,
                    fingerprint: fp,
                    change,
                });
            }
        }
    }

    /// Unstages first: a room taken out and staged again within the batch ends up staged.
    async fn flush(&mut self, staging: &mut Staging) -> sqlx::Result<()> {
        if !self.unstage.is_empty() {
            staging.remove_rooms(&self.unstage).await?;
        }
        if !self.stage.is_empty() {
            staging.add_rooms(&self.stage, &self.again).await?;
        }
        self.stage.clear();
        self.again.clear();
        self.unstage.clear();
        self.bytes = 0;
        Ok(())
    }
}

/// The listing measured against the mirror, once the ledger has seen all of it.
struct ListingTally {
    /// Distinct rooms in the listing.
    rooms_seen: u64,
    /// Active rooms the listing no longer has: the rooms to remove.
    gone: Vec<String>,
}

/// Counts the listing's distinct rooms and finds the active rooms it no longer has, looking
/// up by id only what the fingerprints leave open.
async fn tally(pool: &SqlitePool, ledger: &Ledger) -> sqlx::Result<ListingTally> {
    // A staged room that also came unchanged in another record is counted once.
    // None can be when no room came unchanged (always so into an empty mirror).
    let staged: Vec<&str> = if ledger.any_seen_unchanged() {
        ledger.staged().collect()
    } else {
        Vec::new()
    };
    let staged_and_unchanged = if staged.is_empty() {
        0
    } else {
        let stored = stored_fingerprints(pool, &staged).await?;
        stored
            .into_iter()
            .filter(|fp| ledger.seen_unchanged(*fp))
            .count() as u64
    };
    // An active room whose fingerprint did not come is gone, unless it changed (then it is
    // staged under its id).
    let unseen = ledger.unseen();
    let gone = if unseen.is_empty() && ledger.all_fingerprinted() {
        Vec::new()
    } else {
        let candidates = active_rooms_with(pool, &unseen).await?;
        candidates
            .into_iter()
            .filter(|id| !ledger.is_staged(id))
            .collect()
    };
    Ok(ListingTally {
        rooms_seen: ledger.seen(staged_and_unchanged),
        gone,
    })
}

/// Stages the labels, groups and removals, then applies the whole listing.
async fn apply_listing(
    run: &Run<'_>,
    staging: &mut Staging,
    sorted: Sorted,
    progress: &mut FetchProgress,
) -> Result<ApplyCounts, NotApplied> {
    let failures = &run.failures;
    let tally = tally(&run.pool, &sorted.ledger)
        .await
        .map_err(|e| failures.store_failed("reading the mirror", e))?;
    progress.rooms_seen = Some(tally.rooms_seen);
    let groups: Vec<&Group> = sorted.groups.values().collect();
    let gone: Vec<&str> = tally.gone.iter().map(String::as_str).collect();
    let staged = async {
        staging.set_labels(&sorted.labels).await?;
        staging.set_groups(&groups).await?;
        staging.set_removed(&gone).await
    };
    staged
        .await
        .map_err(|e| failures.store_failed("staging labels, groups and removals", e))?;
    let calls = run.runner.pending_calls(&run.calls);
    let request = ApplyRequest {
        run_id: run.run_id,
        pages_fetched: progress.pages,
        rooms_seen: tally.rooms_seen,
        max_removal_ratio: run.runner.settings().sync.max_removal_ratio,
        allow_mass_removal: run.options.allow_mass_removal,
        keep_changes_days: run.runner.settings().sync.keep_changes_days,
        warnings: &progress.warnings.rows,
        warning_count: progress.warnings.count,
        calls: &calls,
    };
    match apply(staging, &request).await {
        Ok(ApplyOutcome::Applied(counts)) => {
            run.calls.mark_recorded(&calls.by_endpoint);
            Ok(counts)
        }
        Ok(ApplyOutcome::Guarded {
            would_remove,
            active,
            limit,
        }) => {
            let why = if tally.rooms_seen == 0 {
                format!("the listing is empty and would remove all {active} active rooms")
            } else {
                format!(
                    "the listing would remove {would_remove} of {active} active rooms, more than \
                     the limit of {limit:.0} (max(5, sync.max_removal_ratio x active))"
                )
            };
            let message = format!(
                "{why}; nothing was changed. If this is intended, run once with --sync-now \
                 --allow-mass-removal"
            );
            Err(failures.fail(Failure::new(Stage::Store, codes::REMOVAL_GUARD, message)))
        }
        Err(e) => Err(failures.store_failed("applying the listing", e)),
    }
}
